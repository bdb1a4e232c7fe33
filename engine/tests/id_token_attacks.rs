//! Steps' OpenID Connect tokens (`id_tokens=`), played by the attacker: every way to get a
//! token one should not, a token saying something false, a token someone else learns, or
//! an issuer that breaks. The set-up is `id_tokens`' (an in-process engine holding
//! `acme/app` with a vault key, a real `plue runner` — root here, so each attempt runs as
//! its own step user); where what matters is what the engine hands a runner, a runner is
//! played over the runner protocol instead, so the assignment itself is read.
//!
//! Attacks that find something (these tests fail until it is fixed):
//! - a token a later step of the same run prints (read from the workspace the token's step
//!   left) is stored in clear in that step's log, annotations and outputs: the engine
//!   masks them with a copy of the run's wall made when the run first logged and kept
//!   `WALL_FOR` (30 s), and the token, made at claim, is not in a copy made before it;
//! - a fork's step that asks for tokens fails on a runner kept for forks (no secrets)
//!   instead of running with its tokens withheld, as the guide promises.
//!
//! Attacks that find nothing (kept so it stays so): a fork's run through retries, a review
//! loop and re-runs by an admin; a debug shell of a step that got a token; a runner whose
//! token allows no secrets; a fork's step hunting another run's token in `/proc`, the
//! shared places and the other runner's attempt directories; a step whose environment
//! closed after its first attempt; anonymous clients at the issuer's endpoints (one key,
//! made once, no private member, an issuer no request header changes, stored sealed); and
//! every place a reader looks at a trusted run's token (log in every spelling, outputs,
//! record, audit, the id-tokens list, the dashboard).
//!
//! Why one file past ~600 lines: one attacker's list over one fixture (`id_tokens`'
//! harness, and a runner played over the protocol), one test per try.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use evaluator::plan::Step;
use plue_types::protocol as wire;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::id_tokens::{
    deploy_log, deploy_step, printed_token, succeeded, Harness, AUDIENCE, KEY, LIMIT,
};
use crate::support;

const ADMIN: &str = support::ADMIN_TOKEN;
/// A JWT-shaped word that is no secret (the hunter's own, to show its hunt finds one).
const CANARY: &str = "eyJjYW5hcnkiOiJ0aGUgaHVudGVyIHNlZXMgaXQifQ.eyJjYW5hcnkiOnRydWV9.Y2FuYXJ5";

