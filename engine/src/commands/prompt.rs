//! `plue prompt render FILE` and `plue prompt check [DIR]`: the prompt files of LLM steps,
//! from the command line.
//!
//! `render` prints the rendered prompt to stdout, exactly as a step would get it; any
//! failure (unreadable file, invalid prompt, inputs that do not match its schema, a variable
//! that is not set) prints `error: ...` to stderr and exits 2. `check` parses every prompt
//! file below a directory and prints `ok PATH` or `PATH:LINE: message` for each, exiting 1
//! if any is invalid. A prompt file is a `*.md` inside a directory called `prompts` (at any
//! depth, or DIR itself); a `README.md` there without frontmatter is documentation, not a
//! prompt, and is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use prompts::Prompt;
use serde_json::{Map, Value};

use super::{checked, EXIT_INVALID};
use crate::cli::{PromptCheckArgs, PromptCommand, PromptRenderArgs};

/// Exit code of `plue prompt render` when the prompt can not be rendered.
const EXIT_RENDER_FAILED: u8 = 2;

/// Directories never searched: VCS metadata, build output and dependencies.
const SKIPPED_DIRS: [&str; 3] = [".git", "target", "node_modules"];

/// The directory name prompt files live under.
const PROMPTS_DIR: &str = "prompts";

pub(crate) fn run(command: PromptCommand) -> anyhow::Result<ExitCode> {
    match command {
        PromptCommand::Render(args) => Ok(render(&args)),
        PromptCommand::Check(args) => check(&args),
    }
}

fn render(args: &PromptRenderArgs) -> ExitCode {
    let text = match rendered(args) {
        Ok(text) => text,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_RENDER_FAILED);
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the prompt: {e}");
            ExitCode::from(EXIT_RENDER_FAILED)
        }
    }
}

/// The rendered prompt, or the message to print after `error: `.
fn rendered(args: &PromptRenderArgs) -> Result<String, String> {
    let prompt = if args.file.starts_with(prompts::BUILTIN_PREFIX) {
        // A built-in never touches the file system, so the root does not matter.
        prompts::resolve(&args.file, Path::new("."))
    } else {
        // The user's own file on their own machine: no confinement to a workspace.
        Prompt::load(Path::new(&args.file))
    }
    .map_err(|e| e.to_string())?;
    let mut inputs = match &args.inputs_json {
        Some(path) => inputs_file(path)?,
        None => Map::new(),
    };
    for (key, value) in &args.inputs {
        inputs.insert(key.clone(), input_value(value));
    }
    prompt.render(&inputs).map_err(|e| e.to_string())
}

/// An `--input` value: JSON when it parses as JSON (`3`, `true`, `["a"]`, `"quoted"`), else
/// the text itself.
fn input_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The inputs in an `--inputs-json` file: a JSON object.
fn inputs_file(path: &Path) -> Result<Map<String, Value>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{shown}: cannot read the inputs: {e}"))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(inputs)) => Ok(inputs),
        Ok(other) => Err(format!(
            "{shown}: expected a JSON object of inputs, got {}",
            kind(&other)
        )),
        Err(e) => Err(format!("{shown}:{}: invalid JSON: {e}", e.line())),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check(args: &PromptCheckArgs) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        eprintln!("{}: not a directory", args.dir.display());
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let files = prompt_files(&args.dir)?;
    if files.is_empty() {
        eprintln!(
            "no prompt files (*.md in a {PROMPTS_DIR}/ directory) found below {}",
            args.dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut invalid = 0;
    for file in &files {
        match Prompt::load(file) {
            Ok(_) => println!("ok {}", file.display()),
            Err(e) => {
                invalid += 1;
                println!("{e}");
            }
        }
    }
    Ok(checked("prompt file", files.len(), invalid))
}

/// Every prompt file below `dir`, sorted.
fn prompt_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir_is_prompts = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n == PROMPTS_DIR))
        .unwrap_or(false);
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            !(e.file_type().is_dir()
                && e.depth() > 0
                && SKIPPED_DIRS.iter().any(|s| e.file_name() == *s))
        });
    let mut files = Vec::new();
    for entry in walker {
        let entry = entry.with_context(|| format!("searching {}", dir.display()))?;
        let path = entry.path();
        let is_file = entry.file_type().is_file() || (entry.path_is_symlink() && path.is_file());
        if !is_file || path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let relative = path.strip_prefix(dir).unwrap_or(path);
        let in_prompts_dir = dir_is_prompts
            || relative
                .parent()
                .is_some_and(|p| p.components().any(|c| c.as_os_str() == PROMPTS_DIR));
        if in_prompts_dir && !is_readme_without_frontmatter(path) {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok(files)
}

fn is_readme_without_frontmatter(path: &Path) -> bool {
    let is_readme = path
        .file_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("readme.md"));
    is_readme
        && !std::fs::read_to_string(path)
            .map(|text| text.trim_start_matches('\u{feff}').starts_with("---"))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn input_values_are_json_when_they_parse_as_json() {
        assert_eq!(input_value("3"), json!(3));
        assert_eq!(input_value("true"), json!(true));
        assert_eq!(input_value(r#"["a.rs","b.rs"]"#), json!(["a.rs", "b.rs"]));
        assert_eq!(input_value(r#""quoted""#), json!("quoted"));
        assert_eq!(input_value("plain text"), json!("plain text"));
        assert_eq!(input_value("007"), json!("007"));
        assert_eq!(input_value(""), json!(""));
    }

    #[test]
    fn prompt_files_are_md_files_in_prompts_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, text) in [
            ("prompts/a.md", "---\n"),
            ("prompts/nested/b.md", "---\n"),
            ("docs/prompts/c.md", "---\n"),
            ("prompts/README.md", "# About these prompts\n"),
            ("prompts/notes.txt", "---\n"),
            ("docs/d.md", "---\n"),
            ("target/prompts/e.md", "---\n"),
            ("node_modules/x/prompts/f.md", "---\n"),
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let found: Vec<String> = prompt_files(root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            found,
            ["docs/prompts/c.md", "prompts/a.md", "prompts/nested/b.md"]
        );
        let found = prompt_files(&root.join("prompts")).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
