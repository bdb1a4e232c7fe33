//! OpenID Connect tokens for steps, end to end: an in-process engine holding `acme/app`
//! (with a vault key, so its signing key is stored), a real `plue runner`, and a relying
//! party that is not Plue — PyJWT, given nothing but the engine's issuer URL, reads the
//! discovery document, fetches the keys it names and verifies each token's signature,
//! `iss`, `aud`, expiry and subject.
//!
//! The step prints its token in two halves (a whole token in a log is masked, which the
//! same step checks), so the test can hand it to the relying party.

use std::path::PathBuf;
use std::time::Duration;

use evaluator::plan::Step;
use serde_json::{json, Value};

use crate::python;
use crate::support;

const ADMIN: &str = support::ADMIN_TOKEN;
pub(crate) const KEY: &str = "a vault key long enough for the id token tests";
pub(crate) const LIMIT: Duration = Duration::from_secs(90);
pub(crate) const AUDIENCE: &str = "sts.amazonaws.com";
/// The relying party's packages, pinned.
const RELYING_PARTY: &[&str] = &["PyJWT[crypto]==2.10.1", "cryptography==50.0.2"];

pub(crate) type Harness = support::RepoEngine<u32>;

/// A step `deploy` asking for a token for [`AUDIENCE`] in `CLOUD_TOKEN`: it prints the token
/// in two halves, the whole of it (which the log must mask), and what was withheld.
pub(crate) fn deploy_step(environment: Option<&str>) -> Step {
    let mut step = Step::bash(
        "deploy",
        "t=\"${CLOUD_TOKEN:-}\"; printf 'half1=%s\\nhalf2=%s\\n' \"${t:0:40}\" \"${t:40}\"; \
         echo \"whole=$t\"; echo \"withheld=${PLUE_ID_TOKENS_WITHHELD:-}\"; \
         echo \"secrets_withheld=${PLUE_SECRETS_WITHHELD:-}\"",
    );
    step.id_tokens.insert("CLOUD_TOKEN".into(), AUDIENCE.into());
    step.environment = environment.map(str::to_owned);
    step
}

