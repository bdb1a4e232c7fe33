//! Time on the run pages: a run's progress (steps finished of all steps, `12/60`), shown
//! on the run page, and `/runs/{id}/timeline`, a Gantt chart of the run's steps and every
//! attempt's life — queued (claimable, waiting for a runner), claimed (taken, not yet
//! started), running — so time spent waiting for runners is as visible as time spent
//! working. `/runs/{id}/timeline/live` is the chart alone, refreshed by `assets/live.js`
//! until the run is final.
//!
//! Invariants:
//! - A run the caller may not read is the 404 of a missing run (the sign-in page for the
//!   anonymous), exactly as the run page; the page only reads.
//! - Bars are SVG rectangles whose `x`/`width` are computed here in a 0–[`SCALE`] user
//!   space (no inline style: the CSP forbids it); segments still open end at the moment
//!   the page was rendered, and the live refresh moves them on.
//! - One query for the steps and one for the attempts, whatever the run's size.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Html;
use plue_store::{StepRunRow, TimelineAttempt};
use plue_types::status::{AttemptStatus, StepStatus};
use serde::Serialize;

use super::error::WebResult;
use super::session::{readable_run, Chrome};
use super::{parse_run_id, render, Web};
use crate::api::views::RunView;

/// The width of a lane in SVG user units (the SVG stretches it to the column's width).
const SCALE: f64 = 1000.0;
/// The narrowest segment drawn, in user units, so a 5 ms claim is still a sliver.
const MIN_WIDTH: f64 = 1.5;

/// How far a run got.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct Progress {
    pub finished: usize,
    pub total: usize,
}

impl Progress {
    /// From the store's counts.
    pub(super) fn counted(finished: i64, total: i64) -> Progress {
        Progress {
            finished: usize::try_from(finished).unwrap_or(0),
            total: usize::try_from(total).unwrap_or(0),
        }
    }

    /// From the run's step runs.
    pub(super) fn of(steps: &[StepRunRow]) -> Progress {
        Progress {
            finished: steps.iter().filter(|s| s.status.is_final()).count(),
            total: steps.len(),
        }
    }
}

/// The chart.
#[derive(Debug, Serialize)]
pub(super) struct Timeline {
    pub progress: Progress,
    /// The chart's first moment (the run's creation), ms since the epoch.
    pub origin: i64,
    /// Its length in ms (to the run's end, or to now while it runs).
    pub span_ms: i64,
    /// Labels along the time axis, evenly spaced from 0 to `span_ms`.
    pub ticks: Vec<String>,
    pub rows: Vec<Row>,
    /// The longest any attempt waited for a runner (queued), ms.
    pub longest_queue_ms: Option<i64>,
}

/// One step's lane.
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub step: String,
    pub status: StepStatus,
    pub attempts: Vec<Bar>,
    /// A lane for the step's own wait without an attempt (queued with no runner yet,
    /// waiting for a decision).
    pub waiting: Option<Segment>,
    /// Its time in this run: `None` for a step carried over.
    pub duration_ms: Option<i64>,
    /// The run this step was carried over from by a re-run (it ran there, not here: no
    /// bar and no duration of this run).
    pub carried_from: Option<i64>,
}

/// One attempt: its segments, in time order.
#[derive(Debug, Serialize)]
pub(super) struct Bar {
    pub number: i64,
    pub status: AttemptStatus,
    pub runner: Option<String>,
    pub segments: Vec<Segment>,
    /// The hover text: each phase and how long it took.
    pub title: String,
}

/// A stretch of time drawn as one rectangle.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Segment {
    /// `queued`, `claimed`, `running` or `waiting`.
    pub phase: &'static str,
    pub x: f64,
    pub width: f64,
    pub ms: i64,
    /// It has not ended yet.
    pub open: bool,
}

/// The run a step of a re-run of `rerun_of` was carried over from: it started no attempt
/// here and its reason says so (what `store::reruns` records).
pub(super) fn carried_from(rerun_of: Option<i64>, step: &StepRunRow) -> Option<i64> {
    rerun_of.filter(|from| {
        step.attempts == 0
            && step.reason.as_deref() == Some(&format!("carried over from run #{from}"))
    })
}