/// What a JWT's header or payload says (`part` 0 or 1).
fn jwt_part(token: &str, part: usize) -> Value {
    let text = token.split('.').nth(part).expect("a JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).expect("base64url")).expect("JSON")
}

/// The `id_token.issue` records of run `run`.
async fn issued(h: &Harness, run: i64) -> Vec<Value> {
    let listed = h
        .call_ok(
            ADMIN,
            "GET",
            &format!("/api/runs/{run}/id-tokens"),
            None,
            200,
        )
        .await;
    listed.as_array().cloned().unwrap_or_default()
}

/// The text of step `step`'s log in run `run` (every attempt's lines).
async fn step_log(h: &Harness, run: i64, step: &str) -> String {
    let lines = support::log_lines(&support::client(), &h.engine.url, run, step)
        .await
        .unwrap_or_else(|| panic!("the log of {step}"));
    lines
        .iter()
        .filter_map(|line| line["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (at most [`LIMIT`]) until run `run` is final; its status.
async fn final_status(h: &Harness, run: i64) -> String {
    h.wait_run(run, LIMIT).await;
    let row = h.store().run(run).await.unwrap().expect("the run");
    row.status.as_str().to_owned()
}

/// An engine holding `acme/app` without a runner of its own: the tests' runners speak the
/// runner protocol themselves.
async fn engine_without_runner(name: &str) -> Harness {
    let config = support::engine_config(support::RUNNER_TOKEN, ADMIN, KEY);
    support::RepoEngine::launch(name, config, false)
        .await
        .with_runner(0)
}

/// A registration token made by the admin through the API: `secrets` and `accept_forks`.
async fn registration_token(h: &Harness, name: &str, secrets: bool, accept_forks: bool) -> String {
    let body = json!({"name": name, "secrets": secrets, "accept_forks": accept_forks});
    let (status, made) = h
        .call(ADMIN, "POST", "/api/runner-tokens", Some(body))
        .await;
    assert!(matches!(status, 200 | 201), "{status}: {made}");
    made["token"].as_str().expect("the token").to_owned()
}

/// Registers a runner with `token` (asking for forks when `forks`); its session token.
async fn register(h: &Harness, token: &str, name: &str, forks: bool) -> String {
    let http = support::client();
    let labels = json!({"plue.network/none": "yes", "plue.network/allow": "yes"});
    let response = support::register_labelled_runner(
        &http,
        &h.engine.url,
        token,
        name,
        labels,
        forks.then_some(true),
    )
    .await;
    assert_eq!(response.status(), 200, "registering {name}");
    let registered: wire::RegisterResponse = response.json().await.unwrap();
    registered.session_token
}

/// What one poll of the runner holding `session` is handed, at once.
async fn poll(h: &Harness, session: &str) -> Option<wire::Assignment> {
    let polled: wire::PollResponse = support::post_json(
        &support::client(),
        &format!("{}{}", h.engine.url, wire::POLL),
        session,
        &json!({"wait_ms": 0}),
    )
    .await;
    polled.assignment
}

// ---------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------

/// FINDING. A deploy pipeline: `build` logs (the engine makes the run's wall for its lines
/// and keeps it 30 s), `deploy` gets a token and leaves it in its workspace (as `aws`,
/// `gcloud` or `vault login` leave credentials in files), `report` starts from that
/// workspace and prints what it finds (once as a `::warning` annotation), and sets it as an
/// output. `report` holds no secret, so its runner masks nothing; the engine masks with
/// the run's wall — the copy made for `build`'s lines, before the token existed. The token
/// is then stored in clear in `report`'s log, annotations and outputs, for every reader of
/// the run (anyone, on a public repository) for the token's hour. Without `build`'s line
/// first the token is masked (the wall is made after the token is held): only the cached
/// copy misses it. The same holds across replicas, each with its own cache, and for any
/// value first held after the copy was made.
///
/// Fix (server/src/internal_api.rs `RunnerAuth::wall_of`, with core/src/id_tokens `for_step`):
/// a run's cached wall must not outlive a secret held for the run after it was made — e.g.
/// key the cache on the number (or newest `held_at`) of the run's `run_held_secrets` rows,
/// read with the batch (a cheap indexed count), rather than dropping the entry in this
/// process only: another replica may have claimed the token's step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_a_later_step_prints_is_masked_in_its_log_and_outputs() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("idt-wall-cache", KEY, "idt-runner").await;
    let build = Step::bash("build", "echo building");
    let mut deploy = Step::bash(
        "deploy",
        "printf '%s' \"$CLOUD_TOKEN\" > cloud-token.txt; echo deployed",
    )
    .after(&["build"]);
    deploy
        .id_tokens
        .insert("CLOUD_TOKEN".into(), AUDIENCE.into());
    let mut report = Step::bash(
        "report",
        "t=$(cat cloud-token.txt); printf 'half1=%s\\nhalf2=%s\\n' \"${t:0:40}\" \"${t:40}\"; \
         echo \"whole=$t\"; echo \"::warning title=credential::$t\"; \
         echo \"credential=$t\" >> \"$PLUE_OUTPUT\"",
    )
    .after(&["deploy"]);
    report.workspace_from = Some("deploy".into());
    let plan = support::plan("deploy", vec![build, deploy, report]);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    succeeded(&h, run).await;

    let log = step_log(&h, run, "report").await;
    let token = printed_token(&log);
    assert!(token.starts_with("eyJ"), "no token reached report:\n{log}");
    assert_eq!(issued(&h, run).await.len(), 1);
    let view = h
        .call_ok(ADMIN, "GET", &format!("/api/runs/{run}"), None, 200)
        .await;
    let outputs = support::step(&view, "report")["outputs"].to_string();
    let annotations = h
        .call_ok(
            ADMIN,
            "GET",
            &format!("/api/runs/{run}/annotations"),
            None,
            200,
        )
        .await
        .to_string();
    let leaks: Vec<String> = [
        ("log", log),
        ("outputs", outputs),
        ("annotations", annotations),
    ]
    .into_iter()
    .filter(|(_, text)| text.contains(&token))
    .map(|(place, text)| format!("{place}:\n{text}"))
    .collect();
    assert!(
        leaks.is_empty(),
        "another step's token is stored in clear in run {run}'s `report`:\n{}",
        leaks.join("\n\n")
    );
    h.engine.shutdown().await;
}

/// FINDING. The operator keeps forks on runners of their own, whose token allows no
/// secrets (`accept_forks`, `secrets: false`), as the runner tokens' documentation advises.
/// A fork's pull request runs the repository's deploy workflow, whose step asks for a
/// token: the claim hands the step to the fork runner (a fork's step needs no secrets
/// runner: it gets none), and then `prepare_assignment` refuses it because the step names
/// tokens — before asking whether the run would get any. The step fails with "the step
/// needs secrets (CLOUD_TOKEN) ..." instead of running with `PLUE_ID_TOKENS_WITHHELD`, as
/// docs/src/guide/id-tokens.md promises: every fork's pull request of a workflow using
/// tokens fails on a well-separated installation (and a workflow author must not declare
/// tokens on a step forks run). No token leaks — the refusal errs closed — but the
/// promised behaviour is broken.
///
/// Fix (server/src/internal_api.rs `prepare_assignment`): refuse a runner without secrets
/// only when tokens would be signed — decide the run's trust (and the untrusted
/// environment's review, once that lands) first, without signing, and refuse then; a
/// step whose tokens are all withheld runs like a fork's step with secrets withheld.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_step_asking_for_tokens_runs_withheld_on_a_runner_kept_for_forks() {
    let _serial = support::serial().await;
    let h = engine_without_runner("idt-fork-runner").await;
    let forks = registration_token(&h, "forks", false, true).await;
    let session = register(&h, &forks, "fork-runner", true).await;
    let plan = support::plan("deploy", vec![deploy_step(None)]);
    let fork = support::start_pr_run(&h.engine.executor, h.repo_id, &plan, true).await;
    let assignment = poll(&h, &session).await;
    let step = h.store().step_run(fork, "deploy").await.unwrap().unwrap();
    let assignment = assignment.unwrap_or_else(|| {
        panic!(
            "the fork's step was not handed to the fork runner: {} ({:?})",
            step.status.as_str(),
            step.reason
        )
    });
    assert!(assignment.secrets.is_empty(), "{:?}", assignment.secrets);
    assert_eq!(
        assignment
            .env
            .get("PLUE_ID_TOKENS_WITHHELD")
            .map(String::as_str),
        Some("CLOUD_TOKEN")
    );
    assert!(issued(&h, fork).await.is_empty());
    h.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Attacks that find nothing
// ---------------------------------------------------------------------------------------

/// A runner registered with a token that allows no secrets polls for a trusted run's step
/// asking for a token: it is never handed it, and nothing is signed for it. The runner
/// allowed secrets gets the token — in the assignment's secrets (masked, never in its
/// plain environment), nothing withheld — signed by the published key with a header no
/// one but the engine chose: RS256, the signing key's `kid`, no key or key URL of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_token_allows_no_secrets_never_receives_a_token() {
    let _serial = support::serial().await;
    let h = engine_without_runner("idt-no-secrets").await;
    let plain = registration_token(&h, "no secrets", false, false).await;
    let plain = register(&h, &plain, "plain-runner", false).await;
    let trusted = register(&h, support::RUNNER_TOKEN, "trusted-runner", false).await;
    let plan = support::plan("deploy", vec![deploy_step(None)]);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;

    for _ in 0..3 {
        let handed = poll(&h, &plain).await;
        assert!(
            handed.is_none(),
            "a runner without secrets was handed {handed:?}"
        );
    }
    assert!(issued(&h, run).await.is_empty());
    assert!(h.store().held_secrets(run).await.unwrap().is_empty());

    let assignment = poll(&h, &trusted)
        .await
        .expect("the trusted runner's claim");
    assert_eq!(
        (assignment.run_id, assignment.step_id.as_str()),
        (run, "deploy")
    );
    let token = assignment.secrets.get("CLOUD_TOKEN").expect("the token");
    assert!(
        !assignment.env.values().any(|v| v.contains(token.as_str())),
        "{:?}",
        assignment.env
    );
    assert!(!assignment.env.contains_key("PLUE_ID_TOKENS_WITHHELD"));
    let header = jwt_part(token, 0);
    let keys = h.call_ok("", "GET", "/.well-known/jwks", None, 200).await;
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["kid"], keys["keys"][0]["kid"], "{header} {keys}");
    for member in ["jku", "jwk", "x5u", "x5c", "crit"] {
        assert!(header.get(member).is_none(), "{member} in {header}");
    }
    let claims = jwt_part(token, 1);
    assert_eq!(claims["iss"], h.engine.url.trim_end_matches('/'));
    assert_eq!(claims["sub"], "repo:acme/app:ref:refs/heads/main");
    assert_eq!(claims["trusted"], true);
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(nbf <= iat && exp - iat == 3600, "{claims}");
    assert_eq!(issued(&h, run).await.len(), 1);
    h.engine.shutdown().await;
}

/// A fork's pull request tries every way back into a trusted run: its step fails once (a
/// retry), a later step fails so the review loop runs the token's step again, and an admin
/// re-runs the fork's run whole and its failed steps. No attempt of any of them is signed
/// a token or holds one; every one says it was withheld.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_gets_no_token_through_retries_loops_or_re_runs() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("idt-fork-rerun", KEY, "idt-runner").await;
    let mut deploy = Step::bash(
        "deploy",
        "t=\"${CLOUD_TOKEN:-}\"; echo \"got=${#t} withheld=${PLUE_ID_TOKENS_WITHHELD:-}\"; \
         [ \"$PLUE_ATTEMPT\" != 1 ]",
    );
    deploy
        .id_tokens
        .insert("CLOUD_TOKEN".into(), AUDIENCE.into());
    deploy.retries = 1;
    deploy.backoff = 1;
    let mut check = Step::bash("check", "exit 1").after(&["deploy"]);
    check.loop_to = Some("deploy".into());
    check.max_loops = Some(1);
    let plan = support::plan("deploy", vec![deploy, check]);

    let fork = support::start_pr_run(&h.engine.executor, h.repo_id, &plan, true).await;
    assert_eq!(final_status(&h, fork).await, "failed");
    let mut runs = vec![fork];
    let again = h
        .call_ok(ADMIN, "POST", &format!("/api/runs/{fork}/rerun"), None, 200)
        .await;
    let again = again["run_id"].as_i64().expect("the re-run");
    assert_eq!(final_status(&h, again).await, "failed");
    runs.push(again);
    let failed = h
        .call_ok(
            ADMIN,
            "POST",
            &format!("/api/runs/{again}/rerun?failed=true"),
            None,
            200,
        )
        .await;
    let failed = failed["run_id"].as_i64().expect("the failed steps' re-run");
    final_status(&h, failed).await;
    runs.push(failed);

    for run in runs {
        let row = h.store().run(run).await.unwrap().unwrap();
        assert!(!row.secrets_allowed, "run {run} is trusted");
        let log = deploy_log(&h, run).await;
        let attempts = log.matches("got=").count();
        assert!(attempts >= 1, "run {run}:\n{log}");
        assert_eq!(
            log.matches("got=0 withheld=CLOUD_TOKEN").count(),
            attempts,
            "run {run}:\n{log}"
        );
        assert!(!log.contains("eyJ"), "run {run}:\n{log}");
        assert!(issued(&h, run).await.is_empty(), "run {run}");
        assert!(h.store().held_secrets(run).await.unwrap().is_empty());
    }
    h.engine.shutdown().await;
}

