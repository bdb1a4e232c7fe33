//! Built-in prompts, compiled into the binary from `prompts/builtin/*.md` and referred to
//! as `builtin:NAME`.
//!
//! Invariants: each built-in parses (tests parse and render every one), its frontmatter
//! `name` is its `NAME`, and [`builtin_names`] is sorted.

use crate::Prompt;

/// `(name, text)` of every built-in prompt, sorted by name.
const BUILTINS: [(&str, &str); 2] = [
    ("bug-fix", include_str!("../builtin/bug-fix.md")),
    ("code-review", include_str!("../builtin/code-review.md")),
];

/// The built-in prompt called `name` (without the `builtin:` prefix), if there is one.
pub fn builtin(name: &str) -> Option<Prompt> {
    let (name, text) = BUILTINS.iter().find(|(known, _)| *known == name)?;
    let source_name = format!("{}{name}", crate::BUILTIN_PREFIX);
    // A built-in that does not parse is a bug in this crate, caught by the tests below.
    Some(
        Prompt::parse(&source_name, text)
            .unwrap_or_else(|e| panic!("built-in prompt {source_name} is invalid: {e}")),
    )
}

/// The names of the built-in prompts, sorted.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(name, _)| *name).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::TOOLS;

    fn inputs(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn names_are_sorted_and_match_the_frontmatter() {
        let names = builtin_names();
        assert_eq!(names, ["bug-fix", "code-review"]);
        for name in names {
            let prompt = builtin(name).unwrap();
            assert_eq!(prompt.name, name);
            assert_eq!(prompt.source_name(), format!("builtin:{name}"));
            assert!(!prompt.description.is_empty());
            for tool in prompt.tools.iter().flatten() {
                assert!(TOOLS.contains(&tool.as_str()), "{tool}");
            }
        }
        assert!(builtin("nope").is_none());
    }

    #[test]
    fn code_review_renders_with_files_and_defaults() {
        let prompt = builtin("code-review").unwrap();
        let text = prompt
            .render(&inputs(json!({"files": ["src/lib.rs", "src/main.rs"]})))
            .unwrap();
        assert!(text.contains("- `src/lib.rs`\n- `src/main.rs`\n"), "{text}");
        assert!(text.contains("correctness"), "{text}");
        assert!(!text.contains("{{"), "{text}");

        let text = prompt
            .render(&inputs(json!({
                "files": ["a.py"],
                "focus": "security",
                "base": "origin/main",
                "context": "Adds a login form."
            })))
            .unwrap();
        assert!(text.contains("security"), "{text}");
        assert!(text.contains("origin/main"), "{text}");
        assert!(text.contains("Adds a login form."), "{text}");
    }

    #[test]
    fn code_review_requires_files() {
        let err = builtin("code-review")
            .unwrap()
            .render(&Map::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "builtin:code-review: input `/files`: is required but was not given"
        );
    }

    #[test]
    fn bug_fix_renders_with_an_issue() {
        let prompt = builtin("bug-fix").unwrap();
        let text = prompt
            .render(&inputs(json!({
                "issue": "Saving a file with a space in its name fails with ENOENT.",
                "test_command": "cargo test",
                "files": ["src/save.rs"]
            })))
            .unwrap();
        assert!(
            text.contains("Saving a file with a space in its name fails with ENOENT."),
            "{text}"
        );
        assert!(text.contains("`cargo test`"), "{text}");
        assert!(text.contains("- `src/save.rs`"), "{text}");

        let minimal = prompt
            .render(&inputs(json!({"issue": "Crash on start."})))
            .unwrap();
        assert!(minimal.contains("Crash on start."), "{minimal}");
        assert!(!minimal.contains("src/save.rs"), "{minimal}");
    }
}
