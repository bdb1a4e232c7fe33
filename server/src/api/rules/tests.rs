use evaluator::text::{check_clean_field, TextKind};

use super::*;

fn every_char() -> impl Iterator<Item = char> {
    (0..=0x10FFFF).filter_map(char::from_u32)
}

#[test]
fn a_user_line_refuses_exactly_what_the_check_refuses() {
    for c in every_char() {
        let refused = check_clean_field("x", &c.to_string(), TextKind::UserLine).is_err();
        assert_eq!(refused, within(USER_LINE_REFUSED, c), "U+{:04X}", c as u32);
    }
}

#[test]
fn blank_is_the_whitespace_trim_removes_that_a_line_may_hold() {
    for c in every_char() {
        let allowed_blank = c.is_whitespace() && !within(USER_LINE_REFUSED, c);
        assert_eq!(allowed_blank, within(BLANK, c), "U+{:04X}", c as u32);
    }
}

#[test]
fn white_space_is_what_trim_removes() {
    for c in every_char() {
        assert_eq!(
            c.is_whitespace(),
            within(WHITE_SPACE, c),
            "U+{:04X}",
            c as u32
        );
    }
}

#[test]
fn a_ref_refuses_exactly_the_characters_check_ref_refuses() {
    for c in every_char() {
        let refused = plue_core::registry::git::check_ref(&format!("a{c}b")).is_err();
        assert_eq!(refused, within(REF_REFUSED, c), "U+{:04X}", c as u32);
    }
}

/// The document's rule for one branch glob, as a validator (ECMA 262, as schemathesis's
/// `jsonschema_rs`) reads it.
fn glob_validator() -> jsonschema::Validator {
    let schema = serde_json::json!({
        "type": "string", "pattern": branch_glob_pattern(),
        "minLength": 1, "maxLength": MAX_GLOB_CHARS,
    });
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

/// The document and the handler agree on `glob`, and a glob they allow compiles.
fn agree(validator: &jsonschema::Validator, glob: &str) -> bool {
    let allowed = is_branch_glob(glob);
    assert_eq!(allowed, validator.is_valid(&glob.into()), "{glob:?}");
    if allowed {
        if let Err(e) = evaluator::glob::compile(glob) {
            panic!("{glob:?} is allowed but does not compile: {e}");
        }
    }
    allowed
}

// The attack (issue 54): a glob the document allowed (`release/[`) was refused with a
// 400, and one it refused could have been taken. Every string of up to four of the
// syntax's corner characters, and pieces of globs joined at random.
#[test]
fn a_branch_glob_is_what_the_pattern_states_and_it_compiles() {
    let validator = glob_validator();
    let corners = [
        'a', '9', '-', '!', '*', '?', '[', ']', '{', '}', ',', '\\', ' ',
    ];
    let mut globs = vec![String::new()];
    let mut allowed = 0;
    for _ in 0..4 {
        globs = globs
            .iter()
            .flat_map(|g| corners.iter().map(move |c| format!("{g}{c}")))
            .collect();
        allowed += globs.iter().filter(|g| agree(&validator, g)).count();
    }
    assert!(allowed > 1000, "{allowed}");
    let pieces = [
        "main",
        "/",
        "*",
        "**",
        "?",
        "[",
        "]",
        "[a-z]",
        "[z-a]",
        "[0-9]",
        "[!a]",
        "[a-]",
        "[-a]",
        "[A-z]",
        "[a-a]",
        "[Z-Z]",
        "{",
        "}",
        ",",
        "{a,b}",
        "{,}",
        "-",
        "!",
        "\\",
        " ",
        "\u{e9}",
        "\u{202e}",
        "\u{1F600}",
        "[]",
        "[!]",
        "[a-f-z]",
        "[!!]",
        ":",
        "~",
    ];
    // A fixed linear congruential sequence: the same globs every run.
    let mut seed: u64 = 54;
    let mut next = |bound: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % bound
    };
    let (mut yes, mut no) = (0, 0);
    for _ in 0..3000 {
        let glob: String = (0..=next(6)).map(|_| pieces[next(pieces.len())]).collect();
        if agree(&validator, &glob) {
            yes += 1;
        } else {
            no += 1;
        }
    }
    assert!(yes > 100 && no > 100, "{yes} allowed, {no} refused");
    for glob in [
        "main",
        "release/*",
        "**",
        "v[0-9]*",
        "{main,release/**}",
        "[!a-f]x,y",
    ] {
        assert!(agree(&validator, glob), "{glob}");
    }
    for glob in [
        "",
        "release/[",
        "[z-a]",
        "{a,{b}}",
        "a}",
        "x\\",
        "[!]",
        "a b",
    ] {
        assert!(!agree(&validator, glob), "{glob}");
    }
}

