//! A real Gitea for the end-to-end tests of `real_gitea.rs`: the instance
//! `scripts/gitea/up.sh` starts (`source "$(scripts/gitea/up.sh)"` exports its URL and an
//! admin token), driven through its own REST API, git over HTTP and its web routes.
//!
//! - [`gitea`] reads the environment: without `PLUE_GITEA_URL` a test says it skips and
//!   passes, unless `PLUE_REQUIRE_GITEA=1`, when it fails.
//! - [`World`] is one test's set-up: a fresh public repository (unique name) owned by the
//!   admin; a `plue serve` in a [`Sandbox`] with the repository registered (`forge: gitea`,
//!   its clone and API URLs, a webhook secret of its own, the token of Plue's own Gitea
//!   account `plue-bot`, an admin collaborator of the repository); the repository's
//!   webhook pointing at the engine's `/webhooks/gitea` through a [`Tap`]; and then its
//!   first commit pushed to `main` with git, and delivered.
//! - [`Tap`] forwards every delivery unchanged (headers and bytes) to the engine and keeps
//!   the engine's answer, so a test knows when Gitea's delivery was handled and what Plue
//!   said (its runs, what it refused), and can send the very same delivery again.
//!
//! Every wait has a deadline ([`wait_for`]).
//!
//! Why just past ~600 lines: the set-up every Gitea flow shares (the tap, the world, the
//! waits on Gitea's answers) is one module so that no test file repeats it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use super::{client, free_port, get_json, wait_for, Engine, Sandbox};

mod tap;
pub(crate) use tap::{Tap, Tapped};

/// The password of every user the tests create (the admin's comes from up.sh).
pub(crate) const USER_PASSWORD: &str = "plue-test-user-password-1";
/// Plue's own account on the Gitea: the repositories' `api_token` is one of its tokens.
pub(crate) const BOT: &str = "plue-bot";
/// What the engines under test link runs to.
pub(crate) const PUBLIC_URL: &str = "https://plue.example.com";

/// The Gitea `scripts/gitea/up.sh` started, or `None` after saying that `test` skips.
pub(crate) fn gitea(test: &str) -> Option<Gitea> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(url) = var("PLUE_GITEA_URL") else {
        assert!(
            std::env::var("PLUE_REQUIRE_GITEA").as_deref() != Ok("1"),
            "PLUE_REQUIRE_GITEA=1 but PLUE_GITEA_URL is unset: source \"$(scripts/gitea/up.sh)\""
        );
        eprintln!(
            "skipping {test}: no real Gitea (source \"$(scripts/gitea/up.sh)\"; \
             PLUE_REQUIRE_GITEA=1 makes this an error)"
        );
        return None;
    };
    let need =
        |name: &str| var(name).unwrap_or_else(|| panic!("PLUE_GITEA_URL is set but {name} is not"));
    Some(Gitea {
        url: url.trim_end_matches('/').to_string(),
        token: need("PLUE_GITEA_TOKEN"),
        admin: need("PLUE_GITEA_ADMIN"),
        password: need("PLUE_GITEA_PASSWORD"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client"),
    })
}

/// A name no earlier test run used: `prefix-<time><pid>`.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{:x}{:x}", nanos % (1 << 48), std::process::id())
}

/// The Gitea under test, spoken to as its admin.
pub(crate) struct Gitea {
    /// `http://127.0.0.1:PORT`
    pub(crate) url: String,
    token: String,
    pub(crate) admin: String,
    password: String,
    http: reqwest::Client,
}

impl Gitea {
    pub(crate) fn api_url(&self) -> String {
        format!("{}/api/v1", self.url)
    }

