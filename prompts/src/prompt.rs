//! [`Prompt`]: a parsed prompt file — its frontmatter fields, plus its compiled input
//! schema and template.
//!
//! Invariants: a `Prompt` only exists once everything that can be checked without inputs
//! has been (frontmatter, schema, template syntax), so rendering can only fail because of
//! the inputs. The compiled parts are shared (`Arc`): cloning a prompt is cheap. The public
//! fields are read-only facts about the file; changing `schema` after parsing does not
//! change how inputs are validated.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Location, PromptError};
use crate::frontmatter;
use crate::inputs::Schema;
use crate::template::Template;

/// The largest prompt file [`Prompt::load`] reads: prompts are text someone wrote, and a
/// file in an untrusted checkout can be anything.
pub const MAX_PROMPT_BYTES: u64 = 1024 * 1024;

/// A prompt: Markdown with YAML frontmatter and a Handlebars body.
#[derive(Clone)]
pub struct Prompt {
    /// `name` from the frontmatter.
    pub name: String,
    /// `description` from the frontmatter.
    pub description: String,
    /// The inputs' JSON Schema (`{"type": "object"}` when the file has none).
    pub schema: Value,
    /// The model to use instead of the step's or the engine's default.
    pub model: Option<String>,
    /// The most agent turns; `None` leaves the choice to the step or the engine.
    pub max_turns: Option<u32>,
    /// The tools the agent gets (each one of [`crate::TOOLS`]); `None` means all of them.
    pub tools: Option<Vec<String>>,
    /// `system`: the agent's system prompt, replacing the runner's (a step's own
    /// `system_prompt=` wins).
    pub system: Option<String>,
    source_name: String,
    compiled: Arc<Compiled>,
}

struct Compiled {
    schema: Schema,
    template: Template,
}

impl Prompt {
    /// Parses the text of a prompt file; `source_name` (a path, or `builtin:NAME`) is how
    /// errors refer to it.
    pub fn parse(source_name: &str, text: &str) -> Result<Prompt, PromptError> {
        let split = frontmatter::split(source_name, text)?;
        let front = frontmatter::read(source_name, split.yaml)?;
        let schema = Schema::compile(&front.schema, Location::new(source_name, front.schema_line))?;
        let template = Template::compile(source_name, split.body, split.body_line)?;
        Ok(Prompt {
            name: front.name,
            description: front.description,
            schema: front.schema,
            model: front.model,
            max_turns: front.max_turns,
            system: front.system,
            tools: front.tools,
            source_name: source_name.to_string(),
            compiled: Arc::new(Compiled { schema, template }),
        })
    }

    /// Reads and parses the prompt file at `path` (at most [`MAX_PROMPT_BYTES`]). This
    /// trusts `path`; a path from a workflow goes through [`crate::resolve`] instead.
    pub fn load(path: &Path) -> Result<Prompt, PromptError> {
        Prompt::load_as(path, &path.display().to_string())
    }

    /// [`Prompt::load`], with errors naming the file `source_name`.
    pub(crate) fn load_as(path: &Path, source_name: &str) -> Result<Prompt, PromptError> {
        Prompt::parse(source_name, &Prompt::read_text(path, source_name)?)
    }

