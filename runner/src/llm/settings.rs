//! What an `llm` step runs with: its rendered prompt, model, turn limit and tools, merged
//! from the step, the prompt file's frontmatter and the defaults.
//!
//! Invariants:
//! - Precedence is step, then prompt frontmatter, then default, for `model`,
//!   `max_turns` and the system prompt (`system_prompt=`, the frontmatter's `system`). For `tools` the plan cannot tell "not given" from the default list (the
//!   evaluator fills it in), so a step whose tools are exactly the default list counts as
//!   not having chosen, and the prompt's `tools` apply; any other list, the empty one
//!   included, is the step's choice.
//! - `prompt_file` is resolved by the `prompts` crate inside the workspace (or as
//!   `builtin:NAME`), unless the engine sent the file's text (`plue run` against another
//!   directory reads it from the workflow file's repository), and rendered with the step's inputs validated against its schema.
//!   An inline `prompt` is used as written; inputs given with it are appended as JSON.
//! - Every failure is a message for the step's reason, naming the prompt file.

use std::path::Path;

use serde_json::{Map, Value};

use plue_types::protocol::StepAction;

/// The model when neither step nor prompt names one.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// The turn limit when neither step nor prompt sets one.
pub const DEFAULT_MAX_TURNS: u32 = 20;

/// What the agent is told about its situation.
pub const SYSTEM_PROMPT: &str = "You are an agent running as one step of a Plue workflow, \
in a fresh checkout of a repository (the workspace). Use the tools to inspect and change \
files; every path is relative to the workspace root and cannot leave it. Work \
autonomously: nobody will answer questions. When you are done, reply with your final \
answer only; it becomes the step's `result` output, which later steps read.";

/// The options of the step as the engine dispatched them.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions<'a> {
    pub prompt: Option<&'a str>,
    pub prompt_file: Option<&'a str>,
    /// The prompt file's text as the engine read it: used instead of reading
    /// `prompt_file` in the workspace.
    pub prompt_file_content: Option<&'a str>,
    pub inputs: &'a Map<String, Value>,
    pub model: Option<&'a str>,
    pub max_turns: Option<u32>,
    pub tools: &'a [String],
    /// `system_prompt=`: replaces [`SYSTEM_PROMPT`].
    pub system_prompt: Option<&'a str>,
    /// `result=`: the `finish` contract (see [`super::tools::finish`]).
    pub result: Option<&'a plue_types::protocol::ResultContract>,
    /// `mcp=`: the MCP servers whose listed tools the model may call ([`super::mcp`]).
    pub mcp: &'a [plue_types::mcp::McpServer],
}

impl<'a> StepOptions<'a> {
    /// The options of `action`, when it is an `llm` step's.
    pub fn of_action(action: &'a StepAction) -> Option<StepOptions<'a>> {
        let StepAction::Llm {
            prompt,
            prompt_file,
            prompt_file_content,
            inputs,
            model,
            max_turns,
            tools,
            result,
            system_prompt,
            mcp,
            ..
        } = action
        else {
            return None;
        };
        Some(StepOptions {
            prompt: prompt.as_deref(),
            prompt_file: prompt_file.as_deref(),
            prompt_file_content: prompt_file_content.as_deref().map(String::as_str),
            inputs,
            model: model.as_deref(),
            max_turns: *max_turns,
            tools,
            system_prompt: system_prompt.as_deref(),
            result: result.as_ref(),
            mcp,
        })
    }
}

/// Everything the conversation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub model: String,
    pub max_turns: u32,
    pub tools: Vec<String>,
    pub system: String,
    /// The first user message.
    pub prompt: String,
    /// Where the prompt came from, for the log: `inline prompt` or the prompt file.
    pub source: String,
}

/// Why an `llm` step's settings do not resolve (the step fails with this reason).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The prompt file does not resolve, parse or render with the step's inputs.
    #[error("prompt_file {reference}: {error}")]
    PromptFile {
        reference: String,
        error: prompts::PromptError,
    },
    #[error("an llm step takes prompt or prompt_file, not both")]
    BothPrompts,
    #[error("an llm step needs prompt or prompt_file")]
    NoPrompt,
    /// The prompt (`from`: `inline prompt` or the file) is empty or blank.
    #[error("the prompt ({from}) is empty")]
    EmptyPrompt { from: String },
    /// The inline prompt's inputs could not be written as JSON.
    #[error("inputs: {0}")]
    Inputs(#[from] serde_json::Error),
}

