//! Attacker's round three against the outbound wall: texts the wall passes that the
//! forge renders with a mention, a reference, a secret or a link a browser follows, which
//! `forge_renderer.rs`'s oracle (cmark-gfm read by a tokenizer, no tree building, no
//! mentions) cannot see; and ordinary pull-request texts the wall must pass. Each case
//! says why.

use plue_outbound::{Checker, Secrets};

const SECRET: &str = "ghp_R3alS3cretT0kenValue42";
const ALLOWED: &[&str] = &["docs.example.com", "forge.example"];

fn wall() -> Checker {
    Checker::new(&Secrets::from_iter([SECRET]), ALLOWED.iter().copied()).with_repository("o/r")
}

#[test]
fn what_github_mentions_or_links_as_another_repository_is_refused() {
    let wall = wall();
    let passed = [
        // cmark-gfm: a `<style>` HTML block (type 1) runs to `</style>`, escaped by the
        // tag filter, so the back-ticks are literal text and `@admin` is a mention;
        // comrak (0.31) ends the block at `</textarea>` and reads two code spans.
        "<style>\n</textarea>\n`@admin` and `evilcorp/app#1`",
        "<script>\n</textarea>\n`@admin` and `evilcorp/app#1`",
    ]
    .into_iter()
    .filter(|text| wall.check(text).is_ok())
    .collect::<Vec<_>>();
    assert!(passed.is_empty(), "passed: {passed:#?}");
}

#[test]
fn what_a_browser_builds_of_the_html_is_read() {
    let wall = wall();
    let (a, b) = SECRET.split_at(8);
    let passed = [
        // Foster parenting: text inside a `<table>` but outside a cell is moved before the
        // table, right after `a`: a reader sees the secret whole, `junk` after it.
        format!("<div>{a}<table><tr><td>junk</td></tr>{b}</table></div>"),
        // SVG animation sets the link's href (GitHub strips svg; a forge that keeps it
        // does not).
        "<svg><a><animate attributeName=\"href\" values=\"javascript:alert(1)\"/><text y=\"20\">x</text></a></svg>".to_owned(),
        // CSS escapes in `url()` (GitHub strips `style`): `//evil.example/p.png`.
        "<div style=\"background:url(\\2f\\2f evil.example/p.png)\">x</div>".to_owned(),
    ]
    .into_iter()
    .filter(|text| wall.check(text).is_ok())
    .collect::<Vec<_>>();
    assert!(passed.is_empty(), "passed: {passed:#?}");
}

#[test]
fn ordinary_pull_request_texts_pass() {
    let wall = wall();
    let refused = [
        // cmark-gfm links no e-mail here (the domain's last label is digits).
        "Bumps lodash@4.17.21 and react-dom@18.2.0.",
    ]
    .into_iter()
    .filter_map(|fine| wall.check(fine).err().map(|e| format!("{fine:?}: {e:?}")))
    .collect::<Vec<_>>();
    assert!(refused.is_empty(), "refused: {refused:#?}");
}
