//! The wall played as the attacker: a secret, a link or a mention spelt so that only the
//! forge's renderer shows it.

use super::*;

const SECRET: &str = "ghp_S3cretT0kenValue42";

fn checker() -> Checker {
    Checker::new(
        &Secrets::from_iter([SECRET]),
        ["github.com", "plue.example"],
    )
}

#[test]
fn a_secret_is_found_however_the_forge_would_show_it() {
    let c = checker();
    let (head, tail) = SECRET.split_at(6);
    let hidden = [
        SECRET.to_owned(),
        format!("{head}<!-- x -->{tail}"),
        format!("{head}<!---->{tail}"),
        format!("{head}<b></b>{tail}"),
        format!("{head}<span title='>'>{tail}"),
        format!("{head}\u{200b}{tail}"),
        format!("{head}\u{ad}{tail}"),
        format!("{head}&shy;{tail}"),
        format!("{head}&ZeroWidthSpace;{tail}"),
        format!("{head}\u{2060}{tail}"),
        format!("{head}\u{fe0f}{tail}"),
        format!("{head}**{tail}"),
        format!("{head}&#x000000000{:x};{}", tail.as_bytes()[0], &tail[1..]),
        format!("{head}&#0000000000{}{}", tail.as_bytes()[0], &tail[1..]),
        format!("{head}%{:02x}{}", tail.as_bytes()[0], &tail[1..]),
        SECRET.chars().rev().collect(),
        hex::encode(SECRET),
        hex::encode_upper(SECRET),
        SECRET
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .map(char::from)
            .collect(),
        SECRET
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .map(char::from)
            .collect(),
    ];
    for text in hidden {
        assert!(
            c.secret_in(&format!("see {text} here")).is_some(),
            "not found in {text:?}"
        );
        assert!(
            matches!(c.check(&text), Err(Refusal::Secret(_))),
            "passed: {text:?}"
        );
    }
    assert_eq!(c.secret_in("nothing secret here"), None);
}

#[test]
fn base64_of_a_secret_is_found_at_every_alignment() {
    use base64::Engine;
    let c = checker();
    for prefix in ["", "a", "ab"] {
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
        ] {
            let text = engine.encode(format!("{prefix}{SECRET}!"));
            assert!(c.secret_in(&text).is_some(), "{prefix:?}: {text}");
        }
    }
}

#[test]
fn a_diff_cut_over_added_lines_holds_the_secret_joined() {
    let c = checker();
    let (head, tail) = SECRET.split_at(9);
    let diff = format!("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -0,0 +1,2 @@\n+{head}\n+{tail}\n");
    // Its letters and digits alone hold it too (what a reader reads of it).
    assert!(c.secret_in(&diff).is_some());
    assert!(c.secret_in_diff(&diff).is_some());
    assert!(c.check_diff(&diff).is_err());
}

