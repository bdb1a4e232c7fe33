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
        app_id: None,
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
        app_id: None,
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

/// A GitHub that lists, for any commit, one check run of another App (id 999) named like
/// the engine's with its external id `7`, and answers a create with check run 777; every
/// request's method and path, in order.
fn github_with_a_foreign_check_run() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(n) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
            let request: Vec<&str> = line.split_whitespace().take(2).collect();
            kept.lock().unwrap().push(request.join(" "));
            let (status, answer) = if request[0] == "GET" {
                let foreign = serde_json::json!({
                    "id": 555, "external_id": "7", "name": "ci", "status": "completed",
                    "conclusion": "success", "app": {"id": 999, "slug": "github-actions"},
                });
                (
                    "200 OK",
                    serde_json::json!({"total_count": 1, "check_runs": [foreign]}),
                )
            } else {
                (
                    "201 Created",
                    serde_json::json!({"id": 777, "external_id": "7"}),
                )
            };
            let answer = answer.to_string();
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (api, seen)
}

// The attack: a workflow of the repository (GitHub Actions, whose token may write check
// runs) makes a check run named like the engine's, with the engine's next run id as its
// external id, already completed as a success. The engine took it for its own: it never
// made its check run, its completion of the other App's check run was refused, and the
// forged success stood for the run.
#[tokio::test]
async fn another_apps_check_run_with_the_engines_external_id_is_not_adopted() {
    let (api, seen) = github_with_a_foreign_check_run();
    let target = CheckTarget {
        api_url: &api,
        token: Some(TOKEN),
        repo: "acme/app",
        app_id: Some(4242),
    };
    let sha = "a".repeat(40);
    let id = ensure(&reqwest::Client::new(), &target, &new_run(&sha), None)
        .await
        .unwrap();
    assert_eq!(id, 777, "{:?}", seen.lock().unwrap());
    assert_eq!(
        seen.lock().unwrap().last().map(String::as_str),
        Some("POST /repos/acme/app/check-runs")
    );
    // The engine's own App's check run of that external id is found again.
    let own = CheckTarget {
        app_id: Some(999),
        ..target
    };
    let found = ensure(&reqwest::Client::new(), &own, &new_run(&sha), None)
        .await
        .unwrap();
    assert_eq!(found, 555);
}
