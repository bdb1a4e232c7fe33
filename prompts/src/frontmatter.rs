//! Splitting a prompt file into YAML frontmatter and a Handlebars body, and reading the
//! frontmatter into a typed [`Frontmatter`].
//!
//! Invariants: a file starts with a `---` line (a UTF-8 byte order mark and `\r\n` line
//! ends are accepted) and its frontmatter ends at the next line that is exactly `---`; the
//! body is everything after that line, byte for byte. Only the keys in [`KEYS`] are
//! accepted; `name` and `description` are required and non-empty, `max_turns` is at least
//! 1 and every `tools` entry is one of [`TOOLS`]. Every line number is a line of the whole
//! file. The schema is only read here; compiling it is the job of `inputs`.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Location, PromptError};
use crate::TOOLS;

/// The frontmatter keys a prompt may have, in the order they are documented.
pub(crate) const KEYS: [&str; 7] = [
    "name",
    "description",
    "schema",
    "model",
    "max_turns",
    "tools",
    "system",
];

/// A prompt file cut at its frontmatter's closing `---`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Split<'a> {
    /// The YAML between the `---` lines.
    pub(crate) yaml: &'a str,
    /// Everything after the closing `---` line.
    pub(crate) body: &'a str,
    /// The file line the body starts on (1-based).
    pub(crate) body_line: usize,
}

/// The frontmatter's fields, checked except for the schema's validity.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frontmatter {
    pub(crate) name: String,
    pub(crate) description: String,
    /// The inputs' JSON Schema; `{"type": "object"}` when the file has none.
    pub(crate) schema: Value,
    /// The file line of the `schema` key, for errors found when it is compiled.
    pub(crate) schema_line: Option<usize>,
    pub(crate) model: Option<String>,
    pub(crate) max_turns: Option<u32>,
    pub(crate) tools: Option<Vec<String>>,
    /// The agent's system prompt, replacing the runner's.
    pub(crate) system: Option<String>,
}

/// Cuts `text` into frontmatter and body.
pub(crate) fn split<'a>(source_name: &str, text: &'a str) -> Result<Split<'a>, PromptError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let opening = lines.next().unwrap_or("");
    if opening.trim_end() != "---" {
        return Err(PromptError::MissingFrontmatter {
            at: Location::new(source_name, Some(1)),
        });
    }
    let yaml_start = opening.len();
    let mut offset = yaml_start;
    for (index, line) in lines.enumerate() {
        if line.trim_end() == "---" {
            return Ok(Split {
                yaml: &text[yaml_start..offset],
                body: &text[offset + line.len()..],
                // `index` 0 is file line 2, so the closing line is `index + 2`.
                body_line: index + 3,
            });
        }
        offset += line.len();
    }
    Err(PromptError::UnterminatedFrontmatter {
        at: Location::new(source_name, Some(1)),
    })
}

/// Reads and checks the frontmatter `yaml` of `source_name` (file line 2 onwards).
pub(crate) fn read(source_name: &str, yaml: &str) -> Result<Frontmatter, PromptError> {
    let key_lines = key_lines(yaml);
    let at_key = |key: &str| Location::new(source_name, key_lines.get(key).copied());
    let document: yaml_serde::Value =
        yaml_serde::from_str(yaml).map_err(|e| yaml_error(source_name, &e))?;
    let mapping = match document {
        yaml_serde::Value::Mapping(mapping) => mapping,
        // An empty frontmatter (`---` then `---`) has no keys rather than a wrong shape.
        yaml_serde::Value::Null => yaml_serde::Mapping::new(),
        _ => {
            return Err(PromptError::Yaml {
                at: Location::new(source_name, Some(2)),
                message: "expected a mapping of keys to values, such as `name: my-prompt`".into(),
            })
        }
    };
    let mut fields: HashMap<&'static str, yaml_serde::Value> = HashMap::new();
    for (key, value) in mapping {
        let text = match key.as_str() {
            Some(text) => text.to_string(),
            None => yaml_serde::to_string(&key)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| format!("{key:?}")),
        };
        match KEYS.iter().find(|known| **known == text) {
            Some(known) => {
                fields.insert(known, value);
            }
            None => {
                return Err(PromptError::UnknownKey {
                    at: at_key(&text),
                    key: text,
                    known: KEYS.join(", "),
                })
            }
        }
    }

    let field = |key: &str| fields.get(key).cloned();
    let name = required_text(&fields, "name", &at_key)?;
    let description = required_text(&fields, "description", &at_key)?;
    let schema = match field("schema") {
        Some(value) => typed::<Value>(value, "schema", &at_key)?,
        None => serde_json::json!({"type": "object"}),
    };
    let model = match field("model") {
        Some(value) => Some(non_empty(
            typed(value, "model", &at_key)?,
            "model",
            &at_key,
        )?),
        None => None,
    };
    let max_turns = match field("max_turns") {
        Some(value) => Some(max_turns(typed(value, "max_turns", &at_key)?, &at_key)?),
        None => None,
    };
    let tools = match field("tools") {
        Some(value) => Some(tools(
            source_name,
            yaml,
            typed(value, "tools", &at_key)?,
            &key_lines,
        )?),
        None => None,
    };
    let system = match field("system") {
        Some(value) => Some(non_empty(
            typed(value, "system", &at_key)?,
            "system",
            &at_key,
        )?),
        None => None,
    };
    Ok(Frontmatter {
        name,
        description,
        schema,
        schema_line: key_lines.get("schema").copied(),
        model,
        max_turns,
        tools,
        system,
    })
}

