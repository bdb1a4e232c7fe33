//! Dispatch from the repository page, against `plue serve` and a real git repository:
//! - every `*.plue.py` of the default branch's head is listed before any of them ran,
//!   with its triggers, and a file that does not evaluate with the evaluator's message;
//! - a workflow with a manual trigger gets a form of typed inputs — a checkbox for a
//!   boolean, a select for options, a number field for a number, defaults filled, required
//!   ones marked — which a person fills in headless Chromium;
//! - a refused dispatch (a ref that does not exist) comes back on the form as a sentence,
//!   with what was typed kept (never git's stderr, never an error page);
//! - the run page says who started the run, the inputs it got and its commit's message;
//! - a pull request's run page names the pull request by the title its delivery carried
//!   (stored with the run), escaped;
//! - per role: the anonymous are sent to sign in (private repository), a reader sees the
//!   workflows and the API's listing but no form and cannot post one, a writer can; a
//!   number input given text is refused on the form.
//!
//! The browser half says so and passes without Chromium and chromedriver, unless
//! `PLUE_REQUIRE_BROWSER=1`; the per-role half needs no browser.

use crate::support;
use std::time::Duration;

use crate::support::{client, wait_succeeded, Engine, Sandbox, ADMIN_TOKEN};
use crate::webdriver::{bounded, browser_or_skip, Browser};
use serde_json::{json, Value};

const DEPLOY: &str = r#"
def workflow(ctx):
    i = ctx.inputs
    return Plan(name="Deploy",
                triggers=[
                    Trigger.on_push(branches=["release/*"]),
                    Trigger.manual(inputs={
                        "target": {"default": "staging", "options": ["staging", "production"]},
                        "dry_run": True,
                        "count": 2,
                        "version": {"required": True, "description": "what to deploy"},
                    }),
                ],
                steps=[Step.bash("deploy", "echo deploying %s to %s dry=%s count=%s" % (
                    i.get("version"), i.get("target"), i.get("dry_run"), i.get("count")))])
"#;

const CI: &str = r#"
def workflow(ctx):
    return Plan(name="CI", triggers=[Trigger.on_push(branches=["feature/*"]),
                                     Trigger.on_pull_request(branches=["main"])],
                steps=[Step.bash("test", "true")])
"#;

const BROKEN: &str = "def workflow(ctx):\n    return undefined_name\n";

const MESSAGE: &str = "Ship the widget\n\nThe long story of the widget.";