/// A writer opens a debug shell on a failed step that had a token: the shell's assignment
/// is built without one (none is signed, none is in its environment), so a person typing
/// in it cannot mint an hour's cloud identity outside any step's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_shell_of_a_step_that_had_a_token_gets_none() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("idt-debug", KEY, "idt-runner").await;
    let mut deploy = Step::bash(
        "deploy",
        "t=\"${CLOUD_TOKEN:-}\"; echo \"got=${#t}\"; exit 3",
    );
    deploy
        .id_tokens
        .insert("CLOUD_TOKEN".into(), AUDIENCE.into());
    let plan = support::plan("deploy", vec![deploy]);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    assert_eq!(final_status(&h, run).await, "failed");
    assert!(!step_log(&h, run, "deploy").await.contains("got=0"));
    assert_eq!(issued(&h, run).await.len(), 1);

    let (_, _, writer) =
        support::user_with_token(h.store(), "wendy", &[(h.repo_id, "writer")]).await;
    let session = h.open_debug_ok(&writer, run, "deploy", 60).await;
    let stream = h.attach(&writer, &session).await;
    let script = "echo \"tok=[${CLOUD_TOKEN:-}]\"; env | grep -c '=ey[J]' ; exit 0\n";
    let said = h
        .transcript(&writer, &session, stream, Some(script), LIMIT)
        .await;
    assert!(said.ready, "the shell never started: {}", said.text);
    assert!(said.text.contains("tok=[]"), "{}", said.text);
    assert!(!said.text.contains("eyJ"), "{}", said.text);
    assert_eq!(
        issued(&h, run).await.len(),
        1,
        "the debug shell got a token"
    );
    h.engine.shutdown().await;
}

