//! Storage quotas and bounded listings, played by an attacker:
//! - through the runner protocol of an in-process engine (a scripted runner uploading
//!   hostile tars): more files than the file quota, a path twice, two uploads racing one
//!   quota, a fork's run past its smaller quota; each refused with a message naming the
//!   quota, leaving no object in the store's directory and no row;
//! - the artifact listing a page at a time (the cursor walks everything once) and a run
//!   page with 10,000 artifacts that stays small;
//! - the store's quota check racing itself, its listing queries and the upgrade of blobs
//!   stored before the quotas, on both backends (PostgreSQL on a throw-away server, see
//!   `testkit`);
//! - through the real `plue` binary: a step keeping a sparse 30 MiB file, and one keeping
//!   30,000 files, fail past small quotas with the quota in their reason, keeping nothing.
//!
//! Why one file past ~600 lines: attacks on every quota through one in-process engine and
//! scripted runner; the attacks share the tar builders.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support;

use evaluator::plan::Step;
use plue_core::artifacts::{ArtifactsConfig, Quota, Quotas};
use plue_server::server::{EngineConfig, RunningEngine};
use plue_store::{NewBlob, RunRepo, Store};
use plue_types::protocol as wire;
use serde_json::{json, Value};

const REGISTRATION: &str = "registration-token-of-the-quota-tests";

struct Harness {
    engine: RunningEngine,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

async fn harness(quotas: Quotas) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(REGISTRATION.into());
    config.artifacts = ArtifactsConfig {
        quotas,
        ..ArtifactsConfig::local(dir.path().join("blobs"))
    };
    let engine = support::start_in_process(&dir.path().join("data"), config).await;
    Harness {
        engine,
        // A connection per request: the engine closes one on which it refused a body
        // mid-stream, and a pooled one could be that.
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client"),
        dir,
    }
}

/// The default quotas with the run's replaced.
fn run_quota(bytes: u64, files: u64) -> Quotas {
    Quotas {
        run: Quota { bytes, files },
        ..Quotas::default()
    }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.engine.url)
    }

    fn store(&self) -> &Store {
        self.engine.executor.store()
    }

    async fn start_run(&self, steps: Vec<Step>, repo: Option<RunRepo>) -> i64 {
        let plan = support::plan("quotas", steps);
        support::start_plan_run(&self.engine.executor, "/w/quotas.plue.py", &plan, repo).await
    }

    /// Starts a run of one step `build` in repository `repo_id`, with its secrets when
    /// `secrets_allowed` (a fork's run without).
    async fn start_build_in(&self, repo_id: i64, secrets_allowed: bool) -> i64 {
        let repo = RunRepo {
            repo_id,
            secrets_allowed,
        };
        self.start_run(vec![bash("build")], Some(repo)).await
    }

    /// Starts a local run of one step `build` and a runner `holder` holding it: the run's
    /// id, the runner's token and its attempt's id.
    async fn build_held_by(&self, holder: &str) -> (i64, String, i64) {
        let run_id = self.start_run(vec![bash("build")], None).await;
        let (token, attempt) = self.holder(holder).await;
        (run_id, token, attempt)
    }

    /// Starts a local run of the steps `a` and `b` and a runner holding each (named after
    /// its step): the run's id and each runner's token and attempt's id.
    async fn two_held(&self, a: &str, b: &str) -> (i64, (String, i64), (String, i64)) {
        let run_id = self.start_run(vec![bash(a), bash(b)], None).await;
        (run_id, self.holder(a).await, self.holder(b).await)
    }

    async fn repository(&self) -> i64 {
        support::create_repo(self.store()).await
    }

    /// A registered runner's session token.
    async fn register(&self, name: &str) -> String {
        support::register_runner(&self.http, &self.engine.url, REGISTRATION, name).await
    }

    /// The next step `token`'s runner is given: its attempt id.
    async fn claim(&self, token: &str) -> i64 {
        let body = json!({"wait_ms": 5000});
        let response: wire::PollResponse =
            support::post_json(&self.http, &self.url(wire::POLL), token, &body).await;
        response.assignment.expect("an assignment").attempt_id
    }

    /// A runner that says whether it accepts steps of forks' runs (the shared token allows
    /// them); its session token. A fork run's runner registers before the run starts: the
    /// engine fails at once a fork step that no runner accepting forks can serve.
    async fn forks_runner(&self, name: &str, accept_forks: bool) -> String {
        let response = support::register_labelled_runner(
            &self.http,
            &self.engine.url,
            REGISTRATION,
            name,
            json!({}),
            Some(accept_forks),
        )
        .await;
        assert_eq!(response.status(), 200, "registering {name}");
        let registered: wire::RegisterResponse = response.json().await.unwrap();
        registered.session_token
    }

    /// Whether `token`'s runner is handed a step now.
    async fn offered(&self, token: &str) -> bool {
        let body = json!({"wait_ms": 0});
        let response: wire::PollResponse =
            support::post_json(&self.http, &self.url(wire::POLL), token, &body).await;
        response.assignment.is_some()
    }

    /// A runner that holds the next step: (token, attempt id).
    async fn holder(&self, name: &str) -> (String, i64) {
        let token = self.register(name).await;
        let attempt = self.claim(&token).await;
        (token, attempt)
    }

    /// The upload's status and body. The engine refuses a body past a quota while it
    /// streams and closes the connection, so the client may fail writing the rest before it
    /// reads the answer: such an upload is sent again (a refused upload changes nothing).
    async fn put(&self, token: &str, attempt: i64, body: Vec<u8>) -> (u16, String) {
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = self
                .http
                .put(self.url(&wire::blob_path(attempt, wire::BlobKind::Artifacts)))
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
                Err(err) if tries < 5 && (err.is_request() || err.is_body()) => continue,
                Err(err) => panic!("uploading: {err}"),
            }
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// Every object in the blob store's directory (an upload's staging files included).
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