/// Lays out the chart of a run created at `origin` (ms), ended at `ended` (`None`: still
/// going), at `now`; `rerun_of`: the run it re-ran, whose carried steps keep their old
/// times, drawn as carried over, not as bars of this run.
pub(super) fn layout(
    origin: i64,
    ended: Option<i64>,
    now: i64,
    rerun_of: Option<i64>,
    steps: &[StepRunRow],
    attempts: &[TimelineAttempt],
) -> Timeline {
    let last_seen = attempts
        .iter()
        .flat_map(|a| [a.ready_at, Some(a.claimed_at), a.started_at, a.finished_at])
        .chain(
            steps
                .iter()
                .filter(|s| carried_from(rerun_of, s).is_none())
                .flat_map(|s| [s.ready_at, s.finished_at]),
        )
        .flatten()
        .max()
        .unwrap_or(origin);
    let end = ended.unwrap_or(now).max(last_seen).max(origin + 1);
    let span = end - origin;
    let place = |phase: &'static str, from: i64, to: Option<i64>| -> Segment {
        let open = to.is_none();
        let to = to.unwrap_or(end).max(from);
        let x = (from - origin).max(0) as f64 * SCALE / span as f64;
        let width = ((to - from) as f64 * SCALE / span as f64).max(MIN_WIDTH);
        Segment {
            phase,
            x: round(x.min(SCALE - MIN_WIDTH)),
            width: round(width.min(SCALE - x.min(SCALE - MIN_WIDTH))),
            ms: to - from,
            open,
        }
    };
    let mut by_step: HashMap<&str, Vec<&TimelineAttempt>> = HashMap::new();
    for attempt in attempts {
        by_step.entry(&attempt.step_id).or_default().push(attempt);
    }
    let mut longest_queue_ms: Option<i64> = None;
    let rows = steps
        .iter()
        .map(|step| {
            let mine = by_step.remove(step.step_id.as_str()).unwrap_or_default();
            let bars: Vec<Bar> = mine
                .iter()
                .map(|a| {
                    let mut segments = Vec::new();
                    if let Some(ready) = a.ready_at.filter(|r| *r <= a.claimed_at) {
                        segments.push(place("queued", ready, Some(a.claimed_at)));
                    }
                    let claimed_until = a.started_at.or(a.finished_at);
                    segments.push(place("claimed", a.claimed_at, claimed_until));
                    if let Some(started) = a.started_at {
                        segments.push(place("running", started, a.finished_at));
                    }
                    if let Some(queued) = segments.iter().find(|s| s.phase == "queued") {
                        longest_queue_ms = longest_queue_ms.max(Some(queued.ms));
                    }
                    Bar {
                        title: title(step, a, &segments),
                        number: a.number,
                        status: a.status,
                        runner: a.runner.clone(),
                        segments,
                    }
                })
                .collect();
            let waiting = match step.status {
                StepStatus::Queued => step
                    .ready_at
                    .filter(|r| *r <= end)
                    .map(|r| place("queued", r, None)),
                StepStatus::Waiting => step.started_at.map(|s| place("waiting", s, None)),
                _ => None,
            };
            let carried = carried_from(rerun_of, step);
            Row {
                step: step.step_id.clone(),
                status: step.status,
                attempts: bars,
                waiting,
                duration_ms: if carried.is_some() {
                    None
                } else {
                    step.duration_ms()
                },
                carried_from: carried,
            }
        })
        .collect();
    Timeline {
        progress: Progress::of(steps),
        origin,
        span_ms: span,
        ticks: (0..=4)
            .map(|i| match i {
                0 => "0".to_string(),
                _ => format!("+{}", render::duration(Some(span * i / 4))),
            })
            .collect(),
        rows,
        longest_queue_ms,
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn title(step: &StepRunRow, attempt: &TimelineAttempt, segments: &[Segment]) -> String {
    let phases: Vec<String> = segments
        .iter()
        .map(|s| {
            let verb = match s.phase {
                "queued" => "queued",
                "claimed" => "starting",
                _ => "ran",
            };
            let took = render::duration(Some(s.ms));
            if s.open {
                format!("{verb} {took} so far")
            } else {
                format!("{verb} {took}")
            }
        })
        .collect();
    let runner = attempt
        .runner
        .as_deref()
        .map(|r| format!(" on {r}"))
        .unwrap_or_default();
    format!(
        "{} attempt {}{runner}: {} — {}",
        step.step_id,
        attempt.number,
        phases.join(", "),
        attempt.status
    )
}

#[derive(Serialize)]
struct TimelinePage {
    chrome: Chrome,
    run: RunView,
    timeline: Timeline,
    done: bool,
}

async fn load(web: &Web, headers: &HeaderMap, raw_id: &str) -> WebResult<TimelinePage> {
    let id = parse_run_id(raw_id)?;
    let path = format!("/runs/{id}/timeline");
    let (session, run) = readable_run(web, headers, id, &path).await?;
    let store = web.store();
    let steps = store.step_runs(id).await?;
    let attempts = store.timeline_attempts(id).await?;
    let done = run.status.is_final();
    let ended = if done {
        Some(run.finished_at.unwrap_or(run.created_at))
    } else {
        None
    };
    let timeline = layout(
        run.created_at,
        ended,
        plue_store::now_ms(),
        run.rerun_of,
        &steps,
        &attempts,
    );
    Ok(TimelinePage {
        chrome: session.chrome(&path),
        run: RunView::new(run, None),
        timeline,
        done,
    })
}

/// `GET /runs/{id}/timeline`.
pub(super) async fn page(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> WebResult<Html<String>> {
    let page = load(&web, &headers, &id).await?;
    Ok(Html(render::page("timeline.html", &page)?))
}

/// `GET /runs/{id}/timeline/live`: the chart alone.
pub(super) async fn live(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> WebResult<Html<String>> {
    let page = load(&web, &headers, &id).await?;
    Ok(Html(render::page("run_timeline.html", &page)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, status: &str, ready_at: Option<i64>) -> StepRunRow {
        StepRunRow {
            id: 1,
            run_id: 1,
            step_id: id.into(),
            position: 0,
            status: status.parse().expect("a step status"),
            attempts: 0,
            exit_code: None,
            reason: None,
            outputs: String::new(),
            ready_at,
            started_at: None,
            finished_at: None,
            usage: None,
            iteration: 1,
            review_passed_at: None,
        }
    }

    fn attempt(
        number: i64,
        times: (Option<i64>, i64, Option<i64>, Option<i64>),
        status: &str,
    ) -> TimelineAttempt {
        TimelineAttempt {
            step_id: "build".into(),
            number,
            iteration: 1,
            status: status.parse().unwrap(),
            ready_at: times.0,
            claimed_at: times.1,
            started_at: times.2,
            finished_at: times.3,
            runner: Some("r1".into()),
        }
    }

    #[test]
    fn each_attempt_shows_its_queue_its_start_and_its_run() {
        let steps = vec![
            step("build", "succeeded", Some(600)),
            step("deploy", "queued", Some(900)),
        ];
        let attempts = vec![
            attempt(1, (Some(0), 200, Some(250), Some(500)), "failed"),
            attempt(2, (Some(600), 700, Some(700), Some(1000)), "succeeded"),
        ];
        let chart = layout(0, None, 1000, None, &steps, &attempts);
        assert_eq!(chart.span_ms, 1000);
        assert_eq!(
            chart.progress,
            Progress {
                finished: 1,
                total: 2
            }
        );
        let build = &chart.rows[0];
        assert_eq!(build.attempts.len(), 2, "a bar per attempt");
        let first: Vec<(&str, f64, f64)> = build.attempts[0]
            .segments
            .iter()
            .map(|s| (s.phase, s.x, s.width))
            .collect();
        assert_eq!(
            first,
            [
                ("queued", 0.0, 200.0),
                ("claimed", 200.0, 50.0),
                ("running", 250.0, 250.0)
            ]
        );
        assert_eq!(
            build.attempts[0].title,
            "build attempt 1 on r1: queued 200 ms, starting 50 ms, ran 250 ms — failed"
        );
        // Claimed and started in the same millisecond: still drawn, as a sliver.
        assert_eq!(build.attempts[1].segments[1].width, MIN_WIDTH);
        assert_eq!(chart.longest_queue_ms, Some(200));
        let deploy = &chart.rows[1];
        let waiting = deploy.waiting.as_ref().expect("a queued step's wait");
        assert_eq!(
            (waiting.phase, waiting.x, waiting.open),
            ("queued", 900.0, true)
        );
        assert_eq!(
            chart.ticks,
            ["0", "+250 ms", "+500 ms", "+750 ms", "+1.0 s"]
        );
    }

    #[test]
    fn a_thousand_step_run_lays_out_and_renders_quickly() {
        let steps: Vec<StepRunRow> = (0..1000)
            .map(|i| step(&format!("shard-{i}"), "succeeded", Some(i)))
            .collect();
        let attempts: Vec<TimelineAttempt> = (0..1000)
            .flat_map(|i| {
                let mut first = attempt(1, (Some(i), i + 5, Some(i + 6), Some(i + 50)), "failed");
                let mut second = attempt(
                    2,
                    (Some(i + 50), i + 60, Some(i + 61), Some(i + 90)),
                    "succeeded",
                );
                first.step_id = format!("shard-{i}");
                second.step_id = format!("shard-{i}");
                [first, second]
            })
            .collect();
        let began = std::time::Instant::now();
        let chart = layout(0, Some(2000), 3000, None, &steps, &attempts);
        let run = minijinja::context! {
            id => 1, status => "succeeded", workflow => "big", created_at => 0,
            finished_at => 2000, reason => None::<String>,
        };
        let html = render::page(
            "run_timeline.html",
            &minijinja::context! { run => run, timeline => chart, done => true },
        )
        .expect("renders");
        let took = began.elapsed();
        assert_eq!(html.matches("<g class=\"attempt").count(), 2000);
        assert_eq!(html.matches("data-step=\"shard-").count(), 1000);
        // Debug builds: generous; a release build does it in a few milliseconds.
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        println!("1,000 steps: {took:?}, {} KiB", html.len() / 1024);
    }

    #[test]
    fn an_attempt_from_before_ready_at_was_kept_has_no_queue() {
        let steps = vec![step("build", "running", None)];
        let attempts = vec![attempt(1, (None, 100, Some(150), None), "running")];
        let chart = layout(0, None, 400, None, &steps, &attempts);
        let phases: Vec<(&str, bool)> = chart.rows[0].attempts[0]
            .segments
            .iter()
            .map(|s| (s.phase, s.open))
            .collect();
        assert_eq!(phases, [("claimed", false), ("running", true)]);
        assert_eq!(chart.rows[0].attempts[0].segments[1].width, 625.0);
    }
}
