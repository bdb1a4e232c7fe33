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

/// Why a pattern does not compile; shown as a short reason after the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("empty pattern")]
    Empty,
    /// Longer than [`MAX_GLOB_LEN`] bytes; holds its length.
    #[error("the pattern is {0} bytes; the limit is {MAX_GLOB_LEN}")]
    TooLong(usize),
    /// Not glob syntax (an unclosed class or alternation, a bad range).
    #[error("{0}")]
    Syntax(globset::ErrorKind),
    /// Valid, but its regex outgrows the size limit.
    #[error("the pattern is too complex ({0})")]
    TooComplex(globset::ErrorKind),
}

/// Compiles `pattern`.
pub fn compile(pattern: &str) -> Result<Pattern, GlobError> {
    if pattern.is_empty() {
        return Err(GlobError::Empty);
    }
    if pattern.len() > MAX_GLOB_LEN {
        return Err(GlobError::TooLong(pattern.len()));
    }
    let glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| GlobError::Syntax(e.kind().clone()))?;
    GlobSetBuilder::new()
        .add(glob)
        .build()
        .map(Pattern)
        .map_err(|e| GlobError::TooComplex(e.kind().clone()))
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
        assert!(matches!(compile("release/["), Err(GlobError::Syntax(_))));
        assert_eq!(compile("").unwrap_err(), GlobError::Empty);
        assert_eq!(
            compile(&"?".repeat(MAX_GLOB_LEN + 1))
                .unwrap_err()
                .to_string(),
            "the pattern is 513 bytes; the limit is 512"
        );
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