/// A git repository with the three workflows (on `main`), an engine, and `acme/app`
/// registered on it (private).
async fn setup(sandbox: &Sandbox) -> Engine {
    let origin = sandbox.path("origin");
    sandbox.write("origin/.plue/deploy.plue.py", DEPLOY);
    sandbox.write("origin/.plue/ci.plue.py", CI);
    sandbox.write("origin/.plue/broken.plue.py", BROKEN);
    let message = sandbox.write("message.txt", MESSAGE);
    // A fixed date makes the commit's id fixed: a random one shown on the page could
    // spell one of the raw errors the dispatch test looks for (`92e68404` held a "404").
    support::git_sh(
        &origin,
        &format!(
            "export GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z; \
             git init -q -b main . && git add -A && git commit -q -F {}",
            message.display()
        ),
    );
    let engine = sandbox.serve_engine(&["--runners", "1"]).await;
    support::register_origin(&engine.url, &origin, "a-webhook-secret-of-the-test").await;
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_dispatches_a_workflow_that_never_ran_with_typed_inputs() {
    let Some((chromium, driver)) = browser_or_skip() else {
        return;
    };
    bounded(Duration::from_secs(240), async {
        let sandbox = Sandbox::new("dashboard-dispatch-typed");
        let engine = setup(&sandbox).await;
        let http = client();
        let installed = (chromium.as_path(), driver.as_path());
        let browser = Browser::admin_on(&sandbox, installed, &engine.url, "/repos/acme/app").await;
        // Every file of main, though none ran: names, triggers, the broken one's error.
        let listed = browser
            .wait(
                Duration::from_secs(30),
                "the workflows of main",
                "const s = Array.from(document.querySelectorAll('section.workflow')); \
                 if (s.length < 3) return null; \
                 return s.map(w => [w.dataset.workflow, w.querySelector('h3').textContent, \
                   Array.from(w.querySelectorAll('.triggers li')).map(l => l.textContent), \
                   (w.querySelector('.eval-error pre') || {}).textContent || null, \
                   !!w.querySelector('form.dispatch')]);",
            )
            .await;
        let listed = listed.as_array().unwrap();
        let by_path = |path: &str| {
            listed
                .iter()
                .find(|w| w[0] == path)
                .unwrap_or_else(|| panic!("{path} is not listed: {listed:?}"))
        };
        let broken = by_path(".plue/broken.plue.py");
        assert!(
            broken[3].as_str().unwrap().contains("undefined_name"),
            "{broken}"
        );
        assert_eq!(broken[4], false);
        let ci = by_path(".plue/ci.plue.py");
        assert_eq!(ci[2][0], "push to feature/*", "{ci}");
        assert!(
            ci[2][1].as_str().unwrap().starts_with("pull request into main"),
            "{ci}"
        );
        assert_eq!(ci[4], false, "no manual trigger, no form");
        let deploy = by_path(".plue/deploy.plue.py");
        assert!(deploy[1].as_str().unwrap().starts_with("Deploy"), "{deploy}");
        assert_eq!(
            deploy[2],
            json!(["push to release/*", "by hand, 4 inputs"])
        );
        assert_eq!(deploy[4], true);

        // The form's controls follow the inputs' types.
        let form = browser
            .eval("const f = document.querySelector('form.dispatch'); \
                 const q = s => f.querySelector(s); \
                 const t = q('select[name=\"input.target\"]'); \
                 const d = q('input[type=checkbox][name=\"input.dry_run\"]'); \
                 const c = q('input[name=\"input.count\"]'); \
                 const v = q('input[name=\"input.version\"]'); \
                 return [Array.from(t.options).map(o => o.value), t.value, d.checked, \
                   c.type, c.value, v.type, v.required, q('input[name=ref]').value, \
                   !!v.closest('label').querySelector('abbr.required')];")
            .await;
        assert_eq!(
            form,
            json!([
                ["staging", "production"],
                "staging",
                true,
                "number",
                "2",
                "text",
                true,
                "main",
                true
            ])
        );

        // A ref that does not exist: refused on the form, everything typed kept.
        browser
            .eval("const f = document.querySelector('form.dispatch'); \
                 f.querySelector('select[name=\"input.target\"]').value = 'production'; \
                 f.querySelector('input[name=\"input.dry_run\"][type=checkbox]').checked = false; \
                 f.querySelector('input[name=\"input.count\"]').value = '7'; \
                 f.querySelector('input[name=ref]').value = 'no-such-branch';")
            .await;
        browser
            .type_into("input[name=\"input.version\"]", "2.5")
            .await;
        browser.click("form.dispatch button").await;
        let refused = browser
            .wait(
                Duration::from_secs(30),
                "the refusal on the form",
                "const e = document.querySelector('form.dispatch .form-error'); \
                 if (!e) return null; const f = e.closest('form'); const q = s => f.querySelector(s); \
                 return [e.textContent, e.getAttribute('role'), \
                   q('select[name=\"input.target\"]').value, \
                   q('input[name=\"input.dry_run\"][type=checkbox]').checked, \
                   q('input[name=\"input.count\"]').value, q('input[name=\"input.version\"]').value, \
                   q('input[name=ref]').value, document.body.innerText];",
            )
            .await;
        assert_eq!(
            refused[0],
            "Not started: acme/app has no branch, tag or commit 'no-such-branch'."
        );
        assert_eq!(refused[1], "alert");
        assert_eq!(
            &refused.as_array().unwrap()[2..7],
            &[json!("production"), json!(false), json!("7"), json!("2.5"), json!("no-such-branch")]
        );
        let text = refused[7].as_str().unwrap();
        for raw in ["fatal", "couldn't find remote ref", "Not Found", "404"] {
            assert!(!text.contains(raw), "{raw:?} shown: {text}");
        }
        browser.shot("dashboard-dispatch-refused.png").await;

        // The ref put right, the same form starts the run.
        browser
            .eval("document.querySelector('form.dispatch input[name=ref]').value = 'main';")
            .await;
        browser.click("form.dispatch button").await;
        let run_id = browser
            .wait_for_run_page(Duration::from_secs(30), "the new run's page", None)
            .await;
        wait_succeeded(&http, &engine.url, run_id, Duration::from_secs(60)).await;
        let session = support::dashboard_session(&engine.url, ADMIN_TOKEN).await;
        let (_, log) = page(
            &engine.url,
            &format!("/runs/{run_id}/steps/deploy/raw"),
            Some(&session),
        )
        .await;
        assert!(
            log.contains("deploying 2.5 to production dry=false count=7"),
            "{log}"
        );

        // The run page: who, with what, about which commit.
        browser.goto(&format!("{}/runs/{run_id}", engine.url)).await;
        let facts = browser
            .wait(
                Duration::from_secs(10),
                "the run's facts",
                "const f = document.getElementById('run-facts'); if (!f) return null; \
                 const t = id => (document.getElementById(id) || {}).textContent || null; \
                 return [t('run-actor'), t('run-commit-message'), \
                   Array.from(document.querySelectorAll('#run-inputs li')).map(l => l.textContent)];",
            )
            .await;
        assert_eq!(facts[0], "admin", "{facts}");
        assert!(
            facts[1].as_str().unwrap().starts_with("Ship the widget"),
            "{facts}"
        );
        assert!(facts[1].as_str().unwrap().contains("The long story"), "{facts}");
        assert_eq!(
            facts[2],
            json!([
                "count = 7",
                "dry_run = false",
                "target = production",
                "version = 2.5"
            ])
        );
        browser.shot("dashboard-run-facts.png").await;
        browser.close_without_console_errors().await;
    })
    .await;
}

/// `(status, body)` of `GET path` with `cookie` (or none).
async fn page(url: &str, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = client_without_token().get(format!("{url}{path}"));
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    let response = request.send().await.expect("GET");
    (
        response.status().as_u16(),
        response.text().await.expect("text"),
    )
}

/// The session's form token, from a page's hidden `csrf` field.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A user `name` with `role` on acme/app (none: no role) and a token of it.
async fn user(url: &str, name: &str, role: Option<&str>) -> String {
    support::create_person(url, name).await;
    if let Some(role) = role {
        support::put_member(url, "acme/app", name, role).await;
    }
    support::api_token_of(url, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_the_workflows_and_only_writers_dispatch() {
    bounded(Duration::from_secs(180), async {
        let sandbox = Sandbox::new("dashboard-dispatch-roles");
        let engine = setup(&sandbox).await;
        let url = engine.url.as_str();
        let reader = user(url, "rita", Some("reader")).await;
        let writer = user(url, "walt", Some("writer")).await;
        let stranger = user(url, "sam", None).await;

        // The API's listing: readers, not strangers nor the anonymous.
        let listing = |token: Option<String>| async move {
            let mut request =
                client_without_token().get(format!("{url}/api/repos/acme/app/workflows"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("GET workflows");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        };
        let (status, listed) = listing(Some(reader.clone())).await;
        assert_eq!(status, 200, "{listed}");
        let workflows = listed["workflows"].as_array().unwrap();
        assert_eq!(workflows.len(), 3, "{listed}");
        let deploy = workflows
            .iter()
            .find(|w| w["path"] == ".plue/deploy.plue.py")
            .unwrap();
        let types: Vec<(&str, &str)> = deploy["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["name"].as_str().unwrap(), i["type"].as_str().unwrap()))
            .collect();
        assert_eq!(
            types,
            [
                ("count", "number"),
                ("dry_run", "boolean"),
                ("target", "string"),
                ("version", "string")
            ]
        );
        assert_eq!(listed["branch"], "main");
        assert_eq!(listing(Some(stranger.clone())).await.0, 404);
        assert_eq!(listing(None).await.0, 401);

        // The page: the anonymous sign in, a stranger finds nothing, a reader sees the
        // workflows but no form, a writer gets the forms.
        let (status, _) = page(url, "/repos/acme/app", None).await;
        assert_eq!(status, 401);
        let stranger_session = support::dashboard_session(url, &stranger).await;
        assert_eq!(
            page(url, "/repos/acme/app", Some(&stranger_session))
                .await
                .0,
            404
        );
        let reader_session = support::dashboard_session(url, &reader).await;
        let (status, seen) = page(url, "/repos/acme/app", Some(&reader_session)).await;
        assert_eq!(status, 200);
        assert_eq!(seen.matches("class=\"workflow\"").count(), 3, "{seen}");
        assert!(!seen.contains("class=\"dispatch\""), "{seen}");
        assert!(seen.contains("may run this workflow by hand."), "{seen}");
        // A reader posting the form anyway starts nothing.
        let csrf = csrf_of(&seen);
        let posted = post_deploy_form(url, &reader_session, &csrf, &[("input.version", "1")]).await;
        assert_eq!(posted.status(), 403);
        let runs: Value = client()
            .get(format!("{url}/api/runs"))
            .send()
            .await
            .expect("GET runs")
            .json()
            .await
            .expect("json");
        let listed_runs = runs.as_array().or(runs["runs"].as_array());
        assert_eq!(listed_runs.map_or(0, Vec::len), 0, "{runs}");

        let writer_session = support::dashboard_session(url, &writer).await;
        let (_, form) = page(url, "/repos/acme/app", Some(&writer_session)).await;
        assert!(form.contains("class=\"dispatch\""), "{form}");
        // A number input given text: refused on the form, the text kept.
        let inputs = [
            ("input.version", "1"),
            ("input.count", "twelve"),
            ("input.dry_run", "false"),
        ];
        let posted = post_deploy_form(url, &writer_session, &csrf_of(&form), &inputs).await;
        // The form again, with the refusal: a page, not an error.
        assert_eq!(posted.status(), 200);
        let refused = posted.text().await.unwrap();
        assert!(
            refused.contains(
                "Not started:</strong> input &#x27;count&#x27; must be a number, \
                 not &#x27;twelve&#x27;."
            ),
            "{refused}"
        );
        assert!(
            refused.contains("name=\"input.count\" value=\"twelve\""),
            "{refused}"
        );
        assert!(
            refused.contains("name=\"input.version\" value=\"1\""),
            "{refused}"
        );

        // The attack: markup in an input, kept on a refused form and shown on the run
        // page, is text in both (no element of it is made).
        let hostile = "\"><img src=x onerror=alert(1)><script>alert(2)</script>";
        let dispatch = |count: &'static str| {
            let form = form.clone();
            let writer_session = writer_session.clone();
            async move {
                let inputs = [("input.version", hostile), ("input.count", count)];
                post_deploy_form(url, &writer_session, &csrf_of(&form), &inputs).await
            }
        };
        let kept = dispatch("x").await.text().await.unwrap();
        assert!(kept.contains("Not started:"), "{kept}");
        let started = dispatch("3").await;
        assert_eq!(started.status(), 303, "{}", started.text().await.unwrap());
        let run_path = started.headers()["location"].to_str().unwrap().to_string();
        let (_, run_page) = page(url, &run_path, Some(&writer_session)).await;
        assert!(run_page.contains("id=\"run-inputs\""), "{run_page}");
        for shown in [&kept, &run_page] {
            assert!(!shown.contains("<img src=x"), "{shown}");
            assert!(!shown.contains("<script>alert(2)"), "{shown}");
            assert!(
                shown.contains("&lt;img src=x onerror=alert(1)&gt;"),
                "{shown}"
            );
        }
    })
    .await;
}

/// Posts acme/app's dispatch form of `.plue/deploy.plue.py` on `main` with the session
/// `cookie`, its form token `csrf` and `inputs` (`input.NAME`, value); the answer.
async fn post_deploy_form(
    url: &str,
    cookie: &str,
    csrf: &str,
    inputs: &[(&str, &str)],
) -> reqwest::Response {
    let mut fields = vec![
        ("csrf", csrf),
        ("workflow", ".plue/deploy.plue.py"),
        ("ref", "main"),
    ];
    fields.extend_from_slice(inputs);
    client_without_token()
        .post(format!("{url}/repos/acme/app/dispatch"))
        .header(reqwest::header::COOKIE, cookie)
        .form(&fields)
        .send()
        .await
        .expect("POST dispatch")
}

/// A client that sends no token (the support client sends the admin's) and shows
/// redirects rather than following them.
fn client_without_token() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_requests_run_shows_its_title_and_head_commit() {
    bounded(Duration::from_secs(180), async {
        let sandbox = Sandbox::new("dashboard-dispatch-pr");
        let engine = setup(&sandbox).await;
        let origin = sandbox.path("origin");
        let base = support::git_sh(&origin, "git rev-parse HEAD");
        let head = support::git_sh(
            &origin,
            "git checkout -q -b feature && echo x > x && git add x && \
             git commit -q -m 'Add a feature' -m 'Because.' && git rev-parse HEAD",
        );
        let mut payload = support::webhook_fixture("gitea/pull_request-opened.json");
        payload["number"] = json!(7);
        payload["repository"]["full_name"] = json!("acme/app");
        payload["repository"]["name"] = json!("app");
        payload["repository"]["default_branch"] = json!("main");
        let pr = &mut payload["pull_request"];
        pr["number"] = json!(7);
        pr["title"] = json!("Make <b>it</b> better");
        pr["head"]["ref"] = json!("feature");
        pr["head"]["sha"] = json!(head);
        pr["base"]["ref"] = json!("main");
        pr["base"]["sha"] = json!(base);
        for side in ["head", "base"] {
            if pr[side]["repo"].is_object() {
                pr[side]["repo"]["full_name"] = json!("acme/app");
            }
        }
        let (status, answer) = support::deliver_webhook(
            &engine.url,
            "gitea",
            "pull_request",
            "pr-7",
            &payload,
            "a-webhook-secret-of-the-test",
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let runs: Vec<i64> = answer["runs"]
            .as_array()
            .unwrap_or_else(|| panic!("no runs in {answer}"))
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        assert!(!runs.is_empty(), "{answer}");
        let session = support::dashboard_session(&engine.url, ADMIN_TOKEN).await;
        for run in runs {
            let (status, html) = page(&engine.url, &format!("/runs/{run}"), Some(&session)).await;
            assert_eq!(status, 200);
            let about = html
                .split("id=\"run-about\">")
                .nth(1)
                .unwrap_or_else(|| panic!("no pull request on run {run}: {html}"));
            let about = &about[..about.find("</dd>").unwrap()];
            assert!(about.contains("#7"), "{about}");
            assert!(
                about.contains("Make &lt;b&gt;it&lt;&#x2f;b&gt; better"),
                "{about}"
            );
            assert!(about.contains("feature → main"), "{about}");
            assert!(!html.contains("<b>it</b>"), "the title was not escaped");
            assert!(
                html.contains("<span class=\"subject\">Add a feature</span>"),
                "{html}"
            );
        }
    })
    .await;
}
