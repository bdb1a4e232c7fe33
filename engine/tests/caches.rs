//! Step caches through the real binary: `plue run` (SQLite, local runners) in one data
//! directory, run after run. A first run misses and saves, a second with the same key file
//! restores (the step reads what the first left), a changed key file misses and restores
//! through its restore prefix; an entry whose bytes changed after it was saved is refused
//! and the step runs as on a miss; a hostile archive recorded for an entry (its digest
//! made to match) is refused without a byte written outside the cached path, and a
//! tampered one is refused as "does not match its digest", removed, and replaced by the
//! step's own save. Through a real `plue runner` on an engine with repository runs: a
//! fork's and an agent's entries are never restored by the default branch, whose entry a
//! pull request restores; the engine's bound holds on the runner (a sparse file is not
//! saved, a zstd bomb is not restored).

use std::path::{Path, PathBuf};

use crate::support;

use plue_types::partition::{Partition, Trust};
use plue_types::status::StepStatus;
use sha2::Digest;
use testkit::hostile_tar::raw_entry;

use crate::support::{printed, step_lines, Sandbox};

/// A step that says whether it found `target/out.txt` (and what it held), then writes it
/// from the key file, and a file in its home, both cached by `deps`.
const WORKFLOW: &str = r#"
def workflow(ctx):
    deps = Cache(paths=["target", "~/.cache/tool"], key=["Cargo.lock"], restore_prefixes=["deps-"], name="deps")
    return Plan("cached", steps=[
        Step.bash("build", """
if [ -f target/out.txt ]; then echo "found: $(cat target/out.txt) $(cat ~/.cache/tool/x)"; else echo fresh; fi
mkdir -p target ~/.cache/tool
echo "built from $(cat Cargo.lock)" > target/out.txt
echo home > ~/.cache/tool/x
""", caches=[deps]),
    ])
"#;

/// `plue run w.plue.py` in the sandbox (its data directory `.plue` kept between runs):
/// the step's lines; the run must succeed.
fn run(sandbox: &Sandbox) -> Vec<String> {
    let output = sandbox
        .plue(&["run", "w.plue.py", "--runners", "1"])
        .output()
        .expect("plue run");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", printed(&output));
    step_lines(&stdout, "build")
}

fn sandbox(name: &str) -> Sandbox {
    let sandbox = Sandbox::new(name);
    sandbox.write("w.plue.py", WORKFLOW);
    sandbox.write("Cargo.lock", "v1");
    sandbox
}

/// The line of `lines` starting with `start`, or a panic showing them.
fn line<'a>(lines: &'a [String], start: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in {lines:#?}"))
}

/// The cache key `deps-<sha256 hex>` the runner computes for a `Cargo.lock` holding `lock`.
fn key_of(lock: &str) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(("Cargo.lock".len() as u64).to_be_bytes());
    hasher.update(b"Cargo.lock");
    hasher.update([1]);
    hasher.update((lock.len() as u64).to_be_bytes());
    hasher.update(lock.as_bytes());
    format!("deps-{}", hex::encode(hasher.finalize()))
}

#[test]
fn a_cache_is_saved_restored_and_restored_by_prefix() {
    let sandbox = sandbox("caches-round");
    let (v1, v2) = (key_of("v1"), key_of("v2"));

    let first = run(&sandbox);
    assert!(first.iter().any(|l| l == "fresh"), "{first:#?}");
    line(
        &first,
        &format!("cache deps: miss ({v1}) in partition local"),
    );
    let saved = line(
        &first,
        &format!("cache deps: saved {v1} to partition local ("),
    );
    assert!(saved.ends_with(" s"), "the time it took: {saved}");

    let second = run(&sandbox);
    let restored = line(
        &second,
        &format!("cache deps: restored {v1} from partition local (exact, "),
    );
    assert!(restored.ends_with(" s"), "the time it took: {restored}");
    // Which entry, and who wrote it: the first run, a local one.
    let writer = line(&second, "cache deps: entry #");
    assert!(
        writer.contains(", written by run 1 (") && writer.ends_with("trust local)"),
        "which entry and who wrote it: {writer}"
    );
    line(&second, "found: built from v1 home");
    assert!(
        !second.iter().any(|l| l.starts_with("cache deps: saved")),
        "an exact hit is not saved again: {second:#?}"
    );

    sandbox.write("Cargo.lock", "v2");
    let third = run(&sandbox);
    line(
        &third,
        &format!("cache deps: restored {v1} from partition local (prefix, "),
    );
    line(&third, "found: built from v1 home");
    line(
        &third,
        &format!("cache deps: saved {v2} to partition local ("),
    );

    let fourth = run(&sandbox);
    line(
        &fourth,
        &format!("cache deps: restored {v2} from partition local (exact, "),
    );
    line(&fourth, "found: built from v2 home");
}

