//! The fake GitHub's Checks API: `POST /repos/{o}/{r}/check-runs`, `PATCH` and `GET
//! /repos/{o}/{r}/check-runs/{id}`, `GET …/check-runs/{id}/annotations` and `GET
//! /repos/{o}/{r}/commits/{ref}/check-runs` (`check_name`, `filter`), in GitHub's shapes
//! (201 and 200 with the `check-run` object). Gitea has no Checks API: 404.
//!
//! What was checked against GitHub's REST description (`checks/create`, `checks/update`,
//! `checks/list-for-ref`, `checks/list-annotations`, the `check-run` schema): `name` and
//! `head_sha` are required on create; `status` is one of `queued`, `in_progress`,
//! `completed` (`waiting`, `requested` and `pending` are GitHub Actions' own and refused
//! here, as GitHub refuses them to an App); `conclusion` is one of `action_required`,
//! `cancelled`, `failure`, `neutral`, `success`, `skipped`, `stale`, `timed_out`, required
//! with `completed` and making the status `completed` when given alone; `output` needs
//! `title` and `summary` (at most 65535 characters); at most 50 `annotations` a request,
//! each with `path`, `start_line`, `end_line`, `annotation_level` (`notice`, `warning`,
//! `failure`) and `message`, columns only on one line; an update *appends* its annotations.
//! Anything else is GitHub's `422 Validation Failed`.

use serde_json::{json, Value};

use super::answer::Answer;
use super::{github_json, lock, Flavor, Shared, SharedState};

/// A check run as the fake keeps it.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub details_url: Option<String>,
    pub external_id: Option<String>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub annotations: Vec<CheckRunAnnotation>,
    /// How many requests wrote it (the create and each update).
    pub writes: u32,
}

/// One annotation of a check run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRunAnnotation {
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    pub annotation_level: String,
    pub message: String,
    pub title: Option<String>,
}

const STATUSES: [&str; 3] = ["queued", "in_progress", "completed"];
const CONCLUSIONS: [&str; 8] = [
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];
const LEVELS: [&str; 3] = ["notice", "warning", "failure"];
const MAX_ANNOTATIONS: usize = 50;
const MAX_SUMMARY: usize = 65_535;

/// Routes a Checks API request; `None` when `tail` is not one.
pub(crate) fn route(
    shared: &SharedState,
    method: &str,
    repo: &str,
    tail: &[&str],
    query: &str,
    body: &Value,
) -> Option<Answer> {
    let id = |text: &str| text.parse::<u64>().ok();
    let answer = match (method, tail) {
        ("POST", ["check-runs"]) => create(shared, repo, body),
        ("PATCH", ["check-runs", n]) => update(shared, repo, id(n)?, body),
        ("GET", ["check-runs", n]) => get(shared, repo, id(n)?),
        ("GET", ["check-runs", n, "annotations"]) => annotations(shared, repo, id(n)?),
        ("GET", ["commits", sha, "check-runs"]) => list_for_ref(shared, repo, sha, query),
        _ => return None,
    };
    if lock(shared).flavor != Flavor::GitHub {
        return Some(Answer::json(404, json!({"message": "Not Found"})));
    }
    Some(answer)
}

/// GitHub's `422 Validation Failed`.
fn invalid(message: &str) -> Answer {
    Answer::json(
        422,
        json!({
            "message": "Invalid request.\n\n".to_owned() + message,
            "documentation_url": "https://docs.github.com/rest/checks/runs",
            "status": "422",
        }),
    )
}

fn not_found() -> Answer {
    Answer::json(
        404,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}),
    )
}

fn create(shared: &SharedState, repo: &str, body: &Value) -> Answer {
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return invalid("\"name\" wasn't supplied.");
    };
    let Some(head_sha) = body.get("head_sha").and_then(Value::as_str) else {
        return invalid("\"head_sha\" wasn't supplied.");
    };
    let dir = lock(shared).root.join(format!("{repo}.git"));
    if !commit_exists(&dir, head_sha) {
        return invalid(&format!("No commit found for SHA: {head_sha}"));
    }
    let mut run = CheckRun {
        id: 0,
        name: name.into(),
        head_sha: head_sha.into(),
        status: "queued".into(),
        conclusion: None,
        details_url: None,
        external_id: None,
        title: None,
        summary: None,
        annotations: Vec::new(),
        writes: 0,
    };
    if let Err(problem) = apply(&mut run, body) {
        return invalid(&problem);
    }
    let mut guard = lock(shared);
    guard.next_id += 1;
    run.id = guard.next_id;
    let url = guard.url.clone();
    let app = app_json(&guard);
    let state = guard.repos.get_mut(repo).expect("checked by the router");
    state.check_runs.push(run.clone());
    drop(guard);
    let mut answer = Answer::json(201, run_json(&url, &app, repo, &run));
    answer.headers.push((
        "location".into(),
        format!("{url}/api/v3/repos/{repo}/check-runs/{}", run.id),
    ));
    answer
}

