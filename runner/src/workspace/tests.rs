use std::os::unix::fs::PermissionsExt;

use super::*;

fn write(root: &Path, relative: &str, content: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn copy_source(path: &Path) -> WorkspaceSource {
    WorkspaceSource::Copy {
        path: path.to_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn an_engine_data_dir_anywhere_in_the_tree_is_never_copied() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, "app.py", "yes");
    write(root, "deep/state/plue.db", "sealed secrets");
    write(
        root,
        "deep/state/CACHEDIR.TAG",
        &format!("{CACHEDIR_SIGNATURE}\n"),
    );
    write(root, "other/CACHEDIR.TAG", "not the signature");
    write(root, "other/kept", "yes");
    let dst = tempfile::tempdir().unwrap();
    prepare(&copy_source(root), dst.path()).await.unwrap();
    assert!(dst.path().join("app.py").exists());
    assert!(dst.path().join("other/kept").exists());
    assert!(!dst.path().join("deep/state").exists());
}

#[tokio::test]
async fn copy_honours_ignore_rules_and_keeps_modes_and_links() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    write(root, ".gitignore", "target/\n*.log\n");
    write(root, "sub/.ignore", "secret.txt\n");
    write(root, "sub/secret.txt", "no");
    write(root, "sub/kept.txt", "yes");
    write(root, "target/debug/big", "no");
    write(root, "run.log", "no");
    write(root, ".hidden", "yes");
    write(root, ".git/HEAD", "ref: refs/heads/main");
    write(root, ".plue/db", "no");
    write(root, "nested/.plue/kept", "yes");
    write(root, "script.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        root.join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/kept.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();

    let dest = tempfile::tempdir().unwrap();
    prepare(&copy_source(root), dest.path()).await.unwrap();
    let d = dest.path();
    for kept in [
        ".gitignore",
        "sub/.ignore",
        "sub/kept.txt",
        ".hidden",
        "nested/.plue/kept",
    ] {
        assert!(d.join(kept).is_file(), "{kept} should be copied");
    }
    for skipped in ["sub/secret.txt", "target", "run.log", ".git", ".plue"] {
        assert!(!d.join(skipped).exists(), "{skipped} should not be copied");
    }
    let mode = std::fs::metadata(d.join("script.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(d.join("link")).unwrap(),
        Path::new("sub/kept.txt")
    );
    assert_eq!(
        std::fs::read_link(d.join("dangling")).unwrap(),
        Path::new("/nonexistent/target")
    );
}

#[tokio::test]
async fn copy_into_a_directory_inside_the_source_does_not_recurse() {
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "a.txt", "a");
    let dest = src.path().join("work");
    std::fs::create_dir(&dest).unwrap();
    prepare(&copy_source(src.path()), &dest).await.unwrap();
    assert!(dest.join("a.txt").is_file());
    assert!(!dest.join("work").exists());
}

#[tokio::test]
async fn copy_of_a_missing_directory_fails() {
    let dest = tempfile::tempdir().unwrap();
    let source = WorkspaceSource::Copy {
        path: "/nonexistent/plue-src".into(),
    };
    let err = prepare(&source, dest.path()).await.unwrap_err();
    assert!(
        format!("{err:#}").contains(
            "/nonexistent/plue-src is not a directory on this runner's machine: a run of a \
             workflow file of the engine's file system needs runners on the engine's machine"
        ),
        "{err:#}"
    );
}

/// Runs git in `dir` with a fixed identity, returning its stdout.
fn git_in(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Plue",
            "-c",
            "user.email=plue@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn git_checks_out_the_requested_commit() {
    let repo = tempfile::tempdir().unwrap();
    git_in(repo.path(), &["init", "-q"]);
    write(repo.path(), "file.txt", "first");
    git_in(repo.path(), &["add", "."]);
    git_in(repo.path(), &["commit", "-q", "-m", "first"]);
    let first = git_in(repo.path(), &["rev-parse", "HEAD"]);
    write(repo.path(), "file.txt", "second");
    git_in(repo.path(), &["commit", "-q", "-am", "second"]);

    let url = repo.path().to_str().unwrap().to_owned();
    let cases = [
        (url.clone(), first.clone()),
        (format!("file://{url}"), first[..10].to_owned()),
    ];
    for (url, sha) in cases {
        let dest = tempfile::tempdir().unwrap();
        let source = WorkspaceSource::Git {
            url: url.clone(),
            sha,
            credential: None,
        };
        prepare(&source, dest.path()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.path().join("file.txt")).unwrap(),
            "first",
            "{url}"
        );
        assert_eq!(git_in(dest.path(), &["rev-parse", "HEAD"]), first);
    }

    let dest = tempfile::tempdir().unwrap();
    let missing = WorkspaceSource::Git {
        url,
        sha: "0".repeat(40),
        credential: None,
    };
    let err = prepare(&missing, dest.path()).await.unwrap_err();
    assert!(format!("{err:#}").contains("git checkout"), "{err:#}");
}

