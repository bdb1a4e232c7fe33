//! The wall played as the attacker, round two: texts an agent controls, spelt so that a
//! secret of the run, a link to another host or a mention gets through, and inputs made
//! to make the wall slow.

use super::*;
use std::time::{Duration, Instant};

const SECRET: &str = "ghp_S3cretT0kenValue42";
const HEX_SECRET: &str = "0123456789abcdef0123456789abcdef01234567";

fn checker() -> Checker {
    Checker::new(
        &Secrets::from_iter([SECRET, HEX_SECRET]),
        ["github.com", "plue.example"],
    )
}

fn refused_as_link(c: &Checker, text: &str) {
    match c.check(text) {
        Err(Refusal::Link { host }) => assert!(!c.allows_host(&host), "{text}: {host}"),
        // A link the URL parser cannot read is refused rather than guessed.
        Err(Refusal::Unreadable) => {}
        other => panic!("{text:?} passed as a link: {other:?}"),
    }
    let redacted = c.redact(text);
    let allowed = |host: &str| c.allows_host(host);
    assert!(
        links::foreign_links(redacted.as_str(), &allowed).is_empty(),
        "{text:?} redacted to {redacted:?}"
    );
    let quoted = redacted.code_span();
    assert!(
        c.check(quoted.as_str()).is_ok(),
        "{text:?} quoted {quoted:?}"
    );
}

#[test]
fn links_however_spelt_are_refused() {
    let c = checker();
    for text in [
        "<https://evil.example/a>",
        "<HTTPS://EVIL.example/a>",
        "[x]: https://evil.example/p.png\n\n![x][x]",
        "[x]: //evil.example/p.png\n\n![x][x]",
        "[x]:\t//evil.example/p.png",
        "[x]://evil.example/p.png\n\n![x][x]",
        "[x]:\\\\evil.example/p.png",
        "[x]:<//evil.example/p.png>",
        "![x](/\\evil.example/p.png)",
        "![x](\\/evil.example/p.png)",
        "![x](///evil.example/p.png)",
        "![x](https:/&NewLine;/evil.example/p.png)",
        "![x](https:&#x2F;&#x2F;evil.example/p.png)",
        "![x](https:&sol;&sol;evil.example/p.png)",
        "![x](HtTpS://evil.example/p.png)",
        "![x](http://xn--evil-9ta.example/p.png)",
        "![x](http://2130706433/p.png)",
        "![x](http://0x7f000001/p.png)",
        "![x](http://[::1]/p.png)",
        "<img srcset=\"a.png 1x,//evil.example/b.png 2x\">",
        "<img src=\"&#10;//evil.example/p.png\">",
        "https://github.com@evil.example/",
        "https://github.com:443@evil.example/",
        "https://github.com.evil.example/",
        "https://evil.example\\@github.com/",
        "https://evil.example#@github.com/",
        "https://evil.example?@github.com/",
        "httpſ://evil.example/",
    ] {
        refused_as_link(&c, text);
    }
    // The hosts allowed, however spelt.
    for fine in [
        "https://GitHub.com/acme/app",
        "https://github.com./acme/app",
        "https://github.com:443/acme/app",
        "https://u@github.com/acme/app",
        // A browser reads `evil.example%2f` as the user, the host is github.com.
        "https://evil.example%2f@github.com/",
    ] {
        assert!(c.check(fine).is_ok(), "{fine}");
    }
    let more = c.allowing(["Evil.Example."]);
    assert!(more.check("https://evil.example/x").is_ok());
    assert!(more.allows_host("EVIL.example."));
}

#[test]
fn links_of_other_schemes_are_refused() {
    // Only `http`/`https` (and `mailto:` an allowed host) pass: a `mailto:` the attacker
    // reads is a phishing lure in the engine's voice, and what a sanitiser would drop is
    // not left to it.
    let c = checker();
    for (text, scheme) in [
        ("[x](javascript:alert(1))", "javascript"),
        ("<a href=\"java&#9;script:x\">x</a>", "javascript"),
        ("<a href=\"&#x6a;avascript:x\">x</a>", "javascript"),
        ("![x](data:image/png;base64,AAAA)", "data"),
        ("[x](ftp://github.com/x)", "ftp"),
        ("[x](vbscript:x)", "vbscript"),
    ] {
        assert_eq!(
            c.check(text),
            Err(Refusal::Scheme {
                scheme: scheme.into()
            }),
            "{text}"
        );
    }
    for text in [
        "[mail](mailto:support@evil.example)",
        "<mailto:support@evil.example>",
        "write to support@evil.example",
        "<a href=\"MAILTO:x@EVIL.example?subject=hi\">x</a>",
    ] {
        assert_eq!(
            c.check(text),
            Err(Refusal::Link {
                host: "evil.example".into()
            }),
            "{text}"
        );
    }
    assert!(c.check("write to support@github.com").is_ok());
}