#[test]
fn the_longest_and_busiest_branch_globs_compile() {
    let validator = glob_validator();
    let n = MAX_GLOB_CHARS;
    for glob in [
        "?".repeat(n),
        "*".repeat(n),
        "**/".repeat(n / 3),
        "[!a]".repeat(n / 4),
        "[0-9a-zA-Z]".repeat(n / 11),
        "{*,?}".repeat(n / 5),
        format!("{{{}}}", ",".repeat(n - 2)),
        "\u{1F600}".repeat(n),
    ] {
        assert!(agree(&validator, &glob), "{glob}");
    }
    assert!(!agree(&validator, &"a".repeat(n + 1)));
}

// The attack (issue 54): keystrokes the document allowed as any string were a 400 when
// they were not base64. Every string of up to four characters from each corner of the
// alphabet, alone and after a whole group: the pattern allows exactly what the decoder
// takes.
#[test]
fn base64_is_exactly_what_the_decoder_takes() {
    use base64::Engine;
    let schema = serde_json::json!({"type": "string", "pattern": BASE64_PATTERN});
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let corners = ['A', 'Q', 'R', 'g', 'z', '0', '+', '/', '=', '-', '\n'];
    let mut texts = vec![String::new()];
    let mut allowed = 0;
    for _ in 0..4 {
        texts = texts
            .iter()
            .flat_map(|t| corners.iter().map(move |c| format!("{t}{c}")))
            .collect();
        // Alone, and after one whole group.
        for text in texts.iter().flat_map(|t| [t.clone(), format!("QUJD{t}")]) {
            let decodes = base64::engine::general_purpose::STANDARD
                .decode(&text)
                .is_ok();
            assert_eq!(
                decodes,
                validator.is_valid(&text.as_str().into()),
                "{text:?}"
            );
            allowed += usize::from(decodes);
        }
    }
    assert!(allowed > 1000, "{allowed}");
}

/// The document's rule for a URL field, as a validator (ECMA 262) reads it.
fn url_validator(pattern: String) -> jsonschema::Validator {
    let schema = serde_json::json!({"type": "string", "pattern": pattern});
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

/// Whether Python's `urllib.parse.urlsplit` (3.11 to 3.13) reads `text`, and the port
/// of its netloc when asked for it (`.port`): the netloc (after `scheme:`, from `//`
/// to the first of `/?#`) holds `[` and `]` both or neither, and when both, the
/// hostname after the last `@` is a whole bracketed IPv6 address (`ipaddress` reads
/// it; not IPv4) or IPvFuture, followed by nothing or `:port`; a port is ASCII digits
/// of at most 65535. `None`: no netloc (a path, the scp form).
fn python_netloc(text: &str) -> Option<Result<String, String>> {
    let scheme_chars = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
    let rest = match text.find(':') {
        Some(i)
            if i > 0
                && text.starts_with(|c: char| c.is_ascii_alphabetic())
                && text[..i].chars().all(scheme_chars) =>
        {
            &text[i + 1..]
        }
        _ => text,
    };
    let after = rest.strip_prefix("//")?;
    let netloc = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
    Some(python_checks(netloc).map(|()| netloc.to_string()))
}

fn python_checks(netloc: &str) -> Result<(), String> {
    let invalid = || Err("Invalid IPv6 URL".to_string());
    let (open, close) = (netloc.contains('['), netloc.contains(']'));
    if open != close {
        return invalid();
    }
    let host_and_port = netloc.rsplit_once('@').map_or(netloc, |(_, h)| h);
    let port = match host_and_port.split_once('[') {
        Some(("", bracketed)) => {
            let (hostname, port) = bracketed.split_once(']').unwrap_or((bracketed, ""));
            if !port.is_empty() && !port.starts_with(':') {
                return invalid();
            }
            if let Some(future) = hostname.strip_prefix('v') {
                let ok = future.split_once('.').is_some_and(|(hex, tail)| {
                    !hex.is_empty()
                        && hex.chars().all(|c| c.is_ascii_hexdigit())
                        && !tail.is_empty()
                        && !tail.contains('\n')
                });
                if !ok {
                    return Err("IPvFuture address is invalid".into());
                }
            } else if hostname.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{hostname:?} is not an IPv6 address"));
            }
            port.strip_prefix(':').unwrap_or("")
        }
        Some(_) => return invalid(),
        None => host_and_port.split_once(':').map_or("", |(_, port)| port),
    };
    let port_reads = port.is_empty()
        || (port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65535));
    if !port_reads {
        return Err(format!("port {port:?} out of range"));
    }
    Ok(())
}