/// A fork's step runs beside a trusted step that holds a token in its environment and has
/// written it to its workspace, `/tmp` and `/dev/shm`. On another runner of the same host,
/// the fork's step hunts for it: every `/proc/*/environ` and `cmdline` it can read, the
/// shared places, and the trusted runner's attempt directories by every name they can
/// have. It finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_step_on_the_same_host_cannot_read_a_trusted_step_s_token() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("idt-hunt", KEY, "idt-runner").await;
    let second = h.sandbox.runner("idt-runner-2", &h.engine.url, &[]);
    let mut holder = Step::bash(
        "deploy",
        "t=\"$CLOUD_TOKEN\"; printf 'half1=%s\\nhalf2=%s\\n' \"${t:0:40}\" \"${t:40}\"; \
         for f in cloud-token.txt /tmp/cloud-token /dev/shm/cloud-token; do \
           printf '%s' \"$t\" > \"$f\"; chmod 644 \"$f\" 2>/dev/null; done; \
         echo written; sleep 15",
    );
    holder
        .id_tokens
        .insert("CLOUD_TOKEN".into(), AUDIENCE.into());
    let trusted_plan = support::plan("deploy", vec![holder]);
    let trusted =
        support::start_push_run(&h.engine.executor, h.repo_id, &trusted_plan, "main").await;
    support::wait_for(LIMIT, "the trusted step to hold its token", || async {
        let log = step_log(&h, trusted, "deploy").await;
        log.contains("written").then_some(())
    })
    .await;

    let work = h.sandbox.path("");
    let mut hunter = Step::bash(
        "hunt",
        r#"jwt='eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*'
found=""
look() { for t in $(grep -aohs "$jwt" "$@" 2>/dev/null | head -20); do found="$found $t"; done; }
end=$((SECONDS + 8))
while [ $SECONDS -lt $end ]; do
  look /proc/[0-9]*/environ /proc/[0-9]*/cmdline
  look -r /tmp /dev/shm /var/tmp /run
  for dir in "$HUNT_DIR"/work-*; do
    look -r "$dir"
    for pid in $(pgrep -f 'plue runner' 2>/dev/null) $HUNT_PIDS; do
      for n in $(seq 1 40); do look -r "$dir/attempt-$n-$pid"; done
    done
  done
  sleep 1
done
n=0
for t in $found; do n=$((n+1)); printf 'found1=%s\nfound2=%s\n' "${t:0:40}" "${t:40}"; done
echo "hunted=$n""#,
    );
    hunter.env.insert(
        "HUNT_DIR".into(),
        work.to_string_lossy().trim_end_matches('/').to_owned(),
    );
    hunter
        .env
        .insert("HUNT_PIDS".into(), format!("{} {second}", h.runner));
    // A JWT-shaped word the hunter must find in its own environment: the hunt works.
    hunter.env.insert("CANARY".into(), CANARY.into());
    let fork_plan = support::plan("hunt", vec![hunter]);
    let fork = support::start_pr_run(&h.engine.executor, h.repo_id, &fork_plan, true).await;
    assert_eq!(final_status(&h, fork).await, "succeeded");
    succeeded(&h, trusted).await;

    let token = printed_token(&deploy_log(&h, trusted).await);
    assert!(token.starts_with("eyJ"), "the trusted step got no token");
    let hunted = step_log(&h, fork, "hunt").await;
    assert!(
        hunted.contains(&format!("found1={}", &CANARY[..40])),
        "the hunter did not even find its own canary:\n{hunted}"
    );
    let (head, tail) = token.split_at(40);
    assert!(
        !hunted.contains(head) && !hunted.contains(tail),
        "the fork's step found the trusted step's token:\n{hunted}"
    );
    h.engine.shutdown().await;
}

