//! The writer against the fake forge of both flavors: one pull request, comment or issue
//! however often it is retried — after a lost answer too — and the token only in the
//! `Authorization` header.

use testkit::forge::{FakeForge, Fault, FaultAction, Flavor};

use super::*;

const TOKEN: &str = "wr1ter-t0ken";
const REPO: &str = "acme/app";

fn forge(flavor: Flavor) -> FakeForge {
    let forge = FakeForge::start(flavor, TOKEN).unwrap();
    forge
        .create_repo_with(REPO, &[("README.md", "hi\n")])
        .unwrap();
    forge
        .commit_files(REPO, "plue/run-1-fix", "main", &[("fix.txt", "fixed\n")])
        .unwrap();
    forge
}

fn writer<'a>(client: &'a reqwest::Client, forge: Forge, api_url: &'a str) -> Writer<'a> {
    Writer {
        client,
        forge,
        api_url,
        token: Some(TOKEN),
        repo: REPO,
    }
}

/// A client for a fake forge's API, which writers borrow.
struct Api {
    client: reqwest::Client,
    url: String,
}

impl Api {
    fn of(fake: &FakeForge) -> Api {
        Api {
            client: reqwest::Client::new(),
            url: fake.api_url(),
        }
    }

    fn writer(&self, forge: Forge) -> Writer<'_> {
        writer(&self.client, forge, &self.url)
    }
}

fn both() -> [(Flavor, Forge); 2] {
    [
        (Flavor::GitHub, Forge::GitHub),
        (Flavor::Gitea, Forge::Gitea),
    ]
}

/// `text` through a wall with no secret, as the applier gives the writer its texts.
fn t(text: &str) -> Outbound {
    plue_outbound::Checker::new(&plue_outbound::Secrets::new(), ["plue"])
        .check(text)
        .unwrap()
}

static TITLE: std::sync::LazyLock<Outbound> = std::sync::LazyLock::new(|| t("Fix the bug"));
static BODY: std::sync::LazyLock<Outbound> = std::sync::LazyLock::new(|| t("Found and fixed."));
static HEAD: std::sync::LazyLock<Outbound> = std::sync::LazyLock::new(|| t("plue/run-1-fix"));
static NO_HEAD: std::sync::LazyLock<Outbound> = std::sync::LazyLock::new(|| t("plue/none"));

fn pull() -> NewPull<'static> {
    NewPull {
        title: &TITLE,
        body: &BODY,
        head: &HEAD,
        base: "main",
    }
}

#[tokio::test]
async fn a_pull_request_is_opened_once_however_often_it_is_asked_for() {
    for (flavor, kind) in both() {
        let fake = forge(flavor);
        let api = Api::of(&fake);
        let writer = api.writer(kind);
        let first = writer.open_pull_request(&pull()).await.unwrap();
        assert!(first.created);
        let again = writer.open_pull_request(&pull()).await.unwrap();
        assert_eq!(
            (again.number, again.created),
            (first.number, false),
            "{flavor:?}"
        );
        assert_eq!(again.html_url, first.html_url);
        assert_eq!(fake.pulls(REPO).len(), 1);
    }
}

#[tokio::test]
async fn a_lost_answer_is_retried_and_the_pull_request_found_not_reopened() {
    for (flavor, kind) in both() {
        let fake = forge(flavor);
        fake.fault(Fault::new("POST", "/pulls", FaultAction::DropAfterWrite));
        let api = Api::of(&fake);
        let writer = api.writer(kind);
        let lost = writer.open_pull_request(&pull()).await.unwrap_err();
        assert!(matches!(lost, PostError::Retry(_)), "{lost}");
        let found = writer.open_pull_request(&pull()).await.unwrap();
        assert!(!found.created);
        assert_eq!(fake.pulls(REPO).len(), 1, "{flavor:?}");
    }
}

#[tokio::test]
async fn a_comment_carries_its_marker_and_is_not_posted_twice() {
    for (flavor, kind) in both() {
        let fake = forge(flavor);
        let issue = fake.create_issue(REPO, "broken", "", "alice");
        // Enough comments of others that the marked one is on a later page.
        let api = Api::of(&fake);
        let writer = api.writer(kind);
        for n in 0..105 {
            writer
                .comment(issue, &t(&format!("noise {n}")), &format!("<!-- n{n} -->"))
                .await
                .unwrap();
        }
        fake.fault(Fault::new("POST", "/comments", FaultAction::DropAfterWrite));
        let marker = "<!-- plue:proposal:7 -->";
        let lost = writer
            .comment(issue, &t("Done."), marker)
            .await
            .unwrap_err();
        assert!(matches!(lost, PostError::Retry(_)), "{lost}");
        let found = writer.comment(issue, &t("Done."), marker).await.unwrap();
        assert!(!found.created, "{flavor:?}");
        let marked: Vec<_> = fake
            .comments(REPO)
            .into_iter()
            .filter(|c| c.body.contains(marker))
            .collect();
        assert_eq!(marked.len(), 1, "{flavor:?}");
        assert_eq!(
            marked[0].body,
            format!("Done.\n\n{}", writer.signed(marker))
        );
        assert_eq!(found.number, marked[0].id);
    }
}