/// The one blob of the sandbox's cache entries, in its local blob store.
fn entry_blob(sandbox: &Sandbox) -> PathBuf {
    let dir = sandbox.path(".plue/artifacts/caches/local");
    let blobs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    blobs[0].clone()
}

#[test]
fn a_tampered_entry_is_refused_and_the_step_runs_as_on_a_miss() {
    let sandbox = sandbox("caches-tampered");
    run(&sandbox);
    let blob = entry_blob(&sandbox);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();

    let second = run(&sandbox);
    let refused = line(
        &second,
        &format!("cache deps: refused entry {} from local: ", key_of("v1")),
    );
    // regression (issue 69): the reason was "the download broke off ..." with the
    // engine's internal URL, and the entry stayed: "already saved ... kept" for good.
    assert!(
        refused.ends_with(": does not match its digest"),
        "{refused}"
    );
    assert!(
        second
            .iter()
            .all(|l| !l.contains("http://") && !l.contains("/internal/")),
        "no line shows the engine's address: {second:#?}"
    );
    line(
        &second,
        &format!("cache deps: miss ({}) in partition local", key_of("v1")),
    );
    assert!(second.iter().any(|l| l == "fresh"), "{second:#?}");
    // The tampered entry was removed: the step's save replaces it, and the next run
    // restores the new one.
    line(
        &second,
        &format!("cache deps: saved {} to partition local (", key_of("v1")),
    );
    let third = run(&sandbox);
    line(
        &third,
        &format!(
            "cache deps: restored {} from partition local (exact, ",
            key_of("v1")
        ),
    );
    line(&third, "found: built from v1 home");
}

/// A tar entry as an attacker writes it: path, type, link target, content.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

/// Records `archive` as the sandbox's one cache entry: its bytes at their content address
/// and the entry's digest, size and blob key made to match, as if a runner had saved it.
async fn record_entry(sandbox: &Sandbox, archive: &[u8]) {
    let hex = hex::encode(sha2::Sha256::digest(archive));
    let blob_key = format!("caches/local/{hex}");
    std::fs::write(
        sandbox.path(&format!(".plue/artifacts/{blob_key}")),
        archive,
    )
    .unwrap();
    let db = support::engine_sqlite(&sandbox.path(".plue/plue.db"));
    let done = db
        .execute(
            "UPDATE cache_entries SET digest = ?1, size = ?2, blob_key = ?3",
            rusqlite::params![format!("sha256:{hex}"), archive.len() as i64, &blob_key],
        )
        .unwrap();
    assert_eq!(done, 1);
    drop(db);
}

/// Every path below `dir` named `name`.
fn named(dir: &Path, name: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == name)
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[tokio::test]
async fn a_hostile_entry_is_refused_without_writing_outside() {
    use tar::EntryType::{Regular, Symlink};
    let hostile: [(&str, Vec<RawEntry>); 3] = [
        (
            "dot-dot",
            vec![("0/../../escaped-dotdot", Regular, "", b"x")],
        ),
        (
            "link out, then through it",
            vec![
                ("0/up", Symlink, "../../..", b""),
                ("0/up/escaped-link", Regular, "", b"x"),
            ],
        ),
        ("absolute link", vec![("1/abs", Symlink, "/tmp", b"")]),
    ];
    for (what, entries) in hostile {
        let sandbox = sandbox(&format!("caches-hostile-{}", what.len()));
        run(&sandbox);
        let mut tar = Vec::new();
        for (path, kind, link, data) in entries {
            raw_entry(&mut tar, path, kind, link, data);
        }
        tar.extend_from_slice(&[0u8; 1024]);
        record_entry(&sandbox, &zstd::encode_all(&tar[..], 3).unwrap()).await;

        let second = run(&sandbox);
        let refused = line(
            &second,
            &format!("cache deps: refused entry {} from local: ", key_of("v1")),
        );
        assert!(
            refused.contains("refused archive entry"),
            "{what}: {refused}"
        );
        assert!(
            second.iter().any(|l| l == "fresh"),
            "{what}: the step starts as on a miss: {second:#?}"
        );
        for name in ["escaped-dotdot", "escaped-link"] {
            assert!(
                named(&sandbox.path(""), name).is_empty(),
                "{what}: {name} was written"
            );
        }
    }
}

/// A step that says whose `target/who` it found, then writes its own run's word there:
/// cached by `who` (its key file is absent from the empty workspace, so every run of the
/// repository has the same key and only the partitions tell the entries apart).
fn who_step(word: &str) -> evaluator::plan::Step {
    let mut step = support::bash_step(
        "build",
        &format!(
            "if [ -f target/who ]; then echo \"found: $(cat target/who)\"; else echo fresh; fi\n\
             mkdir -p target && echo {word} > target/who"
        ),
    );
    step.caches = vec![evaluator::caches::Cache {
        name: "who".into(),
        paths: vec!["target".into()],
        key: vec!["Cargo.lock".into()],
        restore_prefixes: vec!["who-".into()],
    }];
    step
}

