//! One URL path segment as the forges' APIs are asked: percent-encoded, so a login, a
//! branch or a repository name from a payload stays one segment and cannot reach another
//! endpoint. Below `lookup` and `auth`, which both build API URLs (neither imports the
//! other for it).

/// `text` as one path segment: everything but unreserved characters percent-encoded, and
/// a dot-segment (`.`, `..`) too, which a URL parser would resolve away.
pub(crate) fn segment(text: &str) -> String {
    if text == "." || text == ".." {
        return text.replace('.', "%2E");
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::segment;

    // The attacker's segments: a path, a query, a fragment, dot-segments and bytes past
    // ASCII each stay one encoded segment.
    #[test]
    fn a_segment_stays_one_segment() {
        assert_eq!(segment("../../admin?x=1#"), "..%2F..%2Fadmin%3Fx%3D1%23");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment("é b"), "%C3%A9%20b");
        assert_eq!(segment("plue-bot_1.x~"), "plue-bot_1.x~");
    }
}
