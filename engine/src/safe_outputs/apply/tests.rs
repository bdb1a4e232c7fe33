//! The commit a pull request proposal becomes, and its push: deterministic, exactly the
//! agent's diff, and the token never where git or a reader could print it.

use testkit::forge::{FakeForge, Flavor};

use super::*;

const TOKEN: &str = "app1y-t0ken";

/// A forge repository with one commit, and a diff against it made in a clone.
fn setup() -> (FakeForge, String, Vec<u8>) {
    let forge = FakeForge::start(Flavor::Gitea, TOKEN).unwrap();
    let base = forge
        .create_repo_with(
            "acme/app",
            &[("src/lib.rs", "fn a() {}\n"), ("old.txt", "x\n")],
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let out = std::process::Command::new("bash")
            .arg("-ec")
            .arg(script)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    sh(&format!("git clone -q {} .", forge.clone_url("acme/app")));
    let diff = sh(
        "printf 'fn a() { b() }\\n' > src/lib.rs; rm old.txt; printf '\\0bin' > new.bin; \
         git add -A; git diff --cached --binary",
    );
    (forge, base, diff)
}

async fn mirror_of(forge: &FakeForge, dir: &std::path::Path) -> Mirror {
    let mirror = Mirror::open(dir.join("1.git")).await.unwrap();
    mirror
        .fetch(&forge.clone_url("acme/app"), &["main"])
        .await
        .unwrap();
    mirror
}

#[tokio::test]
async fn the_commit_is_the_base_plus_exactly_the_diff_and_the_same_every_time() {
    let (forge, base, diff) = setup();
    let mirrors = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&forge, mirrors.path()).await;
    let first = build_commit(&mirror, &base, &diff, "Fix a", 1_700_000_000_000)
        .await
        .unwrap();
    let again = build_commit(&mirror, &base, &diff, "Fix a", 1_700_000_000_000)
        .await
        .unwrap();
    assert_eq!(first, again, "a retry builds the same commit");
    let shown = git::git_with(
        Some(mirror.dir()),
        &["diff", "--binary", &base, &first],
        &[],
        None,
        GIT_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&shown),
        String::from_utf8_lossy(&diff)
    );
    let parent = git::git_with(
        Some(mirror.dir()),
        &["rev-parse", &format!("{first}^")],
        &[],
        None,
        GIT_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&parent).trim(), base);
    // The mirror's own index is untouched (it has none: it is bare).
    assert!(!mirror.dir().join("index").exists());

    let broken = build_commit(&mirror, &base, b"not a diff at all", "x", 0).await;
    assert!(broken.is_err());
}

#[tokio::test]
async fn the_push_needs_the_token_and_no_error_repeats_it() {
    let (forge, base, diff) = setup();
    let mirrors = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&forge, mirrors.path()).await;
    let commit = build_commit(&mirror, &base, &diff, "Fix a", 0)
        .await
        .unwrap();
    let url = forge.clone_url("acme/app");
    let refused = push(&mirror, &url, &commit, "plue/run-1-fix", "wrong-token")
        .await
        .unwrap_err()
        .to_string();
    assert!(!refused.contains("wrong-token"), "{refused}");
    assert_eq!(forge.branch_sha("acme/app", "plue/run-1-fix"), None);
    for _ in 0..2 {
        push(&mirror, &url, &commit, "plue/run-1-fix", TOKEN)
            .await
            .unwrap();
    }
    assert_eq!(
        forge.branch_sha("acme/app", "plue/run-1-fix").as_deref(),
        Some(commit.as_str())
    );
    // The token went in the Authorization header of git's requests, never in a URL.
    for request in forge.requests() {
        assert!(!request.path.contains(TOKEN) && !request.query.contains(TOKEN));
    }
}

#[test]
fn branches_and_markers_are_deterministic() {
    assert_eq!(branch_name("plue/", 7, "fix"), "plue/run-7-fix");
    assert_eq!(marker(12), "<!-- plue:proposal:12 -->");
}