/// An `llm` step with tools that never runs (only after `build` fails): its plan alone
/// makes the run an agent's.
fn agent_step() -> evaluator::plan::Step {
    let llm = evaluator::plan::LlmAction {
        prompt: Some("fix it".into()),
        tools: vec!["bash".into()],
        ..Default::default()
    };
    evaluator::plan::Step::new("agent", evaluator::plan::Action::Llm(llm))
        .after(&["build"])
        .on(evaluator::plan::When::Failure)
}

/// A runner token of the store that accepts forks; its text.
async fn fork_token(store: &plue_store::Store) -> String {
    let token = plue_vault::tokens::new_token().unwrap();
    store
        .create_runner_token(&plue_store::NewRunnerToken {
            kind: plue_store::RunnerTokenKind::Scoped,
            name: "caches",
            token_hash: &plue_vault::tokens::hash_token(&token),
            labels_json: "{}",
            secrets: true,
            accept_forks: true,
            expires_at: None,
            now: plue_store::now_ms(),
        })
        .await
        .unwrap();
    token
}

/// Waits for step `build` of `run` to succeed; its log lines.
async fn build_lines(store: &plue_store::Store, run: i64) -> Vec<String> {
    let step = support::wait_for(
        std::time::Duration::from_secs(60),
        "the build step ends",
        || {
            let store = store.clone();
            async move {
                let step = store.step_run(run, "build").await.ok()??;
                matches!(step.status, StepStatus::Succeeded | StepStatus::Failed).then_some(step)
            }
        },
    )
    .await;
    let lines: Vec<String> = store
        .read_logs(step.id, (0, 0), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(
        step.status,
        StepStatus::Succeeded,
        "{:?} {lines:#?}",
        step.reason
    );
    lines
}

/// Spawns a `plue runner` of the sandbox for `engine` (accepting forks) and waits until
/// the store sees it live.
async fn spawn_runner(sandbox: &Sandbox, engine: &plue_server::server::RunningEngine) {
    let store = engine.executor.store().clone();
    let token = fork_token(&store).await;
    let work = sandbox.path("work");
    sandbox.spawn(
        "runner",
        sandbox.plue(&[
            "runner",
            "--engine",
            &engine.runner_url,
            "--token",
            &token,
            "--name",
            "r",
            "--work-dir",
            work.to_str().unwrap(),
            "--give-up-after",
            "30",
            "--accept-forks",
        ]),
    );
    support::wait_for(
        std::time::Duration::from_secs(30),
        "the runner registers",
        || {
            let store = store.clone();
            async move {
                let live = store.live_runners(10).await.ok()?;
                live.iter().any(|r| r.name == "r").then_some(())
            }
        },
    )
    .await;
}

/// Issue 52's poisoning through a real runner: a fork's pull request and a default-branch
/// run that gives an agent tools each save an entry under the very key the default branch
/// uses; the default branch's run restores neither (it misses and saves its own); a pull
/// request of the repository itself restores the default branch's entry; the fork's and
/// the agent's next runs read their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forks_entry_is_never_restored_by_the_default_branch() {
    let sandbox = Sandbox::new("caches-partitions");
    let engine = support::start_in_process_with_runner_listener(
        &sandbox.path("data"),
        plue_server::server::EngineConfig::new("unused-registration-token".into()),
    )
    .await;
    let store = engine.executor.store().clone();
    let repo = support::create_repo(&store).await;
    spawn_runner(&sandbox, &engine).await;
    let plan = |word: &str| support::plan("ci", vec![who_step(word)]);

    let fork = support::start_pr_run(&engine.executor, repo, &plan("fork"), true).await;
    let lines = build_lines(&store, fork).await;
    assert!(lines.iter().any(|l| l == "fresh"), "{lines:#?}");
    let saved = line(&lines, "cache who: saved who-");
    assert!(!saved.contains("partition default"), "{saved}");

    // A default-branch run whose plan gives an agent tools is demoted: it saves into
    // `agents`, which the default branch never reads either.
    let agent_plan = support::plan("ci", vec![who_step("agent"), agent_step()]);
    let agent = support::start_push_run(&engine.executor, repo, &agent_plan, "main").await;
    let lines = build_lines(&store, agent).await;
    assert!(lines.iter().any(|l| l == "fresh"), "{lines:#?}");
    assert!(line(&lines, "cache who: saved who-").contains("to partition agents"));

    let main = support::start_push_run(&engine.executor, repo, &plan("main"), "main").await;
    let lines = build_lines(&store, main).await;
    assert!(
        lines.iter().any(|l| l == "fresh"),
        "the default branch restored the fork's or the agent's entry: {lines:#?}"
    );
    line(&lines, "cache who: miss (who-");
    line(&lines, "cache who: saved who-");
    assert!(line(&lines, "cache who: saved who-").contains("to partition default"));

    let ours = support::start_pr_run(&engine.executor, repo, &plan("pr"), false).await;
    let lines = build_lines(&store, ours).await;
    line(&lines, "found: main");
    assert!(line(&lines, "cache who: restored who-").contains("from partition default"));

    let fork_again = support::start_pr_run(&engine.executor, repo, &plan("fork"), true).await;
    let lines = build_lines(&store, fork_again).await;
    line(&lines, "found: fork");
    let agent_again = support::start_push_run(&engine.executor, repo, &agent_plan, "main").await;
    let lines = build_lines(&store, agent_again).await;
    line(&lines, "found: agent");
    engine.shutdown().await;
}

