//! [`Token`]: a forge credential in memory — a repository's personal token or an App's
//! installation access token.
//!
//! Invariants: the text is zeroized when the last copy is dropped, never printed by
//! `Debug` or `Display` (both say `Token(***)`), and read only through
//! [`Token::expose`], at the one place that puts it into a request header or a git
//! `http.extraHeader`.

use std::sync::Arc;

use zeroize::Zeroizing;

/// A bearer credential; cheap to clone (shared, zeroized when the last clone drops).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<Zeroizing<String>>);

impl Token {
    pub fn new(text: String) -> Token {
        Token(Arc::new(Zeroizing::new(text)))
    }

    /// The secret text, for an `Authorization` header (or git's extra header) only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}