#[test]
fn a_backslash_in_a_link_is_read_as_the_renderer_and_the_browser_read_it() {
    // `docs.example.com\.evil.example` renders as a link to `docs.example.com.evil.example`:
    // a hand-written scan stopped the host at the backslash.
    let c = checker().allowing(["docs.example.com"]);
    for text in [
        "[l](https://docs.example.com\\.evil.example/x)",
        "![l](https://docs.example.com\\.evil.example/p.png)",
        "[r]: https://docs.example.com\\.evil.example/x\n\nsee [r]",
    ] {
        assert_eq!(
            c.check(text),
            Err(Refusal::Link {
                host: "docs.example.com.evil.example".into()
            }),
            "{text}"
        );
    }
    // In an autolink or a bare URL it stays in the link, percent-encoded: no browser can
    // follow it, and the wall does not guess.
    for text in [
        "<https://docs.example.com\\.evil.example/x>",
        "see https://docs.example.com\\.evil.example/x",
    ] {
        assert!(c.check(text).is_err(), "{text}");
    }
}

#[test]
fn markup_commonmark_shows_as_text_hides_no_secret() {
    // What the old wall stripped as markup, CommonMark (and GitHub) shows as text: a
    // secret cut by `<b></b>` inside it reads whole.
    let c = checker();
    let (a, b) = SECRET.split_at(7);
    for text in [
        format!("<!x> {a}<b></b>{b}"),
        format!("<!x {a}<b></b>{b}>"),
        format!("a <?x {a}<b></b>{b}>"),
        format!("a <!-- unclosed {a}<b></b>{b}"),
        format!("a <!-- -- {a}<b></b>{b} --> b"),
        format!("a <!--> {a}<b></b>{b} -->"),
    ] {
        assert!(
            matches!(c.check(&text), Err(Refusal::Secret(_))),
            "{text}: {:?}",
            c.check(&text)
        );
    }
}

#[test]
fn references_to_other_repositories_are_refused_but_the_runs_own() {
    let c = checker().with_repository("Acme/App");
    for text in [
        "see other/repo#12",
        "fixed in other/repo@abcdef1",
        "x (evil/r!3)",
    ] {
        assert!(
            matches!(c.check(text), Err(Refusal::Reference { .. })),
            "{text}: {:?}",
            c.check(text)
        );
    }
    for fine in [
        "closes #12 and acme/app#13",
        "`other/repo#12` in code",
        "a path src/lib.rs#L12 and a/b#c",
    ] {
        assert!(c.check(fine).is_ok(), "{fine}: {:?}", c.check(fine));
    }
}

#[test]
fn mentions_as_github_finds_them_are_refused() {
    // GitHub's mention filter: an `@` after the start of a text node or any character
    // but an ASCII letter, digit or `_`.
    let c = checker();
    for text in [
        "x.@admin",
        "x-@admin",
        "é@admin",
        "a\u{200b}@admin",
        "a&#8203;@admin",
        "a&ZeroWidthSpace;@admin",
        "a<b></b>@admin",
        "a**@admin**",
        "(@admin)",
        "@acme/owners",
    ] {
        assert!(
            matches!(c.check(text), Err(Refusal::Mention { .. })),
            "{text}: {:?}",
            c.check(text)
        );
        let defused = c.redact(text).defused();
        assert!(
            c.check(defused.as_str()).is_ok(),
            "{text}: defused {defused:?}"
        );
        let quoted = c.redact(text).code_span();
        assert!(c.check(quoted.as_str()).is_ok(), "{text}: {quoted:?}");
    }
    for fine in ["a_@b", "x1@y", "`@admin` in code"] {
        assert!(c.check(fine).is_ok(), "{fine}");
    }
}

#[test]
fn a_secret_in_another_case_is_found() {
    let c = checker();
    let upper_hex = HEX_SECRET.to_ascii_uppercase();
    let mixed_hex: String = hex::encode(SECRET)
        .chars()
        .enumerate()
        .map(|(i, ch)| {
            if i % 2 == 0 {
                ch.to_ascii_uppercase()
            } else {
                ch
            }
        })
        .collect();
    for text in [upper_hex, mixed_hex] {
        assert!(c.secret_in(&text).is_some(), "{text}");
        assert!(matches!(c.check(&text), Err(Refusal::Secret(_))), "{text}");
        let masked = c.mask(&format!("x {text} y"));
        assert!(c.secret_in(masked.as_str()).is_none(), "{masked:?}");
        assert!(!masked.as_str().contains(&text), "{masked:?}");
        let redacted = c.redact(&format!("x {text} y"));
        assert!(!redacted.as_str().contains(&text), "{redacted:?}");
    }
    assert_eq!(
        c.redact(&format!("a {} b", HEX_SECRET.to_ascii_uppercase()))
            .as_str(),
        "a *** b"
    );
}

