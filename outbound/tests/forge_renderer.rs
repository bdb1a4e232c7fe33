//! The wall against the forge's own renderer: Debian's `cmark-gfm` is GitHub's Markdown
//! renderer. A corpus of hostile Markdown (the classes attackers used, and a seeded
//! generator of their variations) goes through the wall; whatever it lets pass is rendered
//! by `cmark-gfm` as GitHub renders it (its extensions, raw HTML kept), the HTML read as a
//! browser's tokenizer reads it, and every link parsed by a WHATWG URL parser. No text
//! `cmark-gfm` shows may hold the run's secret (in any spelling the wall knows) and no link
//! it makes may lead to a host the wall does not allow.
//!
//! Needs `cmark-gfm` on PATH (Debian's `cmark-gfm` package): without it the test says so
//! and passes, unless `PLUE_REQUIRE_CMARK_GFM=1` (CI sets it). `PLUE_RENDERER_CASES=N`
//! generates N variations instead of the default.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use plue_outbound::{Checker, Secrets};

const SECRET: &str = "ghp_R3alS3cretT0kenValue42";
const ALLOWED: &[&str] = &["docs.example.com", "forge.example"];
const DEFAULT_CASES: usize = 1500;

/// The run's secret in every spelling a reader might be handed.
fn spellings() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(SECRET);
    vec![
        SECRET.to_owned(),
        SECRET.chars().rev().collect(),
        hex::encode(SECRET),
        b64,
    ]
}

