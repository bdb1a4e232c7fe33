//! Live log followers against a real HTTP server on `127.0.0.1:0`: an anonymous client
//! opening and abandoning hundreds of followers of a queued step leaves nothing running,
//! the caps answer 429, an idle follower at its longest backoff still wakes at once when
//! lines are stored, a signed-in user follows while anonymous clients from many addresses
//! hold every place open to them, `X-Forwarded-For` counts only from a trusted proxy, and
//! an anonymous stream ends at its lifetime and resumes. The run is of a repository whose
//! reads are public, so anonymous clients may follow it at all.
//!
//! Why one file past ~600 lines: attacks on the live log followers against one real HTTP
//! server fixture.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use evaluator::plan::{Plan, Step};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use plue_core::executor::Executor;
use plue_store::events::Event;
use plue_store::{NewRun, RunRepo};
use plue_types::protocol::{LogLine, Stream as LineStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::super::followers::{parse_trusted_proxy, FollowerLimits, Followers, TrustedProxies};
use super::super::{router, ApiState};
use crate::testing::{user_with_token, TestApi, TokenScope};

struct Engine {
    addr: SocketAddr,
    executor: Arc<Executor>,
    followers: Arc<Followers>,
    run_id: i64,
    step_run_id: i64,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Engine {
    /// An engine with one run whose only step stays queued (there is no runner).
    async fn start(limits: FollowerLimits) -> Engine {
        Engine::start_trusting(limits, &[]).await
    }

    /// [`Engine::start`] believing `X-Forwarded-For` from `proxies`.
    async fn start_trusting(limits: FollowerLimits, proxies: &[&str]) -> Engine {
        let proxies = proxies
            .iter()
            .map(|p| parse_trusted_proxy(p).unwrap())
            .collect();
        let followers = Arc::new(Followers::new(limits).trusting(TrustedProxies::new(proxies)));
        let shutdown = CancellationToken::new();
        let TestApi {
            executor,
            state,
            dir,
        } = TestApi::new("admin").await;
        let store = executor.store().clone();
        let state = ApiState {
            shutdown: shutdown.clone(),
            followers: followers.clone(),
            ..state
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .unwrap()
        });
        let plan = Plan::new("follow", vec![Step::bash("build", "true")]);
        let json = serde_json::to_string(&plan).unwrap();
        let repo_id = plue_store::testing::create_repo(&store, "acme/app").await;
        store.set_public_read(repo_id, true).await.unwrap();
        let run_id = executor
            .start_run(&NewRun {
                workflow_source: "acme/app",
                workflow_path: "/w/follow.plue.py",
                repo: Some(RunRepo {
                    repo_id,
                    secrets_allowed: true,
                }),
                ..plue_store::testing::local_run(&plan, &json)
            })
            .await
            .unwrap();
        let step_run_id = store.step_run(run_id, "build").await.unwrap().unwrap().id;
        Engine {
            addr,
            executor,
            followers,
            run_id,
            step_run_id,
            shutdown,
            _dir: dir,
        }
    }

    fn logs_path(&self) -> String {
        format!("/api/runs/{}/steps/build/logs", self.run_id)
    }

    /// A request following the step's log as an event stream, as a browser would.
    fn follow(&self) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .get(format!("http://{}{}", self.addr, self.logs_path()))
            .header("accept", "text/event-stream")
    }

    /// Opens a follower over a bare connection, as a script would; returns the status and
    /// the connection (still open).
    async fn open(&self) -> (u16, TcpStream) {
        self.open_with("").await
    }

    /// [`Engine::open`] with more header lines (each ending in `\r\n`).
    async fn open_with(&self, headers: &str) -> (u16, TcpStream) {
        let mut conn = TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: plue\r\nAccept: text/event-stream\r\n{headers}\r\n",
            self.logs_path()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "connection closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, conn)
    }

    /// Stores line `seq` of the step and says so, as a runner's upload does.
    async fn store_line(&self, seq: u64, text: &str) {
        let line = LogLine {
            seq,
            stream: LineStream::Stdout,
            text: text.into(),
            ts_ms: 1,
        };
        let store = self.executor.store();
        store
            .append_logs(self.step_run_id, 1, &[line])
            .await
            .unwrap();
        self.executor.events().send(Event::Logs {
            run_id: self.run_id,
            step_run_id: self.step_run_id,
        });
    }

    /// Waits until the live followers number `count` (fails after 10 s).
    async fn live_becomes(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.followers.live() != count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} live followers, expected {count}",
                self.followers.live()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn roomy() -> FollowerLimits {
    FollowerLimits {
        per_step: 1000,
        reserved_per_step: 0,
        per_client: 1000,
        per_client_step: 1000,
        total: 1000,
        reserved_total: 0,
        ..FollowerLimits::default()
    }
}

// The attack: an anonymous client opens followers of a queued step and hangs up, again
// and again. Before, each one kept polling the store until the step ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_followers_of_a_queued_step_leave_nothing_running() {
    let engine = Engine::start(FollowerLimits {
        // A heartbeat far away: the hang-ups must be noticed without one.
        heartbeat: Duration::from_secs(3600),
        ..roomy()
    })
    .await;
    for _round in 0..2 {
        let mut conns = Vec::new();
        for _ in 0..250 {
            let (status, conn) = engine.open().await;
            assert_eq!(status, 200);
            conns.push(conn);
        }
        engine.live_becomes(250).await;
        drop(conns);
        engine.live_becomes(0).await;
    }
    // And nothing comes back later (no task outlived its stream).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.followers.live(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_past_a_cap_get_429_with_a_json_error() {
    let engine = Engine::start(FollowerLimits {
        per_step: 1000,
        per_client: 3,
        total: 1000,
        ..FollowerLimits::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let (status, conn) = engine.open().await;
        assert_eq!(status, 200);
        open.push(conn);
    }
    let refused = engine.follow().send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already follows 3"),
        "{body}"
    );
    assert_eq!(engine.followers.live(), 3);
    // A follower that leaves frees its place.
    drop(open.pop());
    engine.live_becomes(2).await;
    let (status, _again) = engine.open().await;
    assert_eq!(status, 200);
    // The JSON-lines form (no follower) is not counted.
    let lines = reqwest::get(format!("http://{}{}", engine.addr, engine.logs_path()))
        .await
        .unwrap();
    assert_eq!(lines.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_step_cap_holds_whoever_asks() {
    let engine = Engine::start(FollowerLimits {
        per_step: 2,
        ..roomy()
    })
    .await;
    let (_a, _first) = engine.open().await;
    let (_b, _second) = engine.open().await;
    let (status, _) = engine.open().await;
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_follower_wakes_when_lines_are_stored() {
    // Backoff so long that only the notification can deliver the line in time.
    let engine = Engine::start(FollowerLimits {
        min_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
        ..roomy()
    })
    .await;
    let response = engine.follow().send().await.unwrap();
    let mut events = response.bytes_stream().eventsource();
    engine.live_becomes(1).await;
    // Let the follower reach its wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    engine.store_line(1, "hello").await;
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the notification woke the follower")
        .unwrap()
        .unwrap();
    assert_eq!(event.event, "line");
    assert_eq!(event.id, "1:1");
    assert!(event.data.contains("hello"), "{}", event.data);
    drop(events);
    engine.live_becomes(0).await;
}

/// The status of a follower opened from `address` as the ingress says (`X-Forwarded-For`).
async fn open_from(engine: &Engine, address: &str) -> (u16, TcpStream) {
    engine
        .open_with(&format!("X-Forwarded-For: {address}\r\n"))
        .await
}

// The attack: anonymous clients from many addresses (through the ingress, which names each
// one) take every place of a step. A signed-in user still follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_follows_while_anonymous_clients_hold_every_open_place() {
    let engine = Engine::start_trusting(
        FollowerLimits {
            per_step: 6,
            reserved_per_step: 2,
            per_client_step: 1,
            ..roomy()
        },
        &["127.0.0.0/8"],
    )
    .await;
    let mut held = Vec::new();
    for i in 1..=4 {
        let (status, conn) = open_from(&engine, &format!("198.51.100.{i}")).await;
        assert_eq!(status, 200, "anonymous client {i}");
        held.push(conn);
    }
    for i in 5..=40 {
        let (status, _) = open_from(&engine, &format!("198.51.100.{i}")).await;
        assert_eq!(status, 429, "anonymous client {i} took a reserved place");
    }
    let refused = engine
        .follow()
        .header("x-forwarded-for", "203.0.113.1")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("sign in"),
        "{body}"
    );
    // Signed in, from an address that already holds a place: it follows.
    let (status, _mine) = engine
        .open_with("X-Forwarded-For: 198.51.100.1\r\nAuthorization: Bearer admin\r\n")
        .await;
    assert_eq!(status, 200);
    // A token that is not valid buys nothing.
    let (status, _) = engine
        .open_with("Authorization: Bearer not-a-token\r\n")
        .await;
    assert_eq!(status, 401);
    engine.live_becomes(5).await;
}

// The attack: a client names a fresh address in `X-Forwarded-For` for every stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let limits = FollowerLimits {
        per_client_step: 1,
        ..roomy()
    };
    // No trusted proxy: every stream is 127.0.0.1's, whatever the header says.
    let direct = Engine::start(limits).await;
    let (first, _held) = open_from(&direct, "198.51.100.1").await;
    assert_eq!(first, 200);
    let (second, _) = open_from(&direct, "198.51.100.2").await;
    assert_eq!(second, 429, "the header of an untrusted peer was believed");
    // Another network is trusted, not this peer: still ignored.
    let elsewhere = Engine::start_trusting(limits, &["10.0.0.0/8"]).await;
    let (first, _held) = open_from(&elsewhere, "198.51.100.1").await;
    assert_eq!(first, 200);
    let (second, _) = open_from(&elsewhere, "198.51.100.2").await;
    assert_eq!(second, 429);
    // From the trusted ingress: the address it names is the client.
    let ingress = Engine::start_trusting(limits, &["127.0.0.1"]).await;
    let (first, _held) = open_from(&ingress, "198.51.100.1").await;
    assert_eq!(first, 200);
    let (other, _held2) = open_from(&ingress, "6.6.6.6, 198.51.100.2").await;
    assert_eq!(other, 200);
    // What a client writes left of its real address is not read.
    let (again, _) = open_from(&ingress, "198.51.100.9, 198.51.100.1").await;
    assert_eq!(again, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_stream_ends_at_its_lifetime_and_resumes_after_its_last_event() {
    let engine = Engine::start(FollowerLimits {
        anonymous_lifetime: Duration::from_millis(700),
        ..roomy()
    })
    .await;
    engine.store_line(1, "line 1").await;
    let open = |last: Option<&'static str>, token: Option<&'static str>| {
        let mut request = engine.follow();
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let started = tokio::time::Instant::now();
    let mut events = open(None, None).await.unwrap().bytes_stream().eventsource();
    let signed_in = open(None, Some("admin")).await.unwrap();
    assert_eq!(signed_in.status(), 200);
    let mut signed_in = signed_in.bytes_stream().eventsource();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.id, "1:1");
    assert_eq!(signed_in.next().await.unwrap().unwrap().id, "1:1");
    // The anonymous stream ends by itself, without an `end` event (the step is queued).
    let ended = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the anonymous stream ended");
    assert!(ended.is_none(), "{ended:?}");
    assert!(started.elapsed() >= Duration::from_millis(700));
    engine.live_becomes(1).await;
    // The signed-in stream lives on, and both resume after their last event.
    engine.store_line(2, "line 2").await;
    let next = tokio::time::timeout(Duration::from_secs(5), signed_in.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.id, "1:2");
    let mut resumed = open(Some("1:1"), None)
        .await
        .unwrap()
        .bytes_stream()
        .eventsource();
    assert_eq!(resumed.next().await.unwrap().unwrap().id, "1:2");
}

#[test]
fn cursors_are_exactly_attempt_colon_seq_or_an_attempt() {
    use super::parse_cursor;
    assert_eq!(parse_cursor("1:42").unwrap(), (1, 42));
    assert_eq!(parse_cursor("0:0").unwrap(), (0, 0));
    // regression: `Last-Event-ID: 0`, digits alone (all schemathesis puts in a header), was
    // refused; an attempt alone starts at its first line.
    assert_eq!(parse_cursor("0").unwrap(), (0, 0));
    assert_eq!(parse_cursor("2").unwrap(), (2, 0));
    assert!(parse_cursor("0000000000000000002").is_err());
    assert_eq!(
        parse_cursor("999999999999999999:000000000000000001").unwrap(),
        (999999999999999999, 1)
    );
    // regression: whitespace and signs were taken, though the documented pattern is
    // `^[0-9]{1,18}:[0-9]{1,18}$`; schemathesis found it. And the pattern allowed any
    // number of digits, which past i64 were refused.
    assert!(parse_cursor("0000000000000000001:1").is_err());
    for bad in [
        "",
        ":",
        "1:",
        ":1",
        " 1:2",
        "1:2 ",
        "+1:2",
        "-1:2",
        "1:2:3",
        "1:2:",
        "a",
        "a:b",
        "1;2",
        "99999999999999999999:1",
    ] {
        assert!(parse_cursor(bad).is_err(), "{bad:?}");
    }
}

impl Engine {
    /// A new API token of user `user` (made when it does not exist yet).
    async fn mint(&self, user: &str) -> String {
        let store = self.executor.store();
        user_with_token(store, user, TokenScope::default()).await.2
    }

    /// Opens streams with `token` until one is refused; returns those opened.
    async fn open_all(&self, token: &str, most: usize) -> Vec<TcpStream> {
        let mut held = Vec::new();
        for _ in 0..most {
            let (status, conn) = self
                .open_with(&format!("Authorization: Bearer {token}\r\n"))
                .await;
            if status != 200 {
                assert_eq!(status, 429);
                break;
            }
            held.push(conn);
        }
        held
    }
}

// The attack (issue 30): mallory makes tokens of her own and opens the most streams
// each allows, to take every place of a step (or of the engine) and lock everyone else
// out. Her tokens count as her (one user id): other users and the admin still follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_one_user_count_as_one_and_lock_nobody_out() {
    let engine = Engine::start(FollowerLimits::default()).await;
    let alice = engine.mint("alice").await;
    let mut minted = Vec::new();
    for _ in 0..9 {
        minted.push(engine.mint("mallory").await);
    }
    let mut held = Vec::new();
    for token in &minted {
        held.extend(engine.open_all(token, 8).await);
    }
    assert_eq!(held.len(), 8, "mallory's tokens are one owner on the step");
    assert_eq!(engine.open_all(&alice, 8).await.len(), 8);
    assert_eq!(engine.open_all("admin", 8).await.len(), 8);
    // Engine-wide: with room for 80, mallory's tokens hold 32 of it.
    let engine = Engine::start(FollowerLimits {
        total: 80,
        reserved_total: 0,
        per_step: 1000,
        reserved_per_step: 0,
        per_client_step: 1000,
        ..FollowerLimits::default()
    })
    .await;
    let alice = engine.mint("alice").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let token = engine.mint("mallory").await;
        held.extend(engine.open_all(&token, 32).await);
    }
    assert_eq!(held.len(), 32, "mallory's tokens are one owner in all");
    assert_eq!(engine.open_all(&alice, 32).await.len(), 32);
    assert_eq!(engine.open_all("admin", 16).await.len(), 16);
}