    /// `method /api/v1{path}` as the admin, or as `sudo` (Gitea's `Sudo` header, which an
    /// admin's token may send): the status and the answer (JSON, else its text).
    pub(crate) async fn call(
        &self,
        sudo: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api_url()))
            .header("authorization", format!("token {}", self.token));
        if let Some(user) = sudo {
            request = request.header("sudo", user);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// [`Gitea::call`] as the admin, asserting a 2xx: the answer.
    pub(crate) async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.ok_as(None, method, path, body).await
    }

    /// [`Gitea::call`], asserting a 2xx: the answer.
    pub(crate) async fn ok_as(
        &self,
        sudo: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, answer) = self.call(sudo, method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} as {sudo:?}: {status} {answer}"
        );
        answer
    }

    /// Creates the user `login` (password [`USER_PASSWORD`]) unless it exists.
    pub(crate) async fn ensure_user(&self, login: &str) {
        let body = json!({"username": login, "email": format!("{login}@noreply.invalid"),
                          "password": USER_PASSWORD, "must_change_password": false});
        let (status, answer) = self.call(None, "POST", "/admin/users", Some(body)).await;
        assert!(
            status == 201 || (status == 422 && answer.to_string().contains("already exists")),
            "creating user {login}: {status} {answer}"
        );
    }

    /// A new access token of `login` with every scope (made with its password, as Gitea
    /// requires).
    pub(crate) async fn token_of(&self, login: &str) -> String {
        let answer = self
            .http
            .post(format!("{}/users/{login}/tokens", self.api_url()))
            .basic_auth(login, Some(USER_PASSWORD))
            .json(&json!({"name": unique("plue-test"), "scopes": ["all"]}))
            .send()
            .await
            .expect("POST tokens");
        let status = answer.status();
        let made: Value = answer.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "a token of {login}: {made}");
        made["sha1"].as_str().expect("a token").to_string()
    }

    /// A new public repository `<admin>/<prefix>-…` without commits (default branch
    /// `main`): its full name. Public: a repository registered with a personal token is
    /// fetched — by the engine's mirror and by every step's checkout — from its clone URL
    /// as it is, without the token (only a GitHub App's repository gets a read token).
    pub(crate) async fn create_repo(&self, prefix: &str) -> String {
        let body = json!({"name": unique(prefix), "private": false, "default_branch": "main",
                          "auto_init": false});
        let made = self.ok("POST", "/user/repos", Some(body)).await;
        made["full_name"].as_str().expect("full_name").to_string()
    }

    /// Makes `login` a collaborator of `repo` with `permission` (`read`, `write`, `admin`).
    pub(crate) async fn collaborator(&self, repo: &str, login: &str, permission: &str) {
        let path = format!("/repos/{repo}/collaborators/{login}");
        self.ok("PUT", &path, Some(json!({ "permission": permission })))
            .await;
    }

    /// A webhook of `repo` (Gitea's own kind, JSON) for pushes, pull requests, issues and
    /// their comments, delivering to `url` signed with `secret`: its id.
    pub(crate) async fn add_hook(&self, repo: &str, url: &str, secret: &str) -> i64 {
        let body = json!({
            "type": "gitea", "active": true, "branch_filter": "*",
            "config": {"url": url, "content_type": "json", "secret": secret},
            "events": ["push", "pull_request", "issues", "delete"],
        });
        let made = self
            .ok("POST", &format!("/repos/{repo}/hooks"), Some(body))
            .await;
        made["id"].as_i64().expect("a hook id")
    }

    /// The statuses of `sha` on `repo`, oldest first.
    pub(crate) async fn statuses(&self, repo: &str, sha: &str) -> Vec<Value> {
        let path = format!("/repos/{repo}/commits/{sha}/statuses?sort=oldest&limit=50");
        let answer = self.ok("GET", &path, None).await;
        answer.as_array().cloned().unwrap_or_default()
    }

    /// Waits until `sha` has a status of `context` whose state is final (not `pending`):
    /// every status of that context, oldest first.
    pub(crate) async fn final_statuses(&self, repo: &str, sha: &str, context: &str) -> Vec<Value> {
        wait_for(
            Duration::from_secs(60),
            &format!("a final {context} status on {sha}"),
            || async {
                let of_context: Vec<Value> = self
                    .statuses(repo, sha)
                    .await
                    .into_iter()
                    .filter(|s| s["context"] == context)
                    .collect();
                of_context
                    .iter()
                    .any(|s| s["status"] != "pending")
                    .then_some(of_context)
            },
        )
        .await
    }

    /// The comments of issue `number`, oldest first.
    pub(crate) async fn comments(&self, repo: &str, number: u64) -> Vec<Value> {
        let path = format!("/repos/{repo}/issues/{number}/comments");
        self.ok("GET", &path, None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Opens issue `title` on `repo` as the admin: its number.
    pub(crate) async fn open_issue(&self, repo: &str, title: &str, body: &str) -> u64 {
        let path = format!("/repos/{repo}/issues");
        let made = self
            .ok("POST", &path, Some(json!({"title": title, "body": body})))
            .await;
        made["number"].as_u64().expect("an issue number")
    }

    /// Comments `body` on issue `number` as `login`: the comment's id.
    pub(crate) async fn comment(&self, login: &str, repo: &str, number: u64, body: &str) -> u64 {
        let path = format!("/repos/{repo}/issues/{number}/comments");
        let sudo = Some(login).filter(|l| *l != self.admin);
        let made = self
            .ok_as(sudo, "POST", &path, Some(json!({ "body": body })))
            .await;
        made["id"].as_u64().expect("a comment id")
    }

    /// Replays delivery `uuid` of hook `hook` of `repo` as Gitea's web page does (its
    /// "Replay" button, signed in as the admin): Gitea has no API for it.
    pub(crate) async fn replay(&self, repo: &str, hook: i64, uuid: &str) {
        let login = self
            .http
            .post(format!("{}/user/login", self.url))
            .form(&[
                ("user_name", self.admin.as_str()),
                ("password", &self.password),
            ])
            .send()
            .await
            .expect("POST /user/login");
        let status = login.status();
        // Signing in renews the session: of a cookie set twice, the last one counts.
        let mut cookies: Vec<String> = Vec::new();
        for value in login.headers().get_all(reqwest::header::SET_COOKIE) {
            let Some(pair) = value.to_str().ok().and_then(|v| v.split(';').next()) else {
                continue;
            };
            let name = pair.split('=').next().unwrap_or_default();
            cookies.retain(|c| c.split('=').next() != Some(name));
            cookies.push(pair.to_string());
        }
        assert!(
            status.is_redirection() && cookies.iter().any(|c| c.starts_with("i_like_gitea=")),
            "signing in to Gitea: {status} {cookies:?}"
        );
        let url = format!("{}/{repo}/settings/hooks/{hook}/replay/{uuid}", self.url);
        let replayed = self
            .http
            .post(&url)
            .header("cookie", cookies.join("; "))
            .send()
            .await
            .expect("POST replay");
        let status = replayed.status();
        let location = replayed
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            status.is_redirection() && location.contains(&format!("/settings/hooks/{hook}")),
            "POST {url}: {status} -> {location}: {}",
            replayed.text().await.unwrap_or_default()
        );
    }

    /// An HTTP `Authorization` header value for git as the admin.
    fn git_header(&self) -> String {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.admin, self.token));
        format!("Authorization: Basic {basic}")
    }
}

