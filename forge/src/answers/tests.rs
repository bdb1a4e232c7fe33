//! Tests of `answers`: what the end answer links and says, and that no answer quotes a
//! secret, a link or a mention however spelt.

use super::*;

fn report(state: CommitState) -> StatusReportRow {
    StatusReportRow {
        id: 1,
        run_id: 7,
        state,
        description: "d".into(),
        attempts: 1,
        next_attempt_at: 0,
        sha: "0".repeat(40),
        workflow_name: "fix".into(),
        workflow_path: ".plue/fix.plue.py".into(),
        repo_name: "acme/app".into(),
        forge: "github".into(),
        clone_url: "x".into(),
        api_url: None,
        api_token: None,
        forge_repo_id: None,
    }
}

fn proposal(
    kind: &str,
    state: ProposalState,
    url: Option<&str>,
    reason: Option<&str>,
) -> ProposalRow {
    ProposalRow {
        id: 1,
        run_id: 7,
        step_run_id: 1,
        attempt_id: 1,
        position: 0,
        kind: kind.into(),
        payload: "{}".into(),
        state,
        reason: reason.map(String::from),
        decided_by: None,
        decided_at: None,
        applied_url: url.map(String::from),
        applied_at: None,
        created_at: 0,
        threat: None,
    }
}

const SECRET: &str = "npm_Secr3tTokenOfAnotherStep";

fn wall() -> Checker {
    Checker::new(&plue_outbound::Secrets::from_iter([SECRET]), ["f", "plue"])
}

fn failed_step(step_id: &str, reason: &str) -> StepRunRow {
    StepRunRow {
        id: 1,
        run_id: 7,
        step_id: step_id.into(),
        position: 0,
        status: StepStatus::Failed,
        attempts: 1,
        exit_code: None,
        reason: Some(reason.into()),
        outputs: "{}".into(),
        ready_at: None,
        started_at: None,
        finished_at: None,
        usage: None,
        iteration: 1,
        review_passed_at: None,
    }
}

#[test]
fn the_end_answer_links_what_was_opened_and_says_why_not() {
    let wall = wall();
    let text = end_text(
        &wall,
        &report(CommitState::Success),
        None,
        &[],
        &[
            proposal(
                "pull_request",
                ProposalState::Applied,
                Some("https://f/acme/app/pull/3"),
                None,
            ),
            proposal(
                "comment",
                ProposalState::Refused,
                None,
                Some("mentions @admin"),
            ),
        ],
        "http://plue/runs/7",
    );
    assert!(
        text.starts_with("Plue run [#7](http://plue/runs/7) of `fix` finished."),
        "{text}"
    );
    assert!(text.contains("Opened the pull request https://f/acme/app/pull/3"));
    assert!(text.contains("`mentions \u{ff20}admin`"), "{text}");
    assert!(wall.check(&text).is_ok(), "{text}");
    let failed = end_text(
        &wall,
        &report(CommitState::Failure),
        Some("failed steps: spend"),
        &[failed_step(
            "spend",
            "the run's budget_usd of $0.50 was reached\nping @everyone",
        )],
        &[],
        "http://plue/runs/7",
    );
    assert!(failed.contains("failed."));
    assert!(failed.contains("Why: `failed steps: spend`"), "{failed}");
    assert!(
        failed.contains(
            "- Step `spend` failed: `the run's budget_usd of $0.50 was reached ping \u{ff20}everyone`"
        ),
        "{failed}"
    );
    assert!(wall.check(&failed).is_ok(), "{failed}");
}

#[test]
fn the_end_answer_says_the_threat_check() {
    let wall = wall();
    let mut waiting = proposal("pull_request", ProposalState::Waiting, None, None);
    waiting.threat = Some(
        r#"{"verdict":"needs_approval","findings":[{"rule":"ci-config","severity":"warning","reason":"x"},{"rule":"new-dependency","severity":"warning","reason":"y"}]}"#.into(),
    );
    let mut passed = proposal(
        "comment",
        ProposalState::Applied,
        Some("https://f/acme/app/issues/1#c"),
        None,
    );
    passed.threat = Some(r#"{"verdict":"pass","findings":[]}"#.into());
    let text = end_text(
        &wall,
        &report(CommitState::Success),
        None,
        &[],
        &[waiting, passed],
        "http://plue/runs/7",
    );
    assert!(
        text.contains("(threat check: needs a writer's approval: `ci-config, new-dependency`)"),
        "{text}"
    );
    assert!(text.contains("(threat check: pass)"), "{text}");
    assert!(wall.check(&text).is_ok(), "{text}");
}

// The attack (issue 49): a file named after another step's secret, outside
// `paths_allow`, put the secret in clear in the refusal, and so in the engine's own
// comment; a reason carrying an image of the attacker's host or an encoded mention
// rode along.
#[test]
fn an_answer_quotes_no_secret_link_or_mention_however_spelt() {
    let wall = wall();
    let (head, tail) = SECRET.split_at(5);
    let reasons = [
        format!(
            "safe output refused: the diff changes \"{SECRET}\", which paths_allow does not allow"
        ),
        format!("the diff changes \"{head}<!-- -->{tail}\""),
        format!(
            "see {head}&#x00000000{:x};{}",
            tail.as_bytes()[0],
            &tail[1..]
        ),
        "![x](https://evil.example/leak.png) and <img src=//evil.example/p>".to_owned(),
        "&#x0000000040;admin and &commat;team".to_owned(),
        "`` ` ``![y](https://evil.example/z.png)".to_owned(),
    ];
    for reason in reasons {
        let text = end_text(
            &wall,
            &report(CommitState::Failure),
            Some(&reason),
            &[failed_step("fix", &reason)],
            &[proposal(
                "pull_request",
                ProposalState::Refused,
                None,
                Some(&reason),
            )],
            "http://plue/runs/7",
        );
        assert!(wall.check(&text).is_ok(), "{reason}: {text}");
        assert!(
            !text.contains(SECRET) && !text.contains("evil.example"),
            "{text}"
        );
    }
}

#[test]
fn markers_differ_per_run_and_moment() {
    assert_eq!(marker(3, "started"), "<!-- plue:run:3:started -->");
    assert_ne!(marker(3, "started"), marker(3, "ended"));
    assert_ne!(marker(3, "ended"), marker(30, "ended"));
}
