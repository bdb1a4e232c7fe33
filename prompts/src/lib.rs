//! Prompt files: Markdown with YAML frontmatter (`name`, `description`, `schema`, `model`,
//! `max_turns`, `tools`, `system`) and a Handlebars body, rendered strictly with inputs validated
//! against the frontmatter's JSON Schema.
//!
//! - [`Prompt`] (`prompt`): a parsed prompt — frontmatter fields plus its compiled schema and
//!   template. [`Prompt::parse`] checks everything that can be checked without inputs, so
//!   `plue prompt check` catches a broken file before any step runs.
//! - `frontmatter`: splits a file into frontmatter and body and reads the typed fields.
//! - `inputs`: applies schema defaults and validates inputs ([`Prompt::validate`]).
//! - `template`: the Handlebars dialect (strict, unescaped, a `json` helper).
//! - `builtin`: prompts shipped in the binary (`builtin:code-review`, `builtin:bug-fix`).
//! - `resolve`: turns a step's `prompt_file` into a [`Prompt`], confined to the workspace.
//! - [`PromptError`] (`error`): every failure, with the file and line where known.
//!
//! Architecture invariant: pure apart from reading prompt files in [`Prompt::load`] and
//! [`resolve`] — no network, no process, no knowledge of runners or the engine.

mod builtin;
mod error;
mod frontmatter;
mod inputs;
mod prompt;
mod resolve;
mod template;

pub use builtin::{builtin, builtin_names};
pub use error::{InputProblem, Location, PromptError};
pub use prompt::{Prompt, MAX_PROMPT_BYTES};
pub use resolve::{resolve, resolve_text, BUILTIN_PREFIX};

/// The tools an LLM step may be given, in the order the design lists them. A prompt's
/// `tools` must be a subset; a step without `tools` gets all of them.
pub const TOOLS: [&str; 6] = [
    "read_file",
    "write_file",
    "list_files",
    "grep",
    "bash",
    "git_diff",
];
