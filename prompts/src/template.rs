//! The Handlebars dialect of prompt bodies: strict mode, no HTML escaping, the standard
//! block helpers (`#each`, `#if`, `#unless`, `#with`, …) and `json`.
//!
//! Invariants: a [`Template`] is compiled when its prompt is parsed, so syntax errors
//! surface at `plue prompt check` time; errors carry lines of the whole prompt file, not of
//! the body. In strict mode a variable that is not set is an error naming it
//! (`'{{ focus }}' is not set`), never an empty string — except as the condition of
//! `#if`/`#unless`, where "not set" is simply false. Output is the text as written: a prompt
//! is not HTML, so `<`, `&` and quotes are never escaped.

use handlebars::{
    Context, Handlebars, Helper, HelperResult, JsonTruthy, Output, RenderContext, RenderError,
    RenderErrorReason, TemplateErrorReason,
};
use serde_json::Value;

use crate::error::{Location, PromptError};

/// The name the body is registered under in its own registry.
const TEMPLATE_NAME: &str = "prompt";

/// A compiled prompt body.
pub(crate) struct Template {
    registry: Handlebars<'static>,
    source_name: String,
    /// The file line the body starts on (1-based): body line `n` is file line
    /// `n + body_line - 1`.
    body_line: usize,
}

impl Template {
    /// Compiles `body`, which starts on file line `body_line` of `source_name`.
    pub(crate) fn compile(
        source_name: &str,
        body: &str,
        body_line: usize,
    ) -> Result<Template, PromptError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        registry.register_helper("json", Box::new(json_helper));
        let mut template = Template {
            registry,
            source_name: source_name.to_string(),
            body_line,
        };
        if let Err(e) = template
            .registry
            .register_template_string(TEMPLATE_NAME, body)
        {
            // Handlebars reports an unclosed block at the end of the text, listing every
            // token it could have taken there; point at the opening tag instead.
            if let (TemplateErrorReason::InvalidSyntax(_), Some((name, line))) =
                (e.reason(), unclosed_block(body))
            {
                return Err(PromptError::TemplateSyntax {
                    at: template.at(Some(line)),
                    message: format!("`{{{{#{name}}}}}` is never closed: add `{{{{/{name}}}}}`"),
                });
            }
            return Err(PromptError::TemplateSyntax {
                at: template.at(e.pos().map(|(line, _)| line)),
                message: syntax_message(&e),
            });
        }
        Ok(template)
    }

    /// Renders with `data` (the validated inputs).
    pub(crate) fn render(&self, data: &Value) -> Result<String, PromptError> {
        self.registry
            .render(TEMPLATE_NAME, data)
            .map_err(|e| self.render_error(&e))
    }

    fn render_error(&self, error: &RenderError) -> PromptError {
        let at = self.at(error.line_no);
        match error.reason() {
            RenderErrorReason::MissingVariable(Some(variable)) => PromptError::MissingVariable {
                at,
                variable: variable.clone(),
            },
            RenderErrorReason::MissingVariable(None) => PromptError::Render {
                at,
                message: "a value the template uses is not set".into(),
            },
            other => PromptError::Render {
                at,
                message: other.to_string(),
            },
        }
    }

    /// The file location of body line `line`.
    fn at(&self, line: Option<usize>) -> Location {
        Location::new(&self.source_name, line.map(|l| l + self.body_line - 1))
    }
}

/// The reason of a syntax error, without Handlebars' multi-line source excerpt (the
/// location is reported separately).
fn syntax_message(error: &handlebars::TemplateError) -> String {
    let reason = error.reason().to_string();
    // pest's message repeats the position and draws the line; keep its last line, which
    // says what was expected.
    let lines: Vec<&str> = reason
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => reason,
        [only] => (*only).to_string(),
        [first, .., last] => {
            let first = first.trim_end_matches(|c: char| c == ':' || c.is_whitespace());
            format!("{first}: {}", last.trim_start_matches(['=', ' ']))
        }
    }
}

/// The innermost block (`{{#name ...}}`) of `body` that is never closed, with its body line.
/// `None` when every block is closed, or when the text is too unusual (raw blocks, long
/// comments, a mismatched closing tag) to say — Handlebars' own message is used then.
fn unclosed_block(body: &str) -> Option<(String, usize)> {
    let name = |text: &str| -> String {
        text.trim_start_matches(['>', '*'])
            .split(|c: char| c.is_whitespace() || c == '~')
            .next()
            .unwrap_or("")
            .to_string()
    };
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut line = 1;
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        line += rest[..start].matches('\n').count();
        let escaped = rest[..start].ends_with('\\');
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let tag = &after[..end];
        line += tag.matches('\n').count();
        rest = &after[end + 2..];
        // A raw block, or a long comment whose text may hold `}}`: too unusual to follow.
        if tag.starts_with('{') || tag.starts_with("!--") {
            return None;
        }
        if escaped || tag.starts_with('!') {
            continue;
        }
        let tag = tag.trim_start_matches('~').trim_start();
        if let Some(opened) = tag.strip_prefix('#') {
            open.push((name(opened), line));
        } else if let Some(closed) = tag.strip_prefix('/') {
            match open.pop() {
                Some((opened, _)) if opened == name(closed) => {}
                _ => return None,
            }
        }
    }
    open.pop()
}