/// A step in `prod` (allowed on `main`) gets its token in its first attempt; while it runs
/// the repository's admin closes `prod` to `main` (an incident). The retry is claimed
/// after: the claim checks the environment's gate again, so the retry fails and no second
/// token says `environment:prod`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_its_environment_closed_gets_no_token() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("idt-env-closed", KEY, "idt-runner").await;
    let path = "/api/repos/acme/app/environments/prod";
    let open = json!({"allowed_refs": ["main"]});
    h.call_ok(ADMIN, "PUT", path, Some(open), 200).await;
    let mut deploy = Step::bash(
        "deploy",
        "t=\"${CLOUD_TOKEN:-}\"; echo \"attempt=$PLUE_ATTEMPT got=${#t}\"; \
         if [ \"$PLUE_ATTEMPT\" = 1 ]; then sleep 4; exit 1; fi",
    );
    deploy
        .id_tokens
        .insert("CLOUD_TOKEN".into(), AUDIENCE.into());
    deploy.environment = Some("prod".into());
    deploy.retries = 1;
    deploy.backoff = 1;
    let plan = support::plan("deploy", vec![deploy]);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    support::wait_for(LIMIT, "the first attempt's token", || async {
        (issued(&h, run).await.len() == 1).then_some(())
    })
    .await;
    let closed = json!({"allowed_refs": ["release/*"]});
    h.call_ok(ADMIN, "PUT", path, Some(closed), 200).await;

    assert_eq!(final_status(&h, run).await, "failed");
    let tokens = issued(&h, run).await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["attempt"], 1);
    assert_eq!(tokens[0]["subject"], "repo:acme/app:environment:prod");
    let step = h.store().step_run(run, "deploy").await.unwrap().unwrap();
    let reason = step.reason.unwrap_or_default();
    assert!(reason.contains("prod"), "{reason}");
    let log = deploy_log(&h, run).await;
    assert!(!log.contains("attempt=2"), "the retry ran:\n{log}");
    h.engine.shutdown().await;
}