// The attack (issue 30): an anonymous client opens a stream of a long log and never reads.
// Its socket fills, hyper stops polling the stream, and a lifetime checked inside the
// stream never came: the place was held for good. The leash frees it at the lifetime, and
// a signed-in client that stops reading at the idle-send timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_loses_its_place_at_its_lifetime() {
    let engine = Engine::start(FollowerLimits {
        anonymous_lifetime: Duration::from_millis(1500),
        idle_send_timeout: Duration::from_secs(3),
        heartbeat: Duration::from_millis(100),
        ..roomy()
    })
    .await;
    let text = "x".repeat(2000);
    let lines: Vec<LogLine> = (1..=6000)
        .map(|seq| LogLine {
            seq,
            stream: LineStream::Stdout,
            text: text.clone(),
            ts_ms: 1,
        })
        .collect();
    let store = engine.executor.store();
    for chunk in lines.chunks(500) {
        store
            .append_logs(engine.step_run_id, 1, chunk)
            .await
            .unwrap();
    }
    let (status, _anonymous) = engine.open().await;
    assert_eq!(status, 200);
    let (status, _signed_in) = engine.open_with("Authorization: Bearer admin\r\n").await;
    assert_eq!(status, 200);
    engine.live_becomes(2).await;
    // The anonymous one goes at its lifetime, the signed-in one (which never read either)
    // at the idle-send timeout; neither socket was read or closed.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(engine.followers.live(), 1, "the lifetime passed");
    engine.live_becomes(0).await;
}