#[test]
fn a_secret_cut_by_markdown_a_reader_does_not_see_is_found() {
    let c = checker();
    let (head, tail) = SECRET.split_at(6);
    let hex = hex::encode(SECRET);
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("token={SECRET}\n"))
    };
    let spaced_hex: Vec<String> = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    for text in [
        // A link's text: `gh` then a link reading `p_S3…`.
        format!("{head}[{tail}]()"),
        format!("{head}[{tail}](#)"),
        // A hard line break or a table's cells.
        format!("{head}\\\n{tail}"),
        format!("| {head} | {tail} |\n|---|---|"),
        // Spaced, wrapped.
        SECRET.chars().map(|ch| format!("{ch} ")).collect(),
        spaced_hex.join(" "),
        format!("{}\n{}", &hex[..10], &hex[10..]),
        format!("{}\n{}", &b64[..11], &b64[11..]),
    ] {
        assert!(c.secret_in(&text).is_some(), "{text:?}");
        assert!(
            matches!(c.check(&text), Err(Refusal::Secret(_))),
            "{text:?}"
        );
        let redacted = c.redact(&text);
        assert!(
            c.secret_in(redacted.as_str()).is_none(),
            "{text:?}: {redacted:?}"
        );
        let masked = c.mask(&text);
        assert!(
            c.secret_in(masked.as_str()).is_none(),
            "{text:?}: {masked:?}"
        );
    }
}

#[test]
fn secrets_with_special_characters_are_masked_whole() {
    let odd = "p.*a+s(s)[w]{o}r?d$^|\\1";
    let c = Checker::new(&Secrets::from_iter([odd, "pass"]), ["github.com"]);
    assert_eq!(c.mask(&format!("x {odd} y")).as_str(), "x *** y");
    assert!(c.check(&format!("x {odd} y")).is_err());
    // A shorter secret inside a longer one leaves nothing of the longer.
    let c = Checker::new(&Secrets::from_iter(["abcd", "xxabcdyy"]), ["github.com"]);
    assert_eq!(c.mask("1 xxabcdyy 2").as_str(), "1 *** 2");
}

#[test]
fn redacting_is_idempotent_and_its_quote_passes_inside_any_text() {
    let c = checker();
    let nasty = [
        format!("``` {SECRET} ```"),
        "a `` b ` c".to_owned(),
        "`".to_owned(),
        "x\r\ny\u{2028}z\u{85}w".to_owned(),
        "<https://github.com/`> ![x](https://evil.example/`)".to_owned(),
        "[x]: https://evil.example\n![x][x]".to_owned(),
        "@admin `@team`".to_owned(),
        "&amp;#64;admin".to_owned(),
        "&amp;lt;img src=//evil.example&amp;gt;".to_owned(),
    ];
    for text in nasty {
        let once = c.redact(&text);
        let twice = c.redact(once.as_str());
        assert_eq!(once, twice, "{text:?}");
        let quoted = once.code_span();
        for outer in [
            format!("Why: {quoted}"),
            format!("- Step {quoted} failed: {quoted}"),
            format!("{quoted}\n{quoted}"),
            format!("| a | {quoted} |"),
        ] {
            assert!(c.check(&outer).is_ok(), "{text:?}: {outer:?}");
        }
        let defused = once.defused();
        assert!(c.check(defused.as_str()).is_ok(), "{text:?}: {defused:?}");
    }
}

/// The shortest of three runs of `f`: what `f` costs, not what the machine was busy with.
fn fastest(f: &mut impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .min()
        .expect("three runs")
}