// The attack (issue 29): a checkout that failed said so with the clone URL, and the
// step's failure reason — read by everyone who reads the run — held its credentials.
#[tokio::test]
async fn a_failed_checkout_never_repeats_the_urls_credentials() {
    let dest = tempfile::tempdir().unwrap();
    let source = WorkspaceSource::Git {
        url: "http://bot:s3cr3t@127.0.0.1:1/acme/app.git".into(),
        sha: "a".repeat(40),
        credential: None,
    };
    let err = format!("{:#}", prepare(&source, dest.path()).await.unwrap_err());
    assert!(err.contains("http://***@127.0.0.1:1/acme/app.git"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    assert_eq!(
        without_credentials("git@forge:a/b.git"),
        "git@forge:a/b.git"
    );
    assert_eq!(
        without_credentials("https://forge/a@b/c.git"),
        "https://forge/a@b/c.git"
    );
}

// A GitHub App's repository: the checkout needs the engine's short-lived token, which
// must stay out of the workspace (a step reads its `.git`) and out of any message.
#[tokio::test]
async fn a_checkout_credential_opens_the_fetch_and_stays_out_of_the_workspace() {
    let forge = testkit::forge::FakeForge::start(testkit::forge::Flavor::GitHub, "unused").unwrap();
    let sha = forge
        .create_repo_with("acme/app", &[("README", "hello\n")])
        .unwrap();
    forge.enable_app(testkit::forge::app::AppConfig::test(
        std::time::Duration::from_secs(600),
    ));
    let token = forge.mint_installation_token("acme/app", &[("contents", "read")]);
    let source = |credential: Option<&str>| WorkspaceSource::Git {
        url: forge.clone_url("acme/app"),
        sha: sha.clone(),
        credential: credential.map(|t| plue_types::protocol::GitCredential::new(t.into())),
    };
    let refused = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        prepare(&source(None), refused.path()).await.unwrap_err()
    );
    assert!(err.contains("checking out"), "{err}");
    let wrong = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        prepare(&source(Some("ghs_not-a-token")), wrong.path())
            .await
            .unwrap_err()
    );
    assert!(!err.contains("ghs_not-a-token"), "{err}");
    let dest = tempfile::tempdir().unwrap();
    prepare(&source(Some(&token)), dest.path()).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.path().join("README")).unwrap(),
        "hello\n"
    );
    for entry in walkdir::WalkDir::new(dest.path()) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&token), "{}", entry.path().display());
            assert!(!text.contains("extraHeader"), "{}", entry.path().display());
        }
    }
}

// The attack: the forge answers the checkout's first request with a redirect to another
// host (a renamed or transferred repository, a compromised proxy). git follows it once
// (`http.followRedirects=initial`) and sends the rest of the fetch to that host itself,
// every `http.extraHeader` with it: the installation token went to the other host.
#[tokio::test]
async fn a_checkout_credential_never_follows_a_redirect_to_another_host() {
    let trap = testkit::redirect_trap::RedirectTrap::start().unwrap();
    let source = WorkspaceSource::Git {
        url: trap.url("acme/app.git"),
        sha: testkit::redirect_trap::RedirectTrap::SHA.into(),
        credential: Some(plue_types::protocol::GitCredential::new(
            "ghs_trapped".into(),
        )),
    };
    let dest = tempfile::tempdir().unwrap();
    let err = format!("{:#}", prepare(&source, dest.path()).await.unwrap_err());
    assert!(!err.contains("ghs_trapped"), "{err}");
    let header = plue_types::protocol::GitCredential::new("ghs_trapped".into()).header();
    let basic = header.trim_start_matches("Authorization: ");
    assert!(
        !trap.authorizations().iter().any(|a| a == basic),
        "the token reached the host redirected to: {:?}",
        trap.authorizations()
    );
}

