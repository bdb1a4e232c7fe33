//! The commit a pull request proposal becomes, and its push: deterministic, exactly the
//! agent's diff, and the token never where git or a reader could print it.
//!
//! Why one file past ~600 lines: the applier's tests share one world (a fake forge with a
//! repository, its bare mirror, a store with a run and its proposals), built by the helpers
//! here; each test takes a proposal from stored to written or refused.

use base64::Engine;
use plue_store::testing::stores;
use plue_store::testing::Sql;
use plue_types::status::ProposalState;
use testkit::forge::{FakeForge, Flavor};

use super::*;

const TOKEN: &str = "app1y-t0ken";

/// A forge repository with one commit, and a diff against it made in a clone.
/// What `bash -ec script` prints in `dir`; its failure fails the test with its stderr.
fn bash_in(dir: &std::path::Path, script: &str) -> Vec<u8> {
    let out = std::process::Command::new("bash")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn setup() -> (FakeForge, String, Vec<u8>) {
    let forge = FakeForge::start(Flavor::Gitea, TOKEN).unwrap();
    let base = forge
        .create_repo_with(
            "acme/app",
            &[("src/lib.rs", "fn a() {}\n"), ("old.txt", "x\n")],
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let sh = |script: &str| bash_in(work.path(), script);
    sh(&format!("git clone -q {} .", forge.clone_url("acme/app")));
    let diff = sh(
        "printf 'fn a() { b() }\\n' > src/lib.rs; rm old.txt; printf 'new\\n' > new.txt; \
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
    let first = build_commit(&mirror, &base, &diff, &title("Fix a"), 1_700_000_000_000)
        .await
        .unwrap();
    let again = build_commit(&mirror, &base, &diff, &title("Fix a"), 1_700_000_000_000)
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

    let broken = build_commit(&mirror, &base, b"not a diff at all", &title("x"), 0).await;
    assert!(broken.is_err());
}

#[tokio::test]
async fn the_push_needs_the_token_and_no_error_repeats_it() {
    let (forge, base, diff) = setup();
    let mirrors = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&forge, mirrors.path()).await;
    let commit = build_commit(&mirror, &base, &diff, &title("Fix a"), 0)
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

// The attack: the forge answers the push's first request with a redirect to another
// host; git follows it and sends the pack there with the write token's header.
#[tokio::test]
async fn the_push_never_follows_a_redirect_to_another_host() {
    use testkit::redirect_trap::RedirectTrap;
    let (forge, base, diff) = setup();
    let mirrors = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&forge, mirrors.path()).await;
    let commit = build_commit(&mirror, &base, &diff, &title("Fix a"), 0)
        .await
        .unwrap();
    let trap = RedirectTrap::start().unwrap();
    let refused = push(
        &mirror,
        &trap.url("acme/app.git"),
        &commit,
        "plue/run-1-fix",
        "ghs_trapped",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(!refused.contains("ghs_trapped"), "{refused}");
    let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:ghs_trapped");
    assert!(
        !trap.authorizations().contains(&format!("Basic {basic}")),
        "the token reached the host redirected to: {:?}",
        trap.authorizations()
    );
}

#[test]
fn branches_and_markers_are_deterministic() {
    assert_eq!(branch_name("plue/", 7, "fix"), "plue/run-7-fix");
    assert_eq!(marker(12), "<!-- plue:proposal:12 -->");
}

/// A store with `runs` runs of one workflow and, for run `r`, the proposals `kinds[r]`
/// (all `ready`, in order); returns the store and the proposal ids per run.
async fn store_with(store: &Store, kinds: &[&[&str]]) -> Vec<Vec<i64>> {
    let mut ids = Vec::new();
    {
        Sql::new("INSERT INTO workflows (id, source, path, name, created_at) VALUES (1, 'local', 'w', 'w', 0)")
            .execute(store).await;
        for (r, kinds) in kinds.iter().enumerate() {
            let run = r as i64 + 1;
            Sql::new(
                "INSERT INTO runs (id, workflow_id, event, ref, sha, plan_hash, \
                 max_parallel, status, created_at) \
                 VALUES ($1, 1, 'manual', 'refs/heads/main', 'x', 'h', 1, 'running', 0)",
            )
            .bind(run)
            .execute(store)
            .await;
            let mut of_run = Vec::new();
            for (position, kind) in kinds.iter().enumerate() {
                let id: i64 = Sql::new(
                    "INSERT INTO proposals (run_id, step_run_id, attempt_id, position, kind, \
                     payload, state, created_at) VALUES ($1, 1, $1, $2, $3, '{}', 'ready', 0) \
                     RETURNING id",
                )
                .bind(run)
                .bind(position as i64)
                .bind(*kind)
                .one_int(store)
                .await;
                of_run.push(id);
            }
            ids.push(of_run);
        }
    };
    ids
}

#[tokio::test]
async fn proposals_are_claimed_once_in_order_per_run_and_again_after_a_dead_lease() {
    for (store, _dir) in stores().await {
        let ids = store_with(&store, &[&["pull_request", "comment"], &["comment"]]).await;
        // Two appliers at once: the first of each run, each claimed by exactly one of them.
        let (a, b) = tokio::join!(
            store.claim_proposals(1_000, 60_000, 10),
            store.claim_proposals(1_000, 60_000, 10)
        );
        let mut claimed: Vec<i64> = a.unwrap().into_iter().chain(b.unwrap()).collect();
        claimed.sort();
        assert_eq!(
            claimed,
            [ids[0][0], ids[1][0]],
            "the comment of run 1 waits for its PR"
        );
        // Nothing more while the leases hold.
        assert!(store
            .claim_proposals(2_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty());
        // Run 2's is applied; run 1's applier died: its lease ends, and it is taken again.
        assert!(store.mark_applied(ids[1][0], "u").await.unwrap());
        assert_eq!(
            store.claim_proposals(61_001, 60_000, 10).await.unwrap(),
            [ids[0][0]]
        );
        // A retryable failure is taken again at its time; then the run's comment follows.
        assert!(store
            .mark_failed(ids[0][0], "503", Some(70_000))
            .await
            .unwrap());
        assert!(store
            .claim_proposals(69_999, 60_000, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.claim_proposals(70_000, 60_000, 10).await.unwrap(),
            [ids[0][0]]
        );
        assert!(store.mark_failed(ids[0][0], "refused", None).await.unwrap());
        assert_eq!(
            store.claim_proposals(70_001, 60_000, 10).await.unwrap(),
            [ids[0][1]],
            "a permanent failure settles it"
        );
        assert_eq!(
            store.proposal(ids[0][1]).await.unwrap().unwrap().state,
            ProposalState::Applying
        );
    }
}

// The attack: a stranger's comment summons a run treated like a fork's
// (`others="untrusted"`); its agent proposes, and without this rule the engine wrote it to
// the forge with the repository's token. Now nothing is written until a person approves.
#[tokio::test]
async fn a_strangers_run_writes_nothing_without_a_persons_approval() {
    for (store, _dir) in stores().await {
        let ids = store_with(&store, &[&["comment"], &["comment"]]).await;
        {
            Sql::new("UPDATE runs SET secrets_allowed = FALSE")
                .execute(&store)
                .await;
            Sql::new("UPDATE proposals SET decided_by = 'maintainer' WHERE id = $1")
                .bind(ids[1][0])
                .execute(&store)
                .await;
        };
        let mirrors = tempfile::tempdir().unwrap();
        let applier = applier_of(&store, mirrors.path());
        assert_eq!(applier.apply_due().await.unwrap(), 0);
        let refused = store.proposal(ids[0][0]).await.unwrap().unwrap();
        assert_eq!(refused.state, ProposalState::Failed);
        assert!(refused
            .reason
            .unwrap()
            .contains("only once a person approves"));
        // The approved one went on (and stopped at what this store lacks: a real payload).
        let approved = store.proposal(ids[1][0]).await.unwrap().unwrap();
        assert!(
            approved
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("stored proposal"),
            "{approved:?}"
        );
    }
}

// Defense in depth: were the validator to read a diff otherwise than `git apply` does, the
// commit `git apply` built is checked before any push. Each diff here is one the validator
// refuses; built anyway, what it changes is refused too — a denied path, both sides of a
// rename, a symbolic link, a mode change to one, a `.gitmodules` — and a clean one passes.
#[tokio::test]
async fn what_the_built_commit_changes_is_checked_again_before_the_push() {
    let (forge, base, _) = setup();
    let mirrors = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&forge, mirrors.path()).await;
    let work = tempfile::tempdir().unwrap();
    let sh = |script: &str| bash_in(work.path(), script);
    sh(&format!("git clone -q {} .", forge.clone_url("acme/app")));
    let so = SafeOutputs::default();
    let hostile = [
        (
            "mkdir -p .github/workflows; echo x > .github/workflows/ci.yml",
            ".github",
        ),
        ("mkdir -p .PLUE; git mv src/lib.rs .PLUE/deploy.py", ".PLUE"),
        ("git mv old.txt deploy.plue.py", "deploy.plue.py"),
        ("ln -s /etc/passwd link", "symbolic link"),
        ("rm old.txt; ln -s src old.txt", "symbolic link"),
        (
            "mkdir -p sub; echo '[submodule]' > sub/.gitmodules",
            ".gitmodules",
        ),
    ];
    for (script, expected) in hostile {
        let diff = sh(&format!(
            "git reset -q --hard; git clean -qfdx; {script}; git add -A; \
             git diff --cached --binary -M"
        ));
        let text = String::from_utf8_lossy(&diff);
        assert!(validate::check_diff(&text, &so).is_err(), "{text}");
        let commit = build_commit(&mirror, &base, &diff, &title("t"), 1_700_000_000_000)
            .await
            .unwrap();
        let changed = changes(&mirror, &base, &commit).await.unwrap();
        let why = validate::check_changes(&changed, &so)
            .unwrap_err()
            .to_string();
        assert!(why.contains(expected), "{script}: {why} ({changed:?})");
    }
    let diff = sh(
        "git reset -q --hard; git clean -qfdx; echo y > src/main.rs; git mv old.txt new.txt; \
         git add -A; git diff --cached --binary -M",
    );
    let commit = build_commit(&mirror, &base, &diff, &title("t"), 1_700_000_000_000)
        .await
        .unwrap();
    let changed = changes(&mirror, &base, &commit).await.unwrap();
    assert_eq!(changed.len(), 3, "{changed:?}");
    validate::check_changes(&changed, &so).unwrap();
}

/// 12 KiB of ordinary text lines: an existing text file git calls text.
fn notes() -> String {
    "a line of ordinary notes, nothing to see here at all\n".repeat(12 * 1024 / 52 + 1)
}

/// `text`'s UTF-16 (big-endian or not) and UTF-32LE code units.
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

fn utf32le(text: &str) -> Vec<u8> {
    text.chars()
        .flat_map(|c| (c as u32).to_le_bytes())
        .collect()
}

/// The wall of a run holding `TOKEN` (the repository's forge token is a secret of its run).
fn token_wall() -> plue_outbound::Checker {
    plue_outbound::Checker::new(&plue_outbound::Secrets::from_iter([TOKEN]), ["plue"])
}

// The attack (the outbound wall, round two): an existing text file gets a wide copy of a
// secret of the run appended after 12 KiB — UTF-16BE with its byte-order mark, UTF-16LE
// at an odd offset, UTF-32 — which the diff's hunks may not show as such (git calls the
// file text by its first 8,000 bytes). The commit the applier built is read back and each
// file it adds or modifies is judged whole: refused, naming the file. An ordinary change
// to the same file, and a new text file, pass.
#[tokio::test]
async fn each_file_the_built_commit_changes_is_judged_by_its_whole_new_content() {
    let forge = FakeForge::start(Flavor::Gitea, TOKEN).unwrap();
    let notes = notes();
    let base = forge
        .create_repo_with("acme/app", &[("src/notes.txt", &notes), ("a.txt", "a\n")])
        .unwrap();
    let mirrors = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&forge, mirrors.path()).await;
    let work = tempfile::tempdir().unwrap();
    let sh = |script: &str| bash_in(work.path(), script);
    sh(&format!("git clone -q {} .", forge.clone_url("acme/app")));
    let mut bom_be = vec![0xfe, 0xff];
    bom_be.extend(utf16(TOKEN, true));
    let mut odd_le = b"\n!".to_vec();
    odd_le.extend(utf16(TOKEN, false));
    let mut odd_utf32 = b"abc".to_vec();
    odd_utf32.extend(utf32le(TOKEN));
    let judged = |changed: Vec<contents::NewFile>| -> Result<(), String> {
        for file in changed {
            validate::check_new_file(
                &file.path,
                file.size,
                file.content.as_deref(),
                &token_wall(),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    for (encoding, appended) in [
        ("UTF-16BE", bom_be),
        ("UTF-16LE", odd_le),
        ("UTF-32LE", odd_utf32),
    ] {
        sh("git reset -q --hard; git clean -qfdx");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(work.path().join("src/notes.txt"))
            .unwrap();
        std::io::Write::write_all(&mut file, &appended).unwrap();
        let diff = sh("echo b > a.txt; git add -A; git diff --cached --binary");
        let commit = build_commit(&mirror, &base, &diff, &title("t"), 1_700_000_000_000)
            .await
            .unwrap();
        let changed = contents::new_files(&mirror, &base, &commit, validate::MAX_JUDGED_FILE_BYTES)
            .await
            .unwrap();
        assert_eq!(changed.len(), 2, "{encoding}");
        let why = judged(changed).unwrap_err();
        assert!(
            why.starts_with("the file \"src/notes.txt\" holds a secret of the run"),
            "{encoding}: {why}"
        );
        assert!(!why.contains(TOKEN), "{why}");
    }
    // The control: the same file modified with ordinary text, and a new file.
    let diff = sh(
        "git reset -q --hard; git clean -qfdx; echo 'one more line' >> src/notes.txt; \
         echo 'new notes' > src/more.txt; git add -A; git diff --cached --binary",
    );
    let commit = build_commit(&mirror, &base, &diff, &title("t"), 1_700_000_000_000)
        .await
        .unwrap();
    let changed = contents::new_files(&mirror, &base, &commit, validate::MAX_JUDGED_FILE_BYTES)
        .await
        .unwrap();
    assert_eq!(changed.len(), 2, "{changed:?}");
    let whole = changed.iter().find(|f| f.path == "src/notes.txt").unwrap();
    assert_eq!(
        whole.size,
        notes.len() as u64 + 14,
        "read whole, not the hunk"
    );
    judged(changed).unwrap();
    // Larger than the bound: only its size is read, and the file is refused.
    let small = contents::new_files(&mirror, &base, &commit, 100)
        .await
        .unwrap();
    let why = judged(small).unwrap_err();
    assert!(why.contains("\"src/notes.txt\" is"), "{why}");
}

/// The repository's webhook secret in the outbox test: a password of symbols, fewer than
/// eight letters and digits (the wall's view of letters and digits alone does not apply).
const PASSWORD: &str = "p@$$-w0rd!#%&*";

// The same attack end to end in the outbox: a stored pull request proposal whose diff
// appends a UTF-32LE copy of the repository's webhook secret (a secret of its run) at an
// odd offset after 12 KiB of an existing file. The diff's wall knows no UTF-32 spelling,
// so it was pushed and opened; now the built commit's file is judged whole and nothing is
// written.
#[tokio::test]
async fn a_proposal_whose_built_file_holds_a_secret_is_never_applied() {
    for (store, _dir) in stores().await {
        let forge = FakeForge::start(Flavor::Gitea, TOKEN).unwrap();
        let base = forge
            .create_repo_with("acme/app", &[("src/notes.txt", &notes())])
            .unwrap();
        let work = tempfile::tempdir().unwrap();
        bash_in(
            work.path(),
            &format!("git clone -q {} .", forge.clone_url("acme/app")),
        );
        let mut appended = b"x".to_vec();
        appended.extend(utf32le(PASSWORD));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(work.path().join("src/notes.txt"))
            .unwrap();
        std::io::Write::write_all(&mut file, &appended).unwrap();
        let diff = bash_in(work.path(), "git add -A; git diff --cached --binary");
        seed_pull_request_proposal(&store, &forge, &base, String::from_utf8(diff).unwrap()).await;
        let mirrors = tempfile::tempdir().unwrap();
        let applier = applier_of(&store, mirrors.path());
        assert_eq!(applier.apply_due().await.unwrap(), 0, "{}", store.backend());
        let proposal = store.list_for_run(1).await.unwrap().remove(0);
        assert_eq!(proposal.state, ProposalState::Failed, "{proposal:?}");
        let reason = proposal.reason.unwrap_or_default();
        assert!(
            reason.contains("the file \"src/notes.txt\" holds a secret of the run")
                && !reason.contains(PASSWORD),
            "{reason}"
        );
        assert!(forge.pulls("acme/app").is_empty());
        assert_eq!(forge.branch_sha("acme/app", "plue/run-1-fix"), None);
    }
}

/// Run 1 of repository 1's workflow 1, finished (`succeeded`) at `base`, with its step
/// `fix` and that step's approved pull request proposal `payload`: the proposal's id. The
/// repository's and the workflow's rows are each test's own.
pub(super) async fn finished_run_with_proposal(store: &Store, base: &str, payload: &str) -> i64 {
    let plan = r#"{"name":"fixer","triggers":[],"env":{},"steps":[]}"#;
    Sql::new(
        "INSERT INTO runs (id, workflow_id, event, ref, sha, plan_hash, max_parallel, \
         status, created_at, repo_id, finished_at) \
         VALUES (1, 1, 'manual', 'refs/heads/main', $1, 'h', 1, 'succeeded', 0, 1, 1)",
    )
    .bind(base)
    .execute(store)
    .await;
    Sql::new(
        "INSERT INTO run_documents (run_id, context, plan, workspace) VALUES (1, '{}', $1, '')",
    )
    .bind(plan)
    .execute(store)
    .await;
    Sql::new(
        "INSERT INTO step_runs (id, run_id, step_id, position, status, labels) \
         VALUES (1, 1, 'fix', 0, 'succeeded', '')",
    )
    .execute(store)
    .await;
    Sql::new(
        "INSERT INTO proposals (run_id, step_run_id, attempt_id, position, kind, payload, \
         state, decided_by, created_at) \
         VALUES (1, 1, 1, 0, 'pull_request', $1, 'ready', 'maintainer', 0) RETURNING id",
    )
    .bind(payload)
    .one_int(store)
    .await
}

/// Stores in `store` repository `acme/app` of `forge` (its token `TOKEN`, its webhook
/// secret `PASSWORD`), a finished run
/// 1 of it at `base` whose step `fix` proposed a pull request with `diff`, approved.
async fn seed_pull_request_proposal(store: &Store, forge: &FakeForge, base: &str, diff: String) {
    let payload = serde_json::to_string(&Proposal::PullRequest {
        title: "Fix a".into(),
        body: "As asked.".into(),
        diff,
    })
    .unwrap();
    {
        Sql::new("INSERT INTO repositories (id, name, clone_url, forge, created_at, api_url, api_token, \
                     webhook_secret) VALUES (1, 'acme/app', $1, 'gitea', 0, $2, $3, $4)")
            .bind(forge.clone_url("acme/app")).bind(forge.api_url()).bind(format!("plain:{TOKEN}"))
            .bind(format!("plain:{PASSWORD}"))
            .execute(store).await;
        Sql::new(
            "INSERT INTO workflows (id, source, path, name, repo_id, created_at) \
                     VALUES (1, 'acme/app', 'w', 'fixer', 1, 0)",
        )
        .execute(store)
        .await;
        finished_run_with_proposal(store, base, &payload).await;
    };
}

// What users hit (issue 49): a pull request whose proposal waited for a person was opened
// after its run had ended, so the run's final status (posted when the run ended, on
// nothing) never reached it. The applier now posts it on the commit it opens with.
#[tokio::test]
async fn a_pull_request_opened_after_its_run_ended_gets_the_runs_final_status() {
    for (store, _dir) in stores().await {
        let (forge, base, diff) = setup();
        let payload = serde_json::to_string(&Proposal::PullRequest {
            title: "Fix a".into(),
            body: "As asked.".into(),
            diff: String::from_utf8(diff).unwrap(),
        })
        .unwrap();
        {
            Sql::new("INSERT INTO repositories (id, name, clone_url, forge, created_at, api_url, api_token) \
                         VALUES (1, 'acme/app', $1, 'gitea', 0, $2, $3)")
                .bind(forge.clone_url("acme/app")).bind(forge.api_url()).bind(format!("plain:{TOKEN}"))
                .execute(&store).await;
            Sql::new(
                "INSERT INTO workflows (id, source, path, name, repo_id, created_at) \
                         VALUES (1, 'acme/app', 'w', 'fixer', 1, 0)",
            )
            .execute(&store)
            .await;
            finished_run_with_proposal(&store, &base, &payload).await;
        };
        let mirrors = tempfile::tempdir().unwrap();
        let applier = applier_of(&store, mirrors.path());
        assert_eq!(applier.apply_due().await.unwrap(), 1);
        let pulls = forge.pulls("acme/app");
        assert_eq!(pulls.len(), 1, "{pulls:?}");
        let statuses = forge.statuses("acme/app");
        assert!(
            statuses.iter().any(|s| s.sha == pulls[0].head_sha
                && s.state == "success"
                && s.context == "plue/fixer"
                && s.target_url == "http://plue/runs/1"),
            "{statuses:?}"
        );
    }
}

/// The repository `acme/app` of `forge` (its webhook secret `HOOK_SECRET`), a finished run
/// of it on `base`, and its step's approved pull request proposing `diff`; returns the
/// proposal's id.
async fn pull_request_world(store: &Store, forge: &FakeForge, base: &str, diff: &[u8]) -> i64 {
    let payload = serde_json::to_string(&Proposal::PullRequest {
        title: "Fix a".into(),
        body: "As asked.".into(),
        diff: String::from_utf8(diff.to_vec()).unwrap(),
    })
    .unwrap();
    {
        Sql::new(
            "INSERT INTO repositories (id, name, clone_url, forge, created_at, api_url, \
                     api_token, webhook_secret) VALUES (1, 'acme/app', $1, 'gitea', 0, $2, $3, $4)",
        )
        .bind(forge.clone_url("acme/app"))
        .bind(forge.api_url())
        .bind(format!("plain:{TOKEN}"))
        .bind(format!("plain:{HOOK_SECRET}"))
        .execute(store)
        .await;
        Sql::new(
            "INSERT INTO workflows (id, source, path, name, repo_id, created_at) \
                     VALUES (1, 'acme/app', 'w', 'fixer', 1, 0)",
        )
        .execute(store)
        .await;
        finished_run_with_proposal(store, base, &payload).await
    }
}

/// The repository's webhook secret: a secret of every run of it, which its wall masks.
const HOOK_SECRET: &str = "wh-s3cret-of-the-apply-tests";

// The attack: the statement was signed before the push and served as soon as it was
// recorded, so when the forge refused the push (or the pull request) a reader still got a
// signed statement of a change that never landed, rebuilt the commit from it, and `plue
// verify` called it the agent's change. Now the statement is `pending` until the write is
// accepted — the push and the pull request — and a refused write fails it with the
// forge's reason, as the run's wall shows it.
#[tokio::test]
async fn a_statement_is_applied_only_once_the_forge_accepted_the_push_and_the_pull_request() {
    use plue_store::Landing;
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        RefusesThePush,
        RefusesThePullRequest,
        Accepts,
    }
    for scenario in [
        Answer::RefusesThePush,
        Answer::RefusesThePullRequest,
        Answer::Accepts,
    ] {
        for (store, _dir) in stores().await {
            let (forge, base, diff) = setup();
            let proposal = pull_request_world(&store, &forge, &base, &diff).await;
            match scenario {
                Answer::RefusesThePush => forge
                    .refuse_pushes(
                        "acme/app",
                        &format!(
                            "protected branch (rule {HOOK_SECRET}): see https://evil.example/steal"
                        ),
                    )
                    .unwrap(),
                Answer::RefusesThePullRequest => forge.fault(testkit::forge::Fault::new(
                    "POST",
                    "/pulls",
                    testkit::forge::FaultAction::Status(422),
                )),
                Answer::Accepts => {}
            }
            let mirrors = tempfile::tempdir().unwrap();
            let signer = std::sync::Arc::new(plue_provenance::Signer::from_seed(&[31; 32]));
            let applier = applier_of(&store, mirrors.path()).with_attestor(Attestor {
                signer,
                artifacts: None,
            });
            let applied = applier.apply_due().await.unwrap();
            let row = store.proposal(proposal).await.unwrap().unwrap();
            let statement = store.statement(1, proposal).await.unwrap();
            let statement = statement.unwrap_or_else(|| panic!("{scenario:?}: no statement"));
            let landing = statement.landing();
            match scenario {
                Answer::Accepts => {
                    assert_eq!(applied, 1);
                    assert_eq!(row.state, ProposalState::Applied);
                    assert_eq!(landing, Landing::Applied, "{scenario:?}");
                    assert_eq!(forge.pulls("acme/app").len(), 1);
                }
                Answer::RefusesThePush | Answer::RefusesThePullRequest => {
                    assert_eq!(applied, 0, "{scenario:?}");
                    // Refused for good: not retried, and the statement says why.
                    assert_eq!(row.state, ProposalState::Failed, "{scenario:?}: {row:?}");
                    let Landing::Failed(reason) = landing else {
                        panic!("{scenario:?}: the statement is {landing:?}");
                    };
                    assert_eq!(Some(reason), row.reason.as_deref());
                    assert!(forge.pulls("acme/app").is_empty());
                    if let Answer::RefusesThePush = scenario {
                        assert!(
                            reason.contains("the forge refused the push")
                                && reason.contains("pre-receive hook declined"),
                            "{reason}"
                        );
                        assert_eq!(forge.branch_sha("acme/app", "plue/run-1-fix"), None);
                        // The forge's text, as the run's wall shows it: no secret of the
                        // run, no link elsewhere.
                        assert!(reason.contains("protected branch"), "{reason}");
                        assert!(
                            !reason.contains(HOOK_SECRET) && !reason.contains("evil.example"),
                            "{reason}"
                        );
                    } else {
                        assert!(reason.contains("422"), "{reason}");
                    }
                }
            }
        }
    }
}

/// The outbox over `store`, its mirrors in `mirrors`, an unkeyed vault, the engine at
/// `http://plue`.
fn applier_of(store: &Store, mirrors: &std::path::Path) -> Applier {
    Applier::new(
        store.clone(),
        Vault::unkeyed(),
        mirrors.to_owned(),
        crate::outbound_wall::Walls::new(
            store.clone(),
            Vault::unkeyed(),
            Default::default(),
            "http://plue".into(),
        ),
    )
}

/// A commit title as the applier gives it: through a wall.
fn title(text: &str) -> plue_outbound::Outbound {
    plue_outbound::Checker::new(&Default::default(), ["plue"])
        .check(text)
        .unwrap()
}
