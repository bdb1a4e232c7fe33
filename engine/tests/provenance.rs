//! Provenance end to end, with the real `plue serve`: an issue comment summons the example
//! agent (`examples/agents/issue-to-pr.plue.py`, its scripted Claude, the fake GitHub of
//! `testkit::forge`), whose pull request and comment the engine applies — each with a
//! signed statement. What is proven:
//! - the engine made its signing key in the data directory (0600) and lists it, public,
//!   at `/api/provenance/keys`;
//! - the pull request's body and its commit's `Plue-Provenance` trailer link to the
//!   statement, which attests exactly that commit;
//! - PyPI's `in-toto` / `securesystemslib` (in a throw-away virtual environment, required
//!   like the chart tests') verify every statement's DSSE signature, and refuse a tampered
//!   one;
//! - every resource descriptor names its resource (`uri`, `digest` or `content`: the
//!   script checks what the library does not), and one that does not is refused;
//! - `plue verify` accepts the statement against a clone's commit, from a file and fetched
//!   by the commit's trailer (`--server`), and prints who summoned it, the model, the
//!   prompt digest, the tools and the cost; it refuses, each with its reason, a tampered
//!   statement, a commit with one byte changed, a statement edited to name that commit, and
//!   a wrong key;
//! - a change whose push the forge refused has a `failed` statement: listed with the
//!   forge's reason and without its envelope, refused at its URL, said so on the run page,
//!   and `plue verify` refuses the commit rebuilt from the engine's mirror with that
//!   reason, while the comment the forge accepted still verifies.
//!
//! Why one file past ~600 lines: two end-to-end walks over one world (a real `plue serve`,
//! the fake GitHub, a summoned agent, the in-toto virtual environment), each checking a
//! statement at every place it is read.

use crate::python;
use crate::support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::issue_to_pr::seed;
use crate::support::{
    client, deliver_webhook, free_port, get_json, wait_for, webhook_fixture, Sandbox, LLM_KEY,
};
use base64::Engine as _;
use serde_json::{json, Value};
use testkit::claude::{script, FakeClaude};
use testkit::forge::{FakeForge, Flavor};

const SECRET: &str = "webhook-secret-of-the-provenance-test";
const TOKEN: &str = "forge-token-of-the-provenance-test";
const REPO: &str = "Codertocat/Hello-World";

