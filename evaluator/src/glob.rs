//! Trigger globs: the one way a branch, tag or path pattern is compiled, shared by
//! validation and by trigger matching in the engine, so a glob that validates is exactly a
//! glob that matches.
//!
//! GitHub's filter syntax: `*` does not cross `/`, `**` does. Invariants: a pattern is at
//! most [`MAX_GLOB_LEN`] bytes and compiling never panics (`globset`'s
//! `Glob::compile_matcher` panics when the regex outgrows its size limit, so a
//! [`GlobSet`] of one pattern is built instead, which reports that as an error).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Longest accepted pattern, in bytes. Real branch and path globs are far shorter; the
/// bound keeps the compiled regex small.
pub const MAX_GLOB_LEN: usize = 512;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern(GlobSet);

impl Pattern {
    /// Whether `name` (a branch, tag or repository path) matches.
    pub fn is_match(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}

/// Compiles `pattern`; the error is a short reason for a message.
pub fn compile(pattern: &str) -> Result<Pattern, String> {
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    if pattern.len() > MAX_GLOB_LEN {
        return Err(format!(
            "the pattern is {} bytes; the limit is {MAX_GLOB_LEN}",
            pattern.len()
        ));
    }
    let glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| e.kind().to_string())?;
    GlobSetBuilder::new()
        .add(glob)
        .build()
        .map(Pattern)
        .map_err(|e| format!("the pattern is too complex ({})", e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_semantics() {
        let star = compile("release/*").unwrap();
        assert!(star.is_match("release/1.0"));
        assert!(!star.is_match("release/1.0/hotfix"));
        assert!(compile("release/**")
            .unwrap()
            .is_match("release/1.0/hotfix"));
        assert!(compile("release/[").is_err());
        assert!(compile("").is_err());
    }

    // regression: a million `?` passed validation and panicked in trigger matching.
    #[test]
    fn huge_and_complex_patterns_are_errors_not_panics() {
        assert!(compile(&"?".repeat(1_000_000)).is_err());
        let longest = "?".repeat(MAX_GLOB_LEN);
        if let Ok(p) = compile(&longest) {
            assert!(!p.is_match("short"));
        }
        let nested = "{a,{b,{c,{d,{e,f}}}}}".repeat(20);
        let _ = compile(&nested).map(|p| p.is_match("abc"));
    }
}