#[test]
fn links_and_mentions_are_found_however_spelt() {
    let c = checker();
    let foreign = [
        "![x](https://evil.example/a.png)",
        "<img src=\"//evil.example/p\">",
        "<img src='https:\\\\evil.example'>",
        "&#x0000000068;ttps://evil.example/",
        "&#000000000104;ttps://evil.example/",
        "h<b></b>ttps://evil.example",
        "ht\ttps://evil.example",
        "https&colon;//evil.example",
        "https:evil.example",
        "www.evil.example",
        "https://github.com.evil.example/x",
        "https://user@evil.example/",
    ];
    for text in foreign {
        match c.check(text) {
            Err(Refusal::Link { host }) => assert!(host.ends_with("evil.example"), "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    for text in [
        "ping @admin",
        "&#64;admin",
        "&commat;admin",
        "@<!-- -->admin",
    ] {
        assert!(
            matches!(c.check(text), Err(Refusal::Mention { .. })),
            "{text}"
        );
    }
    // Too long for CommonMark's references (seven digits at most): the forge shows it as
    // it is, and notifies nobody.
    assert!(c.check("&#x00000000040;admin").is_ok());
    for fine in [
        "see https://github.com/acme/app/pull/3",
        "run https://plue.example/runs/7",
        "mail me at a@github.com",
        "a < b and c > d",
    ] {
        assert!(c.check(fine).is_ok(), "{fine}");
    }
}

#[test]
fn redacting_masks_removes_and_defuses_and_passes_the_check() {
    let c = checker();
    let cases = [
        (
            format!("the diff changes \"{SECRET}\""),
            "the diff changes \"***\"",
        ),
        (
            "see ![x](https://evil.example/a.png) @admin".to_owned(),
            "see ![x]([link removed]/a.png) @admin",
        ),
        ("&amp;#64;admin".to_owned(), "@admin"),
        ("<!-- hidden -->plain".to_owned(), "plain"),
    ];
    for (text, want) in cases {
        let redacted = c.redact(&text);
        assert_eq!(redacted.as_str(), want);
        // Mentions are kept for readers; a forge gets them defused or quoted.
        let defused = redacted.defused();
        assert!(c.check(defused.as_str()).is_ok(), "{defused:?}");
        assert!(!defused.as_str().contains('@'), "{defused:?}");
        let quoted = redacted.code_span();
        assert!(c.secret_in(quoted.as_str()).is_none(), "{quoted:?}");
    }
    // Only a decoded view shows it, and it cannot be masked where it stands.
    let (head, tail) = SECRET.split_at(6);
    let split = format!("x {head}%{:02X}{} y", tail.as_bytes()[0], &tail[1..]);
    assert_eq!(c.redact(&split).as_str(), WITHHELD);
    // Split by markup: masked once shown.
    let tagged = format!("x {head}<i></i>{tail} y");
    assert_eq!(c.redact(&tagged).as_str(), "x *** y");
}

#[test]
fn a_code_span_quotes_any_text() {
    let c = checker();
    let quoted = c.redact("a `b` ``c``\nd").code_span();
    assert_eq!(quoted.as_str(), "```a `b` ``c`` d```");
    assert_eq!(c.redact("`x").code_span().as_str(), "`` `x ``");
    assert_eq!(c.redact("").code_span().as_str(), "` `");
}

#[test]
fn secrets_never_print() {
    let secrets = Secrets::from_iter([SECRET]);
    assert!(!format!("{secrets:?}").contains(SECRET));
    assert!(!format!("{:?}", Checker::new(&secrets, ["h"])).contains(SECRET));
}

#[test]
fn short_secrets_are_not_looked_for() {
    let c = Checker::new(&Secrets::from_iter(["abc", "abcd"]), Vec::<String>::new());
    assert_eq!(c.secret_in("xabcx"), None);
    assert!(c.secret_in("xabcdx").is_some());
}

#[test]
fn the_host_of_a_url() {
    assert_eq!(
        host_of("https://GitHub.com/a/b").as_deref(),
        Some("github.com")
    );
    assert_eq!(
        host_of("http://u:p@h.example:8080/x").as_deref(),
        Some("h.example")
    );
    assert_eq!(host_of("http://[::1]:3000").as_deref(), Some("::1"));
    assert_eq!(host_of("nothing"), None);
}

#[test]
fn masking_changes_only_the_secrets() {
    let c = checker();
    let text = format!(
        "<b>{SECRET}</b> and {} @admin https://evil.example",
        hex::encode(SECRET)
    );
    assert_eq!(
        c.mask(&text).as_str(),
        "<b>***</b> and *** @admin https://evil.example"
    );
    let (head, tail) = SECRET.split_at(6);
    assert_eq!(c.mask(&format!("{head}&shy;{tail}")).as_str(), WITHHELD);
}

#[test]
fn a_log_line_has_its_spellings_masked_and_nothing_else() {
    let c = checker();
    assert_eq!(c.mask_spellings("nothing here"), None);
    let reversed: String = SECRET.chars().rev().collect();
    assert_eq!(
        c.mask_spellings(&format!("token={SECRET} rev={reversed} <b>x</b>"))
            .as_deref(),
        Some("token=*** rev=*** <b>x</b>")
    );
    assert!(!Checker::new(&Secrets::new(), ["h"]).has_secrets());
}
