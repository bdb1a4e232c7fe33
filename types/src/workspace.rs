//! What the engine and the runner agree on about workspaces: the tag that keeps the
//! engine's data directory out of every workspace copy, and git source URLs as shown.
//!
//! Invariant: a URL [`without_credentials`] returns never holds the user information of
//! its authority; everything else of it is kept as written.

/// The first line of a `CACHEDIR.TAG` (bford.info/cachedir): the engine puts one in its data
/// directory, so no workspace copy ever takes the database, mirrors or runner logs along,
/// wherever the data directory sits.
pub const CACHEDIR_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

/// `url` with the user information of its authority (`https://user:token@host/…`: how a
/// private repository's clone credentials are often given) shown as `***`: for every
/// message about a git source, which reaches a step's readers (its failure reason), a
/// dispatcher or the forge — never the credentials.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_of_the_authority_are_hidden_and_nothing_else() {
        assert_eq!(
            without_credentials("https://bot:s3cr3t@forge/acme/app.git"),
            "https://***@forge/acme/app.git"
        );
        assert_eq!(
            without_credentials("https://a@b@forge:8443/x?y#z"),
            "https://***@forge:8443/x?y#z"
        );
        // No scheme (scp-like) or an `@` past the authority: kept as written.
        assert_eq!(
            without_credentials("git@forge:a/b.git"),
            "git@forge:a/b.git"
        );
        assert_eq!(
            without_credentials("https://forge/a@b/c.git"),
            "https://forge/a@b/c.git"
        );
    }
}