    /// The text of the prompt file at `path` (a regular file of at most
    /// [`MAX_PROMPT_BYTES`] of UTF-8), with errors naming it `source_name`.
    pub(crate) fn read_text(path: &Path, source_name: &str) -> Result<String, PromptError> {
        let read_error = |source| PromptError::Read {
            path: source_name.to_string(),
            source,
        };
        let not_a_file = || PromptError::NotAFile {
            path: source_name.to_string(),
        };
        // Checked before opening, as opening a FIFO blocks until someone writes to it, and
        // again on the open file, which is what is read.
        if !std::fs::metadata(path).map_err(read_error)?.is_file() {
            return Err(not_a_file());
        }
        let file = std::fs::File::open(path).map_err(read_error)?;
        if !file.metadata().map_err(read_error)?.is_file() {
            return Err(not_a_file());
        }
        let mut bytes = Vec::new();
        file.take(MAX_PROMPT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_PROMPT_BYTES {
            return Err(PromptError::TooLarge {
                path: source_name.to_string(),
                limit: MAX_PROMPT_BYTES,
            });
        }
        String::from_utf8(bytes)
            .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    /// How errors refer to this prompt: the path it was loaded from, or `builtin:NAME`.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The inputs with the schema's top-level `default`s applied, if they then match the
    /// schema; otherwise an error naming every failing field (`/files/0`).
    pub fn validate(&self, inputs: &Map<String, Value>) -> Result<Map<String, Value>, PromptError> {
        self.compiled.schema.validate(&self.source_name, inputs)
    }

    /// Validates (after applying defaults) and renders; the error names the field or
    /// variable.
    pub fn render(&self, inputs: &Map<String, Value>) -> Result<String, PromptError> {
        let inputs = self.validate(inputs)?;
        self.compiled.template.render(&Value::Object(inputs))
    }
}

impl fmt::Debug for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prompt")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("schema", &self.schema)
            .field("model", &self.model)
            .field("max_turns", &self.max_turns)
            .field("tools", &self.tools)
            .field("source_name", &self.source_name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The example from the design: every frontmatter key, each block helper and `json`.
    const REVIEW: &str = "---
name: code-review
description: Review the changes of a pull request
schema:                 # JSON Schema of the inputs
  type: object
  properties:
    files: {type: array, items: {type: string}}
    focus: {type: string, default: \"correctness\"}
  required: [files]
model: claude-sonnet-4-5
max_turns: 8
tools: [read_file, grep, git_diff]
---
Review these files: {{#each files}}- {{this}}
{{/each}}{{#if focus}}Focus on {{focus}}.{{/if}}
Inputs as JSON: {{json files}}
";

    fn inputs(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn parses_every_field() {
        let prompt = Prompt::parse("review.md", REVIEW).unwrap();
        assert_eq!(prompt.name, "code-review");
        assert_eq!(prompt.description, "Review the changes of a pull request");
        assert_eq!(prompt.schema["required"], json!(["files"]));
        assert_eq!(prompt.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(prompt.max_turns, Some(8));
        assert_eq!(
            prompt.tools,
            Some(vec!["read_file".into(), "grep".into(), "git_diff".into()])
        );
        assert_eq!(prompt.source_name(), "review.md");
    }

    #[test]
    fn renders_with_defaults_applied() {
        let prompt = Prompt::parse("review.md", REVIEW).unwrap();
        let text = prompt
            .render(&inputs(json!({"files": ["src/a.rs", "src/b.rs"]})))
            .unwrap();
        assert_eq!(
            text,
            "Review these files: - src/a.rs\n- src/b.rs\nFocus on correctness.\n\
             Inputs as JSON: [\"src/a.rs\",\"src/b.rs\"]\n"
        );
    }

    #[test]
    fn validate_returns_the_inputs_with_defaults() {
        let prompt = Prompt::parse("review.md", REVIEW).unwrap();
        let validated = prompt.validate(&inputs(json!({"files": []}))).unwrap();
        assert_eq!(
            Value::Object(validated),
            json!({"files": [], "focus": "correctness"})
        );
    }

    #[test]
    fn render_refuses_invalid_inputs_naming_the_field() {
        let prompt = Prompt::parse("review.md", REVIEW).unwrap();
        let err = prompt
            .render(&inputs(json!({"focus": "speed"})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "review.md: input `/files`: is required but was not given"
        );
        let err = prompt
            .render(&inputs(json!({"files": ["a", 1]})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "review.md: input `/files/1`: 1 is not of type \"string\""
        );
    }

    #[test]
    fn a_variable_outside_the_schema_is_a_render_error_with_the_file_line() {
        let text = "---\nname: n\ndescription: d\n---\nHello\n{{who}}\n";
        let prompt = Prompt::parse("p.md", text).unwrap();
        let err = prompt.render(&Map::new()).unwrap_err();
        assert_eq!(err.to_string(), "p.md:6: '{{ who }}' is not set");
    }

    #[test]
    fn a_template_syntax_error_fails_parsing_with_the_file_line() {
        let text = "---\nname: n\ndescription: d\n---\nHello\n{{#each files}}\n";
        let err = Prompt::parse("p.md", text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md:6: template syntax error: `{{#each}}` is never closed: add `{{/each}}`"
        );
    }

    #[test]
    fn a_bad_schema_fails_parsing_at_the_schema_line() {
        let text =
            "---\nname: n\ndescription: d\nschema:\n  type: object\n  required: files\n---\n";
        let err = Prompt::parse("p.md", text).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("p.md:4: `schema` is not a valid JSON Schema: at `/required`: "),
            "{err}"
        );
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("review.md");
        std::fs::write(&path, REVIEW).unwrap();
        assert_eq!(Prompt::load(&path).unwrap().name, "code-review");

        let missing = dir.path().join("missing.md");
        let err = Prompt::load(&missing).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{}: cannot read the prompt file: ",
                missing.display()
            )),
            "{err}"
        );
        let err = Prompt::load(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: not a regular file", dir.path().display())
        );
    }

    #[test]
    fn load_refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.md");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = Prompt::load(&fifo).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: not a regular file", fifo.display())
        );
    }

    #[test]
    fn load_refuses_files_that_are_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.md");
        let mut text = String::from("---\nname: n\ndescription: d\n---\n");
        text.push_str(&"x".repeat(MAX_PROMPT_BYTES as usize));
        std::fs::write(&path, text).unwrap();
        let err = Prompt::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the prompt file is larger than 1048576 bytes",
                path.display()
            )
        );
    }
}