/// PyPI's in-toto and securesystemslib with its ed25519 backend, pinned.
const IN_TOTO: &[&str] = &["in-toto==3.1.0", "securesystemslib[crypto]==1.6.0"];

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `plue verify ARGS`: (success, stdout, stderr).
fn verify(sb: &Sandbox, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = sb.plue(&all).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `in_toto_verify.py ENVELOPE KEYS` in the in-toto environment: (success, stdout, stderr).
fn in_toto(envelope: &Path, keys: &Path) -> (bool, String, String) {
    let python = python::venv("in-toto-venv", IN_TOTO).join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/provenance/in_toto_verify.py");
    let out = Command::new(python)
        .arg(script)
        .arg(envelope)
        .arg(keys)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `envelope` with its statement changed by `edit`, the signature kept.
fn tampered(envelope: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut statement: Value =
        serde_json::from_slice(&b64.decode(envelope["payload"].as_str().unwrap()).unwrap())
            .unwrap();
    edit(&mut statement);
    let mut envelope = envelope.clone();
    envelope["payload"] = json!(b64.encode(serde_json::to_vec(&statement).unwrap()));
    envelope
}

fn write_json(sb: &Sandbox, name: &str, value: &Value) -> PathBuf {
    sb.write(name, &serde_json::to_string_pretty(value).unwrap())
}

/// The example agent summoned on the fake GitHub: its forge (`refuse` makes the forge
/// refuse every push with that message), its scripted Claude and `plue serve` (data in
/// `data`), the run the comment started, which succeeded.
struct World {
    forge: FakeForge,
    _claude: FakeClaude,
    _engine: support::Engine,
    url: String,
    data: PathBuf,
    run: i64,
}

async fn summon(sb: &Sandbox, refuse: Option<&str>) -> World {
    let forge = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    let seeded = sb.path("seed");
    seed(&seeded);
    forge.create_repo_from(REPO, &seeded).unwrap();
    if let Some(message) = refuse {
        forge.refuse_pushes(REPO, message).unwrap();
    }
    forge.create_issue(
        REPO,
        "greet.sh cannot shout",
        "Please add --shout.",
        "Codertocat",
    );
    forge.set_permission("Codertocat", "admin");
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agents/scripts/issue-to-pr.json");
    let claude =
        FakeClaude::start_routed(script::parse(&std::fs::read_to_string(path).unwrap()).unwrap());
    let data = sb.path("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let secret = format!("ANTHROPIC_API_KEY={LLM_KEY}");
    let engine = sb
        .serve_with_env(
            "engine",
            port,
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--runners",
                "2",
                "--heartbeat-ms",
                "200",
                "--secret",
                &secret,
                // The model's key reaches the one repository's agent (issue 69).
                "--secret-repos",
                "ANTHROPIC_API_KEY=Codertocat/Hello-World",
                "--public-url",
                &url,
            ],
            &[("ANTHROPIC_BASE_URL", claude.url())],
        )
        .await;
    let response = client()
        .post(format!("{}/api/repos", engine.url))
        .json(&json!({
            "name": REPO, "clone_url": forge.clone_url(REPO), "forge": "github",
            "webhook_secret": SECRET, "api_url": forge.api_url(), "api_token": TOKEN,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut payload = webhook_fixture("github/issue_comment-created.json");
    payload["comment"]["body"] = json!("/plue fix");
    payload["repository"]["default_branch"] = json!("main");
    let (status, answer) = deliver_webhook(
        &engine.url,
        "github",
        "issue_comment",
        "provenance-1",
        &payload,
        SECRET,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let run = support::run_ids(&answer)[0];
    sb.wait_succeeded(&client(), &engine.url, run, Duration::from_secs(180))
        .await;
    World {
        forge,
        _claude: claude,
        _engine: engine,
        url,
        data,
        run,
    }
}

/// The statements of `run`, once each of its two proposals' has settled (applied or
/// failed).
async fn settled_statements(url: &str, run: i64) -> Value {
    wait_for(Duration::from_secs(60), "the statements", || async {
        let listed = get_json(&client(), &format!("{url}/api/runs/{run}/provenance")).await;
        let all = listed.as_array().unwrap();
        (all.len() >= 2 && all.iter().all(|s| s["state"] != "pending")).then_some(listed)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_pull_request_carries_a_statement_in_toto_and_plue_verify_accept() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("provenance");
    let World {
        forge,
        url,
        data,
        run,
        ..
    } = summon(&sb, None).await;
    let pull = wait_for(Duration::from_secs(60), "the pull request", || async {
        forge.pulls(REPO).into_iter().next()
    })
    .await;

    // The key: made at the first start, private to the engine's user, listed publicly.
    let key_file = data.join("provenance-signing-key.pem");
    let mode = std::fs::metadata(&key_file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let keys = reqwest::get(format!("{url}/api/provenance/keys"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    let keys_file = write_json(&sb, "keys.json", &keys);

    // The statements, each applied (the forge accepted both writes), and the links to the
    // pull request's.
    let statements = settled_statements(&url, run).await;
    for listed in statements.as_array().unwrap() {
        assert_eq!(listed["state"], "applied", "{listed}");
    }
    let proposals = get_json(&client(), &format!("{url}/api/runs/{run}/proposals")).await;
    let pr = proposals
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "pull_request")
        .unwrap();
    let link = format!("{url}/api/runs/{run}/proposals/{}/provenance", pr["id"]);
    assert!(pull.body.contains(&link), "{}", pull.body);
    let clone = sb.path("clone");
    git(
        &sb.path(""),
        &[
            "clone",
            "-q",
            forge.repo_dir(REPO).to_str().unwrap(),
            "clone",
        ],
    );
    git(&clone, &["fetch", "-q", "origin", &pull.head]);
    let message = git(&clone, &["log", "-1", "--format=%B", &pull.head_sha]);
    assert!(
        message.ends_with(&format!("Plue-Provenance: {link}")),
        "{message}"
    );
    let served: Value = get_json(&client(), &link).await;
    let statement_file = write_json(&sb, "statement.json", &served);

    // in-toto verifies every statement, and refuses a tampered one.
    for (n, listed) in statements.as_array().unwrap().iter().enumerate() {
        let file = write_json(&sb, &format!("statement-{n}.json"), &listed["envelope"]);
        let (ok, out, err) = in_toto(&file, &keys_file);
        assert!(ok, "in-toto refused statement {n}: {err}");
        assert!(out.contains("gitCommit") || out.contains("sha256"), "{out}");
    }
    let (ok, out, _) = in_toto(&statement_file, &keys_file);
    assert!(ok && out.contains(&pull.head_sha), "{out}");
    // in-toto's library does not check that every resource descriptor names its resource
    // (in-toto v1: a `uri`, `digest` or `content`); the script does, and every statement
    // above passed. One whose `usage` is only a name and annotations, as the engine once
    // wrote it, is refused even signed by a key the verifier trusts.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut old: Value =
        serde_json::from_slice(&b64.decode(served["payload"].as_str().unwrap()).unwrap()).unwrap();
    for byproduct in old["predicate"]["runDetails"]["byproducts"]
        .as_array_mut()
        .unwrap()
    {
        if byproduct["name"] == "usage" {
            assert!(byproduct["content"].is_string() && byproduct["digest"]["sha256"].is_string());
            let fields = byproduct.as_object_mut().unwrap();
            for field in ["content", "digest", "mediaType"] {
                fields.remove(field);
            }
        }
    }
    let signer = plue_provenance::Signer::from_seed(&[43; 32]);
    let resigned = plue_provenance::Envelope::sign(
        plue_provenance::IN_TOTO_PAYLOAD,
        &serde_json::to_vec(&old).unwrap(),
        &signer,
    );
    let resigned_file = write_json(
        &sb,
        "old-usage.json",
        &serde_json::to_value(&resigned).unwrap(),
    );
    let signer_keys = write_json(
        &sb,
        "signer-keys.json",
        &json!([{"keyid": signer.public().id(), "keytype": "ed25519", "scheme": "ed25519",
                 "public": signer.public().hex()}]),
    );
    let (ok, _, err) = in_toto(&resigned_file, &signer_keys);
    assert!(
        !ok && err.contains("'usage' has no uri, digest or content"),
        "{err}"
    );
    let forged = tampered(&served, |s| {
        s["predicate"]["buildDefinition"]["internalParameters"]["model"] = json!("a-cheaper-model")
    });
    let forged_file = write_json(&sb, "forged.json", &forged);
    let (ok, _, err) = in_toto(&forged_file, &keys_file);
    assert!(!ok && err.contains("refused"), "{err}");

    // The agent's comment: its statement's subject is the digest of the text on the forge.
    let comment = statements
        .as_array()
        .unwrap()
        .iter()
        .map(|listed| &listed["envelope"])
        .find(|envelope| envelope != &&served)
        .unwrap();
    let comment_file = write_json(&sb, "comment.json", comment);
    let (ok, out, err) = verify(
        &sb,
        &[
            "--statement",
            comment_file.to_str().unwrap(),
            "--key",
            keys_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("landed: not checked"), "{out}");
    // Asked of the engine: it serves this statement, so the forge accepted the comment.
    let (ok, out, err) = verify(
        &sb,
        &[
            "--statement",
            comment_file.to_str().unwrap(),
            "--server",
            &url,
            "--key",
            keys_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!("landed: {url} serves this statement")),
        "{out}"
    );
    let written = forge
        .comments(REPO)
        .into_iter()
        .find_map(|c| {
            c.body
                .split_once("\n\n<!-- plue:proposal:")
                .map(|(text, _)| text.to_owned())
        })
        .expect("the agent's comment");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(written.as_bytes()));
    assert!(
        out.contains(&format!(
            "subject: a comment whose text has sha256 {digest}"
        )),
        "{out}"
    );

    // plue verify: from the file, and fetched by the commit's trailer.
    let clone_dir = clone.to_str().unwrap();
    let (keys_arg, statement_arg) = (
        keys_file.to_str().unwrap(),
        statement_file.to_str().unwrap(),
    );
    let (ok, out, err) = verify(
        &sb,
        &[
            "--statement",
            statement_arg,
            "--repo",
            clone_dir,
            &pull.head_sha,
            "--key",
            keys_arg,
        ],
    );
    assert!(ok, "{out}\n{err}");
    for said in [
        "signature: good",
        "is exactly the proposal's diff applied to its parent",
        "summoned by: Codertocat",
        "permission: trusted",
        "prompt: sha256:",
        "system prompt: sha256:",
        "tools: ",
        "cost: ",
        "approved by: no approval was required",
        "trigger: comment issue #1",
    ] {
        assert!(out.contains(said), "no {said:?} in:\n{out}");
    }
    let (ok, out, err) = verify(
        &sb,
        &[
            "--repo",
            clone_dir,
            &pull.head_sha,
            "--server",
            &url,
            "--key",
            keys_arg,
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!("landed: {url} served this statement")),
        "{out}"
    );

    // Refusals, each with its reason.
    let (ok, _, err) = verify(
        &sb,
        &[
            "--statement",
            forged_file.to_str().unwrap(),
            "--repo",
            clone_dir,
            &pull.head_sha,
            "--key",
            keys_arg,
        ],
    );
    assert!(!ok && err.contains("no signature verifies"), "{err}");
    // The pull request's commit with one byte of the fixed file changed.
    let fixed = "examples/agents/demo/greet.sh";
    git(&clone, &["checkout", "-q", &pull.head_sha]);
    let mut bytes = std::fs::read(clone.join(fixed)).unwrap();
    bytes[0] ^= 1;
    std::fs::write(clone.join(fixed), bytes).unwrap();
    git(
        &clone,
        &[
            "-c",
            "user.name=m",
            "-c",
            "user.email=m@x",
            "commit",
            "-q",
            "-a",
            "--amend",
            "--no-edit",
        ],
    );
    let changed = git(&clone, &["rev-parse", "HEAD"]);
    let (ok, _, err) = verify(
        &sb,
        &[
            "--statement",
            statement_arg,
            "--repo",
            clone_dir,
            &changed,
            "--key",
            keys_arg,
        ],
    );
    assert!(
        !ok && err.contains(&format!("attests commit {}, not {changed}", pull.head_sha)),
        "{err}"
    );
    // A statement edited to attest that commit (its tree too) is not signed by the engine.
    let retargeted = tampered(&served, |s| {
        s["subject"][0]["digest"]["gitCommit"] = json!(changed);
    });
    let retargeted_file = write_json(&sb, "retargeted.json", &retargeted);
    let (ok, _, err) = verify(
        &sb,
        &[
            "--statement",
            retargeted_file.to_str().unwrap(),
            "--repo",
            clone_dir,
            &changed,
            "--key",
            keys_arg,
        ],
    );
    assert!(!ok && err.contains("no signature verifies"), "{err}");
    // A wrong key.
    let other = sb.write(
        "other.pub",
        &plue_provenance::Signer::from_seed(&[42; 32]).public().hex(),
    );
    let (ok, _, err) = verify(
        &sb,
        &[
            "--statement",
            statement_arg,
            "--repo",
            clone_dir,
            &pull.head_sha,
            "--key",
            other.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && err.contains("no signature verifies with the given key"),
        "{err}"
    );
}

// The attack: the engine signed the pull request's statement before it pushed; the forge
// refused the push, yet the statement was served, a reader rebuilt the commit from it (the
// commit is deterministic: the engine's mirror holds it) and `plue verify` called it the
// agent's change. Now that statement is `failed` with the forge's reason: listed without
// its envelope, refused (409) at its own URL, said so on the run page, and `plue verify`
// refuses the rebuilt commit with that reason. The agent's comment, which the forge
// accepted, is applied and still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_push_the_forge_refused_has_no_statement_plue_verify_accepts() {
    let _serial = support::serial().await;
    let sb = Sandbox::new("provenance-refused");
    let rule = "protected branch, pushes need a review";
    let World {
        forge,
        url,
        data,
        run,
        ..
    } = summon(&sb, Some(rule)).await;
    let keys = reqwest::get(format!("{url}/api/provenance/keys"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let keys_file = write_json(&sb, "keys.json", &keys);
    let statements = settled_statements(&url, run).await;
    let proposals = get_json(&client(), &format!("{url}/api/runs/{run}/proposals")).await;
    let id_of = |kind: &str| {
        proposals
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} proposal: {proposals}"))["id"]
            .as_i64()
            .unwrap()
    };
    let (pr, comment) = (id_of("pull_request"), id_of("comment"));
    let entry = |id: i64| {
        statements
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["proposal_id"] == id)
            .unwrap_or_else(|| panic!("no statement of proposal {id}: {statements}"))
            .clone()
    };

    // The API: failed, with the forge's reason, and no envelope.
    let refused = entry(pr);
    assert_eq!(refused["state"], "failed", "{refused}");
    assert!(refused["envelope"].is_null(), "{refused}");
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("the forge refused the push") && reason.contains(rule),
        "{reason}"
    );
    assert!(forge.pulls(REPO).is_empty());
    let link = format!("{url}/api/runs/{run}/proposals/{pr}/provenance");
    let answer = client().get(&link).send().await.unwrap();
    assert_eq!(answer.status(), 409);
    let said = answer.text().await.unwrap();
    assert!(
        said.contains("did not land") && said.contains(rule) && !said.contains("payload"),
        "{said}"
    );

    // The run page.
    let cookie = support::dashboard_session(&url, support::ADMIN_TOKEN).await;
    let page = client()
        .get(format!("{url}/runs/{run}"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let at = page
        .find(&format!("id=\"proposal-{pr}\""))
        .unwrap_or_else(|| panic!("no proposal {pr} on the run page: {page}"));
    let article = &page[at..at + page[at..].find("</article>").unwrap()];
    assert!(
        article.contains("data-provenance=\"failed\"")
            && article.contains("its signed statement is not served")
            && article.contains(rule),
        "{article}"
    );

    // The attacker's rebuilt commit: the one the engine built and signed for (its mirror
    // holds it), with the trailer naming the statement.
    let mirrors = data.join("mirrors");
    let mirror = std::fs::read_dir(&mirrors)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "git"))
        .expect("the engine's mirror of the repository");
    let rebuilt = sb.path("rebuilt.git");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&mirror)
        .arg(&rebuilt)
        .status()
        .unwrap();
    assert!(copied.success());
    let objects = git(
        &rebuilt,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname) %(objecttype)",
        ],
    );
    let commit = objects
        .lines()
        .filter_map(|line| line.strip_suffix(" commit"))
        .find(|sha| {
            git(&rebuilt, &["log", "-1", "--format=%B", sha])
                .ends_with(&format!("Plue-Provenance: {link}"))
        })
        .expect("the commit the engine built for the pull request")
        .to_owned();
    let (ok, out, err) = verify(
        &sb,
        &[
            "--repo",
            rebuilt.to_str().unwrap(),
            &commit,
            "--server",
            &url,
            "--key",
            keys_file.to_str().unwrap(),
        ],
    );
    assert!(
        !ok,
        "plue verify accepted a change that never landed:\n{out}"
    );
    assert!(
        err.contains("the engine does not vouch for this change")
            && err.contains("did not land")
            && err.contains(rule),
        "{err}"
    );

    // The comment landed: applied, served, verified.
    let accepted = entry(comment);
    assert_eq!(accepted["state"], "applied", "{accepted}");
    let comment_file = write_json(&sb, "comment.json", &accepted["envelope"]);
    let (ok, out, err) = verify(
        &sb,
        &[
            "--statement",
            comment_file.to_str().unwrap(),
            "--server",
            &url,
            "--key",
            keys_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("landed: "), "{out}");
}
