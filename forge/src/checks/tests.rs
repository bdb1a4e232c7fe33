//! The check-run client against testkit's fake GitHub: idempotent creates and completions.

use plue_outbound::{Checker, Secrets};
use testkit::forge::{FakeForge, Fault, FaultAction, Flavor};

use super::*;

const TOKEN: &str = "ghs_installationT0ken";

fn wall() -> Checker {
    Checker::new(&Secrets::new(), ["plue"])
}

fn new_run(sha: &str) -> NewCheckRun {
    NewCheckRun {
        name: wall().check("ci").unwrap(),
        head_sha: sha.into(),
        progress: Progress::Queued,
        details_url: "http://plue/runs/7".into(),
        external_id: "7".into(),
    }
}

fn done(annotations: usize) -> Completion {
    let wall = wall();
    Completion {
        conclusion: Conclusion::Failure,
        title: wall.check("Plue run failed").unwrap(),
        summary: wall.check("Step `build` failed: `exit 1`").unwrap(),
        annotations: (0..annotations)
            .map(|i| CheckAnnotation {
                path: wall.check("src/lib.rs").unwrap(),
                start_line: i as u64 + 1,
                end_line: i as u64 + 1,
                level: Level::Warning,
                message: wall.check(&format!("w{i}")).unwrap(),
                title: None,
            })
            .collect(),
    }
}

// A create whose answer was lost, and a completion retried after its answers were lost,
// write nothing twice: the check run is found by its external id, and the annotations
// GitHub holds are not sent again.
#[tokio::test]
async fn lost_answers_create_and_annotate_nothing_twice() {
    let forge = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    let sha = forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    let api = forge.api_url();
    let target = CheckTarget {
        api_url: &api,
        token: Some(TOKEN),
        repo: "acme/app",
    };
    let client = reqwest::Client::new();
    forge.fault(Fault::new(
        "POST",
        "/repos/acme/app/check-runs",
        FaultAction::DropAfterWrite,
    ));
    let lost = ensure(&client, &target, &new_run(&sha), None).await;
    assert!(matches!(lost, Err(PostError::Retry(_))), "{lost:?}");
    let id = ensure(&client, &target, &new_run(&sha), None)
        .await
        .unwrap();
    assert_eq!(forge.check_runs("acme/app").len(), 1);
    assert_eq!(forge.check_runs("acme/app")[0].id, id);
    // The first PATCH's answer is lost: its 50 annotations were stored all the same.
    forge.fault(Fault::new(
        "PATCH",
        &format!("/check-runs/{id}"),
        FaultAction::DropAfterWrite,
    ));
    let failed = complete(&client, &target, id, &done(120)).await;
    assert!(matches!(failed, Err(PostError::Retry(_))), "{failed:?}");
    assert_eq!(forge.check_runs("acme/app")[0].annotations.len(), 50);
    complete(&client, &target, id, &done(120)).await.unwrap();
    complete(&client, &target, id, &done(120)).await.unwrap();
    let run = &forge.check_runs("acme/app")[0];
    assert_eq!(run.annotations.len(), 120);
    let lines: Vec<u64> = run.annotations.iter().map(|a| a.start_line).collect();
    assert_eq!(lines, (1..=120).collect::<Vec<u64>>());
    assert_eq!(
        (run.status.as_str(), run.conclusion.as_deref()),
        ("completed", Some("failure"))
    );
    assert_eq!(
        run.summary.as_deref(),
        Some("Step `build` failed: `exit 1`")
    );
    assert_eq!(run.details_url.as_deref(), Some("http://plue/runs/7"));
    // No request carried more than 50 annotations, and the token only in its header.
    for request in forge.requests() {
        let sent = request.body["output"]["annotations"]
            .as_array()
            .map_or(0, Vec::len);
        assert!(sent <= 50, "{} {}: {sent}", request.method, request.path);
        assert!(!request.path.contains(TOKEN) && !request.query.contains(TOKEN));
    }
}

#[tokio::test]
async fn a_refusal_says_why_without_the_token() {
    let forge = FakeForge::start(Flavor::GitHub, TOKEN).unwrap();
    forge.create_repo_with("acme/app", &[("a", "a")]).unwrap();
    let api = forge.api_url();
    let target = CheckTarget {
        api_url: &api,
        token: Some(TOKEN),
        repo: "acme/app",
    };
    // An unknown commit: GitHub's 422, not worth a retry.
    let refused = ensure(
        &reqwest::Client::new(),
        &target,
        &new_run(&"f".repeat(40)),
        None,
    )
    .await
    .unwrap_err();
    match refused {
        PostError::Permanent(why) => {
            assert!(why.contains("422"), "{why}");
            assert!(!why.contains(TOKEN), "{why}");
        }
        other => panic!("{other:?}"),
    }
}