/// `{{json value}}`: `value` as compact JSON; `{{json value pretty=true}}` indents it.
fn json_helper(
    helper: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let param = helper
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    if param.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(param.relative_path().cloned()).into());
    }
    let pretty = helper
        .hash_get("pretty")
        .is_some_and(|p| p.value().is_truthy(false));
    let text = if pretty {
        serde_json::to_string_pretty(param.value())
    } else {
        serde_json::to_string(param.value())
    }
    .map_err(RenderErrorReason::from)?;
    out.write(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(body: &str, data: Value) -> Result<String, PromptError> {
        Template::compile("p.md", body, 5)?.render(&data)
    }

    #[test]
    fn each_if_unless_and_with_render() {
        let body = "{{#each files}}- {{this}}\n{{/each}}\
                    {{#if focus}}Focus on {{focus}}.{{/if}}\
                    {{#unless quiet}} Be thorough.{{/unless}}\
                    {{#with pr}} PR #{{number}} by {{author}}.{{/with}}";
        let text = render(
            body,
            json!({"files": ["a.rs", "b.rs"], "focus": "safety", "quiet": false,
                   "pr": {"number": 7, "author": "ada"}}),
        )
        .unwrap();
        assert_eq!(
            text,
            "- a.rs\n- b.rs\nFocus on safety. Be thorough. PR #7 by ada."
        );
    }

    #[test]
    fn if_on_an_unset_variable_is_false_not_an_error() {
        assert_eq!(
            render("a{{#if focus}}F{{else}}-{{/if}}b", json!({})).unwrap(),
            "a-b"
        );
    }

    #[test]
    fn json_renders_values_as_json() {
        let data = json!({"files": ["a.rs", "b \"q\".rs"], "n": 3, "o": {"k": null}});
        assert_eq!(
            render("{{json files}} {{json n}} {{json o}}", data.clone()).unwrap(),
            r#"["a.rs","b \"q\".rs"] 3 {"k":null}"#
        );
        assert_eq!(
            render("{{json o pretty=true}}", data).unwrap(),
            "{\n  \"k\": null\n}"
        );
    }

    #[test]
    fn nothing_is_html_escaped() {
        assert_eq!(
            render("{{code}}", json!({"code": "a < b && c > \"d\""})).unwrap(),
            "a < b && c > \"d\""
        );
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it_and_its_line() {
        let err = render("Hello\nFocus on {{focus}}.", json!({})).unwrap_err();
        assert_eq!(err.to_string(), "p.md:6: '{{ focus }}' is not set");
        let err = render("{{pr.title}}", json!({"pr": {}})).unwrap_err();
        assert_eq!(err.to_string(), "p.md:5: '{{ pr.title }}' is not set");
    }

    #[test]
    fn json_of_a_missing_variable_is_an_error_naming_it() {
        let err = render("x {{json files}}", json!({})).unwrap_err();
        let PromptError::MissingVariable { variable, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(variable, "files");
    }

    #[test]
    fn each_over_a_missing_variable_is_an_error_naming_it() {
        let err = render("{{#each files}}{{this}}{{/each}}", json!({})).unwrap_err();
        let PromptError::MissingVariable { variable, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(variable, "files");
    }

    #[test]
    fn a_mismatched_closing_tag_is_reported_at_compile_time() {
        let Err(err) = Template::compile("p.md", "line one\n{{#if x}}\n{{/each}}", 5) else {
            panic!("compiled")
        };
        assert_eq!(
            err.to_string(),
            "p.md:7: template syntax error: helper \"if\" was opened, but \"each\" is closing"
        );
    }

    #[test]
    fn an_unclosed_block_is_reported_at_its_opening_line() {
        let body = "Files:\n{{#each files}}\n- {{this}}\n{{#if x}}y{{/if}}\nmore\n";
        let Err(err) = Template::compile("p.md", body, 5) else {
            panic!("compiled")
        };
        assert_eq!(
            err.to_string(),
            "p.md:6: template syntax error: `{{#each}}` is never closed: add `{{/each}}`"
        );
    }

    #[test]
    fn unclosed_block_follows_nesting_and_skips_escapes() {
        assert_eq!(
            unclosed_block("{{#if a}}{{#each b}}{{/each}}\n{{#with c}}"),
            Some(("with".into(), 2))
        );
        assert_eq!(unclosed_block("{{#if a}}{{~/if}}"), None);
        assert_eq!(unclosed_block("\\{{#if a}} literal"), None);
        assert_eq!(unclosed_block("{{#if a}}{{/each}}"), None);
        assert_eq!(
            unclosed_block("{{! a comment }}\n{{#unless a}}"),
            Some(("unless".into(), 2))
        );
    }

    #[test]
    fn an_unclosed_expression_names_its_line() {
        let Err(err) = Template::compile("p.md", "ok\n{{foo bar=}}\nok\n", 5) else {
            panic!("compiled")
        };
        assert_eq!(err.location().and_then(|l| l.line), Some(6), "{err}");
    }
}
