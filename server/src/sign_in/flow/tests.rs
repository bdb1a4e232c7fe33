//! Tests of `flow`: `plue login`'s redirect is the loopback's only, and the signed-in page
//! escapes what it shows.

use super::*;

fn query(redirect: &str, state: &str, challenge: &str) -> StartQuery {
    StartQuery {
        next: None,
        cli_redirect: Some(redirect.into()),
        cli_state: Some(state.into()),
        cli_challenge: Some(challenge.into()),
    }
}

#[test]
fn plue_login_redirects_only_to_the_loopback() {
    let challenge = pkce::challenge(&pkce::random().unwrap());
    assert!(
        cli_request(&query("http://127.0.0.1:4711/callback", "s", &challenge))
            .unwrap()
            .is_some()
    );
    assert!(cli_request(&query("http://[::1]:4711/callback", "s", &challenge)).is_ok());
    for hostile in [
        "http://evil.example:4711/callback",
        "https://127.0.0.1:4711/callback",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:4711/elsewhere",
        "http://127.0.0.1:4711/callback?x=1",
        "http://u@127.0.0.1:4711/callback",
        "http://localhost:4711/callback",
        "http://127.0.0.2:4711/callback",
    ] {
        assert!(
            cli_request(&query(hostile, "s", &challenge)).is_err(),
            "{hostile}"
        );
    }
    assert!(cli_request(&query("http://127.0.0.1:4711/callback", "s", "plain")).is_err());
    assert!(cli_request(&query("http://127.0.0.1:4711/callback", "", &challenge)).is_err());
    let partial = StartQuery {
        next: None,
        cli_redirect: Some("http://127.0.0.1:1/callback".into()),
        cli_state: None,
        cli_challenge: None,
    };
    assert!(cli_request(&partial).is_err());
}

#[test]
fn the_signed_in_page_escapes() {
    let page = signed_in_page("a<b", "/runs?x=\"1\"&y=<");
    assert!(page.contains("a&lt;b"));
    assert!(page.contains("url=/runs?x=&quot;1&quot;&amp;y=&lt;"));
}