#[tokio::test]
async fn git_arguments_cannot_become_options() {
    let dest = tempfile::tempdir().unwrap();
    let sha = "a".repeat(40);
    let bad = [
        ("--upload-pack=touch /tmp/pwned", sha.as_str()),
        ("-uevil", sha.as_str()),
        ("", sha.as_str()),
        ("/repo", "--output=/tmp/x"),
        ("/repo", "ABCDEF0"),
        ("/repo", "abc"),
        ("/repo", "HEAD"),
    ];
    for (url, sha) in bad {
        let source = WorkspaceSource::Git {
            url: url.into(),
            sha: sha.into(),
            credential: None,
        };
        let err = prepare(&source, dest.path()).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid"),
            "{url} {sha}: {err:#}"
        );
    }
    assert!(
        std::fs::read_dir(dest.path()).unwrap().next().is_none(),
        "git ran"
    );
}

#[tokio::test]
async fn empty_does_nothing() {
    let dest = tempfile::tempdir().unwrap();
    prepare(&WorkspaceSource::Empty, dest.path()).await.unwrap();
    assert!(std::fs::read_dir(dest.path()).unwrap().next().is_none());
}

#[tokio::test]
async fn a_pack_checks_out_as_a_fetch_of_depth_one_does() {
    let repo = tempfile::tempdir().unwrap();
    git_in(repo.path(), &["init", "-q"]);
    write(repo.path(), "file.txt", "first");
    git_in(repo.path(), &["add", "."]);
    git_in(repo.path(), &["commit", "-q", "-m", "first"]);
    write(repo.path(), "file.txt", "second");
    write(repo.path(), "bin/run", "#!/bin/sh\n");
    std::fs::set_permissions(
        repo.path().join("bin/run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("file.txt", repo.path().join("link")).unwrap();
    git_in(repo.path(), &["add", "."]);
    git_in(repo.path(), &["commit", "-q", "-m", "second"]);
    let sha = git_in(repo.path(), &["rev-parse", "HEAD"]);
    let pack = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf -- '--shallow {sha}\\n{sha}\\n' | git pack-objects --revs --stdout -q"
        ))
        .current_dir(repo.path())
        .output()
        .unwrap()
        .stdout;

    let dest = tempfile::tempdir().unwrap();
    checkout_pack(&pack[..], &sha, dest.path()).await.unwrap();
    let fetched = tempfile::tempdir().unwrap();
    let source = WorkspaceSource::Git {
        url: repo.path().to_str().unwrap().into(),
        sha: sha.clone(),
        credential: None,
    };
    prepare(&source, fetched.path()).await.unwrap();
    for dir in [dest.path(), fetched.path()] {
        assert_eq!(git_in(dir, &["rev-parse", "HEAD"]), sha);
        assert_eq!(git_in(dir, &["rev-list", "--count", "HEAD"]), "1");
        assert_eq!(git_in(dir, &["status", "--porcelain"]), "");
        assert_eq!(
            git_in(dir, &["rev-parse", "--is-shallow-repository"]),
            "true"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("file.txt")).unwrap(),
            "second"
        );
        let mode = std::fs::metadata(dir.join("bin/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "the executable bit");
        assert_eq!(
            std::fs::read_link(dir.join("link")).unwrap(),
            Path::new("file.txt")
        );
        git_in(dir, &["fsck", "--no-progress"]);
    }
    // A commit the pack does not hold, a pack that is none, an id that is no full id.
    let first = git_in(repo.path(), &["rev-parse", "HEAD~1"]);
    for (pack, sha) in [
        (&pack[..], first.as_str()),
        (&b"PACK\0\0\0\x02garbage"[..], sha.as_str()),
        (&pack[..], &sha[..12]),
        (&pack[..], "--output=/tmp/x"),
    ] {
        let dest = tempfile::tempdir().unwrap();
        assert!(
            checkout_pack(pack, sha, dest.path()).await.is_err(),
            "{sha}"
        );
    }
}

#[test]
fn emptying_removes_links_never_what_they_point_at() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "keep/me", "kept");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".git/objects/x", "x");
    write(dir.path(), "file", "f");
    std::os::unix::fs::symlink(outside.path().join("keep"), dir.path().join("link")).unwrap();
    empty(dir.path()).unwrap();
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("keep/me")).unwrap(),
        "kept"
    );
}
