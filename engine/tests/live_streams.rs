//! Live streams of a real engine (`server::start` on `127.0.0.1:0`, behind a trusted
//! "ingress" — the test itself, naming clients in `X-Forwarded-For`): when anonymous
//! clients from many addresses hold every place open to them, the dashboard's log stream
//! and its live hints answer them 429 (the pages then poll: `assets/log.js`, `live.js`),
//! while a signed-in person — the session cookie or a bearer token — still follows. The
//! run is of a public repository, which anyone may follow.

use plue_server::server::RunningEngine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support;

const ADMIN: &str = "admin-token-for-live-streams";

struct Engine {
    engine: RunningEngine,
    address: String,
    run_id: i64,
    _dir: tempfile::TempDir,
}

/// An engine trusting 127.0.0.1 as its ingress, with one run of the public repository
/// `acme/app` whose step stays queued.
async fn engine() -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::admin_config("registration-token-for-live-streams", ADMIN);
    config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let engine = support::start_in_process(dir.path(), config).await;
    let address = engine.url.trim_start_matches("http://").to_owned();
    let plan = support::plan("follow", vec![support::bash_step("build", "true")]);
    let store = engine.executor.store();
    let repo_id = support::create_repo(store).await;
    store.set_public_read(repo_id, true).await.unwrap();
    let repo = plue_store::RunRepo {
        repo_id,
        secrets_allowed: true,
    };
    let run_id =
        support::start_plan_run(&engine.executor, "/w/follow.plue.py", &plan, Some(repo)).await;
    Engine {
        engine,
        address,
        run_id,
        _dir: dir,
    }
}

impl Engine {
    /// Opens an event stream at `path` with more header lines; the status and the
    /// connection (still open).
    async fn open(&self, path: &str, headers: &str) -> (u16, TcpStream) {
        let mut conn = TcpStream::connect(&self.address).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: plue\r\nAccept: text/event-stream\r\n{headers}\r\n"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "connection closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        (head.split(' ').nth(1).unwrap().parse().unwrap(), conn)
    }

    /// Fills every place of `path` open to anonymous clients, from many addresses (at most
    /// 8 streams each); returns the streams, which hold the places while they live.
    async fn fill_anonymous_places(&self, path: &str) -> Vec<TcpStream> {
        let mut held = Vec::new();
        for client in 1..=100 {
            let from = format!("X-Forwarded-For: 198.51.100.{}\r\n", client / 8 + 1);
            let (status, conn) = self.open(path, &from).await;
            match status {
                200 => held.push(conn),
                429 => break,
                other => panic!("{path}: {other}"),
            }
        }
        held
    }
}

// The attack: anonymous clients from many addresses take every place of a step's log and
// of a run's live hints. Signed-in people still follow both; anonymous ones get 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_person_follows_in_the_dashboard_while_anonymous_clients_hold_every_open_place()
{
    let e = engine().await;
    let log = format!("/runs/{}/steps/build/stream", e.run_id);
    let live = format!("/live?run={}", e.run_id);
    let api = format!("/api/runs/{}/steps/build/logs", e.run_id);
    let session = support::dashboard_session(&e.engine.url, ADMIN).await;
    let mut open = Vec::new();
    for path in [&log, &live] {
        let held = e.fill_anonymous_places(path).await;
        assert_eq!(
            held.len(),
            48,
            "{path}: 64 places, 16 kept for signed-in people"
        );
        let (status, _) = e.open(path, "X-Forwarded-For: 203.0.113.77\r\n").await;
        assert_eq!(status, 429, "{path}: a new anonymous client");
        let cookie = format!("Cookie: {session}\r\nX-Forwarded-For: 203.0.113.77\r\n");
        let (status, signed_in) = e.open(path, &cookie).await;
        assert_eq!(status, 200, "{path}: signed in with the session cookie");
        open.extend(held);
        open.push(signed_in);
    }
    // The API's own stream of the same step: a bearer token follows too.
    let bearer = format!("Authorization: Bearer {ADMIN}\r\n");
    let (status, _api) = e.open(&api, &bearer).await;
    assert_eq!(status, 200);
    let (status, _) = e.open(&api, "").await;
    assert_eq!(status, 429);
    e.engine.shutdown().await;
}