fn update(shared: &SharedState, repo: &str, id: u64, body: &Value) -> Answer {
    let mut guard = lock(shared);
    let url = guard.url.clone();
    let app = app_json(&guard);
    let state = guard.repos.get_mut(repo).expect("checked by the router");
    let Some(run) = state.check_runs.iter_mut().find(|r| r.id == id) else {
        return not_found();
    };
    // Validated whole before anything changes: a refused update changes nothing.
    let mut updated = run.clone();
    if let Err(problem) = apply(&mut updated, body) {
        return invalid(&problem);
    }
    *run = updated;
    Answer::json(200, run_json(&url, &app, repo, run))
}

/// Applies the fields of a create or update `body` to `run`, or says what GitHub refuses.
fn apply(run: &mut CheckRun, body: &Value) -> Result<(), String> {
    if !body.is_object() {
        return Err("the body is not a JSON object".into());
    }
    let text = |field: &str| -> Result<Option<String>, String> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "For 'properties/{field}', {other} is not a string."
            )),
        }
    };
    let status = text("status")?;
    let conclusion = text("conclusion")?;
    if let Some(status) = &status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(format!(
                "For 'properties/status', \"{status}\" is not one of {STATUSES:?}."
            ));
        }
    }
    if let Some(conclusion) = &conclusion {
        if !CONCLUSIONS.contains(&conclusion.as_str()) {
            return Err(format!(
                "For 'properties/conclusion', \"{conclusion}\" is not one of {CONCLUSIONS:?}."
            ));
        }
    }
    if status.as_deref() == Some("completed") && conclusion.is_none() {
        return Err("\"conclusion\" wasn't supplied.".into());
    }
    if let Some(url) = text("details_url")? {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("details_url must be an http(s) URL".into());
        }
        run.details_url = Some(url);
    }
    if let Some(external_id) = text("external_id")? {
        run.external_id = Some(external_id);
    }
    if let Some(name) = text("name")? {
        run.name = name;
    }
    let annotations = match body.get("output") {
        None | Some(Value::Null) => Vec::new(),
        Some(output) => {
            let (title, summary) = (
                output.get("title").and_then(Value::as_str),
                output.get("summary").and_then(Value::as_str),
            );
            let (Some(title), Some(summary)) = (title, summary) else {
                return Err("\"title\" and \"summary\" are required in \"output\".".into());
            };
            if summary.chars().count() > MAX_SUMMARY {
                return Err(format!("output.summary is longer than {MAX_SUMMARY}"));
            }
            let listed = match output.get("annotations") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items.clone(),
                Some(_) => return Err("output.annotations is not an array".into()),
            };
            if listed.len() > MAX_ANNOTATIONS {
                return Err(format!(
                    "Only {MAX_ANNOTATIONS} annotations are allowed per request; {} were sent.",
                    listed.len()
                ));
            }
            let annotations = listed
                .iter()
                .map(annotation)
                .collect::<Result<Vec<_>, _>>()?;
            run.title = Some(title.into());
            run.summary = Some(summary.into());
            annotations
        }
    };
    run.annotations.extend(annotations);
    match (status, conclusion) {
        (_, Some(conclusion)) => {
            run.status = "completed".into();
            run.conclusion = Some(conclusion);
        }
        (Some(status), None) => run.status = status,
        (None, None) => {}
    }
    run.writes += 1;
    Ok(())
}

fn annotation(item: &Value) -> Result<CheckRunAnnotation, String> {
    let text = |field: &str| {
        item.get(field)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| format!("annotation: \"{field}\" wasn't supplied."))
    };
    let line = |field: &str| {
        item.get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("annotation: \"{field}\" wasn't supplied."))
    };
    let level = text("annotation_level")?;
    if !LEVELS.contains(&level.as_str()) {
        return Err(format!("annotation: \"{level}\" is not one of {LEVELS:?}."));
    }
    let (start_line, end_line) = (line("start_line")?, line("end_line")?);
    let columns = item.get("start_column").is_some() || item.get("end_column").is_some();
    if columns && start_line != end_line {
        return Err("annotation: columns are only allowed on one line".into());
    }
    Ok(CheckRunAnnotation {
        path: text("path")?,
        start_line,
        end_line,
        annotation_level: level,
        message: text("message")?,
        title: item.get("title").and_then(Value::as_str).map(String::from),
    })
}

