//! A run's check runs, delivered from the commit-status outbox (`status_reporter`) for a
//! repository served through the GitHub App: its `pending` report creates the check run on
//! the commit the run ran at, its final report completes it — the conclusion, the failure
//! summary the end answer composes ([`answers::ending`]), a link to the run, and the steps'
//! annotations — and does the same on the head of every pull request the run opened. A run
//! summoned from an issue or a comment answers there ([`answers::answer`]) and gets check
//! runs only on the pull requests it opened, as its statuses did.
//!
//! Invariants: every text passed the run's wall (annotation fields are redacted: a secret
//! in a step's `::error::` line is masked, a foreign link removed); a check run's id is
//! remembered in the store once GitHub gave it, so a restart completes the same check run;
//! the final report waits, like the end answer, until the run's proposals are settled.

use plue_store::{AnnotationRow, StatusReportRow};
use plue_types::status::{CommitState, RunState};

use super::{CheckAnnotation, CheckTarget, Completion, Conclusion, Level, NewCheckRun, Progress};
use crate::answers::{self, Answering};
use crate::status::PostError;

/// The annotations of a run sent as check-run annotations, at most (20 requests).
pub const MAX_ANNOTATIONS: i64 = 1000;

/// What the check runs are written with: the answers' (their store, client, wall and the
/// token answers are posted with) and the token that may write check runs (the App's
/// `checks: write`; a summoned run's answer token need not hold it).
pub struct Checking<'a> {
    pub with: &'a Answering<'a>,
    pub token: Option<&'a str>,
    /// The engine's GitHub App's id: the check runs it made are the only ones it adopts.
    pub app_id: Option<u64>,
}

/// Delivers `report` as check runs; `summoned` is the stored context of a run an issue or
/// a comment started.
pub async fn deliver(
    checking: &Checking<'_>,
    report: &StatusReportRow,
    summoned: Option<&str>,
) -> Result<(), PostError> {
    let with = checking.with;
    if let Some(context) = summoned {
        return match answers::answer(with, report, context).await? {
            Some(ending) => on_pulls(checking, report, &ending).await,
            None => Ok(()),
        };
    }
    if report.state == CommitState::Pending {
        let started = with
            .store
            .run(report.run_id)
            .await
            .map_err(store_error)?
            .is_some_and(|run| run.started_at.is_some());
        let progress = match started {
            true => Progress::InProgress,
            false => Progress::Queued,
        };
        ensure(checking, report, &report.sha, progress).await?;
        return Ok(());
    }
    let ending = answers::ending(with, report).await?;
    complete_on(checking, report, &report.sha, &ending).await?;
    on_pulls(checking, report, &ending).await
}

/// The completed check run on the head of each pull request the run opened.
async fn on_pulls(
    checking: &Checking<'_>,
    report: &StatusReportRow,
    ending: &answers::Ending,
) -> Result<(), PostError> {
    for pull in answers::opened_pulls(&ending.proposals) {
        if let Some(head) = answers::pull_head(checking.with, report, pull).await? {
            complete_on(checking, report, &head, ending).await?;
        }
    }
    Ok(())
}

fn target<'a>(checking: &'a Checking<'_>, report: &'a StatusReportRow) -> CheckTarget<'a> {
    CheckTarget {
        api_url: checking.with.api_url,
        token: checking.token,
        repo: &report.repo_name,
        app_id: checking.app_id,
    }
}

/// The id of the run's check run on `sha`, created (with `progress`) when neither the store
/// nor GitHub knows one; remembered.
async fn ensure(
    checking: &Checking<'_>,
    report: &StatusReportRow,
    sha: &str,
    progress: Progress,
) -> Result<u64, PostError> {
    let with = checking.with;
    let known = with
        .store
        .check_run_id(report.run_id, sha)
        .await
        .map_err(store_error)?
        .and_then(|id| u64::try_from(id).ok());
    let run = NewCheckRun {
        name: with.wall.redact(&report.workflow_name).defused(),
        head_sha: sha.to_string(),
        progress,
        details_url: answers::run_link(with, report),
        external_id: report.run_id.to_string(),
    };
    let id = super::ensure(with.client, &target(checking, report), &run, known).await?;
    if known.is_none() {
        let stored = i64::try_from(id)
            .map_err(|_| PostError::Permanent(format!("check run id {id} is out of range")))?;
        with.store
            .remember_check_run(report.run_id, sha, stored)
            .await
            .map_err(store_error)?;
    }
    Ok(id)
}

/// Completes the run's check run on `sha` (created first if it has none).
async fn complete_on(
    checking: &Checking<'_>,
    report: &StatusReportRow,
    sha: &str,
    ending: &answers::Ending,
) -> Result<(), PostError> {
    let id = ensure(checking, report, sha, Progress::InProgress).await?;
    let done = completion(checking.with, report, ending).await?;
    super::complete(checking.with.client, &target(checking, report), id, &done).await
}