/// The document and the handler agree on `text`, and a URL they allow parses: with
/// Python's rules, and (one with `://`) with the `url` crate's; a path or the scp form
/// has no netloc for Python to read as a host.
fn agree_on_url(validator: &jsonschema::Validator, handler: fn(&str) -> bool, text: &str) -> bool {
    let allowed = handler(text);
    assert_eq!(allowed, validator.is_valid(&text.into()), "{text:?}");
    if allowed {
        match python_netloc(text) {
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{text:?} is allowed but Python refuses it: {e}"),
            None => assert!(!text.contains("://"), "{text:?}"),
        }
        if text.contains("://") {
            if let Err(e) = url::Url::parse(text) {
                panic!("{text:?} is allowed but the url crate refuses it: {e}");
            }
        }
    }
    allowed
}

/// A URL field's rule: the document's validator and the handler's check.
type UrlRule<'a> = (&'a jsonschema::Validator, fn(&str) -> bool);

fn clone_url_handler(text: &str) -> bool {
    crate::api::repos::check_clone_url(text).is_ok()
}

fn api_url_handler(text: &str) -> bool {
    crate::api::repos::check_api_url(text).is_ok()
}

const URL_STARTS: &[&str] = &[
    "https://", "http://", "ssh://", "file://", "git@", "/", "//", "ftp://", "HTTPS://", "",
];

const URL_PIECES: &[&str] = &[
    "example.com",
    "a",
    "localhost",
    "a-b",
    "a--b",
    "xn--a",
    "-a",
    "a_b",
    "a.",
    ".",
    "..",
    "a.1",
    "a.0x1",
    "1a",
    "1.2.3.4",
    "127.0.0.1",
    "256.1.1.1",
    "01.2.3.4",
    "1.2.3",
    "[",
    "]",
    "[]",
    "[::1]",
    "[::]",
    "[1:2:3:4:5:6:7:8]",
    "[1:2:3:4:5:6:7::]",
    "[1::2::3]",
    "[::ffff:1.2.3.4]",
    "[::ffff:1.2.3.04]",
    "[1.2.3.4]",
    "[v1.x]",
    "[fe80::1%eth0]",
    "[g::1]",
    "x@",
    "u:p@",
    "@",
    "%41@",
    "%4@",
    "a[b@",
    ":",
    ":22",
    ":0",
    ":08",
    ":65535",
    ":65536",
    ":99999",
    ":x",
    "/",
    "/o/r.git",
    "?q=[",
    "#f]",
    ":o/r.git",
    " ",
    "\t",
    "\\",
    "\u{e9}",
    "\u{202e}",
    "\n",
    "%",
    "\u{1F600}",
];

