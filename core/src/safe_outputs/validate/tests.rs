//! Attacks on the proposal check: each hostile proposal is refused, with its reason.

use super::*;

const SECRET: &str = "s3cr3t-T0KEN-value";

fn outputs() -> SafeOutputs {
    SafeOutputs {
        pull_request: true,
        comments: 1,
        labels: vec!["bug".into()],
        issues: 1,
        allow_links: vec!["docs.rs".into()],
        max_files: 3,
        ..SafeOutputs::default()
    }
}

/// The refusal as shown (the tests match on messages users read).
fn check(proposals: &[Proposal]) -> Result<(), String> {
    let so = outputs();
    validate(proposals, &rules(&so)).map_err(|e| e.to_string())
}

fn rules(so: &SafeOutputs) -> Rules<'_> {
    Rules::new(
        so,
        &Secrets::from_iter([SECRET]),
        &["forge.example".to_owned()],
    )
}

fn wall() -> Checker {
    rules(&outputs()).wall
}

const STANDARD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;
const URL_SAFE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn base64(bytes: &[u8], engine: base64::engine::GeneralPurpose) -> String {
    base64::Engine::encode(&engine, bytes)
}

fn pr(diff: &str) -> Proposal {
    Proposal::PullRequest {
        title: "fix".into(),
        body: "fixes it".into(),
        diff: diff.into(),
    }
}

fn file_diff(path: &str) -> String {
    format!(
        "diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-one\n+two\n"
    )
}

fn refused(proposals: &[Proposal], expected: &str) {
    let err = check(proposals).expect_err(expected);
    assert!(err.contains(expected), "{expected}: {err}");
}

#[test]
fn a_valid_proposal_passes() {
    let diff = file_diff("src/main.rs")
        + "diff --git a/new file.txt b/new file.txt\nnew file mode 100644\nindex 0000000..3333333\n--- /dev/null\n+++ b/new file.txt\n@@ -0,0 +1,2 @@\n+a\n+b\n";
    let ok = [
        pr(&diff),
        Proposal::Comment {
            body:
                "see https://docs.rs/x and https://forge.example/o/r/pull/1, mail a@forge.example"
                    .into(),
        },
        Proposal::Labels {
            labels: vec!["bug".into()],
        },
    ];
    assert_eq!(check(&ok), Ok(()));
}

#[test]
fn workflow_files_are_denied_whatever_the_plan_allows() {
    refused(&[pr(&file_diff(".plue/deploy.plue.py"))], "denied");
    refused(&[pr(&file_diff(".github/workflows/x.yml"))], "denied");
    refused(&[pr(&file_diff("tools/ci.plue.py"))], "denied");
    refused(&[pr(&file_diff(".GitHub/workflows/x.yml"))], "denied");
    refused(&[pr(&file_diff("a/.git/config"))], ".git");
    refused(&[pr(&file_diff("a/.GIT./hooks/x"))], ".git");
}

#[test]
fn both_sides_of_a_rename_are_checked() {
    let rename = "diff --git a/src/ok.py b/.plue/deploy.plue.py\nsimilarity index 100%\nrename from src/ok.py\nrename to .plue/deploy.plue.py\n";
    refused(&[pr(rename)], "denied");
    let quoted = "diff --git \"a/src/\\303\\251.py\" \"b/.github/x\\tb.yml\"\nsimilarity index 100%\nrename from \"src/\\303\\251.py\"\nrename to \".github/x\\tb.yml\"\n";
    refused(&[pr(quoted)], "denied");
    let copy = "diff --git a/src/ok.py b/src/ok2.py\nsimilarity index 100%\ncopy from src/ok.py\ncopy to .gitea/x.yml\n";
    refused(&[pr(copy)], "denied");
}

#[test]
fn links_modes_and_traversal_are_refused() {
    let link = "diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n";
    refused(&[pr(link)], "symbolic link");
    let submodule = "diff --git a/sub b/sub\nnew file mode 160000\nindex 0000000..1111111\n--- /dev/null\n+++ b/sub\n@@ -0,0 +1 @@\n+Subproject commit 1111111111111111111111111111111111111111\n";
    refused(&[pr(submodule)], "submodule");
    refused(&[pr(&file_diff("../outside"))], "names the path");
    refused(&[pr(&file_diff("src/../../x"))], "names the path");
    let binary = "diff --git a/x.bin b/x.bin\nnew file mode 100644\nindex 0000000..1111111\nGIT binary patch\nliteral 2\nJcmZQ%00961\n\nliteral 0\nHcmV?d00001\n\n";
    refused(&[pr(binary)], "binary");
}