/// A clone of a Gitea repository in a sandbox, pushed to with git over HTTP as the admin.
pub(crate) struct Checkout {
    pub(crate) dir: PathBuf,
    header: String,
}

impl Checkout {
    /// An empty repository at `dir` (branch `main`) whose `origin` is `repo` on `gitea`.
    fn init(gitea: &Gitea, repo: &str, dir: &Path) -> Checkout {
        std::fs::create_dir_all(dir).expect("mkdir");
        let checkout = Checkout {
            dir: dir.to_path_buf(),
            header: gitea.git_header(),
        };
        checkout.git(&format!(
            "git init -q -b main . && git remote add origin {}/{repo}.git",
            gitea.url
        ));
        checkout
    }

    /// Runs `script` (`bash -e`) in the clone as the admin (the token in git's extra
    /// header, never in a URL or a file): its trimmed stdout.
    pub(crate) fn git(&self, script: &str) -> String {
        super::git_sh_with(
            &self.dir,
            script,
            &[
                ("GIT_TERMINAL_PROMPT", "0"),
                ("GIT_CONFIG_COUNT", "1"),
                ("GIT_CONFIG_KEY_0", "http.extraHeader"),
                ("GIT_CONFIG_VALUE_0", &self.header),
            ],
        )
    }

    /// Commits `files` on `branch` (created from the current branch when new) and pushes
    /// it: the commit.
    pub(crate) fn push(&self, branch: &str, files: &[(&str, &str)]) -> String {
        self.git(&format!(
            "git checkout -q {branch} 2>/dev/null || git checkout -q -b {branch}"
        ));
        super::write_files(&self.dir, files);
        self.git(&format!(
            "git add -A && git commit -qm 'change {branch}' && git push -q origin {branch} && git rev-parse HEAD"
        ))
    }
}