/// The log of `deploy` in run `run`: its lines' text.
pub(crate) async fn deploy_log(h: &Harness, run: i64) -> String {
    let lines = support::log_lines(&support::client(), &h.engine.url, run, "deploy")
        .await
        .expect("the deploy step's log");
    lines
        .iter()
        .filter_map(|line| line["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The token the step printed in halves (empty when it got none).
pub(crate) fn printed_token(log: &str) -> String {
    let half = |name: &str| {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in the log:\n{log}"))
            .to_owned()
    };
    half("half1") + &half("half2")
}

/// Runs the relying party on `token` for `audience` of the engine at `issuer`: the claims,
/// or why the token did not verify.
async fn relying_party(issuer: &str, audience: &str, token: &str) -> Result<Value, String> {
    let (issuer, audience, token) = (issuer.to_owned(), audience.to_owned(), token.to_owned());
    tokio::task::spawn_blocking(move || {
        let venv = python::venv("oidc-venv", RELYING_PARTY);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/verify_token.py");
        let out = python::run_with(
            &venv.join("bin/python"),
            &script,
            &[&issuer, &audience],
            token.as_bytes(),
        );
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).expect("the claims as JSON"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .expect("the relying party")
}

/// What `GET /api/runs/{run}/id-tokens` lists, read as the admin.
async fn issued(h: &Harness, run: i64) -> Value {
    let path = format!("/api/runs/{run}/id-tokens");
    h.call_ok(ADMIN, "GET", &path, None, 200).await
}

pub(crate) async fn succeeded(h: &Harness, run: i64) {
    h.wait_run(run, LIMIT).await;
    let row = h.store().run(run).await.unwrap().expect("the run");
    assert_eq!(
        row.status.as_str(),
        "succeeded",
        "run {run}: {:?}",
        row.reason
    );
}

/// A push to `main`: the step's token verifies for its audience only, says who it is for,
/// never shows whole in the log, and is listed (without the token) for the run's readers.
/// A key rotation keeps the old token verifying, and only an admin may rotate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_step_gets_a_token_that_a_relying_party_verifies() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("id-tokens-push", KEY, "id-tokens-runner").await;
    let plan = support::plan("deploy", vec![deploy_step(None)]);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    succeeded(&h, run).await;
    let log = deploy_log(&h, run).await;
    let token = printed_token(&log);
    assert!(token.len() > 100, "no token printed:\n{log}");
    assert!(
        !log.contains(&token),
        "the whole token is in the log:\n{log}"
    );
    assert!(
        log.contains("withheld=\n") || log.ends_with("withheld="),
        "{log}"
    );

    let claims = relying_party(&h.engine.url, AUDIENCE, &token)
        .await
        .unwrap_or_else(|e| panic!("the token does not verify: {e}"));
    let row = h.store().run(run).await.unwrap().unwrap();
    assert_eq!(claims["iss"], h.engine.url.trim_end_matches('/'));
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], "repo:acme/app:ref:refs/heads/main");
    assert_eq!(claims["repository"], "acme/app");
    assert_eq!(claims["repository_owner"], "acme");
    assert_eq!(claims["repository_id"], h.repo_id.to_string());
    assert_eq!(claims["ref"], "refs/heads/main");
    assert_eq!(claims["ref_type"], "branch");
    assert_eq!(claims["sha"], row.sha);
    assert_eq!(claims["event_name"], "push");
    assert_eq!(claims["run_id"], run.to_string());
    assert_eq!(claims["run_attempt"], "1");
    assert_eq!(claims["step"], "deploy");
    assert_eq!(claims["trusted"], true);
    let life = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(life, 3600, "{claims}");
    // Another audience's relying party refuses it.
    let refused = relying_party(&h.engine.url, "vault", &token).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("InvalidAudience")),
        "{refused:?}"
    );

    // The run's readers see which identity the step got, never the token.
    let listed = issued(&h, run).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["step"], "deploy");
    assert_eq!(listed[0]["variable"], "CLOUD_TOKEN");
    assert_eq!(listed[0]["audience"], AUDIENCE);
    assert_eq!(listed[0]["subject"], "repo:acme/app:ref:refs/heads/main");
    assert_eq!(listed[0]["token_id"], claims["jti"]);
    assert!(!listed.to_string().contains(&token));
    // Anonymous callers may not read a private repository's run.
    let (status, _) = h
        .call("", "GET", &format!("/api/runs/{run}/id-tokens"), None)
        .await;
    assert_eq!(status, 401);

    // Rotation: only an installation admin; the new key is published before it signs.
    let (_, _, reader) = support::user_with_token(h.store(), "rita", &[(h.repo_id, "admin")]).await;
    let (status, body) = h.call(&reader, "POST", "/api/id-tokens/rotate", None).await;
    assert_eq!(
        status, 403,
        "a repository admin rotated the engine's key: {body}"
    );
    let (status, _) = h.call("", "POST", "/api/id-tokens/rotate", None).await;
    assert_eq!(status, 401);
    let rotated = h
        .call_ok(ADMIN, "POST", "/api/id-tokens/rotate", None, 200)
        .await;
    let keys = h.call_ok("", "GET", "/.well-known/jwks", None, 200).await;
    let kids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{keys}");
    assert!(kids.contains(&rotated["kid"].as_str().unwrap()), "{keys}");
    relying_party(&h.engine.url, AUDIENCE, &token)
        .await
        .unwrap_or_else(|e| panic!("a token signed before the rotation no longer verifies: {e}"));
    // The new key is published ahead: the next token is still the old key's, and verifies.
    let again = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    succeeded(&h, again).await;
    let token = printed_token(&deploy_log(&h, again).await);
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(
        header["kid"], kids[0],
        "the signer is listed first: {header} {keys}"
    );
    assert_ne!(header["kid"], rotated["kid"], "{header}");
    relying_party(&h.engine.url, AUDIENCE, &token)
        .await
        .unwrap();
    h.engine.shutdown().await;
}

/// A pull request from a fork gets no token (the step runs, the name in
/// `PLUE_ID_TOKENS_WITHHELD`, nothing issued); a pull request from the repository itself
/// gets one whose subject says `pull_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_gets_no_token_and_a_pull_request_says_so_in_its_subject() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("id-tokens-pr", KEY, "id-tokens-runner").await;
    let plan = support::plan("deploy", vec![deploy_step(None)]);

    let fork = support::start_pr_run(&h.engine.executor, h.repo_id, &plan, true).await;
    succeeded(&h, fork).await;
    let log = deploy_log(&h, fork).await;
    assert_eq!(printed_token(&log), "", "a fork's step got a token:\n{log}");
    assert!(log.contains("withheld=CLOUD_TOKEN"), "{log}");
    let listed = issued(&h, fork).await;
    assert_eq!(listed, json!([]));

    let own = support::start_pr_run(&h.engine.executor, h.repo_id, &plan, false).await;
    succeeded(&h, own).await;
    let token = printed_token(&deploy_log(&h, own).await);
    let claims = relying_party(&h.engine.url, AUDIENCE, &token)
        .await
        .unwrap();
    assert_eq!(claims["sub"], "repo:acme/app:pull_request");
    assert_eq!(claims["event_name"], "pull_request");
    assert_eq!(claims["trusted"], true);
    h.engine.shutdown().await;
}