/// Anonymous clients at the issuer: many at once ask for the keys of an engine that has
/// none yet — one key is made, once, and every answer is the same; a key holds only its
/// public members, its `kid` is its RFC 7638 thumbprint; the discovery document names the
/// engine's issuer whatever `Host` or forwarding headers a request carries; the endpoints
/// take no writes; the stored key is sealed by the vault, never PEM in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_cannot_make_the_issuer_mint_move_or_reveal_keys() {
    let _serial = support::serial().await;
    let h = engine_without_runner("idt-issuer").await;
    let url = format!("{}/.well-known/jwks", h.engine.url);
    let http = reqwest::Client::new();
    let answers = futures::future::join_all((0..8).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http.get(&url).send().await.expect("GET jwks");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("JSON")
        }
    }))
    .await;
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let keys = answers[0]["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0].as_object().unwrap();
    let mut members: Vec<&str> = key.keys().map(String::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["alg", "e", "kid", "kty", "n", "use"], "{key:?}");
    let thumbprint = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        key["e"].as_str().unwrap(),
        key["n"].as_str().unwrap()
    );
    let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(thumbprint.as_bytes()));
    assert_eq!(key["kid"], kid.as_str());
    let stored = h.store().oidc_keys(0).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(!stored[0].sealed_key.contains("PRIVATE KEY"));
    assert!(!stored[0].sealed_key.contains("MII"));
    let opened = h
        .engine
        .executor
        .vault()
        .open(&stored[0].sealed_key)
        .unwrap();
    assert!(opened.starts_with("-----BEGIN PRIVATE KEY-----"));

    let discovery = http
        .get(format!("{}/.well-known/openid-configuration", h.engine.url))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "host=evil.example;proto=https")
        .send()
        .await
        .unwrap();
    assert_eq!(discovery.status(), 200);
    let discovery: Value = discovery.json().await.unwrap();
    let issuer = h.engine.url.trim_end_matches('/');
    assert_eq!(discovery["issuer"], issuer);
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/.well-known/jwks"));
    for path in ["/.well-known/jwks", "/.well-known/openid-configuration"] {
        let (status, _) = h.call("", "POST", path, Some(json!({"keys": []}))).await;
        assert_eq!(status, 405, "POST {path}");
    }
    let (status, _) = h.call("", "POST", "/api/id-tokens/rotate", None).await;
    assert_eq!(status, 401);
    let again = h.call_ok("", "GET", "/.well-known/jwks", None, 200).await;
    assert_eq!(again, answers[0]);
    assert_eq!(h.store().oidc_keys(0).await.unwrap().len(), 1);
    h.engine.shutdown().await;
}