fn required_text(
    fields: &HashMap<&'static str, yaml_serde::Value>,
    key: &'static str,
    at_key: &dyn Fn(&str) -> Location,
) -> Result<String, PromptError> {
    match fields.get(key) {
        Some(value) => non_empty(typed(value.clone(), key, at_key)?, key, at_key),
        None => Err(PromptError::MissingKey {
            at: at_key(key),
            key,
        }),
    }
}

/// Deserializes one field; a type error names the key and its line.
fn typed<T: DeserializeOwned>(
    value: yaml_serde::Value,
    key: &'static str,
    at_key: &dyn Fn(&str) -> Location,
) -> Result<T, PromptError> {
    yaml_serde::from_value(value).map_err(|e| PromptError::InvalidValue {
        at: at_key(key),
        key,
        message: e.to_string(),
    })
}

fn non_empty(
    text: String,
    key: &'static str,
    at_key: &dyn Fn(&str) -> Location,
) -> Result<String, PromptError> {
    if text.trim().is_empty() {
        return Err(PromptError::InvalidValue {
            at: at_key(key),
            key,
            message: "must not be empty".into(),
        });
    }
    Ok(text)
}

fn max_turns(value: i64, at_key: &dyn Fn(&str) -> Location) -> Result<u32, PromptError> {
    if value < 1 {
        return Err(PromptError::MaxTurns {
            at: at_key("max_turns"),
            value,
        });
    }
    u32::try_from(value).map_err(|_| PromptError::InvalidValue {
        at: at_key("max_turns"),
        key: "max_turns",
        message: format!("must be at most {}, got {value}", u32::MAX),
    })
}

fn tools(
    source_name: &str,
    yaml: &str,
    tools: Vec<String>,
    key_lines: &HashMap<String, usize>,
) -> Result<Vec<String>, PromptError> {
    let key_line = key_lines.get("tools").copied();
    for (index, tool) in tools.iter().enumerate() {
        let line = value_line(yaml, key_line, tool).or(key_line);
        if !TOOLS.contains(&tool.as_str()) {
            return Err(PromptError::UnknownTool {
                at: Location::new(source_name, line),
                tool: tool.clone(),
            });
        }
        if tools[..index].contains(tool) {
            return Err(PromptError::InvalidValue {
                at: Location::new(source_name, line),
                key: "tools",
                message: format!("`{tool}` is listed twice"),
            });
        }
    }
    Ok(tools)
}

/// File lines of the top-level keys of `yaml`: a key starts in column 0, optionally quoted.
/// A heuristic for messages only; the YAML parser decides what the keys are.
fn key_lines(yaml: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    for (index, line) in yaml.lines().enumerate() {
        if line.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        if let Some((key, _)) = line.split_once(':') {
            let key = key.trim().trim_matches(['"', '\'']);
            if !key.is_empty() {
                // Frontmatter line 1 is file line 2 (after the opening `---`).
                lines.entry(key.to_string()).or_insert(index + 2);
            }
        }
    }
    lines
}

/// The file line, from the `key_line` of its key to the next top-level key, where `needle`
/// first appears — where a list item such as an unknown tool is written.
fn value_line(yaml: &str, key_line: Option<usize>, needle: &str) -> Option<usize> {
    let first = key_line?;
    for (index, line) in yaml.lines().enumerate().skip(first - 2) {
        let file_line = index + 2;
        if file_line > first && !line.starts_with([' ', '\t', '-', '#']) && !line.is_empty() {
            return None;
        }
        if line.contains(needle) {
            return Some(file_line);
        }
    }
    None
}

/// A YAML syntax error, its lines counted in the whole file rather than the frontmatter.
fn yaml_error(source_name: &str, error: &yaml_serde::Error) -> PromptError {
    PromptError::Yaml {
        at: Location::new(
            source_name,
            Some(error.location().map_or(2, |l| l.line() + 1)),
        ),
        message: shift_lines(&error.to_string(), 1),
    }
}