fn bash(id: &str) -> Step {
    let mut step = support::bash_step(id, "true");
    step.artifacts = vec!["**".into()];
    step
}

/// A tar of `entries` (paths may repeat).
fn tar_of<S: AsRef<str>>(entries: &[(S, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, path.as_ref(), *data)
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// A tar of `count` one-byte files `f/00000`, `f/00001`, ...
fn many_files(count: usize) -> Vec<u8> {
    let names: Vec<String> = (0..count).map(|i| format!("f/{i:05}")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    tar_of(&entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_past_the_file_quota_are_refused_and_nothing_is_kept() {
    let h = harness(run_quota(1 << 30, 100)).await;
    let (run_id, token, attempt) = h.build_held_by("many").await;
    let (status, body) = h.put(&token, attempt, many_files(150)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("the run's file quota")
            && body.contains("past the quota of 100 files")
            && body.contains("--quota-run-files"),
        "{body}"
    );
    assert_eq!(h.objects(), Vec::<PathBuf>::new(), "no object is left");
    assert!(h.store().artifacts_of_run(run_id).await.unwrap().is_empty());
    let usage = h.store().blob_usage(run_id).await.unwrap().unwrap();
    assert_eq!((usage.run.bytes, usage.run.files), (0, 0), "no row");
    // 100 files fit.
    let (status, body) = h.put(&token, attempt, many_files(100)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.objects().len(), 1);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_twice_in_an_artifacts_tar_answers_400_and_leaves_no_object() {
    // regression: the duplicate failed the record with a 500, and the stored object stayed
    // in the store with no row naming it.
    let h = harness(Quotas::default()).await;
    let (run_id, token, attempt) = h.build_held_by("twice").await;
    let tar = tar_of(&[("out.txt", &b"one"[..]), ("out.txt", &b"two"[..])]);
    let (status, body) = h.put(&token, attempt, tar).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("'out.txt' twice"), "{body}");
    assert_eq!(h.objects(), Vec::<PathBuf>::new());
    assert!(h.store().artifacts_of_run(run_id).await.unwrap().is_empty());
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uploads_racing_one_quota_cannot_both_pass() {
    // Each fits the run's 10 MiB alone; together they do not: one is refused, while it
    // streams (the engine counts its run's streaming uploads) or at its record.
    let h = harness(run_quota(10 << 20, 100)).await;
    let (run_id, (left_token, left), (right_token, right)) = h.two_held("left", "right").await;
    let six = vec![1u8; 6 << 20];
    let (a, b) = tokio::join!(
        h.put(&left_token, left, tar_of(&[("a.bin", &six[..])])),
        h.put(&right_token, right, tar_of(&[("b.bin", &six[..])])),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 413], "{a:?} {b:?}");
    let refused = if a.0 == 413 { &a.1 } else { &b.1 };
    assert!(refused.contains("the run's storage quota"), "{refused}");
    let usage = h.store().blob_usage(run_id).await.unwrap().unwrap();
    assert!(usage.run.bytes <= 10 << 20, "{usage:?}");
    assert_eq!(h.objects().len(), 1, "the refused upload's object is gone");
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_fork_has_the_smaller_quota() {
    let quotas = Quotas {
        run: Quota {
            bytes: 8 << 20,
            files: 100,
        },
        fork_run: Quota {
            bytes: 1 << 20,
            files: 10,
        },
        ..Quotas::default()
    };
    let h = harness(quotas).await;
    let repo_id = h.repository().await;
    let two = vec![2u8; 2 << 20];
    let tar = tar_of(&[("two.bin", &two[..])]);

    let token = h.forks_runner("fork", true).await;
    let refusing = h.forks_runner("no-forks", false).await;
    h.start_build_in(repo_id, false).await;
    // The fork fence holds: only the runner accepting forks gets the step.
    assert!(!h.offered(&refusing).await, "a runner refusing forks");
    let attempt = h.claim(&token).await;
    let (status, body) = h.put(&token, attempt, tar.clone()).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("a pull request from a fork") && body.contains("--quota-fork-run-bytes"),
        "{body}"
    );
    let (status, body) = h.put(&token, attempt, many_files(11)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("past the quota of 10 files"), "{body}");

    // The same upload in a run of the repository itself fits its quota.
    h.start_build_in(repo_id, true).await;
    let (token, attempt) = h.holder("trusted").await;
    let (status, body) = h.put(&token, attempt, tar).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.objects().len(), 1);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_share_part_of_the_repository_quota_and_the_repository_has_its_own() {
    let run = Quota {
        bytes: 8 << 20,
        files: 100,
    };
    let h = harness(Quotas {
        run,
        fork_run: run,
        repository: Quota {
            bytes: 5 << 20,
            files: 100,
        },
        repository_forks: Quota {
            bytes: 3 << 20,
            files: 100,
        },
    })
    .await;
    let repo_id = h.repository().await;
    let two = vec![2u8; 2 << 20];
    let tar = tar_of(&[("two.bin", &two[..])]);
    let mut answers = Vec::new();
    for (name, secrets_allowed) in [
        ("fork-a", false),
        ("fork-b", false),
        ("own-c", true),
        ("own-d", true),
    ] {
        // Registered first, so a fork's step has a runner accepting it.
        let token = h.forks_runner(name, true).await;
        h.start_build_in(repo_id, secrets_allowed).await;
        let attempt = h.claim(&token).await;
        answers.push(h.put(&token, attempt, tar.clone()).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 413, 200, 413], "{answers:?}");
    assert!(
        answers[1].1.contains("--quota-repo-fork-bytes"),
        "{answers:?}"
    );
    assert!(
        answers[3].1.contains("the repository's storage quota")
            && answers[3].1.contains("--quota-repo-bytes"),
        "{answers:?}"
    );
    assert_eq!(h.objects().len(), 2);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_frees_quota() {
    let h = harness(run_quota(1 << 30, 100)).await;
    let (run_id, (first_token, first), (second_token, second)) =
        h.two_held("first", "second").await;
    assert_eq!(h.put(&first_token, first, many_files(60)).await.0, 200);
    assert_eq!(h.put(&second_token, second, many_files(60)).await.0, 413);
    // A sweep past the retention deletes the run's blob and its rows: the quota is free.
    let blobs =
        plue_core::artifacts::Artifacts::open(&ArtifactsConfig::local(h.dir.path().join("blobs")))
            .unwrap();
    let month = 31 * 24 * 3600 * 1000;
    let deleted = blobs
        .sweep(h.store(), plue_store::now_ms() + month)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let usage = h.store().blob_usage(run_id).await.unwrap().unwrap();
    assert_eq!((usage.run.bytes, usage.run.files), (0, 0));
    assert_eq!(h.objects(), Vec::<PathBuf>::new());
    assert_eq!(h.put(&second_token, second, many_files(60)).await.0, 200);
    h.engine.shutdown().await;
}

/// The names of every artifact of `run_id`, following the listing's `Link` headers from
/// `first`; also the number of pages.
async fn walk(h: &Harness, first: &str) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut pages = 0;
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let response = h.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_string()
        });
        let page: Vec<Value> = response.json().await.unwrap();
        assert!(page.len() <= 1000);
        pages += 1;
        names.extend(page.iter().map(|a| {
            format!(
                "{}/{}",
                a["step"].as_str().unwrap(),
                a["name"].as_str().unwrap()
            )
        }));
        assert!(pages < 100, "the cursor does not advance");
    }
    (names, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifact_listing_is_paged_and_the_cursor_walks_everything_once() {
    let h = harness(run_quota(1 << 30, 10_000)).await;
    let (run_id, (alpha_token, alpha), (beta_token, beta)) = h.two_held("alpha", "beta").await;
    assert_eq!(h.put(&alpha_token, alpha, many_files(250)).await.0, 200);
    let odd = tar_of(&[("a b/ü&x=1", &b"1"[..]), ("z", &b"2"[..])]);
    assert_eq!(h.put(&beta_token, beta, odd).await.0, 200);

    let base = format!("/api/runs/{run_id}/artifacts");
    // The default page is bounded.
    let first = h.get(&base).await;
    assert!(first.headers().get("link").is_some());
    assert_eq!(first.json::<Vec<Value>>().await.unwrap().len(), 100);

    let (names, pages) = walk(&h, &format!("{base}?limit=70")).await;
    assert_eq!(pages, 4, "252 files in pages of 70");
    let mut expected: Vec<String> = (0..250).map(|i| format!("alpha/f/{i:05}")).collect();
    expected.push("beta/a b/ü&x=1".into());
    expected.push("beta/z".into());
    assert_eq!(names, expected, "every file once, in order");
    let (one_step, _) = walk(&h, &format!("{base}?step=beta&limit=1")).await;
    assert_eq!(one_step, ["beta/a b/ü&x=1", "beta/z"]);
    let (all, pages) = walk(&h, &format!("{base}?limit=100000")).await;
    assert_eq!(
        (all.len(), pages),
        (252, 1),
        "a limit past 1000 counts as 1000"
    );

    for bad in ["?after=nocursor", "?after=/x", "?limit=x", "?nope=1"] {
        let response = h.get(&format!("{base}{bad}")).await;
        assert_eq!(response.status(), 400, "{bad}");
    }
    // A file is still found by its path.
    let file = h
        .get(&format!("/api/runs/{run_id}/steps/alpha/artifacts/f/00249"))
        .await;
    assert_eq!(file.text().await.unwrap(), "x");
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_page_with_10000_artifacts_stays_small() {
    // regression: the run page (and the live part each viewer re-fetched every second)
    // listed every file: 100,000 files made an 18 MB page.
    let h = harness(run_quota(1 << 30, 20_000)).await;
    let (run_id, token, attempt) = h.build_held_by("build").await;
    let (status, body) = h.put(&token, attempt, many_files(10_000)).await;
    assert_eq!(status, 200, "{body}");
    for path in [format!("/runs/{run_id}"), format!("/runs/{run_id}/live")] {
        let response = h.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        let page = response.text().await.unwrap();
        assert!(page.len() < 32 * 1024, "{path}: {} bytes", page.len());
        assert!(page.contains("10000 files"), "{page}");
        assert!(
            page.contains(&format!(
                "href=\"&#x2f;api&#x2f;runs&#x2f;{run_id}&#x2f;artifacts?step=build\""
            )) || page.contains(&format!("href=\"/api/runs/{run_id}/artifacts?step=build\"")),
            "{page}"
        );
        assert!(!page.contains("f/09999"), "no file is listed");
    }
    h.engine.shutdown().await;
}

/// A run of one step `build` on `store`.
async fn bare_run(store: &Store) -> i64 {
    run_of(store, None).await
}

/// A run of one step `build` of repository `repo_id` on `store`.
async fn repo_run(store: &Store, repo_id: i64) -> i64 {
    run_of(
        store,
        Some(RunRepo {
            repo_id,
            secrets_allowed: true,
        }),
    )
    .await
}

async fn run_of(store: &Store, repo: Option<RunRepo>) -> i64 {
    let executor = support::executor(store, 8);
    let plan = support::plan("bare", vec![bash("build")]);
    support::start_plan_run(&executor, "/w/bare.plue.py", &plan, repo).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_queries_page_and_count_on_either_backend() {
    for (store, _dir) in support::stores().await {
        let backend = store.backend();
        let run_id = bare_run(&store).await;
        for (step, attempt, names) in [
            ("build", 1, vec!["old"]),
            ("build", 2, vec!["a", "b/c", "d"]),
            ("test", 1, vec!["x"]),
        ] {
            let files: Vec<(String, i64, String)> = names
                .iter()
                .map(|n| (n.to_string(), 1, "sha256:0".to_string()))
                .collect();
            let key = format!("{step}-{attempt}");
            store
                .record_blob(
                    &NewBlob {
                        run_id,
                        step_id: step,
                        attempt,
                        kind: "artifacts",
                        key: &key,
                        size: 10,
                        digest: "sha256:0",
                        files: &files,
                        now: 1,
                    },
                    |_| Ok::<(), ()>(()),
                )
                .await
                .unwrap();
        }
        let page =
            |step: Option<&'static str>, after: Option<(&'static str, &'static str)>, limit| {
                let store = store.clone();
                async move {
                    store
                        .artifacts_page(run_id, step, after, limit)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|a| format!("{}/{}", a.step_id, a.name))
                        .collect::<Vec<_>>()
                }
            };
        assert_eq!(
            page(None, None, 2).await,
            ["build/a", "build/b/c"],
            "{backend}"
        );
        assert_eq!(
            page(None, Some(("build", "b/c")), 10).await,
            ["build/d", "test/x"],
            "{backend}: the latest attempt's files only, after the cursor"
        );
        assert_eq!(page(Some("test"), None, 10).await, ["test/x"], "{backend}");
        let steps: Vec<(String, i64, i64)> = store
            .artifact_steps(run_id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.step_id, s.attempt, s.files))
            .collect();
        assert_eq!(
            steps,
            [("build".to_string(), 2, 3), ("test".to_string(), 1, 1)],
            "{backend}"
        );
        let usage = store.blob_usage(run_id).await.unwrap().unwrap();
        assert_eq!((usage.run.bytes, usage.run.files), (30, 5), "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_never_pass_the_quota_on_either_backend() {
    for (store, _dir) in support::stores().await {
        let backend = store.backend();
        // A few rounds: without the lock PostgreSQL lets several through in most of them.
        for round in 0..4 {
            let run_id = bare_run(&store).await;
            // 24 attempts of 100 bytes each race a quota of 350: three fit.
            let records = (1..=24).map(|attempt| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = format!("k{attempt}");
                    let blob = NewBlob {
                        run_id,
                        step_id: "build",
                        attempt,
                        kind: "workspace",
                        key: &key,
                        size: 100,
                        digest: "sha256:0",
                        files: &[],
                        now: 1,
                    };
                    store
                        .record_blob(&blob, |usage| {
                            if usage.run.bytes + 100 > 350 {
                                Err("over")
                            } else {
                                Ok(())
                            }
                        })
                        .await
                        .is_ok()
                })
            });
            let recorded = futures::future::join_all(records)
                .await
                .into_iter()
                .filter(|r| *r.as_ref().unwrap())
                .count();
            assert_eq!(recorded, 3, "{backend}, round {round}");
            let usage = store.blob_usage(run_id).await.unwrap().unwrap();
            assert_eq!(usage.run.bytes, 300, "{backend}");
        }
    }
}

const SPARSE: &str = r#"def workflow():
    return Plan(name='sparse', triggers=[Trigger.manual()], steps=[
        Step.bash('keep', 'truncate -s 30M sparse.bin', artifacts=['sparse.bin']),
    ])
"#;

/// 30,000 empty files: refused once the engine has listed 1,001 of them, while the runner
/// still has most of its 15 MiB tar to send.
const MANY: &str = r#"def workflow():
    return Plan(name='many', triggers=[Trigger.manual()], steps=[
        Step.bash('keep', 'mkdir many && cd many && seq 30000 | xargs touch', artifacts=['many/*']),
    ])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_keeping_a_sparse_file_or_many_files_past_the_quotas_fail_with_the_quota() {
    let _serial = support::serial().await;
    let sandbox = support::Sandbox::new("quota-sparse");
    sandbox.write("ws/sparse.plue.py", SPARSE);
    sandbox.write("ws/many.plue.py", MANY);
    let ws = sandbox.path("ws");
    let data = sandbox.path("data");
    let http = support::client();
    let engine = sandbox
        .serve_one_runner(
            "engine",
            "data",
            &["--quota-run-bytes", "8388608", "--quota-run-files", "1000"],
        )
        .await;
    let url = engine.url.as_str();
    // The reason step `keep` of a run of `file` failed with.
    let (http, ws) = (&http, &ws);
    let failed = move |file: &'static str| async move {
        let run_id = support::start_run(http, url, &ws.join(file), ws).await;
        let run = support::wait_final(http, url, run_id, Duration::from_secs(120)).await;
        assert_eq!(run["status"], "failed", "{run}");
        let reason = support::step(&run, "keep")["reason"].as_str();
        (run_id, reason.unwrap_or_default().to_string())
    };
    let (_, reason) = failed("sparse.plue.py").await;
    assert!(
        reason.contains("the run's storage quota") && reason.contains("8388608 bytes"),
        "{reason}\n{}",
        sandbox.diagnostics()
    );
    assert_eq!(
        files_below(&data.join("artifacts")),
        Vec::<PathBuf>::new(),
        "nothing of it is kept"
    );

    let (run_id, reason) = failed("many.plue.py").await;
    assert!(
        reason.contains("the run's file quota") && reason.contains("past the quota of 1000 files"),
        "{reason}\n{}",
        sandbox.diagnostics()
    );
    assert_eq!(files_below(&data.join("artifacts")), Vec::<PathBuf>::new());
    let listed = support::get_json(http, &format!("{url}/api/runs/{run_id}/artifacts")).await;
    assert_eq!(listed, json!([]), "no rows");
}

/// Rows of a blob with three files, written as a store before migration 13 did.
const OLD_ROWS: [&str; 4] = [
    "INSERT INTO workflows (id, source, path, name, created_at) VALUES (1, 'local', '/w', 'w', 1)",
    "INSERT INTO runs (id, workflow_id, event, ref, sha, context, plan, plan_hash, workspace, \
     max_parallel, status, created_at) \
     VALUES (1, 1, 'manual', 'refs/heads/main', '0', '{}', '{}', 'h', '{}', 1, 'succeeded', 1)",
    "INSERT INTO blobs (id, run_id, step_id, attempt, kind, key, size, digest, created_at) \
     VALUES (1, 1, 'build', 1, 'artifacts', 'k', 4096, 'sha256:0', 1)",
    "INSERT INTO artifacts (blob_id, name, size, digest) \
     VALUES (1, 'a', 1, 'sha256:0'), (1, 'b', 1, 'sha256:0'), (1, 'c', 1, 'sha256:0')",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_stored_before_the_quotas_count_their_files_after_the_upgrade() {
    let upgraded = plue_store::testing::upgraded_stores(12, &OLD_ROWS).await;
    for (store, _dir) in upgraded {
        let usage = store.blob_usage(1).await.unwrap().unwrap();
        assert_eq!(
            (usage.run.bytes, usage.run.files),
            (4096, 3),
            "{}",
            store.backend()
        );
        let steps = store.artifact_steps(1).await.unwrap();
        assert_eq!(steps[0].files, 3, "{}", store.backend());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_upload_of_an_attempt_does_not_count_the_blob_it_replaces() {
    // regression (attack q1): the streaming check counted the blob a retry of the same
    // attempt replaces, so a retry larger than half of what the quota left was refused
    // (413) although the record, which does not count it, would have passed it.
    let h = harness(run_quota(10 << 20, 100)).await;
    let (run_id, token, attempt) = h.build_held_by("build").await;
    let six = vec![6u8; 6 << 20];
    let (status, body) = h.put(&token, attempt, tar_of(&[("a.bin", &six[..])])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.put(&token, attempt, tar_of(&[("a.bin", &six[..])])).await;
    assert_eq!(status, 200, "the retry: {body}");
    let usage = h.store().blob_usage(run_id).await.unwrap().unwrap();
    assert!(
        usage.run.bytes > 6 << 20 && usage.run.bytes <= 10 << 20,
        "{usage:?}"
    );
    // Still, what the run kept with a retry that is itself too large is refused.
    let eleven = vec![7u8; 11 << 20];
    let (status, body) = h
        .put(&token, attempt, tar_of(&[("a.bin", &eleven[..])]))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        h.objects().len(),
        1,
        "the replaced and refused objects are gone"
    );
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_repository_deletes_its_objects_so_disk_stays_within_the_quota() {
    // regression (attack q2): deleting a repository deleted its runs' blob rows (which
    // freed its quota) but none of their objects, so deleting and registering it again,
    // round after round, filled the disk past any quota.
    let repo_quota = 4u64 << 20;
    let h = harness(Quotas {
        repository: Quota {
            bytes: repo_quota,
            files: 100,
        },
        ..Quotas::default()
    })
    .await;
    let three = vec![3u8; 3 << 20];
    for round in 0..3 {
        let repo_id = h.repository().await;
        h.start_build_in(repo_id, true).await;
        let (token, attempt) = h.holder(&format!("round-{round}")).await;
        let (status, body) = h
            .put(&token, attempt, tar_of(&[("a.bin", &three[..])]))
            .await;
        assert_eq!(status, 200, "round {round}: {body}");
        let workspace = h
            .http
            .put(h.url(&wire::blob_path(attempt, wire::BlobKind::Workspace)))
            .bearer_auth(&token)
            .body(tar_of(&[("w.txt", &b"hand-off"[..])]))
            .send()
            .await
            .unwrap();
        assert_eq!(workspace.status().as_u16(), 200, "round {round}");
        assert_eq!(h.objects().len(), 2, "round {round}");
        let on_disk: u64 = h
            .objects()
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= repo_quota, "round {round}: {on_disk} bytes");

        let deleted = h
            .http
            .delete(h.url("/api/repos/acme/app"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status().as_u16(), 200, "round {round}");
        assert_eq!(
            h.objects(),
            Vec::<PathBuf>::new(),
            "round {round}: the deleted repository's objects are gone"
        );
    }
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_of_deleted_rows_are_swept_even_after_a_crash_on_either_backend() {
    // The key of a deleted row is doomed in the same transaction as the delete (a
    // trigger), so a sweep after a crash still finds it; a key a row names is never swept.
    for (store, _dir) in support::stores().await {
        let blobs_dir = tempfile::tempdir().unwrap();
        let artifacts =
            plue_core::artifacts::Artifacts::open(&ArtifactsConfig::local(blobs_dir.path().into()))
                .unwrap();
        let repo_id = support::create_repo(&store).await;
        let run_id = repo_run(&store, repo_id).await;
        let mut keys = Vec::new();
        for attempt in [1, 2] {
            let key = format!("runs/{run_id}/build/{attempt}/workspace-x.tar");
            std::fs::create_dir_all(
                blobs_dir
                    .path()
                    .join(format!("runs/{run_id}/build/{attempt}")),
            )
            .unwrap();
            std::fs::write(blobs_dir.path().join(&key), b"tar").unwrap();
            store
                .record_blob(
                    &NewBlob {
                        run_id,
                        step_id: "build",
                        attempt,
                        kind: "workspace",
                        key: &key,
                        size: 3,
                        digest: "sha256:0",
                        files: &[],
                        now: 0,
                    },
                    |_| Ok::<(), ()>(()),
                )
                .await
                .unwrap();
            keys.push(key);
        }
        // Nothing is doomed while rows name the objects.
        assert_eq!(artifacts.sweep_doomed(&store).await.unwrap(), 0);
        assert_eq!(files_below(blobs_dir.path()).len(), 2);
        // The repository goes, and its runs and their blob rows with it (a crash right
        // after: no sweep ran); the keys are doomed, and the next sweep deletes them.
        assert!(store.delete_repo(repo_id).await.unwrap());
        assert_eq!(store.doomed_blobs(10).await.unwrap().len(), 2, "{keys:?}");
        assert_eq!(artifacts.sweep_doomed(&store).await.unwrap(), 2);
        assert_eq!(files_below(blobs_dir.path()), Vec::<PathBuf>::new());
        assert!(store.doomed_blobs(10).await.unwrap().is_empty());
    }
}