fn cmark_gfm(markdown: &str) -> Option<String> {
    let mut child = Command::new("cmark-gfm")
        .args(["--unsafe", "-e", "autolink", "-e", "table"])
        .args(["-e", "strikethrough", "-e", "tagfilter", "-e", "tasklist"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()?
        .write_all(markdown.as_bytes())
        .expect("writing to cmark-gfm");
    let out = child.wait_with_output().expect("cmark-gfm runs");
    assert!(out.status.success(), "cmark-gfm failed on {markdown:?}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a browser's reader gets of `html`: its text (text nodes and alt/title texts) and
/// the values of its URL attributes.
fn browser_reading(html: &str) -> (String, Vec<String>) {
    use html5gum::{Token, Tokenizer};
    let mut text = String::new();
    let mut urls = Vec::new();
    for token in Tokenizer::new(html).flatten() {
        match token {
            Token::String(s) => text.push_str(&String::from_utf8_lossy(&s)),
            Token::StartTag(tag) => {
                for (name, value) in &tag.attributes {
                    let value = String::from_utf8_lossy(value).into_owned();
                    match &name[..] {
                        b"href" | b"src" | b"cite" | b"poster" | b"action" | b"longdesc" => {
                            urls.push(value)
                        }
                        b"srcset" => urls.extend(
                            value
                                .split(',')
                                .filter_map(|c| c.split_whitespace().next())
                                .map(str::to_owned),
                        ),
                        b"alt" | b"title" => {
                            text.push('\n');
                            text.push_str(&value);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (text, urls)
}

/// Why `url`, on a page of the forge, leads somewhere the wall does not allow.
fn escapes(url: &str) -> Option<String> {
    let page = url::Url::parse("https://forge.example/o/r/issues/1").unwrap();
    let Ok(parsed) = page.join(url) else {
        // A browser cannot follow it.
        return None;
    };
    match parsed.scheme() {
        "http" | "https" => match parsed.host_str() {
            Some(host) if ALLOWED.contains(&host) => None,
            host => Some(format!("{url:?} leads to {host:?}")),
        },
        "mailto" => {
            let domain = parsed
                .path()
                .rsplit('@')
                .next()
                .unwrap_or("")
                .to_lowercase();
            (!ALLOWED.contains(&domain.as_str())).then(|| format!("{url:?} mails {domain:?}"))
        }
        scheme => Some(format!("{url:?} has the scheme {scheme:?}")),
    }
}

/// What of the secret a reader of `text` gets.
fn secret_shown(text: &str) -> Option<String> {
    let skeleton = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let shown: String = text
        .chars()
        .filter(|c| !plue_outbound::render::is_invisible(*c))
        .collect();
    let lower = shown.to_lowercase();
    let shown_skeleton = skeleton(&shown);
    spellings().into_iter().find_map(|s| {
        (lower.contains(&s.to_lowercase()) || shown_skeleton.contains(&skeleton(&s)))
            .then(|| format!("the secret, spelt {s:?}"))
    })
}

fn wall() -> Checker {
    Checker::new(&Secrets::from_iter([SECRET]), ALLOWED.iter().copied())
}

/// The classes found by attackers, written by hand.
fn hand_written() -> Vec<String> {
    let s = SECRET;
    let (a, b) = s.split_at(9);
    let r: String = s.chars().rev().collect();
    let (ra, rb) = r.split_at(9);
    let mut corpus = vec![
        format!("<!x> {a}<b></b>{b}"),
        format!("<!x {a}<b></b>{b}>"),
        format!("<?x {a}<b></b>{b}>"),
        format!("a <!-- unclosed {a}<b></b>{b}"),
        format!("a <!-- -- {a}<b></b>{b} --> b"),
        format!("a <!--> {a}<b></b>{b} -->"),
        format!("a <!---> {a}<b></b>{b} -->"),
        format!("a <!-- x ---> {a}<b></b>{b} -->"),
        format!("<!x\n{a}<b></b>{b}\n>"),
        format!("<!-- x\n\n{a}<b></b>{b}"),
        format!("| {a} | {b} |\n|---|---|\n| x | y |"),
        format!("{ra}<b></b>{rb}"),
        format!("[{a}]({b})"),
        format!("![{a}<i></i>{b}](x.png)"),
        "[l](https://docs.example.com\\.evil.example/x)".into(),
        "![l](https://docs.example.com\\.evil.example/p.png)".into(),
        "[r]: https://docs.example.com\\.evil.example/x\n\nsee [r]".into(),
        "<https://docs.example.com\\.evil.example/x>".into(),
        "see https://docs.example.com\\.evil.example/x".into(),
        "see www.docs.example.com\\.evil.example/x".into(),
        "[mail](mailto:support@evil.example)".into(),
        "write to support@evil.example".into(),
        "<mailto:support@evil.example>".into(),
        "<a href=\"mailto:x@evil.example\">x</a>".into(),
        "[x](javascript:alert(1))".into(),
        "[x](java\tscript:alert(1))".into(),
        "[x](data:text/html,hi)".into(),
        "<a href=\"https://docs.example.com\\.evil.example\">x</a>".into(),
        "<a href=\"https://docs.example.com@evil.example\">x</a>".into(),
        "[x](https://evil\u{ff0e}example/)".into(),
        "[x](https://docs.example.com%2eevil.example/)".into(),
        "see [^1]\n\n[^1]: https://evil.example/x\n".into(),
        "<img srcset=\"a.png 1x, //evil.example/b.png 2x\">".into(),
        "<textarea><a href=\"https://evil.example\">x</a></textarea>".into(),
        "<details><summary>x</summary>\n\n[y](//evil.example)\n</details>".into(),
        // CommonMark 0.31's `<search>` (a type-6 HTML block that interrupts a paragraph)
        // and `<textarea>` (type 1: runs over blank lines, ends at `</style>`) are not
        // HTML blocks of cmark-gfm 0.29: what comrak keeps as raw HTML, cmark-gfm renders
        // as Markdown, and the other way round.
        format!(
            "para\n<search>\n[t](javascript:alert(1)) {}[{}](x){}",
            &s[..2],
            &s[2..8],
            &s[8..]
        ),
        format!(
            "<textarea>\n\n[t](javascript:alert(1)) {}[{}](x){}",
            &s[..2],
            &s[2..8],
            &s[8..]
        ),
        "<textarea>\n\n![t](data:image/png,xx)".into(),
        "para\n<search>\n>www.evil.example/x".into(),
        "<textarea>\n\n>www.evil.example/x".into(),
        "para\n<search>\n<code>x@evil.example</code>".into(),
        "para\n<search>\n[t](https://docs.example.com'.evil.example/x)".into(),
        "para\n<search>\n![t](https://docs.example.com\".evil.example/x)".into(),
        "para\n<search>\n[t](https://docs.example.com`.evil.example/x)".into(),
        format!("<textarea>\n</style>\n    <a href=\"javascript:alert(1)\">x</a> {a}<a x<y>{b}"),
        "<pre>\n</textarea>\n`<a href=\"javascript:alert(1)\">x</a>`".into(),
        "<pre>\n</textarea>\n`<img src=\"data:,x\">`".into(),
        // comrak's inline source positions after a link reference definition that opens
        // the paragraph are the definition's: the `\\` meant for `<!-->` lands on the
        // definition's `<` and breaks it, so comrak reads no link where cmark-gfm does.
        format!(
            "[r]: <javascript:alert(1) x>\nx <!--> [t][r] {}[{}][r]{}",
            &s[..2],
            &s[2..8],
            &s[8..]
        ),
        "[r]: <data:text/html,hi x>\nx <!--> ![t][r]".into(),
        format!(
            "[r]: <x y>\nx <!--> {}[{}][r]{}",
            &s[..2],
            &s[2..8],
            &s[8..]
        ),
        "[r]: <//docs.example.com'.evil.example/p.png y>\nx <!--> ![t][r]".into(),
    ];
    corpus.extend(spellings().iter().map(|sp| format!("x {sp} y")));
    corpus
}

/// A seeded generator of variations: pieces of the secret (in each spelling) cut by
/// markup, and links to the attacker's host written every way, in every context.
struct Variations {
    state: u64,
}

impl Variations {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn case(&mut self) -> String {
        const CONTEXTS: &[&str] = &[
            "",
            "a ",
            "<!-- ",
            "<!x ",
            "<!X ",
            "<? ",
            "<!",
            "<!--\n",
            "<div>\n",
            "> ",
            "- ",
            "1. ",
            "| a | b |\n|---|---|\n| ",
            "`",
            "**",
            "<b>",
            "[",
            "\\",
            "<!-- -- ",
            "<!--> ",
            "# ",
            "    ",
            "```\n",
            "<a href=\"",
        ];
        const CUTS: &[&str] = &[
            "<b></b>",
            "<!-- -->",
            "<!-- -- -->",
            "<!x>",
            "<?x>",
            "<!X y>",
            "<!-->",
            "<!--->",
            "*",
            "**",
            "~~",
            "`",
            "\\",
            "\u{200b}",
            "&#x200b;",
            "&shy;",
            "\n",
            "<br>",
            " | ",
            "](x) [",
            "<span title=\"t\">",
            "</a>",
            "&#8203;",
            "<!x y>",
            "<?x ?>",
            "<![CDATA[x]]>",
            "",
        ];
        const ENDS: &[&str] = &[
            "", " -->", ">", " ?>", "\n</div>", "`", "**", "</b>", "](x)", "\"></a>", "\n```",
        ];
        const URLS: &[&str] = &[
            "https://docs.example.com\\.evil.example/x",
            "https://evil.example/x",
            "//evil.example/x",
            "\\\\evil.example/x",
            "https:\\\\evil.example",
            "https:/\\evil.example",
            "http:evil.example",
            "HTTPS://EVIL.EXAMPLE",
            "https://docs.example.com@evil.example/",
            "https://evil.example#docs.example.com",
            "mailto:x@evil.example",
            "javascript:alert(1)",
            "&#104;ttps://evil.example",
            "https&#58;//evil.example",
            "https://evil\u{3002}example",
            "https://docs.example.com/ok",
            "www.evil.example",
            "x@evil.example",
        ];
        const LINKS: &[&str] = &[
            "[t](URL)",
            "![t](URL)",
            "[t](<URL>)",
            "[r]: URL\n\n[r]",
            "<URL>",
            "see URL now",
            "<a href=\"URL\">t</a>",
            "<img src=URL>",
            "[^1]\n\n[^1]: URL",
            "<a href='URL'>t</a>",
        ];
        let context = self.pick(CONTEXTS);
        let end = self.pick(ENDS);
        let body = if self.next().is_multiple_of(2) {
            let spellings = spellings();
            let spelling = &spellings[(self.next() % spellings.len() as u64) as usize];
            let at = 1 + (self.next() as usize) % (spelling.len() - 1);
            let cut = self.pick(CUTS);
            format!("{}{cut}{}", &spelling[..at], &spelling[at..])
        } else {
            let url = self.pick(URLS);
            self.pick(LINKS).replace("URL", url)
        };
        format!("{context}{body}{end}")
    }
}

#[test]
fn nothing_cmark_gfm_shows_or_links_escapes_the_wall() {
    if cmark_gfm("probe").is_none() {
        let required = std::env::var("PLUE_REQUIRE_CMARK_GFM").as_deref() == Ok("1");
        assert!(!required, "cmark-gfm is not installed (Debian: cmark-gfm)");
        eprintln!("skipped: cmark-gfm is not installed (Debian: cmark-gfm)");
        return;
    }
    let cases: usize = std::env::var("PLUE_RENDERER_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut generator = Variations {
        state: 0x005e_ed0f_9a11,
    };
    let corpus: Vec<String> = hand_written()
        .into_iter()
        .chain((0..cases).map(|_| generator.case()))
        .collect();
    let wall = wall();
    let mut escaped = Vec::new();
    let mut passed = 0;
    for text in &corpus {
        if wall.check(text).is_err() {
            continue;
        }
        passed += 1;
        let html = cmark_gfm(text).expect("cmark-gfm ran before");
        let (shown, urls) = browser_reading(&html);
        let found = secret_shown(&shown)
            .into_iter()
            .chain(urls.iter().filter_map(|u| escapes(u)))
            .collect::<Vec<_>>();
        if !found.is_empty() {
            escaped.push(format!("{text:?}\n  cmark-gfm: {html:?}\n  {found:?}"));
        }
    }
    assert!(
        escaped.is_empty(),
        "{} of {} texts passed the wall with what cmark-gfm shows or links:\n{}",
        escaped.len(),
        corpus.len(),
        escaped.join("\n")
    );
    // The corpus is not all refused: the wall lets the harmless variations through, so
    // what it passes is really compared.
    assert!(
        passed > corpus.len() / 20,
        "only {passed} of {} passed",
        corpus.len()
    );
}

#[test]
fn what_the_wall_passes_of_benign_texts_renders_the_same_links() {
    // A control: ordinary pull-request text passes the wall.
    let wall = wall();
    for fine in [
        "Fixes the parser.\n\n- [x] tests\n- [ ] docs\n\nSee [the guide](https://docs.example.com/guide) and #12.",
        "| a | b |\n|---|---|\n| `x` | **y** |",
        "```python\n@decorator\ndef f(): return a@b\n```",
        "<details><summary>Log</summary>\n\nok\n</details>",
        "a <!-- a note --> b, ![diagram](/o/r/raw/main/d.png)",
    ] {
        assert!(wall.check(fine).is_ok(), "{fine}: {:?}", wall.check(fine));
    }
}