/// A test's repository before its engine: [`World::prepare`].
pub(crate) struct Prepared {
    gitea: Gitea,
    sb: Sandbox,
    /// `owner/name` on the Gitea.
    pub(crate) repo: String,
    work: Checkout,
    /// The token of [`BOT`] Plue will write with.
    pub(crate) bot_token: String,
}

/// One test's repository, engine and webhook (see the module docs).
pub(crate) struct World {
    pub(crate) gitea: Gitea,
    pub(crate) sb: Sandbox,
    pub(crate) engine: Engine,
    /// `owner/name` on the Gitea and in Plue.
    pub(crate) repo: String,
    pub(crate) work: Checkout,
    pub(crate) tap: Tap,
    pub(crate) hook: i64,
    /// The token of [`BOT`] Plue writes with.
    pub(crate) bot_token: String,
    /// The delivery of the first push, which made `main`.
    pub(crate) initial: Tapped,
}

impl World {
    /// [`World::prepare`], then [`World::serve`].
    pub(crate) async fn start(
        gitea: Gitea,
        name: &str,
        files: &[(&str, &str)],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> World {
        World::serve(World::prepare(gitea, name).await, files, extra, env).await
    }

    /// A new repository without commits, [`BOT`] its admin collaborator, and a new token
    /// of the bot's.
    pub(crate) async fn prepare(gitea: Gitea, name: &str) -> Prepared {
        let sb = Sandbox::new(name);
        let repo = gitea.create_repo(name).await;
        let work = Checkout::init(&gitea, &repo, &sb.path("work"));
        gitea.ensure_user(BOT).await;
        // Gitea tells a user's permission on a repository to site admins, the repository's
        // admins and that user only: Plue's account must be an admin of it to learn who
        // may summon.
        gitea.collaborator(&repo, BOT, "admin").await;
        let bot_token = gitea.token_of(BOT).await;
        Prepared {
            gitea,
            sb,
            repo,
            work,
            bot_token,
        }
    }

    /// An engine (local runners, `extra` arguments, `env`) with `prepared`'s repository
    /// registered, the repository's webhook delivering to it through a [`Tap`], then the
    /// first push (`files` on `main`), once its delivery was answered. The webhook exists
    /// before anything is pushed: Gitea picks the webhooks of a push when it gets to
    /// handling it, some time after git's push returned, so a push just before the
    /// webhook was made may or may not be delivered.
    pub(crate) async fn serve(
        prepared: Prepared,
        files: &[(&str, &str)],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> World {
        let Prepared {
            gitea,
            sb,
            repo,
            work,
            bot_token,
        } = prepared;
        let data = sb.path("data");
        let mut args = vec![
            "--data-dir",
            data.to_str().unwrap(),
            "--runners",
            "2",
            "--heartbeat-ms",
            "200",
            "--public-url",
            PUBLIC_URL,
        ];
        args.extend_from_slice(extra);
        let engine = sb.serve_with_env("engine", free_port(), &args, env).await;
        let secret = unique("webhook-secret");
        let registered = client()
            .post(format!("{}/api/repos", engine.url))
            .json(&json!({
                "name": repo,
                "forge": "gitea",
                "clone_url": format!("{}/{repo}.git", gitea.url),
                "api_url": gitea.api_url(),
                "api_token": bot_token,
                "webhook_secret": secret,
                "default_branch": "main",
            }))
            .send()
            .await
            .expect("POST /api/repos");
        let status = registered.status();
        assert_eq!(status, 201, "{}", registered.text().await.unwrap());
        let tap = Tap::start(&engine.url).await;
        let hook = gitea.add_hook(&repo, &tap.url, &secret).await;
        let sha = work.push("main", files);
        let what = format!("the delivery of the first push ({sha})");
        let initial = tap.delivered("push", &what, |p| p["after"] == sha).await;
        assert_eq!(initial.status, 200, "{}", initial.answer);
        World {
            gitea,
            sb,
            engine,
            repo,
            work,
            tap,
            hook,
            bot_token,
            initial,
        }
    }

    /// Plue's runs of the repository, newest first.
    pub(crate) async fn runs(&self) -> Vec<Value> {
        let url = format!("{}/api/runs?repo={}&limit=1000", self.engine.url, self.repo);
        get_json(&client(), &url).await["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The run Plue started for `sha` on `event`, once there is one.
    pub(crate) async fn run_at(&self, sha: &str, event: &str) -> Value {
        let what = format!("a {event} run at {sha}");
        wait_for(Duration::from_secs(60), &what, || async {
            self.runs()
                .await
                .into_iter()
                .find(|r| r["sha"] == sha && r["event"] == event)
        })
        .await
    }

    /// Asserts that `sha` carries `context`'s `pending`, then `expected`, both linking run
    /// `run` and written by [`BOT`], and that Gitea's combined state of `sha` is `expected`.
    pub(crate) async fn assert_statuses(&self, context: &str, sha: &str, run: i64, expected: &str) {
        let statuses = self.gitea.final_statuses(&self.repo, sha, context).await;
        let states: Vec<&str> = statuses
            .iter()
            .map(|s| s["status"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(states, ["pending", expected], "{sha}: {statuses:#?}");
        for status in &statuses {
            assert_eq!(status["target_url"], format!("{PUBLIC_URL}/runs/{run}"));
            let description = status["description"].as_str().unwrap_or_default();
            assert!(!description.is_empty(), "{status}");
            assert_eq!(status["creator"]["login"], BOT, "{status}");
        }
        let path = format!("/repos/{}/commits/{sha}/status", self.repo);
        let combined = self.gitea.ok("GET", &path, None).await;
        assert_eq!(combined["state"], expected, "{combined}");
    }

    /// The one pull request of the repository, checked to be Plue's (opened by [`BOT`]
    /// from its branch for comment `comment` into `main`, and open).
    pub(crate) async fn plues_pull_request(&self, comment: u64) -> Value {
        let path = format!("/repos/{}/pulls?state=all", self.repo);
        let pulls = self.gitea.ok("GET", &path, None).await;
        let pulls = pulls.as_array().expect("a list");
        assert_eq!(pulls.len(), 1, "{pulls:#?}");
        let pull = pulls[0].clone();
        assert_eq!(pull["state"], "open", "{pull}");
        assert_eq!(pull["user"]["login"], BOT, "{pull}");
        assert_eq!(pull["base"]["ref"], "main", "{pull}");
        let head = pull["head"]["ref"].as_str().unwrap_or_default();
        let branch = format!("plue/comment-{comment}");
        assert!(head.starts_with(&branch), "{head}");
        pull
    }

    /// Waits for the delivery of the push of `sha` and answers the runs it started.
    pub(crate) async fn push_delivered(&self, sha: &str) -> Tapped {
        let what = format!("the delivery of the push of {sha}");
        self.tap
            .delivered("push", &what, |p| p["after"] == sha)
            .await
    }

    /// The run `id` once final.
    pub(crate) async fn finished(&self, id: i64) -> Value {
        super::wait_final(&client(), &self.engine.url, id, Duration::from_secs(180)).await
    }
}

/// Every file below `dir` (path relative to it, text).
pub(crate) fn files_below(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files
}

/// The body of a Gitea comment or pull request.
pub(crate) fn body_of(item: &Value) -> &str {
    item["body"].as_str().unwrap_or_default()
}
