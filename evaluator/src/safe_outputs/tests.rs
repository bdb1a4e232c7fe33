//! Tests of `safe_outputs`: declarations refused or passed, the default deny list always
//! part of `deny`.

use super::*;

fn outputs() -> SafeOutputs {
    SafeOutputs {
        pull_request: true,
        ..SafeOutputs::default()
    }
}

#[test]
fn the_default_deny_list_is_always_part_of_deny() {
    let mut so = outputs();
    so.paths_deny = vec!["secret/**".into()];
    let deny = so.deny();
    for default in DEFAULT_DENY {
        assert!(deny.contains(&default));
    }
    assert!(deny.contains(&"secret/**"));
    assert!(check(&so).is_empty(), "{:?}", check(&so));
}

#[test]
fn bad_declarations_are_refused() {
    let cases: Vec<(SafeOutputs, &str)> = vec![
        (SafeOutputs::default(), "allows nothing"),
        (
            SafeOutputs {
                comments: 11,
                ..outputs()
            },
            "comments=11",
        ),
        (
            SafeOutputs {
                labels: vec!["a,b".into()],
                ..outputs()
            },
            "comma",
        ),
        (
            SafeOutputs {
                labels: vec!["bug\u{202e}".into()],
                ..outputs()
            },
            "invisible",
        ),
        (
            SafeOutputs {
                labels: vec![" bug".into()],
                ..outputs()
            },
            "space",
        ),
        (
            SafeOutputs {
                paths_allow: vec!["src/[".into()],
                ..outputs()
            },
            "paths_allow glob",
        ),
        (
            SafeOutputs {
                paths_deny: vec!["".into()],
                ..outputs()
            },
            "paths_deny glob",
        ),
        (
            SafeOutputs {
                max_files: 0,
                ..outputs()
            },
            "max_files=0",
        ),
        (
            SafeOutputs {
                max_diff_bytes: 2 << 20,
                ..outputs()
            },
            "max_diff_bytes",
        ),
        (
            SafeOutputs {
                branch_prefix: "plue".into(),
                ..outputs()
            },
            "end with",
        ),
        (
            SafeOutputs {
                branch_prefix: "a..b/".into(),
                ..outputs()
            },
            "valid git ref",
        ),
        (
            SafeOutputs {
                branch_prefix: ".x/".into(),
                ..outputs()
            },
            "valid git ref",
        ),
        (
            SafeOutputs {
                branch_prefix: "x y/".into(),
                ..outputs()
            },
            "ASCII",
        ),
        (
            SafeOutputs {
                allow_links: vec!["Evil.com".into()],
                ..outputs()
            },
            "host name",
        ),
        (
            SafeOutputs {
                allow_links: vec!["localhost".into()],
                ..outputs()
            },
            "host name",
        ),
        (
            SafeOutputs {
                threat_review_model: Some("claude haiku".into()),
                ..outputs()
            },
            "not a model name",
        ),
        (
            SafeOutputs {
                threat_check: ThreatCheck::Off,
                threat_review_model: Some("claude-haiku-4-5".into()),
                ..outputs()
            },
            "threat_check=\"off\"",
        ),
        (
            SafeOutputs {
                threat_review_model: Some("claude-haiku-4-5".into()),
                threat_review_max_tokens: Some(0),
                ..outputs()
            },
            "threat_review_max_tokens=0",
        ),
        (
            SafeOutputs {
                threat_review_max_tokens: Some(100),
                ..outputs()
            },
            "without threat_review_model",
        ),
    ];
    for (so, expected) in cases {
        let problems = check(&so);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}

#[test]
fn threat_settings_default_to_auto_and_stay_out_of_the_plan() {
    let so = outputs();
    assert_eq!(so.threat_check, ThreatCheck::Auto);
    let json = serde_json::to_value(&so).unwrap();
    assert!(json.get("threat_check").is_none(), "{json}");
    assert!(json.get("threat_review_model").is_none(), "{json}");
    let always = SafeOutputs {
        threat_check: ThreatCheck::Always,
        threat_review_model: Some("claude-haiku-4-5".into()),
        ..outputs()
    };
    assert!(check(&always).is_empty(), "{:?}", check(&always));
    let json = serde_json::to_value(&always).unwrap();
    assert_eq!(json["threat_check"], "always");
    let back: SafeOutputs = serde_json::from_value(json).unwrap();
    assert_eq!(back, always);
    for word in ["auto", "always", "off"] {
        assert_eq!(ThreatCheck::parse(word).unwrap().as_str(), word);
    }
    assert_eq!(ThreatCheck::parse("sometimes"), None);
}

#[test]
fn good_prefixes_and_hosts_pass() {
    for prefix in ["plue/", "bots/plue-", "a/b/c/"] {
        assert_eq!(check_branch_prefix(prefix), Ok(()), "{prefix}");
    }
    assert!(is_host_name("docs.rs") && is_host_name("ci.example-1.com"));
}

#[test]
fn the_default_deny_list_covers_what_changes_how_git_and_the_forges_read_the_tree() {
    let deny: Vec<_> = DEFAULT_DENY
        .iter()
        .map(|g| crate::glob::compile(g).unwrap())
        .collect();
    // As the engine compares a path: lowercased too.
    let denied = |path: &str| {
        let lower = path.to_lowercase();
        deny.iter().any(|d| d.is_match(path) || d.is_match(&lower))
    };
    for path in [
        ".gitattributes",
        "sub/.gitattributes",
        ".GitAttributes",
        "a/b/.gitattributes",
        ".gitmodules",
        "vendor/.gitmodules",
        ".lfsconfig",
        ".mailmap",
        ".git-blame-ignore-revs",
        "CODEOWNERS",
        "docs/CODEOWNERS",
        "Docs/CodeOwners",
        ".github/CODEOWNERS",
        ".gitea/CODEOWNERS",
        ".gitlab/CODEOWNERS",
    ] {
        assert!(denied(path), "{path}");
    }
    for path in [
        ".gitignore",
        "src/.gitignore",
        "lib/CODEOWNERS",
        "src/codeowners.rs",
        "README.md",
    ] {
        assert!(!denied(path), "{path}");
    }
    // Every glob is lowercase: the engine's lowercased comparison is what makes
    // `.GitAttributes` match.
    for glob in DEFAULT_DENY {
        assert_eq!(glob, glob.to_lowercase());
    }
}