/// Refuses a quadratic `work`: it runs on a text of `SMALL` bytes and on one sixteen times
/// as long (`make(n)` builds a text of about `n` bytes). A linear loop takes about sixteen
/// times as long on the longer text, a quadratic one 256 times. The bound is a ratio, not a
/// duration, so a slow or busy machine (a debug build on CI) neither fails it nor hides a
/// quadratic loop; the longer text is timed again only when the first ratio is over the
/// bound.
fn scales_linearly(what: &str, make: impl Fn(usize) -> String, work: impl Fn(&str)) {
    const SMALL: usize = 16 << 10;
    const FACTOR: usize = 16;
    // Five times linear: linear loops measured up to 3.5 times linear on a loaded machine
    // (caches, the allocator), a quadratic loop is over three times the bound.
    const BOUND: f64 = 5.0 * FACTOR as f64;
    let (small, large) = (make(SMALL), make(SMALL * FACTOR));
    let small_took = fastest(&mut || work(&small)).max(Duration::from_micros(50));
    let mut large_took = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        work(&large);
        large_took = large_took.min(started.elapsed());
        if large_took.as_secs_f64() / small_took.as_secs_f64() < BOUND {
            return;
        }
    }
    panic!(
        "{what}: {} bytes took {small_took:?}, {} bytes {large_took:?} — {:.1}× for {FACTOR}× \
         the text, more than linear",
        small.len(),
        large.len(),
        large_took.as_secs_f64() / small_took.as_secs_f64()
    );
}

#[test]
#[should_panic(expected = "more than linear")]
fn the_linear_time_check_refuses_a_quadratic_loop() {
    // Every 256th byte scans the rest of the text: quadratic, as the loops it guards were.
    scales_linearly(
        "a quadratic loop",
        |n| "x".repeat(n),
        |text| {
            let scanned: usize = (0..text.len())
                .step_by(256)
                .map(|i| text.as_bytes()[i..].iter().filter(|b| **b == b'x').count())
                .sum();
            std::hint::black_box(scanned);
        },
    );
}

/// A pattern's name and how to make a text of about `n` bytes of it.
type Pattern = (&'static str, fn(usize) -> String);

#[test]
fn long_texts_are_checked_in_linear_time() {
    let c = checker();
    let patterns: [Pattern; 16] = [
        ("<!", |n| "<!".repeat(n / 2)),
        ("<!-- -->", |n| "<!-- -->".repeat(n / 8)),
        ("<?", |n| "<?".repeat(n / 2)),
        ("<a '", |n| "<a '\"".repeat(n / 4)),
        ("http:github.com:", |n| "http:github.com:".repeat(n / 16)),
        ("https://github.com:", |n| {
            "https://github.com:".repeat(n / 19)
        }),
        ("@a ", |n| "@a ".repeat(n / 3)),
        ("//e ", |n| "//e ".repeat(n / 4)),
        ("&#x", |n| "&#x".repeat(n / 3)),
        ("&", |n| "&amp".repeat(n / 4)),
        ("www.", |n| "www.".repeat(n / 4)),
        ("a:", |n| "a:".repeat(n / 2)),
        ("aaaa:", |n| format!("{}:", "a".repeat(n))),
        ("/", |n| "/".repeat(n)),
        ("\\", |n| "\\".repeat(n)),
        ("secret-ish", |n| "ghp_S3cretT0ken".repeat(n / 15)),
    ];
    for (what, make) in patterns {
        scales_linearly(&format!("check {what}"), make, |text| {
            let _ = c.check(text).is_ok();
        });
        scales_linearly(&format!("mask {what}"), make, |text| {
            let _ = c.mask(text);
        });
        // Redacting checks its own result, which may be longer ("[link removed]").
        scales_linearly(&format!("redact {what}"), make, |text| {
            let _ = c.redact(text).defused();
        });
    }
    scales_linearly(
        "check_diff",
        |n| {
            (0..n / 32)
                .map(|i| format!("+line {i:08} of the new file\n"))
                .collect()
        },
        |diff| {
            let _ = c.check_diff(diff);
        },
    );
}

#[test]
fn a_link_after_a_line_break_is_seen() {
    let c = checker();
    for text in [
        "hello\nwww.evil.example/p.png",
        "https://github.com:\nwww.evil.example",
        "see:\r\nwww.evil.example",
        "x\n//evil.example",
    ] {
        refused_as_link(&c, text);
    }
}

// git reads a C-quoted path's escapes (`"b/\147\150\160…"`): a file named after a secret,
// every byte of its name an octal escape, holds the secret in clear once applied.
#[test]
fn a_secret_in_a_quoted_path_of_a_diff_is_found() {
    let c = checker();
    for name in [format!("docs/{SECRET}.md"), format!("docs/x\t{SECRET}")] {
        let quoted: String = name
            .bytes()
            .map(|b| match b {
                b'\t' => "\\t".to_owned(),
                _ => format!("\\{b:03o}"),
            })
            .collect();
        let diff = format!(
            "diff --git \"a/{quoted}\" \"b/{quoted}\"\nnew file mode 100644\nindex 0000000..e69de29\n--- /dev/null\n+++ \"b/{quoted}\"\n@@ -0,0 +1 @@\n+hello\n"
        );
        assert!(c.secret_in_diff(&diff).is_some(), "{diff}");
        assert!(c.check_diff(&diff).is_err(), "{diff}");
    }
}
