//! Percent-encoding for the links the API and the dashboard build. A path segment or a
//! query value keeps only the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`);
//! every other byte is `%XX`, so no value can end its segment, start a query or add a
//! parameter of its own.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Every byte but RFC 3986's unreserved ones.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` as a path segment or query value: every byte but the unreserved ones as `%XX`.
pub(crate) fn encode(text: &str) -> String {
    utf8_percent_encode(text, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(encode("a-Z_0.9~"), "a-Z_0.9~");
        assert_eq!(encode("a b/c?d&e=f#%"), "a%20b%2Fc%3Fd%26e%3Df%23%25");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