/// A step in an environment gets a token whose subject names the environment (what a
/// cloud's trust policy for deployments matches), once the environment's gate let it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_in_an_environment_gets_the_environment_as_its_subject() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("id-tokens-env", KEY, "id-tokens-runner").await;
    let settings = json!({"allowed_refs": ["main"]});
    let path = "/api/repos/acme/app/environments/prod";
    h.call_ok(ADMIN, "PUT", path, Some(settings), 200).await;
    // Spelt otherwise than the repository spells it: the token names the environment as
    // the repository does.
    let plan = support::plan("deploy", vec![deploy_step(Some("Prod"))]);
    let run = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "main").await;
    succeeded(&h, run).await;
    let token = printed_token(&deploy_log(&h, run).await);
    let claims = relying_party(&h.engine.url, AUDIENCE, &token)
        .await
        .unwrap();
    assert_eq!(claims["sub"], "repo:acme/app:environment:prod");
    assert_eq!(claims["environment"], "prod");

    // Off the environment's allowed refs the step never runs, so no token is made.
    let off = support::start_push_run(&h.engine.executor, h.repo_id, &plan, "topic").await;
    h.wait_run(off, LIMIT).await;
    let row = h.store().run(off).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "failed");
    let listed = issued(&h, off).await;
    assert_eq!(listed, json!([]));
    h.engine.shutdown().await;
}

/// An environment may let untrusted runs' steps have tokens (`untrusted_id_tokens`, which
/// needs reviewers): a fork's step in it waits for the review, then gets a token that says
/// `trusted: false` — and never the environment's secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_may_let_a_reviewed_fork_step_have_an_untrusted_token() {
    let _serial = support::serial().await;
    let h = Harness::with_local_runner("id-tokens-fork-env", KEY, "id-tokens-runner").await;
    let path = "/api/repos/acme/app/environments/preview";
    let unreviewed = json!({"allowed_refs": [], "untrusted_id_tokens": true});
    let (status, body) = h.call(ADMIN, "PUT", path, Some(unreviewed)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("needs reviewers"), "{body}");
    let settings = json!({"allowed_refs": [], "reviewers": ["alice"], "untrusted_id_tokens": true});
    h.call_ok(ADMIN, "PUT", path, Some(settings), 200).await;
    let secret = Some(json!({ "value": "preview-deploy-key-4f1e" }));
    h.call_ok(
        ADMIN,
        "PUT",
        &format!("{path}/secrets/DEPLOY_KEY"),
        secret,
        204,
    )
    .await;
    let (_, _, alice) =
        support::user_with_token(h.store(), "alice", &[(h.repo_id, "writer")]).await;
    let mut step = deploy_step(Some("preview"));
    step.secrets = vec!["DEPLOY_KEY".into()];
    let plan = support::plan("deploy", vec![step]);

    let fork = support::start_pr_run(&h.engine.executor, h.repo_id, &plan, true).await;
    // The step waits for alice's review.
    let approve = format!("/api/runs/{fork}/steps/deploy/approve");
    support::wait_for(LIMIT, "the review to be asked for", || async {
        let comment = Some(json!({"comment": "preview is fine"}));
        let (status, _) = h.call(&alice, "POST", &approve, comment).await;
        (status == 200).then_some(())
    })
    .await;
    succeeded(&h, fork).await;
    let log = deploy_log(&h, fork).await;
    assert!(log.contains("secrets_withheld=DEPLOY_KEY"), "{log}");
    assert!(!log.contains("preview-deploy-key-4f1e"), "{log}");
    let token = printed_token(&log);
    let claims = relying_party(&h.engine.url, AUDIENCE, &token)
        .await
        .unwrap_or_else(|e| panic!("the fork's reviewed token does not verify: {e}"));
    assert_eq!(claims["sub"], "repo:acme/app:environment:preview");
    assert_eq!(claims["environment"], "preview");
    assert_eq!(claims["trusted"], false);
    let listed = issued(&h, fork).await;
    assert_eq!(listed[0]["trusted"], false, "{listed}");
    h.engine.shutdown().await;
}