/// The attack (issue 69): under a 1 MiB bound, a step leaves an 8 MiB sparse file in a
/// cached path (no disk, a few bytes of zstd), and an entry recorded as if a runner had
/// saved it holds a zstd bomb (8 MiB of zeros in a few KiB) under a key the step's restore
/// prefix matches. Runners never received the bound and fell back to 1 GiB: both were
/// saved and restored. Now the restore stops at the bound and leaves nothing, and the save
/// is refused before the file is packed; the engine keeps no new object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_bound_holds_on_the_runner_for_sparse_files_and_bombs() {
    use plue_core::artifacts::{ArtifactsConfig, CacheLimits};
    let sandbox = Sandbox::new("caches-bounds");
    let blobs = sandbox.path("blobs");
    let mut config = plue_server::server::EngineConfig::new("unused-registration-token".into());
    config.artifacts = ArtifactsConfig {
        max_bytes: 1 << 20,
        caches: CacheLimits {
            quota: 64 << 20,
            retention: None,
        },
        ..ArtifactsConfig::local(blobs.clone())
    };
    let engine =
        support::start_in_process_with_runner_listener(&sandbox.path("data"), config).await;
    let store = engine.executor.store().clone();
    let repo = support::create_repo(&store).await;

    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        "0/zeros",
        tar::EntryType::Regular,
        "",
        &vec![0u8; 8 << 20],
    );
    tar.extend_from_slice(&[0u8; 1024]);
    let bomb = zstd::encode_all(&tar[..], 19).unwrap();
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let hex = hex::encode(sha2::Sha256::digest(&bomb));
    let blob_key = format!("caches/repo-{repo}/{hex}");
    std::fs::create_dir_all(blobs.join(format!("caches/repo-{repo}"))).unwrap();
    std::fs::write(blobs.join(&blob_key), &bomb).unwrap();
    let digest = format!("sha256:{hex}");
    let recorded = store
        .record_cache_entry(
            &plue_store::NewCacheEntry {
                repo_id: Some(repo),
                partition: Partition::Default,
                name: "who",
                key: "who-bomb",
                digest: &digest,
                size: bomb.len() as i64,
                blob_key: &blob_key,
                run_id: 0,
                causer: None,
                trust: Trust::Trusted,
                now: plue_store::now_ms(),
            },
            1 << 40,
            &[],
            &[],
        )
        .await
        .unwrap();
    assert!(matches!(
        recorded,
        plue_store::CacheRecorded::Created { .. }
    ));

    let mut step = who_step("main");
    step.action = evaluator::plan::Action::Bash {
        command: "if [ -f target/0/zeros ] || [ -f target/zeros ]; then echo found; else echo fresh; fi\n\
                  mkdir -p target && truncate -s 8M target/sparse"
            .into(),
    };
    let run = support::start_push_run(
        &engine.executor,
        repo,
        &support::plan("ci", vec![step]),
        "main",
    )
    .await;
    spawn_runner(&sandbox, &engine).await;
    let lines = build_lines(&store, run).await;
    let refused = line(&lines, "cache who: refused entry who-bomb from default: ");
    assert!(
        refused.contains("larger than the limit of 1 MiB"),
        "{refused}"
    );
    assert!(lines.iter().any(|l| l == "fresh"), "{lines:#?}");
    let not_saved = line(&lines, "cache who: not saved: ");
    assert!(
        not_saved.contains("larger than the limit of 1 MiB"),
        "{not_saved}"
    );
    let objects: Vec<PathBuf> = walkdir::WalkDir::new(&blobs)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_owned())
        .collect();
    assert_eq!(objects, vec![blobs.join(&blob_key)], "no new object");
    engine.shutdown().await;
}
