//! The closed sets and the comment pattern of issue and comment triggers
//! (`Trigger.on_issue`, `Trigger.on_comment`). Pure.
//!
//! Invariants:
//! - A comment trigger's `pattern` is compiled here, the same way by validation and by the
//!   engine's matching ([`compile_pattern`]): the `regex` crate (linear time in the body,
//!   no backtracking) with bounded compiled and cache sizes, and it is matched against
//!   [`matched_part`] of the body only — its first [`MAX_MATCHED_BYTES`] (GitHub's own
//!   limit on a comment) — so no pattern and no comment can make matching slow or large.
//!   Linear is not enough alone: a Unicode `\b` next to a bounded repetition (e.g.
//!   `(?s).{0,150}\bZ`) leaves the lazy DFA for the NFA simulation, seconds per 5 MiB
//!   (the webhook limit; Gitea sets none of its own).
//! - Action names are GitHub's; Gitea's `label_updated` / `label_cleared` are read as
//!   `labeled` / `unlabeled` by the engine's payload reader, so workflows name one set.

/// Issue actions an `on_issue` trigger may name (GitHub's names).
pub const ISSUE_ACTIONS: [&str; 16] = [
    "opened",
    "edited",
    "deleted",
    "transferred",
    "pinned",
    "unpinned",
    "closed",
    "reopened",
    "assigned",
    "unassigned",
    "labeled",
    "unlabeled",
    "locked",
    "unlocked",
    "milestoned",
    "demilestoned",
];

/// Comment actions an `on_comment` trigger may name.
pub const COMMENT_ACTIONS: [&str; 3] = ["created", "edited", "deleted"];

/// Where a commented thread may be: `on=` of an `on_comment` trigger.
pub const COMMENT_ON: [&str; 2] = ["issue", "pull_request"];

/// The longest `pattern=` accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// The compiled program's bound (the `regex` crate's `size_limit`): a bounded repetition
/// such as `\w{1000}` compiles to thousands of states; past this it is refused.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// The lazy DFA's cache bound per matcher (`dfa_size_limit`).
const PATTERN_DFA_LIMIT: usize = 1024 * 1024;
/// The deepest nesting of groups a pattern may have.
const PATTERN_NEST_LIMIT: u32 = 32;

/// The most of a comment's body a trigger's pattern is matched against, in bytes.
pub const MAX_MATCHED_BYTES: usize = 65_536;

/// The part of `body` a comment trigger's pattern is matched against: its first
/// [`MAX_MATCHED_BYTES`], cut at a character boundary (the rest is still the comment's, in
/// `ctx.comment.body`).
pub fn matched_part(body: &str) -> &str {
    if body.len() <= MAX_MATCHED_BYTES {
        return body;
    }
    let mut end = MAX_MATCHED_BYTES;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

/// A comment trigger's pattern [`compile_pattern`] refused; one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCommentPattern {
    /// Longer than [`MAX_PATTERN_LEN`] bytes; holds its length.
    #[error("comment pattern is {0} bytes; the limit is {MAX_PATTERN_LEN}")]
    TooLong(usize),
    /// Not a regex, or one past the size and nesting limits: the `regex` crate's reason
    /// (the last line of its message).
    #[error(
        "invalid comment pattern '{}': {reason}",
        crate::template::echo(pattern)
    )]
    Invalid { pattern: String, reason: String },
}

/// Compiles a comment trigger's pattern with the limits above.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, BadCommentPattern> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(BadCommentPattern::TooLong(pattern.len()));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_DFA_LIMIT)
        .nest_limit(PATTERN_NEST_LIMIT)
        .build()
        .map_err(|e| {
            let why = e.to_string();
            // The regex crate's message spans several lines (the pattern, a caret, the
            // error); keep its last line, the reason.
            let reason = why.lines().last().unwrap_or("invalid").trim().to_owned();
            BadCommentPattern::Invalid {
                pattern: pattern.to_owned(),
                reason,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_with_limits() {
        let re = compile_pattern(r"^/plue\s+fix\b").unwrap();
        assert!(re.is_match("/plue  fix the bug"));
        assert!(!re.is_match("please /plue fix"));
        let err = compile_pattern("(unclosed").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid comment pattern '(unclosed'"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        // A pattern whose compiled program is huge is refused rather than built.
        let err = compile_pattern(r"\w{1000}\w{1000}\w{1000}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("size limit"), "{err}");
        let err = compile_pattern(&"a".repeat(MAX_PATTERN_LEN + 1)).unwrap_err();
        assert_eq!(err, BadCommentPattern::TooLong(MAX_PATTERN_LEN + 1));
        let err = err.to_string();
        assert!(err.contains("the limit is 1024"), "{err}");
    }

    // The plan's author wrote a pattern within every limit; the attacker's comment is as
    // long as a webhook may be. Matched whole, this took seconds (release build) per
    // workflow per delivery, on the engine's request thread.
    #[test]
    fn a_huge_comment_meets_only_the_start_of_a_slow_pattern() {
        let re = compile_pattern(r"(?s).{0,150}\bZ").unwrap();
        let body = "жжж ЖЖ ".repeat(400 * 1024);
        assert!(body.len() > 4 * 1024 * 1024);
        let part = matched_part(&body);
        assert!(part.len() <= MAX_MATCHED_BYTES && part.len() > MAX_MATCHED_BYTES - 4);
        assert!(body.starts_with(part));
        let started = std::time::Instant::now();
        assert!(!re.is_match(part));
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        // A command at the start still matches; what is past the limit is not looked at.
        let command = format!("/plue fix {body}");
        assert!(compile_pattern(r"^/plue\s+fix\b")
            .unwrap()
            .is_match(matched_part(&command)));
        assert_eq!(matched_part("short"), "short");
        assert!(!compile_pattern("Z$")
            .unwrap()
            .is_match(matched_part(&format!("{body}Z"))));
    }
}