/// What the completed check run says: the conclusion, the report's description as the
/// title, the end answer's text as the summary, and the run's annotations.
async fn completion(
    with: &Answering<'_>,
    report: &StatusReportRow,
    ending: &answers::Ending,
) -> Result<Completion, PostError> {
    let run_status = with
        .store
        .run(report.run_id)
        .await
        .map_err(store_error)?
        .map(|run| run.status);
    let conclusion = conclusion(report.state, run_status);
    let rows = with
        .store
        .annotations_of_run(report.run_id, None, MAX_ANNOTATIONS)
        .await
        .map_err(store_error)?;
    let annotations: Vec<CheckAnnotation> = rows
        .iter()
        .filter_map(|row| annotation(with.wall, row))
        .collect();
    let without_file = rows.len() - annotations.len();
    let mut summary = ending.text.clone();
    if without_file > 0 {
        let more = format!(
            "{}\n\n{without_file} annotations name no file: they are on [the run's page]({}).",
            ending.text,
            answers::run_link(with, report)
        );
        if let Ok(checked) = with.wall.check(&more) {
            summary = checked;
        }
    }
    Ok(Completion {
        conclusion,
        title: with.wall.redact(&report.description).defused(),
        summary,
        annotations,
    })
}

/// How a run whose final report is `state` (`success`, `failure`, `error`) and whose own
/// status is `run_status` concludes: a cancelled run is `cancelled`, whatever its report
/// says; any other end but success (a failure, a file that did not evaluate) is `failure`.
pub fn conclusion(state: CommitState, run_status: Option<RunState>) -> Conclusion {
    match (state, run_status) {
        (CommitState::Success, _) => Conclusion::Success,
        (_, Some(RunState::Cancelled)) => Conclusion::Cancelled,
        _ => Conclusion::Failure,
    }
}

/// A stored annotation as a check-run annotation, each text redacted by the run's wall;
/// `None` for one naming no file (GitHub requires a path).
pub fn annotation(wall: &plue_outbound::Checker, row: &AnnotationRow) -> Option<CheckAnnotation> {
    let file = row.file.as_deref().filter(|f| !f.is_empty())?;
    let start = row.line.and_then(|l| u64::try_from(l).ok()).unwrap_or(1);
    let end = row
        .end_line
        .and_then(|l| u64::try_from(l).ok())
        .unwrap_or(start);
    Some(CheckAnnotation {
        path: wall.redact(file).defused(),
        start_line: start,
        end_line: end,
        level: match row.level.as_str() {
            "error" => Level::Failure,
            "warning" => Level::Warning,
            _ => Level::Notice,
        },
        message: wall.redact(&row.message).defused(),
        title: row.title.as_deref().map(|t| wall.redact(t).defused()),
    })
}

fn store_error(e: anyhow::Error) -> PostError {
    PostError::Retry(format!("store: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plue_outbound::{Checker, Secrets};

    const SECRET: &str = "npm_Secr3tTokenOfTheRun";

    fn row(file: Option<&str>, message: &str, title: Option<&str>) -> AnnotationRow {
        AnnotationRow {
            step_id: "build".into(),
            attempt: 1,
            seq: 1,
            level: "error".into(),
            file: file.map(String::from),
            line: Some(7),
            end_line: None,
            col: None,
            end_col: None,
            title: title.map(String::from),
            message: message.into(),
        }
    }

    // The attack: a step prints its secret (or a link to the attacker's host) in an
    // `::error::` line, split or encoded so the runner's masker missed it; the check run's
    // annotation must carry neither to GitHub.
    #[test]
    fn a_secret_in_an_annotation_never_reaches_the_check_run() {
        let wall = Checker::new(&Secrets::from_iter([SECRET]), ["plue"]);
        let (head, tail) = SECRET.split_at(6);
        for text in [
            format!("leaked {SECRET}"),
            format!("leaked {head}&#x{:x};{}", tail.as_bytes()[0], &tail[1..]),
            "see ![x](https://evil.example/p.png)".to_owned(),
        ] {
            let a = annotation(&wall, &row(Some(&text), &text, Some(&text))).unwrap();
            for field in [
                a.message.as_str(),
                a.path.as_str(),
                a.title.unwrap().as_str(),
            ] {
                assert!(
                    !field.contains(SECRET) && !field.contains("evil.example"),
                    "{text:?} became {field:?}"
                );
                assert!(wall.check(field).is_ok(), "{field:?}");
            }
        }
    }

    #[test]
    fn a_run_concludes_as_it_ended() {
        assert_eq!(
            conclusion(CommitState::Success, Some(RunState::Succeeded)),
            Conclusion::Success
        );
        assert_eq!(
            conclusion(CommitState::Failure, Some(RunState::Failed)),
            Conclusion::Failure
        );
        assert_eq!(
            conclusion(CommitState::Error, Some(RunState::Cancelled)),
            Conclusion::Cancelled
        );
        // A workflow file that did not evaluate: the run failed, its report is an error.
        assert_eq!(
            conclusion(CommitState::Error, Some(RunState::Failed)),
            Conclusion::Failure
        );
        assert_eq!(conclusion(CommitState::Failure, None), Conclusion::Failure);
    }

    #[test]
    fn an_annotation_needs_a_file_and_spans_its_lines() {
        let wall = Checker::new(&Secrets::new(), ["plue"]);
        assert_eq!(annotation(&wall, &row(None, "m", None)), None);
        assert_eq!(annotation(&wall, &row(Some(""), "m", None)), None);
        let a = annotation(&wall, &row(Some("src/a.rs"), "m", None)).unwrap();
        assert_eq!((a.start_line, a.end_line, a.level), (7, 7, Level::Failure));
        assert_eq!(a.path.as_str(), "src/a.rs");
    }
}