// The attack: schemathesis registered a clone URL `https://…[…` — any clean text after
// the scheme was taken — and crashed reading it back (Python's `urlsplit`: "Invalid
// IPv6 URL"). Every start with every one and two pieces of a URL's corners, and pieces
// joined at random: the document and the handler agree, and what they allow parses.
#[test]
fn a_url_is_what_the_pattern_states_and_it_parses() {
    let clone = url_validator(clone_url_pattern());
    let api = url_validator(api_url_pattern());
    let rules: [UrlRule; 2] = [(&clone, clone_url_handler), (&api, api_url_handler)];
    let (mut yes, mut no) = (0, 0);
    let mut tally = |allowed: bool| {
        if allowed {
            yes += 1;
        } else {
            no += 1;
        }
    };
    for start in URL_STARTS {
        for first in URL_PIECES {
            for (validator, handler) in rules {
                tally(agree_on_url(validator, handler, &format!("{start}{first}")));
            }
            for second in URL_PIECES {
                for (validator, handler) in rules {
                    let text = format!("{start}{first}{second}");
                    tally(agree_on_url(validator, handler, &text));
                }
            }
        }
    }
    // A fixed linear congruential sequence: the same URLs every run.
    let mut seed: u64 = 9;
    let mut next = |bound: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % bound
    };
    for _ in 0..4000 {
        let start = URL_STARTS[next(URL_STARTS.len())];
        let text: String = (0..=next(5))
            .map(|_| URL_PIECES[next(URL_PIECES.len())])
            .collect();
        for (validator, handler) in rules {
            tally(agree_on_url(validator, handler, &format!("{start}{text}")));
        }
    }
    assert!(yes > 2000 && no > 2000, "{yes} allowed, {no} refused");
}

#[test]
fn the_urls_the_engine_registers_are_taken_and_broken_hosts_refused() {
    let clone = url_validator(clone_url_pattern());
    let api = url_validator(api_url_pattern());
    for url in [
        "https://github.com/octo/hello.git",
        "https://x/y.git",
        "http://127.0.0.1:41234/octo/hello.git",
        "http://bot:s3cr3t@127.0.0.1:1/octo/down.git",
        "https://x-access-token:ghp_x@github.com/o/r",
        "https://forge.example/api\u{e9}/[v1]?q=[#]",
        "ssh://git@forge.example:2222/o/r.git",
        "https://[::1]:8080/o/r.git",
        "http://[2001:db8::1.2.3.4]/",
        "https://FORGE.example./o",
        "git@forge.example:o/r.git",
        "git@[::1]:o/r.git",
        "file:///srv/r",
        "file:///nowhere/fresh.git",
        "file://localhost/srv/r",
        "/srv/r",
        "/nonexistent/acme/app.git",
        "/tmp/plue test/origin",
        "/",
    ] {
        assert!(agree_on_url(&clone, clone_url_handler, url), "{url}");
    }
    for url in [
        "https://forge.example/api/v3",
        "http://127.0.0.1:41234/api/v1",
        "https://api.github.com",
    ] {
        assert!(agree_on_url(&api, api_url_handler, url), "{url}");
    }
    for url in [
        "",
        "-u",
        "relative/path",
        "https://x[",
        "https://x/\ny",
        "https://\u{2026}[\u{2026}",
        "https://[",
        "https://a]/",
        "https://[v1.x]/",
        "https://[1.2.3.4]/",
        "https://a[b@x/",
        "https://",
        "https:///x",
        "http://1.2.3.256/",
        "http://a.1/",
        "http://xn--a.example/",
        "http://h:0/",
        "http://h:65536/",
        "file://[/x",
        "file://h:22/x",
        "//[x",
        "//host/x",
        "git@x",
        "git@[:x",
        "ftp://x/y",
    ] {
        assert!(!agree_on_url(&clone, clone_url_handler, url), "{url:?}");
        assert!(!agree_on_url(&api, api_url_handler, url), "{url:?}");
    }
    for url in ["ssh://x/y", "git@x:y", "/srv/r", "file:///x"] {
        assert!(!agree_on_url(&api, api_url_handler, url), "{url}");
    }
}

#[test]
fn classes_write_the_bmp_escaped_and_the_rest_as_itself() {
    assert_eq!(
        class(&[&[(0x0A, 0x1F), (0xE0001, 0xE0001)]]),
        "\\u000A-\\u001F\u{E0001}"
    );
}