#[tokio::test]
async fn labels_and_issues_land_once() {
    for (flavor, kind) in both() {
        let fake = forge(flavor);
        fake.create_label(REPO, "bug");
        let issue = fake.create_issue(REPO, "broken", "", "alice");
        let api = Api::of(&fake);
        let writer = api.writer(kind);
        for _ in 0..2 {
            writer.add_labels(issue, &[t("bug")]).await.unwrap();
        }
        assert_eq!(fake.labels_of(REPO, issue), ["bug"]);
        let opened = writer
            .open_issue(&t("Follow-up"), &t("Later."), "<!-- plue:proposal:9 -->")
            .await
            .unwrap();
        let again = writer
            .open_issue(&t("Follow-up"), &t("Later."), "<!-- plue:proposal:9 -->")
            .await
            .unwrap();
        assert_eq!((again.number, again.created), (opened.number, false));
        assert_eq!(fake.issues(REPO).len(), 2);
    }
}

#[tokio::test]
async fn failures_say_whether_a_retry_helps_and_never_hold_the_token() {
    let fake = forge(Flavor::GitHub);
    let client = reqwest::Client::new();
    let api = fake.api_url();
    fake.fault(Fault::new("POST", "/pulls", FaultAction::Status(502)));
    let writer = writer(&client, Forge::GitHub, &api);
    let busy = writer.open_pull_request(&pull()).await.unwrap_err();
    assert!(matches!(busy, PostError::Retry(_)), "{busy}");
    let wrong = Writer {
        token: Some("not-the-token"),
        ..writer
    };
    // The token itself refused: the caller's `ForgeAuth::renewing` renews it or makes the
    // refusal final.
    let refused = wrong.open_pull_request(&pull()).await.unwrap_err();
    assert!(matches!(refused, PostError::Refused(_)), "{refused}");
    assert!(refused.to_string().contains("401"), "{refused}");
    let no_branch = writer
        .open_pull_request(&NewPull {
            head: &NO_HEAD,
            ..pull()
        })
        .await
        .unwrap_err();
    assert!(matches!(no_branch, PostError::Permanent(_)), "{no_branch}");
    assert!(!format!("{writer:?}").contains(TOKEN));
}

#[tokio::test]
async fn the_token_travels_only_in_the_authorization_header() {
    for (flavor, kind) in both() {
        let fake = forge(flavor);
        let issue = fake.create_issue(REPO, "broken", "", "alice");
        let api = Api::of(&fake);
        let writer = api.writer(kind);
        writer.open_pull_request(&pull()).await.unwrap();
        writer.comment(issue, &t("hi"), "<!-- m -->").await.unwrap();
        writer.add_labels(issue, &[t("bug")]).await.unwrap();
        let scheme = match flavor {
            Flavor::GitHub => "Bearer",
            Flavor::Gitea => "token",
        };
        for request in fake.requests() {
            assert_eq!(
                request.header("authorization"),
                Some(format!("{scheme} {TOKEN}").as_str())
            );
            let elsewhere = format!(
                "{} {} {} {:?}",
                request.path,
                request.query,
                request.body,
                request
                    .headers
                    .iter()
                    .filter(|(name, _)| *name != "authorization")
                    .collect::<Vec<_>>()
            );
            assert!(!elsewhere.contains(TOKEN), "{elsewhere}");
        }
    }
}

// A forge that answers strangely: its refusal repeats the request it got, Authorization
// header and all. The error — kept as the proposal's reason, shown to every reader of the
// run, and logged — holds no form of the token.
#[tokio::test]
async fn a_refusal_that_repeats_the_request_never_shows_the_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = vec![0u8; 8192];
            let n = socket.read(&mut request).await.unwrap_or(0);
            let echoed = String::from_utf8_lossy(&request[..n])
                .replace('"', "'")
                .replace("\r\n", " | ");
            let body = format!("{{\"message\":\"refused: {echoed}\"}}");
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    let client = reqwest::Client::new();
    for forge in [Forge::GitHub, Forge::Gitea] {
        let refused = writer(&client, forge, &api)
            .comment(7, &t("hi"), "<!-- plue:proposal:1 -->")
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("403"), "{refused}");
        assert!(!refused.contains(TOKEN), "{refused}");
    }
}

// Anyone may write a marker's text on an issue: a stranger who read the workflow (the
// step id) and the summoning comment's id, or the agent in an earlier comment. It passed
// for the engine's answer, which was then never posted (and the proposal shown applied,
// linking the stranger's comment). Only a comment with the token's signature counts.
#[tokio::test]
async fn a_marker_copied_by_someone_else_is_not_taken_for_the_engines_answer() {
    for (flavor, kind) in both() {
        let fake = forge(flavor);
        let issue = fake.create_issue(REPO, "broken", "", "alice");
        let api = Api::of(&fake);
        let writer = api.writer(kind);
        let marker = "<!-- plue:proposal:comment-5-fix-0 -->";
        let copied = writer
            .comment(
                issue,
                &t(&format!("fake answer {marker}")),
                "<!-- other -->",
            )
            .await
            .unwrap();
        assert!(copied.created);
        let answer = writer
            .comment(issue, &t("The real answer."), marker)
            .await
            .unwrap();
        assert!(
            answer.created,
            "{flavor:?}: the copy was taken for the answer"
        );
        assert_ne!(answer.number, copied.number);
        // The engine's own answer is still found again.
        let again = writer
            .comment(issue, &t("The real answer."), marker)
            .await
            .unwrap();
        assert!(
            !again.created && again.number == answer.number,
            "{flavor:?}"
        );
        // Another token signs otherwise.
        let other = Writer {
            token: Some("other-token"),
            ..writer
        };
        assert_ne!(other.signed(marker), writer.signed(marker));
    }
}