/// A trusted step prints its token whole, reversed, in hex and base64, and sets it as an
/// output: a reader of the run finds it nowhere — not in the log, the outputs, the run
/// record, the audit trail, the list of tokens issued or the dashboard's pages — and the
/// copy held for the run's wall is sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_token_shows_nowhere_a_reader_looks() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("idt-nowhere", KEY, "idt-runner").await;
    let mut deploy = Step::bash(
        "deploy",
        "t=\"$CLOUD_TOKEN\"; printf 'half1=%s\\nhalf2=%s\\n' \"${t:0:40}\" \"${t:40}\"; \
         echo \"whole=$t\"; echo \"reversed=$(printf '%s' \"$t\" | rev)\"; \
         echo \"hex=$(printf '%s' \"$t\" | od -An -tx1 | tr -d ' \\n')\"; \
         echo \"base64=$(printf '%s' \"$t\" | base64 -w0)\"; \
         echo \"::error::$t\"; echo \"credential=$t\" >> \"$PLUE_OUTPUT\"",
    );
    deploy
        .id_tokens
        .insert("CLOUD_TOKEN".into(), AUDIENCE.into());
    let plan = support::plan("deploy", vec![deploy]);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    succeeded(&h, run).await;
    let log = deploy_log(&h, run).await;
    let token = printed_token(&log);
    assert!(token.starts_with("eyJ"), "{log}");
    let reversed: String = token.chars().rev().collect();
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let base64 = base64::engine::general_purpose::STANDARD.encode(&token);
    let spellings = [token.as_str(), &reversed, &hex, &base64];
    let shows = |text: &str| spellings.iter().any(|s| text.contains(s));
    assert!(!shows(&log), "{log}");

    let client = support::client();
    for path in [
        format!("/api/runs/{run}"),
        format!("/api/runs/{run}/record"),
        format!("/api/runs/{run}/id-tokens"),
        format!("/api/runs/{run}/annotations"),
        "/api/audit".to_string(),
    ] {
        let text = support::get_text(&client, &format!("{}{path}", h.engine.url)).await;
        assert!(!shows(&text), "{path}: {text}");
    }
    let cookie = support::dashboard_session(&h.engine.url, ADMIN).await;
    for page in [
        format!("/runs/{run}"),
        format!("/runs/{run}/steps/deploy"),
        format!("/runs/{run}/steps/deploy/raw"),
    ] {
        let html = support::dashboard_page(&format!("{}{page}", h.engine.url), &cookie).await;
        assert!(html.len() > 20, "{page}: {html}");
        assert!(!shows(&html), "{page}: {html}");
    }
    let held = h.store().held_secrets(run).await.unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, "CLOUD_TOKEN");
    assert!(!held[0].1.contains(&token));
    let vault = h.engine.executor.vault();
    assert_eq!(vault.open(&held[0].1).unwrap(), token);
    h.engine.shutdown().await;
}