#[test]
fn a_patch_smuggled_after_a_hunk_or_before_the_first_header_is_refused() {
    let smuggled = file_diff("src/ok.rs")
        + "--- a/.plue/x.plue.py\n+++ b/.plue/x.plue.py\n@@ -1 +1 @@\n-a\n+b\n";
    refused(&[pr(&smuggled)], "outside any hunk");
    let before = format!("--- a/.plue/x\n+++ b/.plue/x\n{}", file_diff("src/ok.rs"));
    refused(&[pr(&before)], "before the first");
    let odd = file_diff("src/ok.rs").replace("index 1111111..2222222 100644\n", "foo bar\n");
    refused(&[pr(&odd)], "unknown header");
}

#[test]
fn counts_sizes_and_labels_are_enforced() {
    let four: String = ["a", "b", "c", "d"].iter().map(|p| file_diff(p)).collect();
    refused(&[pr(&four)], "max_files");
    refused(
        &[pr(&file_diff("a")), pr(&file_diff("b"))],
        "more than one pull request",
    );
    let comment = || Proposal::Comment { body: "hi".into() };
    refused(&[comment(), comment()], "more than 1 comments");
    refused(
        &[Proposal::Labels {
            labels: vec!["deploy".into()],
        }],
        "not in the step's labels",
    );
    let big = "x".repeat(300 * 1024);
    refused(&[pr(&(file_diff("a") + &big))], "max_diff_bytes");
}

#[test]
fn secrets_are_found_plain_hex_and_base64_at_any_alignment() {
    let hex_form = hex::encode(SECRET);
    let comment = |body: String| [Proposal::Comment { body }];
    refused(&comment(format!("token: {SECRET}")), "as it is");
    refused(&comment(format!("x{hex_form}y")), "hex");
    refused(&comment(hex::encode_upper(SECRET)), "hex");
    for prefix in ["", "a", "ab"] {
        let text = format!("{prefix}{SECRET}tail");
        let encoded = base64(text.as_bytes(), STANDARD);
        refused(&comment(format!("data {encoded}")), "base64");
        let url = base64(text.as_bytes(), URL_SAFE);
        refused(&comment(url), "base64");
    }
    let leak = file_diff("src/a.rs").replace("+two", &format!("+const K: &str = \"{SECRET}\";"));
    refused(&[pr(&leak)], "secret");
}

#[test]
fn a_refused_proposal_is_kept_without_the_secret_in_any_form() {
    let body = format!(
        "{SECRET} {} {}",
        hex::encode(SECRET),
        base64(format!("ab{SECRET}").as_bytes(), STANDARD)
    );
    let Proposal::Comment { body } = redact(&Proposal::Comment { body }, &wall()) else {
        unreachable!()
    };
    assert_eq!(wall().secret_in(&body), None, "{body}");
    assert!(body.contains("***"), "{body}");
}

#[test]
fn foreign_links_and_mentions_are_refused() {
    let comment = |body: &str| [Proposal::Comment { body: body.into() }];
    refused(
        &comment("see https://attacker.example/x"),
        "attacker.example",
    );
    refused(
        &comment("see HTTPS://user@Attacker.Example:443/x"),
        "attacker.example",
    );
    refused(&comment("cc @admin please"), "mentions @admin");
    refused(&comment("@org/team look"), "mentions @org/team");
    // An address the forge links as `mailto:`: a lure in the engine's voice, unless it is
    // the forge's own.
    refused(&comment("mail me at me@example.org"), "example.org");
    assert_eq!(check(&comment("mail me at me@forge.example")), Ok(()));
}