// The attack (issue 29): a live stream was checked once, when it opened. Its caller went
// on reading a step's new lines after its token was revoked, its role taken away or the
// repository made private — for as long as the step ran (a signed-in stream has no
// lifetime). Each now ends within a recheck, before any later line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_once_its_caller_may_no_longer_read_the_run() {
    let engine = Engine::start(roomy()).await;
    let store = engine.executor.store().clone();
    let repo = store.repo_by_name("acme/app").await.unwrap().unwrap().id;
    let token = engine.mint("alice").await;
    let alice = store.user_by_name("alice").await.unwrap().unwrap().id;
    let token_id = store.list_tokens(Some(alice)).await.unwrap()[0].id;
    let mut seq = 0;
    for case in ["made private", "role revoked", "token revoked"] {
        let mut request = engine
            .follow()
            // Each stream starts after the lines of the cases before.
            .header("last-event-id", format!("1:{seq}"));
        if case != "made private" {
            request = request.bearer_auth(&token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{case}");
        let mut events = response.bytes_stream().eventsource();
        engine.live_becomes(1).await;
        seq += 1;
        engine.store_line(seq, &format!("{case}: before")).await;
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the line while the caller reads")
            .unwrap()
            .unwrap();
        assert!(event.data.contains("before"), "{case}: {}", event.data);
        match case {
            "made private" => {
                store.set_public_read(repo, false).await.unwrap();
                store.grant_role(repo, alice, "reader").await.unwrap();
            }
            "role revoked" => assert!(store.revoke_role(repo, alice).await.unwrap()),
            _ => assert!(store.revoke_token(token_id).await.unwrap()),
        }
        // Past the recheck, a new line comes: the stream ends instead of sending it.
        tokio::time::sleep(super::ACCESS_RECHECK + Duration::from_millis(200)).await;
        seq += 1;
        engine.store_line(seq, &format!("{case}: after")).await;
        let rest = tokio::time::timeout(Duration::from_secs(10), async {
            let mut rest = Vec::new();
            while let Some(event) = events.next().await {
                rest.push(event.unwrap().data);
            }
            rest
        })
        .await
        .unwrap_or_else(|_| panic!("{case}: the stream went on"));
        assert!(rest.is_empty(), "{case}: sent after access ended: {rest:?}");
        engine.live_becomes(0).await;
        if case == "role revoked" {
            store.grant_role(repo, alice, "reader").await.unwrap();
        }
    }
}
