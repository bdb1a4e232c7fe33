//! [`PromptError`]: every way a prompt can fail to load, parse, validate its inputs or
//! render, with the words a user needs to fix it.
//!
//! Invariants: a message starts with where the problem is — `source:line` when the line is
//! known ([`Location`]), so `plue prompt check` can print `path:line: message` as is — and
//! echoes the offending key, tool, field or variable. Nothing else in the crate formats
//! user-facing error text.

use std::fmt;

use crate::TOOLS;

/// Where a problem is: the prompt's source name (a path, or `builtin:NAME`) and, when known,
/// a 1-based line of that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file path as given, or `builtin:NAME`.
    pub source_name: String,
    /// 1-based line in the whole file (frontmatter included), when known.
    pub line: Option<usize>,
}

impl Location {
    pub(crate) fn new(source_name: &str, line: Option<usize>) -> Location {
        Location {
            source_name: source_name.to_string(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.source_name),
            None => f.write_str(&self.source_name),
        }
    }
}

/// One input that does not match the prompt's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// JSON pointer of the failing field (`/files/0`); empty for the inputs as a whole.
    pub path: String,
    /// What is wrong, e.g. `42 is not of type "string"`.
    pub message: String,
}

impl fmt::Display for InputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "inputs: {}", self.message)
        } else {
            write!(f, "input `{}`: {}", self.path, self.message)
        }
    }
}

/// Why a prompt could not be loaded, parsed, validated or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// The prompt file could not be read.
    #[error("{path}: cannot read the prompt file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The prompt file is bigger than [`crate::MAX_PROMPT_BYTES`].
    #[error("{path}: the prompt file is larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    /// The path names a directory, FIFO or device rather than a file.
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    /// The text does not start with a `---` line.
    #[error(
        "{at}: missing frontmatter: a prompt file starts with a `---` line, \
         YAML with at least `name` and `description`, and a closing `---` line"
    )]
    MissingFrontmatter { at: Location },
    /// The opening `---` has no closing `---`.
    #[error("{at}: unterminated frontmatter: the `---` on line 1 has no closing `---` line")]
    UnterminatedFrontmatter { at: Location },
    /// The frontmatter is not valid YAML, or not a mapping.
    #[error("{at}: invalid frontmatter: {message}")]
    Yaml { at: Location, message: String },
    /// A frontmatter key this crate does not know (a typo, usually).
    #[error("{at}: unknown frontmatter key `{key}` (known keys: {known})")]
    UnknownKey {
        at: Location,
        key: String,
        /// The keys there are, as the message lists them.
        known: String,
    },
    /// `name` or `description` is absent.
    #[error("{at}: the frontmatter has no `{key}`")]
    MissingKey { at: Location, key: &'static str },
    /// A known key with a value of the wrong type or shape.
    #[error("{at}: `{key}`: {message}")]
    InvalidValue {
        at: Location,
        key: &'static str,
        message: String,
    },
    /// `max_turns` below 1.
    #[error("{at}: `max_turns` must be at least 1, got {value}")]
    MaxTurns { at: Location, value: i64 },
    /// A `tools` entry outside [`TOOLS`].
    #[error("{at}: unknown tool `{tool}` (available tools: {available})", available = TOOLS.join(", "))]
    UnknownTool { at: Location, tool: String },
    /// `schema` is not a JSON Schema the validator can compile.
    #[error("{at}: `schema` is not a valid JSON Schema: {message}")]
    InvalidSchema { at: Location, message: String },
    /// The body is not a valid Handlebars template.
    #[error("{at}: template syntax error: {message}")]
    TemplateSyntax { at: Location, message: String },
    /// The inputs do not match the schema (after defaults were applied).
    #[error("{at}: {}", join(problems))]
    InvalidInput {
        at: Location,
        problems: Vec<InputProblem>,
    },
    /// The template uses a variable the inputs do not set (strict mode).
    #[error("{at}: '{{{{ {variable} }}}}' is not set")]
    MissingVariable { at: Location, variable: String },
    /// Any other rendering failure (a helper given the wrong arguments, say).
    #[error("{at}: cannot render the prompt: {message}")]
    Render { at: Location, message: String },
    /// `builtin:NAME` with a name no built-in prompt has.
    #[error("unknown built-in prompt `builtin:{name}` (built-ins: {known})", known = crate::builtin_names().join(", "))]
    UnknownBuiltin { name: String },
    /// A `prompt_file` that is empty, absolute or leads out of the workspace.
    #[error("prompt file `{reference}` {why}")]
    BadReference {
        reference: String,
        why: &'static str,
    },
}

impl PromptError {
    /// Where the problem is, for errors inside a prompt file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            PromptError::MissingFrontmatter { at }
            | PromptError::UnterminatedFrontmatter { at }
            | PromptError::Yaml { at, .. }
            | PromptError::UnknownKey { at, .. }
            | PromptError::MissingKey { at, .. }
            | PromptError::InvalidValue { at, .. }
            | PromptError::MaxTurns { at, .. }
            | PromptError::UnknownTool { at, .. }
            | PromptError::InvalidSchema { at, .. }
            | PromptError::TemplateSyntax { at, .. }
            | PromptError::InvalidInput { at, .. }
            | PromptError::MissingVariable { at, .. }
            | PromptError::Render { at, .. } => Some(at),
            PromptError::Read { .. }
            | PromptError::TooLarge { .. }
            | PromptError::NotAFile { .. }
            | PromptError::UnknownBuiltin { .. }
            | PromptError::BadReference { .. } => None,
        }
    }
}

fn join(problems: &[InputProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