// Markdown a forge renders into a request to the attacker's host — an image is fetched by
// every reader's browser (or the forge's image proxy) without a click: the classic way to
// carry a secret out in its query. Every way of writing the link is refused.
#[test]
fn a_link_written_any_way_markdown_or_html_reads_it_is_refused() {
    let comment = |body: &str| [Proposal::Comment { body: body.into() }];
    for hostile in [
        "![x](//attacker.example/p.png?q=1)",
        "<img src=\"//attacker.example/p.png\">",
        "<img src=//attacker.example/p.png>",
        "[ref]: //attacker.example/x\n\n![y][ref]",
        "<a href='//attacker.example'>x</a>",
        "![x](https&#58;//attacker.example/p.png)",
        "![x](&#104;ttps&#x3A;&#x2F;&#x2f;attacker.example/p.png)",
        "![x](https&colon;&sol;&sol;attacker.example/p.png)",
        "see www.attacker.example/x",
        "<img src=\"http:attacker.example/p.png\">",
        "<img src=\"https:\\\\attacker.example/p.png\">",
        "<img src=\"https:/\\attacker.example/p.png\">",
        "<img src=\"  //attacker.example/p.png\">",
        "![x](<//attacker.example/p.png>)",
        "<https://attacker.example>",
        "[x](\\\\attacker.example\\share)",
    ] {
        let err = check(&comment(hostile)).expect_err(hostile);
        assert!(err.contains("attacker.example"), "{hostile}: {err}");
    }
    refused(&comment("thanks &#64;admin"), "mentions @admin");
    // What is no link stays allowed: paths, code comments, a link to an allowed host.
    for fine in [
        "see src/lib.rs and // a code comment",
        "`a // b` and https://docs.rs/x and ![x](https://forge.example/a.png)",
        "ratio 1:2, time 10:30, and a url-less http: mention",
        "[local](docs/guide.md) and [anchor](#fix)",
    ] {
        assert_eq!(check(&comment(fine)), Ok(()), "{fine}");
    }
}

// A secret spelled so the forge shows it as it is (HTML references, percent escapes in a
// link's text), reversed, or cut over two added lines of the diff: still found. (Split
// over two proposals or put through any cipher it is not: the step holding no secret it
// must not leak is the defence there.)
#[test]
fn a_secret_spelled_the_way_a_forge_shows_it_is_found() {
    let comment = |body: String| [Proposal::Comment { body }];
    let entities: String = SECRET.chars().map(|c| format!("&#{};", c as u32)).collect();
    let hex_refs: String = SECRET
        .chars()
        .map(|c| format!("&#x{:x}", c as u32))
        .collect();
    let percent: String = SECRET.bytes().map(|b| format!("%{b:02X}")).collect();
    let reversed: String = SECRET.chars().rev().collect();
    for body in [entities, hex_refs, percent, reversed] {
        let hostile = comment(format!("value: {body}"));
        refused(&hostile, "secret of the run");
        // Kept refused, it shows no spelling of the secret.
        let Proposal::Comment { body: kept } = redact(&hostile[0], &wall()) else {
            unreachable!()
        };
        assert!(!kept.contains(&body), "{kept}");
        assert!(
            kept.contains(plue_outbound::MASK) || kept == plue_outbound::WITHHELD,
            "{kept}"
        );
    }
    let (head, tail) = SECRET.split_at(7);
    let diff = format!(
        "diff --git a/src/k.rs b/src/k.rs\nindex 1111111..2222222 100644\n--- a/src/k.rs\n+++ b/src/k.rs\n@@ -1 +1,2 @@\n-one\n+const A: &str = \"{head}\n+{tail}\";\n"
    );
    refused(&[pr(&diff)], "the diff holds a secret");
}

// Diffs `git apply` reads to a denied path (each one checked with git 2.x): the name
// quoted on one side only, a rename naming the target in its headers only, a
// `.gitmodules` made by a rename, and names Windows checkouts trim (`deploy.plue.py `,
// `.plue./x`: a trailing space or dot is dropped by NTFS).
#[test]
fn names_git_apply_reads_to_a_denied_path_are_refused() {
    let so = SafeOutputs::default();
    let new_file = |git_line: &str, plus: &str| {
        format!("diff --git {git_line}\nnew file mode 100644\n--- /dev/null\n+++ {plus}\n@@ -0,0 +1 @@\n+x\n")
    };
    let rename = |to: &str| {
        format!("diff --git a/x b/x\nsimilarity index 100%\nrename from x\nrename to {to}\n")
    };
    for diff in [
        new_file("\"a/x\" b/.plue/y", "b/.plue/y"),
        new_file("a/deploy.plue.py  b/deploy.plue.py ", "b/deploy.plue.py "),
        new_file("a/.plue./x b/.plue./x", "b/.plue./x"),
        new_file("a/.GitHub /w.yml b/.GitHub /w.yml", "b/.GitHub /w.yml"),
        rename(".github/z"),
        rename(".gitmodules"),
        rename("sub/.gitmodules"),
    ] {
        assert!(check_diff(&diff, &so).is_err(), "{diff}");
    }
}

