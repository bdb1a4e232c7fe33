//! The JSON bodies of the Checks API, built from texts that passed a run's outbound wall:
//! a new check run's (`POST …/check-runs`) and a completion's (`PATCH …/check-runs/{id}`),
//! the latter split so that no request carries more than [`MAX_ANNOTATIONS_PER_REQUEST`]
//! annotations (GitHub refuses more, and appends the annotations of each update to those
//! it holds). Pure: no IO.
//!
//! Invariants: every text of a body is an [`Outbound`] (or cut from one: cut, never added
//! to); the enums are GitHub's closed sets, so no body names a status, conclusion or level
//! GitHub would refuse with a 422.

use plue_outbound::Outbound;
use serde_json::{json, Map, Value};

/// GitHub's limit of annotations per create or update request.
pub const MAX_ANNOTATIONS_PER_REQUEST: usize = 50;
/// GitHub's limit of an output's `summary` (characters).
pub const MAX_SUMMARY_CHARS: usize = 65_535;
/// GitHub's limit of an annotation's `title` (characters).
pub const MAX_ANNOTATION_TITLE_CHARS: usize = 255;
/// GitHub's limit of an annotation's `message` (it says 64 KB; counted in characters here,
/// which is never more than the bytes).
pub const MAX_ANNOTATION_MESSAGE_CHARS: usize = 65_535;

/// A check run that has not completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Queued,
    InProgress,
}

impl Progress {
    pub fn as_str(self) -> &'static str {
        match self {
            Progress::Queued => "queued",
            Progress::InProgress => "in_progress",
        }
    }
}

/// How a completed check run ended (GitHub's `conclusion`; `stale` is GitHub's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
    TimedOut,
    Neutral,
    Skipped,
    ActionRequired,
}

impl Conclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::TimedOut => "timed_out",
            Conclusion::Neutral => "neutral",
            Conclusion::Skipped => "skipped",
            Conclusion::ActionRequired => "action_required",
        }
    }
}

/// An annotation's `annotation_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Notice,
    Warning,
    Failure,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Notice => "notice",
            Level::Warning => "warning",
            Level::Failure => "failure",
        }
    }
}

/// A check run to create (or find, by `external_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCheckRun {
    /// The check's name (the workflow's).
    pub name: Outbound,
    pub head_sha: String,
    pub progress: Progress,
    /// The run's page on this engine's dashboard.
    pub details_url: String,
    /// The engine's own id of what the check run reports (the run's id).
    pub external_id: String,
}

/// One annotation on a line range of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckAnnotation {
    pub path: Outbound,
    pub start_line: u64,
    pub end_line: u64,
    pub level: Level,
    pub message: Outbound,
    pub title: Option<Outbound>,
}

/// What a completed check run says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub conclusion: Conclusion,
    pub title: Outbound,
    /// Markdown: why the run failed, what it opened.
    pub summary: Outbound,
    pub annotations: Vec<CheckAnnotation>,
}

/// The body of `POST /repos/{owner}/{repo}/check-runs`.
pub fn create(run: &NewCheckRun) -> Value {
    json!({
        "name": run.name.as_str(),
        "head_sha": run.head_sha,
        "status": run.progress.as_str(),
        "details_url": run.details_url,
        "external_id": run.external_id,
    })
}

/// The bodies of the `PATCH` requests that complete a check run whose GitHub copy already
/// holds `already_sent` annotations: each says the conclusion and the output's title and
/// summary, and carries the next at most [`MAX_ANNOTATIONS_PER_REQUEST`] annotations not yet
/// sent; one body without annotations when none is left.
pub fn completion(done: &Completion, already_sent: usize) -> Vec<Value> {
    let rest = done.annotations.get(already_sent..).unwrap_or_default();
    let head = |annotations: Option<&[CheckAnnotation]>| {
        let mut output = Map::new();
        output.insert("title".into(), json!(done.title.as_str()));
        output.insert(
            "summary".into(),
            json!(cut(done.summary.as_str(), MAX_SUMMARY_CHARS)),
        );
        if let Some(annotations) = annotations {
            output.insert(
                "annotations".into(),
                Value::Array(annotations.iter().map(annotation).collect()),
            );
        }
        json!({
            "status": "completed",
            "conclusion": done.conclusion.as_str(),
            "output": output,
        })
    };
    if rest.is_empty() {
        return vec![head(None)];
    }
    rest.chunks(MAX_ANNOTATIONS_PER_REQUEST)
        .map(|chunk| head(Some(chunk)))
        .collect()
}