/// Resolves the step's settings in `workspace`.
pub fn resolve(options: StepOptions<'_>, workspace: &Path) -> Result<Settings, SettingsError> {
    let step_chose_tools = options.tools != prompts::TOOLS;
    let (prompt, source, frontmatter) = match (options.prompt, options.prompt_file) {
        (Some(text), None) => (
            inline(text, options.inputs)?,
            "inline prompt".to_owned(),
            None,
        ),
        (None, Some(reference)) => {
            let prompt = match options.prompt_file_content {
                Some(text) => prompts::Prompt::parse(reference, text),
                None => prompts::resolve(reference, workspace),
            }
            .map_err(|error| SettingsError::PromptFile {
                reference: reference.to_owned(),
                error,
            })?;
            let text =
                prompt
                    .render(options.inputs)
                    .map_err(|error| SettingsError::PromptFile {
                        reference: reference.to_owned(),
                        error,
                    })?;
            (text, reference.to_owned(), Some(prompt))
        }
        (Some(_), Some(_)) => return Err(SettingsError::BothPrompts),
        (None, None) => return Err(SettingsError::NoPrompt),
    };
    if prompt.trim().is_empty() {
        return Err(SettingsError::EmptyPrompt { from: source });
    }
    let model = options
        .model
        .map(str::to_owned)
        .or_else(|| frontmatter.as_ref().and_then(|p| p.model.clone()))
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    let max_turns = options
        .max_turns
        .or_else(|| frontmatter.as_ref().and_then(|p| p.max_turns))
        .unwrap_or(DEFAULT_MAX_TURNS)
        .max(1);
    let tools = match frontmatter.as_ref().and_then(|p| p.tools.clone()) {
        Some(tools) if !step_chose_tools => tools,
        _ => options.tools.to_vec(),
    };
    Ok(Settings {
        model,
        max_turns,
        tools,
        system: options
            .system_prompt
            .map(str::to_owned)
            .or_else(|| frontmatter.as_ref().and_then(|p| p.system.clone()))
            .unwrap_or_else(|| SYSTEM_PROMPT.to_owned()),
        prompt,
        source,
    })
}