// The files that change how git or the forge treats the tree (DEFAULT_DENY): attributes in
// any directory, LFS's settings, the mailmap, blame's ignored revisions and the code owners
// where GitHub and Gitea read them, in any letter case, under the default rules — in a
// diff, through a rename, and in the built commit.
#[test]
fn files_that_change_how_git_or_the_forge_reads_the_tree_are_denied() {
    let denied = [
        "sub/.gitattributes",
        ".GitAttributes",
        ".gitattributes",
        "a/b/c/.gitattributes",
        "docs/CODEOWNERS",
        "CODEOWNERS",
        "Docs/CodeOwners",
        ".github/CODEOWNERS",
        ".gitea/CODEOWNERS",
        ".lfsconfig",
        ".LFSConfig",
        ".mailmap",
        ".git-blame-ignore-revs",
        "sub/.gitmodules",
        ".gitattributes.",
    ];
    for path in denied {
        refused(&[pr(&file_diff(path))], "denied");
        let rename =
            format!("diff --git a/x b/x\nsimilarity index 100%\nrename from x\nrename to {path}\n");
        assert!(
            check_diff(&rename, &SafeOutputs::default()).is_err(),
            "{rename}"
        );
        let change: [(String, String, String); 1] =
            [("100644".into(), "100644".into(), path.to_string())];
        assert!(
            check_changes(&change, &SafeOutputs::default()).is_err(),
            "{path}"
        );
    }
    // Names that only look alike stay allowed, and so does `.gitignore`.
    for path in [
        ".gitignore",
        "sub/.gitignore",
        "src/codeowners.rs",
        "docs/codeowners.md",
        "lib/CODEOWNERS",
    ] {
        assert_eq!(check(&[pr(&file_diff(path))]), Ok(()), "{path}");
    }
}

#[test]
fn an_unchecked_proposal_is_kept_with_none_of_its_text() {
    let hostile = Proposal::PullRequest {
        title: format!("t {SECRET}"),
        body: "b".into(),
        diff: file_diff("src/a.rs"),
    };
    let kept = serde_json::to_string(&withheld(&hostile)).unwrap();
    assert!(
        !kept.contains(SECRET) && !kept.contains("src/a.rs"),
        "{kept}"
    );
    assert!(kept.contains(plue_outbound::WITHHELD), "{kept}");
}

/// A password of symbols, fewer than eight letters and digits.
const PASSWORD: &str = "p@$$-w0rd!#%&*";