fn annotation(a: &CheckAnnotation) -> Value {
    let mut out = json!({
        "path": a.path.as_str(),
        "start_line": a.start_line,
        "end_line": a.end_line.max(a.start_line),
        "annotation_level": a.level.as_str(),
        "message": cut(a.message.as_str(), MAX_ANNOTATION_MESSAGE_CHARS),
    });
    if let Some(title) = &a.title {
        out["title"] = json!(cut(title.as_str(), MAX_ANNOTATION_TITLE_CHARS));
    }
    out
}

/// The first `max` characters of `text`: a checked text cut stays checked (nothing added).
fn cut(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plue_outbound::{Checker, Secrets};

    fn wall() -> Checker {
        Checker::new(&Secrets::from_iter(["npm_Secr3tTokenOfTheRun"]), ["plue"])
    }

    fn annotations(n: usize) -> Vec<CheckAnnotation> {
        let wall = wall();
        (0..n)
            .map(|i| CheckAnnotation {
                path: wall.check("src/lib.rs").unwrap(),
                start_line: i as u64 + 1,
                end_line: 0,
                level: Level::Failure,
                message: wall.check(&format!("problem {i}")).unwrap(),
                title: None,
            })
            .collect()
    }

    fn done(n: usize) -> Completion {
        let wall = wall();
        Completion {
            conclusion: Conclusion::Failure,
            title: wall.check("Plue run failed").unwrap(),
            summary: wall.check("Step `build` failed").unwrap(),
            annotations: annotations(n),
        }
    }

    #[test]
    fn annotations_go_fifty_to_a_request_each_with_the_conclusion() {
        let bodies = completion(&done(120), 0);
        let counts: Vec<usize> = bodies
            .iter()
            .map(|b| b["output"]["annotations"].as_array().unwrap().len())
            .collect();
        assert_eq!(counts, [50, 50, 20]);
        for body in &bodies {
            assert_eq!(body["status"], "completed");
            assert_eq!(body["conclusion"], "failure");
            assert_eq!(body["output"]["title"], "Plue run failed");
            assert_eq!(body["output"]["summary"], "Step `build` failed");
        }
        // In order, none twice: the third request starts at the 101st.
        assert_eq!(bodies[2]["output"]["annotations"][0]["start_line"], 101);
        // An end line before the start is GitHub's 422: the start line instead.
        assert_eq!(bodies[0]["output"]["annotations"][0]["end_line"], 1);
    }

    #[test]
    fn annotations_github_holds_are_not_sent_again() {
        let bodies = completion(&done(120), 100);
        assert_eq!(bodies.len(), 1);
        assert_eq!(
            bodies[0]["output"]["annotations"].as_array().unwrap().len(),
            20
        );
        // All sent (or more than there are): one body, the conclusion alone.
        for sent in [120, 500] {
            let bodies = completion(&done(120), sent);
            assert_eq!(bodies.len(), 1);
            assert!(bodies[0]["output"].get("annotations").is_none());
        }
        assert_eq!(completion(&done(0), 0).len(), 1);
    }

    #[test]
    fn long_texts_are_cut_to_githubs_limits() {
        let wall = wall();
        let mut done = done(1);
        done.summary = wall.check(&"é".repeat(MAX_SUMMARY_CHARS + 5)).unwrap();
        done.annotations[0].title = Some(wall.check(&"t".repeat(300)).unwrap());
        let body = &completion(&done, 0)[0];
        let summary = body["output"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), MAX_SUMMARY_CHARS);
        let title = body["output"]["annotations"][0]["title"].as_str().unwrap();
        assert_eq!(title.chars().count(), MAX_ANNOTATION_TITLE_CHARS);
    }

    #[test]
    fn a_new_check_run_names_its_run() {
        let wall = wall();
        let body = create(&NewCheckRun {
            name: wall.check("ci").unwrap(),
            head_sha: "a".repeat(40),
            progress: Progress::InProgress,
            details_url: "http://plue/runs/3".into(),
            external_id: "3".into(),
        });
        assert_eq!(
            body,
            json!({"name": "ci", "head_sha": "a".repeat(40), "status": "in_progress",
                   "details_url": "http://plue/runs/3", "external_id": "3"})
        );
    }
}
