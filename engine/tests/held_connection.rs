//! The held runner connection (`/internal/session`) against the real `plue` binary, played
//! by an attacker holding a valid registration token: the upgrade needs a live runner's
//! own token and the engine's protocol version; on the connection every call is the same
//! call as over HTTP, authenticated as the runner that opened it (another runner's
//! attempt is 403, a deregistered runner's calls are 410); a frame outside the protocol
//! closes the connection. And a run's steps ride held connections of the local pool.

use std::time::Duration;

use plue_types::protocol::session::{Answer, Call, PROTOCOL, SESSION_PATH};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{client, serial, start_run, wait_succeeded, Sandbox};

const RUNNER_TOKEN: &str = "held-connection-test-token";

/// Registers a runner with the shared token: its session token.
async fn register(engine: &str, name: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("{engine}/internal/runners/register"))
        .bearer_auth(RUNNER_TOKEN)
        .json(&json!({"name": name, "labels": {}, "ephemeral": true}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("a registration's answer");
    answer["session_token"]
        .as_str()
        .expect("a token")
        .to_string()
}

/// A connection opened by a raw upgrade request: the status line and the stream.
async fn upgrade(engine: &str, token: Option<&str>, protocol: &str) -> (String, TcpStream) {
    let address = engine.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {SESSION_PATH} HTTP/1.1\r\nHost: {address}\r\n{authorization}\
         Connection: upgrade\r\nUpgrade: {protocol}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The head of the answer, byte by byte (nothing past it is read).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read_exact(&mut byte).await.is_err() {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    (head, stream)
}

async fn send(stream: &mut TcpStream, frame: &[u8]) {
    stream
        .write_all(&(frame.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(frame).await.unwrap();
}

/// The next answer, or `None` when the engine closed the connection.
async fn next_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut length = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut length))
        .await
        .expect("an answer or the end in time")
        .ok()?;
    let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut frame).await.ok()?;
    Some(Answer::decode(&frame).expect("an answer frame"))
}

async fn call(stream: &mut TcpStream, id: u64, path: &str, body: Value) -> (u16, Value) {
    let frame = Call {
        id,
        path: path.into(),
        body: serde_json::to_vec(&body).unwrap(),
    }
    .encode();
    send(stream, &frame).await;
    let answer = next_answer(stream).await.expect("an answer");
    assert_eq!(answer.id, id);
    (
        answer.status,
        serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_is_the_runners_own_and_carries_nothing_more_than_http() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("held");
    let engine = sandbox
        .serve_local("0", &["--runner-token", RUNNER_TOKEN])
        .await
        .url;

    // No token, a made-up one, another version: refused before anything is upgraded.
    let (head, _) = upgrade(&engine, None, PROTOCOL).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = upgrade(&engine, Some("not-a-token"), PROTOCOL).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let token = register(&engine, "mallory").await;
    let (head, mut old) = upgrade(&engine, Some(&token), "plue-runner/0").await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("the refusal's length");
    let mut refusal = vec![0u8; length];
    old.read_exact(&mut refusal).await.unwrap();
    let refusal = String::from_utf8_lossy(&refusal);
    assert!(
        refusal.contains(PROTOCOL),
        "the refusal names the version: {refusal}"
    );

    // The runner's own connection: a call is the HTTP call, as this runner.
    let (head, mut held) = upgrade(&engine, Some(&token), PROTOCOL).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (status, body) = call(&mut held, 1, "/internal/runners/heartbeat", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &mut held,
        2,
        "/internal/runners/poll",
        json!({"wait_ms": 0}),
    )
    .await;
    assert_eq!((status, &body["assignment"]), (200, &Value::Null), "{body}");
    // Bodies are checked as over HTTP.
    let (status, body) = call(&mut held, 3, "/internal/runners/poll", json!({"wait": 1})).await;
    assert_eq!(status, 422, "{body}");

    // Another runner's attempt: start a run whose step a second runner claims.
    let victim = register(&engine, "victim").await;
    let http = client();
    let file = sandbox.write(
        "ws/held.plue.py",
        "def workflow():\n    return Plan(name='held', triggers=[Trigger.manual()], steps=[\
         Step.bash('one', 'echo one')])\n",
    );
    let run_id = start_run(&http, &engine, &file, &sandbox.path("ws")).await;
    let polled: Value = reqwest::Client::new()
        .post(format!("{engine}/internal/runners/poll"))
        .bearer_auth(&victim)
        .json(&json!({"wait_ms": 10_000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let attempt = polled["assignment"]["attempt_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("the victim claimed the step: {polled}"));
    for (id, what) in [
        (4, "complete"),
        (5, "logs"),
        (6, "accepted"),
        (7, "started"),
    ] {
        let body = match what {
            "complete" => {
                json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "lines": 0})
            }
            "logs" => json!({"lines": []}),
            _ => json!({}),
        };
        let path = format!("/internal/attempts/{attempt}/{what}");
        let (status, body) = call(&mut held, id, &path, body).await;
        assert_eq!(status, 403, "{what}: {body}");
    }
    // Another route family, or the session route itself, through a frame: the engine closes.
    let (head, mut probe) = upgrade(&engine, Some(&token), PROTOCOL).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let outside = Call {
        id: 8,
        path: "/api/runs".into(),
        body: Vec::new(),
    };
    send(&mut probe, &outside.encode()).await;
    assert_eq!(next_answer(&mut probe).await, None, "closed, unanswered");
    // A frame longer than the protocol allows: closed too.
    let (_, mut flood) = upgrade(&engine, Some(&token), PROTOCOL).await;
    flood
        .write_all(&(64u32 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    assert_eq!(next_answer(&mut flood).await, None, "closed, unanswered");

    // The attacker's runner leaves: its connection's next call is 410, as over HTTP.
    let (status, _) = call(&mut held, 9, "/internal/runners/deregister", json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = call(&mut held, 10, "/internal/runners/heartbeat", json!({})).await;
    assert_eq!(status, 410, "{body}");

    // The victim's step completes as its own.
    let done = reqwest::Client::new()
        .post(format!("{engine}/internal/attempts/{attempt}/complete"))
        .bearer_auth(&victim)
        .json(&json!({"outcome": "succeeded", "exit_code": 0, "reason": null, "lines": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    wait_succeeded(&http, &engine, run_id, Duration::from_secs(30)).await;
}

/// The local pool's runners hold their connections: a chain of steps runs over them, and
/// again when a runner is told to keep to HTTP (`plue run --runners-without-held-connection`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_runs_steps_over_held_connections_and_without_them() {
    let sandbox = Sandbox::new("held-run");
    let file = sandbox.write(
        "chain.plue.py",
        "def workflow():\n    return Plan(name='chain', triggers=[Trigger.manual()], steps=[\n\
         Step.bash('a', 'echo a-ran'),\n\
         Step.bash('b', 'echo b-ran', depends_on=['a']),\n\
         Step.python('c', 'print(\"c-ran\")', depends_on=['b']),\n])\n",
    );
    let file = file.to_str().unwrap();
    for extra in [None, Some("--runners-without-held-connection")] {
        let mut args = vec!["run", file];
        args.extend(extra);
        let printed = sandbox.plue_ok(&args);
        for line in ["a-ran", "b-ran", "c-ran"] {
            assert!(printed.contains(line), "{extra:?}: {printed}");
        }
    }
}