/// `text`'s UTF-16 (little-endian unless `big`) code units.
fn utf16(text: &str, big: bool) -> Vec<u8> {
    text.encode_utf16()
        .flat_map(|u| {
            if big {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

/// `text`'s UTF-32 (little-endian unless `big`) code units.
fn utf32(text: &str, big: bool) -> Vec<u8> {
    text.chars()
        .flat_map(|c| {
            let c = c as u32;
            if big {
                c.to_be_bytes()
            } else {
                c.to_le_bytes()
            }
        })
        .collect()
}

/// An existing text file, `notes.txt`: 12 KiB of text lines, and `appended` after them.
fn twelve_kib_then(appended: &[u8]) -> Vec<u8> {
    let mut content = "a line of ordinary notes, nothing to see here at all\n"
        .repeat(12 * 1024 / 52 + 1)
        .into_bytes();
    content.extend_from_slice(appended);
    content
}

// The attack (the outbound wall, round two): an existing text file, and after 12 KiB of
// it a wide copy of a secret of the run (git calls a file binary only by its first 8,000
// bytes). In the diff it is a NUL (and the refusal now names the file); in the file the
// applier builds, it is found wherever it starts and however it is encoded, and the file
// is named.
#[test]
fn a_wide_copy_of_a_secret_in_a_modified_file_is_refused_naming_the_file() {
    // The diff: the agent's appended line, UTF-16LE after one byte (an odd offset).
    let mut line = b"+x".to_vec();
    line.extend(utf16(SECRET, false));
    let diff = format!(
        "diff --git a/src/notes.txt b/src/notes.txt\nindex 1111111..2222222 100644\n--- a/src/notes.txt\n+++ b/src/notes.txt\n@@ -1 +1,2 @@\n one\n{}\n",
        String::from_utf8(line).unwrap()
    );
    let diff = file_diff("src/ok.rs") + &diff;
    refused(
        &[pr(&diff)],
        "the diff changes \"src/notes.txt\", a binary file",
    );
    let utf32_diff = diff.replace(
        &String::from_utf8(utf16(SECRET, false)).unwrap(),
        &String::from_utf8(utf32(SECRET, true)).unwrap(),
    );
    refused(&[pr(&utf32_diff)], "\"src/notes.txt\", a binary file");
    // A binary patch names its file too.
    let binary = file_diff("src/ok.rs") + "diff --git a/x.bin b/x.bin\nnew file mode 100644\nindex 0000000..1111111\nGIT binary patch\nliteral 2\nJcmZQ%00961\n\nliteral 0\nHcmV?d00001\n\n";
    refused(&[pr(&binary)], "changes \"x.bin\", a binary file");
    // A secret in one file's part of the diff: that file is named.
    let leak = file_diff("src/ok.rs")
        + &file_diff("src/b.rs").replace("+two", &format!("+let k = \"{SECRET}\";"));
    refused(
        &[pr(&leak)],
        "the diff holds a secret of the run (as it is) in its change to \"src/b.rs\"",
    );

    // The whole new content of the file the applier built, each way the copy is written.
    let mut bom_be = vec![0xfe, 0xff];
    bom_be.extend(utf16(SECRET, true));
    let mut odd_le = b"!".to_vec();
    odd_le.extend(utf16(SECRET, false));
    let mut bom_le = vec![0xff, 0xfe];
    bom_le.extend(utf16(SECRET, false));
    let mut odd_utf32 = b"abc".to_vec();
    odd_utf32.extend(utf32(SECRET, false));
    // A symbol-heavy password (fewer than eight letters and digits: the wall's view of
    // letters and digits alone does not apply) is found only by reading the file wide.
    let password = Checker::new(&Secrets::from_iter([PASSWORD]), ["forge.example"]);
    let mut odd_utf32_password = b"abc".to_vec();
    odd_utf32_password.extend(utf32(PASSWORD, false));
    let cases: [(&str, Vec<u8>, &Checker); 6] = [
        ("UTF-16BE with a BOM", bom_be, &wall()),
        ("UTF-16LE at an odd offset", odd_le, &wall()),
        ("UTF-16LE with a BOM", bom_le, &wall()),
        ("UTF-32LE at an odd offset", odd_utf32, &wall()),
        ("UTF-32BE", utf32(SECRET, true), &wall()),
        ("UTF-32LE password", odd_utf32_password, &password),
    ];
    for (case, appended, wall) in cases {
        let content = twelve_kib_then(&appended);
        let why = check_new_file("src/notes.txt", content.len() as u64, Some(&content), wall)
            .unwrap_err()
            .to_string();
        assert!(
            why.starts_with("the file \"src/notes.txt\" holds a secret of the run"),
            "{case}: {why}"
        );
        assert!(!why.contains(SECRET) && !why.contains(PASSWORD), "{why}");
    }
    // Read wide, a copy is named by the encoding it was read as.
    let mut odd_be = b"abc".to_vec();
    odd_be.extend(utf16("ghp_\u{1F600}d\u{E9}", true));
    let emoji = Checker::new(
        &Secrets::from_iter(["ghp_\u{1F600}d\u{E9}"]),
        ["forge.example"],
    );
    let why = check_new_file("x", odd_be.len() as u64, Some(&odd_be), &emoji)
        .unwrap_err()
        .to_string();
    assert!(why.contains("the file read as UTF-16BE"), "{why}");
    // Without secrets to look for it is still binary by a NUL anywhere, past 12 KiB too.
    let no_secrets = Checker::new(&Secrets::new(), ["forge.example"]);
    let content = twelve_kib_then(&utf16("just text", false));
    let why = check_new_file(
        "src/notes.txt",
        content.len() as u64,
        Some(&content),
        &no_secrets,
    )
    .unwrap_err()
    .to_string();
    assert!(
        why.contains("\"src/notes.txt\" is binary by its new content"),
        "{why}"
    );
    // Too large to read: refused, not passed unread.
    let why = check_new_file("big.txt", MAX_JUDGED_FILE_BYTES + 1, None, &wall())
        .unwrap_err()
        .to_string();
    assert!(why.contains("\"big.txt\" is"), "{why}");
}

// The control: an ordinary text file, modified (or new), in UTF-8 of any script, passes.
#[test]
fn a_modified_ordinary_text_file_passes_whole() {
    let mut content = twelve_kib_then(b"one more line\n");
    content.extend("Grüße, 日本語, emoji \u{1f600}, tabs\tand CRLF\r\n".as_bytes());
    assert_eq!(
        check_new_file(
            "src/notes.txt",
            content.len() as u64,
            Some(&content),
            &wall()
        ),
        Ok(())
    );
    assert_eq!(check_new_file("empty", 0, Some(&[]), &wall()), Ok(()));
}