fn get(shared: &SharedState, repo: &str, id: u64) -> Answer {
    let guard = lock(shared);
    let found = guard.repos[repo].check_runs.iter().find(|r| r.id == id);
    match found {
        Some(run) => Answer::json(200, run_json(&guard.url, &app_json(&guard), repo, run)),
        None => not_found(),
    }
}

fn annotations(shared: &SharedState, repo: &str, id: u64) -> Answer {
    let guard = lock(shared);
    let Some(run) = guard.repos[repo].check_runs.iter().find(|r| r.id == id) else {
        return not_found();
    };
    let items: Vec<Value> = run
        .annotations
        .iter()
        .map(|a| {
            json!({
                "path": a.path,
                "blob_href": format!("{}/{repo}/blob/{}/{}", guard.url, run.head_sha, a.path),
                "start_line": a.start_line,
                "end_line": a.end_line,
                "start_column": null,
                "end_column": null,
                "annotation_level": a.annotation_level,
                "title": a.title,
                "message": a.message,
                "raw_details": null,
            })
        })
        .collect();
    Answer::json(200, Value::Array(items))
}

fn list_for_ref(shared: &SharedState, repo: &str, sha: &str, query: &str) -> Answer {
    let params = super::query::parse_query(query);
    let name = params
        .iter()
        .find(|(k, _)| k == "check_name")
        .map(|(_, v)| v.as_str());
    let guard = lock(shared);
    // `filter=latest` (the default) keeps the newest check run of each name.
    let latest = !params.iter().any(|(k, v)| k == "filter" && v == "all");
    let mut runs: Vec<&CheckRun> = guard.repos[repo]
        .check_runs
        .iter()
        .rev()
        .filter(|r| r.head_sha == sha && name.is_none_or(|n| r.name == n))
        .collect();
    if latest {
        let mut seen = std::collections::BTreeSet::new();
        runs.retain(|r| seen.insert(r.name.clone()));
    }
    let app = app_json(&guard);
    let items: Vec<Value> = runs
        .iter()
        .map(|r| run_json(&guard.url, &app, repo, r))
        .collect();
    Answer::json(
        200,
        json!({"total_count": items.len(), "check_runs": items}),
    )
}

/// The App that makes check runs here: the App mode's, else one called `plue` (id 1).
fn app_json(shared: &Shared) -> Value {
    match &shared.app {
        Some(app) => github_json::integration(&shared.url, app.config.id, &app.config.slug),
        None => github_json::integration(&shared.url, 1, "plue"),
    }
}

/// GitHub's `check-run` object, made by `app` (an `integration`).
fn run_json(url: &str, app: &Value, repo: &str, run: &CheckRun) -> Value {
    json!({
        "id": run.id,
        "node_id": format!("CR_{}", run.id),
        "head_sha": run.head_sha,
        "external_id": run.external_id.clone().unwrap_or_default(),
        "url": format!("{url}/api/v3/repos/{repo}/check-runs/{}", run.id),
        "html_url": format!("{url}/{repo}/runs/{}", run.id),
        "details_url": run.details_url,
        "status": run.status,
        "conclusion": run.conclusion,
        "started_at": "2026-01-01T00:00:00Z",
        "completed_at": (run.status == "completed").then_some("2026-01-01T00:00:01Z"),
        "output": {
            "title": run.title,
            "summary": run.summary,
            "text": null,
            "annotations_count": run.annotations.len(),
            "annotations_url": format!("{url}/api/v3/repos/{repo}/check-runs/{}/annotations", run.id),
        },
        "name": run.name,
        "check_suite": {"id": 1},
        "app": app,
        "pull_requests": [],
    })
}

/// Whether `sha` names a commit of the bare repository `dir`.
fn commit_exists(dir: &std::path::Path, sha: &str) -> bool {
    sha.len() == 40
        && sha.bytes().all(|b| b.is_ascii_hexdigit())
        && std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["cat-file", "-e", &format!("{sha}^{{commit}}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