/// An inline prompt, with its inputs (if any) appended as a JSON block.
fn inline(text: &str, inputs: &Map<String, Value>) -> Result<String, SettingsError> {
    if inputs.is_empty() {
        return Ok(text.to_owned());
    }
    let json = serde_json::to_string_pretty(inputs)?;
    Ok(format!("{text}\n\nInputs:\n```json\n{json}\n```"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn all_tools() -> Vec<String> {
        prompts::TOOLS.iter().map(|t| t.to_string()).collect()
    }

    fn options<'a>(inputs: &'a Map<String, Value>, tools: &'a [String]) -> StepOptions<'a> {
        StepOptions {
            prompt: Some("Summarise the repository."),
            prompt_file: None,
            prompt_file_content: None,
            inputs,
            model: None,
            max_turns: None,
            tools,
            system_prompt: None,
            result: None,
            mcp: &[],
        }
    }

    #[test]
    fn inline_prompts_take_the_defaults() {
        let inputs = Map::new();
        let tools = all_tools();
        let settings = resolve(options(&inputs, &tools), Path::new("/nonexistent")).unwrap();
        assert_eq!(settings.model, DEFAULT_MODEL);
        assert_eq!(settings.max_turns, DEFAULT_MAX_TURNS);
        assert_eq!(settings.tools, tools);
        assert_eq!(settings.prompt, "Summarise the repository.");
        assert_eq!(settings.source, "inline prompt");
        assert_eq!(settings.system, SYSTEM_PROMPT);
    }

    #[test]
    fn inline_inputs_are_appended_and_step_options_win() {
        let inputs = json!({"files": ["a.rs"]}).as_object().unwrap().clone();
        let tools = vec!["read_file".to_string()];
        let mut opts = options(&inputs, &tools);
        opts.model = Some("claude-opus-4-1");
        opts.max_turns = Some(3);
        let settings = resolve(opts, Path::new("/nonexistent")).unwrap();
        assert!(settings
            .prompt
            .ends_with("```json\n{\n  \"files\": [\n    \"a.rs\"\n  ]\n}\n```"));
        assert_eq!(
            (settings.model.as_str(), settings.max_turns),
            ("claude-opus-4-1", 3)
        );
        assert_eq!(settings.tools, ["read_file"]);
    }

    #[test]
    fn a_prompt_files_text_sent_by_the_engine_is_used_instead_of_the_workspace() {
        // The workspace has no prompts/: the engine read the file elsewhere.
        let dir = tempfile::tempdir().unwrap();
        let inputs = Map::new();
        let tools = all_tools();
        let mut opts = options(&inputs, &tools);
        opts.prompt = None;
        opts.prompt_file = Some("prompts/x.md");
        opts.prompt_file_content =
            Some("---\nname: x\ndescription: X\nmodel: claude-haiku-4-5\n---\nFrom A.\n");
        let settings = resolve(opts, dir.path()).unwrap();
        assert_eq!(settings.prompt, "From A.\n");
        assert_eq!(settings.model, "claude-haiku-4-5");
        assert_eq!(settings.source, "prompts/x.md");
        opts.prompt_file_content = None;
        let err = resolve(opts, dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("prompt_file prompts/x.md: "), "{err}");
    }

    #[test]
    fn prompt_files_render_with_their_frontmatter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("prompts")).unwrap();
        std::fs::write(
            dir.path().join("prompts/triage.md"),
            "---\nname: triage\ndescription: Triage files\nmodel: claude-haiku-4-5\nmax_turns: 4\n\
             tools: [read_file, grep]\nsystem: You triage.\nschema:\n  type: object\n  properties:\n    files:\n      \
             type: array\n      items: {type: string}\n  required: [files]\n---\n\
             Look at {{#each files}}{{this}} {{/each}}please.\n",
        )
        .unwrap();
        let inputs = json!({"files": ["a.rs", "b.rs"]})
            .as_object()
            .unwrap()
            .clone();
        let tools = all_tools();
        let mut opts = options(&inputs, &tools);
        opts.prompt = None;
        opts.prompt_file = Some("prompts/triage.md");
        let settings = resolve(opts, dir.path()).unwrap();
        assert_eq!(settings.prompt.trim_end(), "Look at a.rs b.rs please.");
        assert_eq!(settings.model, "claude-haiku-4-5");
        assert_eq!(settings.max_turns, 4);
        assert_eq!(settings.tools, ["read_file", "grep"]);
        assert_eq!(settings.system, "You triage.");

        // The step's own choices win over the frontmatter.
        let chosen = vec!["bash".to_string()];
        let mut opts = options(&inputs, &chosen);
        opts.prompt = None;
        opts.prompt_file = Some("prompts/triage.md");
        opts.max_turns = Some(9);
        opts.system_prompt = Some("You are strict.");
        let settings = resolve(opts, dir.path()).unwrap();
        assert_eq!((settings.max_turns, settings.tools), (9, chosen));
        assert_eq!(settings.system, "You are strict.");

        // Inputs that do not match the schema fail, naming the file.
        let empty = Map::new();
        let mut opts = options(&empty, &tools);
        opts.prompt = None;
        opts.prompt_file = Some("prompts/triage.md");
        let err = resolve(opts, dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("prompt_file prompts/triage.md: "), "{err}");
    }

    #[test]
    fn missing_and_escaping_prompt_files_fail() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = Map::new();
        let tools = all_tools();
        for reference in ["nope.md", "../outside.md"] {
            let mut opts = options(&inputs, &tools);
            opts.prompt = None;
            opts.prompt_file = Some(reference);
            let err = resolve(opts, dir.path()).unwrap_err().to_string();
            assert!(err.contains(reference), "{err}");
        }
    }
}