/// Adds `by` to every `line N` in a parser message.
fn shift_lines(message: &str, by: usize) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(found) = rest.find("line ") {
        let (before, after) = rest.split_at(found + "line ".len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match after[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(yaml: &str) -> String {
        read("p.md", yaml).unwrap_err().to_string()
    }

    #[test]
    fn split_finds_frontmatter_body_and_body_line() {
        let split = split("p.md", "---\nname: a\n---\nHello\n").unwrap();
        assert_eq!(split.yaml, "name: a\n");
        assert_eq!(split.body, "Hello\n");
        assert_eq!(split.body_line, 4);
    }

    #[test]
    fn split_accepts_crlf_and_a_byte_order_mark() {
        let split = split("p.md", "\u{feff}---\r\nname: a\r\n---\r\nHi").unwrap();
        assert_eq!(split.yaml, "name: a\r\n");
        assert_eq!(split.body, "Hi");
    }

    #[test]
    fn a_file_without_frontmatter_is_an_error() {
        let err = split("p.md", "# Title\nHello").unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md:1: missing frontmatter: a prompt file starts with a `---` line, YAML with \
             at least `name` and `description`, and a closing `---` line"
        );
        assert!(matches!(
            split("p.md", ""),
            Err(PromptError::MissingFrontmatter { .. })
        ));
    }

    #[test]
    fn an_unterminated_frontmatter_is_an_error() {
        let err = split("p.md", "---\nname: a\ndescription: b\nHello").unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md:1: unterminated frontmatter: the `---` on line 1 has no closing `---` line"
        );
    }

    #[test]
    fn reads_every_field() {
        let front = read(
            "p.md",
            "name: n\ndescription: d\nschema:\n  type: object\nmodel: m\nmax_turns: 3\ntools: [grep, bash]\nsystem: You review.\n",
        )
        .unwrap();
        assert_eq!(
            front,
            Frontmatter {
                name: "n".into(),
                description: "d".into(),
                schema: serde_json::json!({"type": "object"}),
                schema_line: Some(4),
                model: Some("m".into()),
                max_turns: Some(3),
                tools: Some(vec!["grep".into(), "bash".into()]),
                system: Some("You review.".into()),
            }
        );
    }

    #[test]
    fn the_schema_defaults_to_any_object() {
        let front = read("p.md", "name: n\ndescription: d\n").unwrap();
        assert_eq!(front.schema, serde_json::json!({"type": "object"}));
        assert_eq!(front.schema_line, None);
        assert_eq!(
            (front.model, front.max_turns, front.tools),
            (None, None, None)
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        assert_eq!(
            error("name: n\ndescription: d\nmax_turn: 3\n"),
            "p.md:4: unknown frontmatter key `max_turn` (known keys: name, description, \
             schema, model, max_turns, tools, system)"
        );
    }

    #[test]
    fn name_and_description_are_required() {
        assert_eq!(
            error("description: d\n"),
            "p.md: the frontmatter has no `name`"
        );
        assert_eq!(
            error("name: n\n"),
            "p.md: the frontmatter has no `description`"
        );
        assert_eq!(error(""), "p.md: the frontmatter has no `name`");
        assert_eq!(
            error("name: '  '\ndescription: d\n"),
            "p.md:2: `name`: must not be empty"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_its_line() {
        assert_eq!(
            error("name: n\ndescription: d\ntools: grep\n"),
            "p.md:4: `tools`: invalid type: string \"grep\", expected a sequence"
        );
        assert_eq!(
            error("name: [a]\ndescription: d\n"),
            "p.md:2: `name`: invalid type: sequence, expected a string"
        );
    }

    #[test]
    fn max_turns_must_be_at_least_one() {
        assert_eq!(
            error("name: n\ndescription: d\nmax_turns: 0\n"),
            "p.md:4: `max_turns` must be at least 1, got 0"
        );
        assert_eq!(
            error("name: n\ndescription: d\nmax_turns: -2\n"),
            "p.md:4: `max_turns` must be at least 1, got -2"
        );
        assert_eq!(
            error("name: n\ndescription: d\nmax_turns: 5000000000\n"),
            "p.md:4: `max_turns`: must be at most 4294967295, got 5000000000"
        );
    }

    #[test]
    fn an_unknown_tool_is_named_with_its_line() {
        assert_eq!(
            error("name: n\ndescription: d\ntools:\n  - grep\n  - web_search\n"),
            "p.md:6: unknown tool `web_search` (available tools: read_file, write_file, \
             list_files, grep, bash, git_diff)"
        );
        assert_eq!(
            error("name: n\ndescription: d\ntools: [grep, grep]\n"),
            "p.md:4: `tools`: `grep` is listed twice"
        );
    }

    #[test]
    fn invalid_yaml_points_at_the_file_line() {
        let err = read("p.md", "name: n\ndescription: [d\n").unwrap_err();
        let PromptError::Yaml { at, message } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(at.line, Some(4));
        assert!(message.contains("line 4"), "{message}");
        assert!(
            err.to_string().starts_with("p.md:4: invalid frontmatter: "),
            "{err}"
        );
    }

    #[test]
    fn a_frontmatter_that_is_not_a_mapping_is_an_error() {
        assert_eq!(
            error("- name\n"),
            "p.md:2: invalid frontmatter: expected a mapping of keys to values, such as \
             `name: my-prompt`"
        );
    }

    #[test]
    fn shift_lines_moves_every_line_number() {
        assert_eq!(
            shift_lines("bad at line 3 column 2, while at line 1 column 1", 1),
            "bad at line 4 column 2, while at line 2 column 1"
        );
        assert_eq!(shift_lines("no line here", 1), "no line here");
    }
}
