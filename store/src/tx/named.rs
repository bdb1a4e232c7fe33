//! SQL written with named parameters (`:now`, `:runner`), for the statements long enough
//! that `$3` says nothing to a reader: the names are numbered once, in the order they first
//! appear, into the `$N` text both backends run, and a [`super::Statement`] made with
//! [`super::Statement::named`] binds its values by name ([`super::Statement::set`]).
//!
//! Invariants:
//! - A name is `:` and a lowercase word (`[a-z_]+`) outside quotes and not after another
//!   `:` (PostgreSQL's `::` casts stay as written).
//! - A statement runs only with a value set for every name its backend's text has; a value
//!   set for a name the text lacks is not bound (PostgreSQL refuses a value past its
//!   placeholders).
//! - The numbered text is made once per statement and kept for the process's life.

use std::sync::OnceLock;

/// A statement's SQL with named parameters.
pub(crate) struct NamedSql {
    text: &'static str,
    numbered: OnceLock<Numbered>,
}

impl std::fmt::Debug for NamedSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text)
    }
}

/// The `$N` text and the names in the order of their numbers.
struct Numbered {
    sql: String,
    names: Vec<&'static str>,
}

impl NamedSql {
    pub(crate) const fn new(text: &'static str) -> NamedSql {
        NamedSql {
            text,
            numbered: OnceLock::new(),
        }
    }

    fn numbered(&self) -> &Numbered {
        self.numbered
            .get_or_init(|| numbered(self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text)))
    }

    /// The SQL with each `:name` replaced by `$N`.
    pub(crate) fn sql(&'static self) -> &'static str {
        &self.numbered().sql
    }

    /// The names, `$1` first.
    pub(crate) fn names(&'static self) -> &'static [&'static str] {
        &self.numbered().names
    }
}

/// `text` with its named parameters numbered in the order they first appear.
fn numbered(text: &'static str) -> Result<Numbered, String> {
    let mut sql = String::with_capacity(text.len());
    let mut names: Vec<&'static str> = Vec::new();
    let bytes = text.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            quoted = !quoted;
        }
        let starts_name = !quoted
            && c == b':'
            && bytes.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())
            && (i == 0 || bytes[i - 1] != b':');
        if !starts_name {
            // Whole UTF-8 sequences: only ASCII bytes start a name.
            let width = text[i..].chars().next().map_or(1, char::len_utf8);
            sql.push_str(&text[i..i + width]);
            i += width;
            continue;
        }
        let end = bytes[i + 1..]
            .iter()
            .position(|b| !(b.is_ascii_lowercase() || *b == b'_'))
            .map_or(bytes.len(), |n| i + 1 + n);
        let name = &text[i + 1..end];
        let place = match names.iter().position(|n| *n == name) {
            Some(place) => place,
            None => {
                names.push(name);
                names.len() - 1
            }
        };
        sql.push_str(&format!("${}", place + 1));
        i = end;
    }
    if quoted {
        return Err("a quote is not closed".to_string());
    }
    Ok(Numbered { sql, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_numbered_in_the_order_they_first_appear() {
        let numbered = numbered(
            "SELECT :b, :a::text, x::bigint, ':not_a_name' FROM t WHERE c = :b_c AND d = :b",
        )
        .unwrap();
        assert_eq!(
            numbered.sql,
            "SELECT $1, $2::text, x::bigint, ':not_a_name' FROM t WHERE c = $3 AND d = $1"
        );
        assert_eq!(numbered.names, ["b", "a", "b_c"]);
    }

    #[test]
    fn an_unclosed_quote_is_refused_and_text_past_ascii_is_kept_whole() {
        assert!(numbered("SELECT ':a").is_err());
        let numbered = numbered("SELECT 'é' || :a").unwrap();
        assert_eq!(numbered.sql, "SELECT 'é' || $1");
    }
}
