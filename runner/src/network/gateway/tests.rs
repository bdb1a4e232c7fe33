//! The shared egress proxy played against: without a credential, with a wrong one, an ended
//! attempt's, another attempt's, a live one replayed from another pod's address, and a
//! listed target on a kept-alive connection followed by another host's request; then a
//! runner's proxy going out through it as on a pod. Each time an upstream listener counts
//! what reached it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{serve, Grant, Grants};
use crate::network::egress::Cidr;

/// The address of the pod every credential of the fake engine was issued to: the tests'
/// own connections come from it.
const POD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Credentials the fake engine knows (any other is unknown, forged or ended), each bound
/// to [`POD`] as the engine binds a credential to its runner's pod.
#[derive(Default)]
struct Engine {
    live: BTreeMap<String, Grant>,
}

impl Grants for Engine {
    async fn check(&self, credential: &str, peer: IpAddr) -> Result<Option<Grant>, String> {
        Ok(self.live.get(credential).filter(|_| peer == POD).cloned())
    }
}

/// An HTTP server answering `ok` to each connection's first request; counts connections.
async fn upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = Arc::new(AtomicUsize::new(0));
    let count = reached.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                // Then closes, as `Connection: close` asks.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (port, reached)
}

/// A running proxy over `engine`, refusing `denied`; its port.
async fn proxy(engine: Arc<Engine>, denied: Vec<Cidr>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener, engine, denied, CancellationToken::new()));
    port
}

/// Sends `request` to the proxy and reads everything it answers until it closes.
async fn exchange(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the proxy kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

fn grant(attempt_id: i64, hosts: &[String]) -> Grant {
    Grant {
        attempt_id,
        hosts: hosts.to_vec(),
    }
}

#[tokio::test]
async fn only_the_attempts_own_credential_leads_out_and_only_to_its_list() {
    let (listed, listed_reached) = upstream().await;
    let (other, other_reached) = upstream().await;
    let mine = vec![format!("127.0.0.1:{listed}")];
    let engine = Arc::new(Engine {
        live: BTreeMap::from([
            ("bWluZQ==".to_owned(), grant(1, &mine)),
            ("b3RoZXI=".to_owned(), grant(2, &["pypi.org".to_owned()])),
        ]),
    });
    let port = proxy(engine.clone(), Vec::new()).await;
    let get = |target: u16, auth: &str| {
        format!("GET http://127.0.0.1:{target}/ HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n{auth}\r\n")
    };

    // No credential, a wrong one, an ended attempt's (the engine no longer knows it), another
    // scheme, two of them: 407, and nothing reaches the listed server.
    for auth in [
        String::new(),
        "Proxy-Authorization: Basic d3Jvbmc=\r\n".to_owned(),
        "Proxy-Authorization: Basic ZW5kZWQ=\r\n".to_owned(),
        "Proxy-Authorization: Bearer bWluZQ==\r\n".to_owned(),
        "Proxy-Authorization: Basic bWluZQ==\r\nProxy-Authorization: Basic bWluZQ==\r\n".to_owned(),
    ] {
        let answer = exchange(port, &get(listed, &auth)).await;
        assert!(answer.starts_with("HTTP/1.1 407"), "{auth:?}: {answer}");
        let connect = format!("CONNECT 127.0.0.1:{listed} HTTP/1.1\r\n{auth}\r\n");
        let answer = exchange(port, &connect).await;
        assert!(answer.starts_with("HTTP/1.1 407"), "{auth:?}: {answer}");
    }
    assert_eq!(listed_reached.load(Ordering::SeqCst), 0);

    // Another attempt's credential is held to that attempt's list, and its refusal is its.
    let answer = exchange(
        port,
        &get(listed, "Proxy-Authorization: Basic b3RoZXI=\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(listed_reached.load(Ordering::SeqCst), 0);

    // The attempt's own credential reaches its listed host, not another one.
    let answer = exchange(
        port,
        &get(listed, "Proxy-Authorization: Basic bWluZQ==\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    assert_eq!(listed_reached.load(Ordering::SeqCst), 1);
    let answer = exchange(
        port,
        &get(other, "Proxy-Authorization: basic  bWluZQ== \r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // A kept-alive connection: the listed request is served, the next one (another host)
    // is never sent anywhere.
    let two = format!(
        "{}{}",
        get(
            listed,
            "Proxy-Authorization: Basic bWluZQ==\r\nConnection: keep-alive\r\n"
        ),
        get(other, "Proxy-Authorization: Basic bWluZQ==\r\n"),
    );
    let answer = exchange(port, &two).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    assert_eq!(listed_reached.load(Ordering::SeqCst), 2);
    assert_eq!(other_reached.load(Ordering::SeqCst), 0);

    // A tunnel to the other host is refused too.
    let connect = format!(
        "CONNECT 127.0.0.1:{other} HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"
    );
    let answer = exchange(port, &connect).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(other_reached.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_clusters_networks_are_out_of_reach_even_for_a_listed_address() {
    let (listed, reached) = upstream().await;
    let engine = Arc::new(Engine {
        live: BTreeMap::from([(
            "bWluZQ==".to_owned(),
            grant(1, &[format!("127.0.0.1:{listed}")]),
        )]),
    });
    let port = proxy(engine, vec![Cidr::parse("127.0.0.0/8").unwrap()]).await;
    let answer = exchange(
        port,
        &format!(
            "GET http://127.0.0.1:{listed}/ HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(reached.load(Ordering::SeqCst), 0);

    // The metadata address, listed, is out of reach with no network denied at all.
    let metadata = Arc::new(Engine {
        live: BTreeMap::from([(
            "bWV0YQ==".to_owned(),
            grant(3, &["169.254.169.254".to_owned()]),
        )]),
    });
    let port = proxy(metadata, Vec::new()).await;
    let answer = exchange(
        port,
        "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\
         Proxy-Authorization: Basic bWV0YQ==\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

/// An engine that cannot be asked: nothing leaves.
struct Unreachable;

impl Grants for Unreachable {
    async fn check(&self, _: &str, _: IpAddr) -> Result<Option<Grant>, String> {
        Err("connection refused".into())
    }
}

#[tokio::test]
async fn an_engine_that_does_not_answer_lets_nothing_out() {
    let (listed, reached) = upstream().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(
        listener,
        Arc::new(Unreachable),
        Vec::new(),
        CancellationToken::new(),
    ));
    let answer = exchange(
        port,
        &format!(
            "GET http://127.0.0.1:{listed}/ HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

/// As on a pod: the runner serves the step its own proxy, which goes out through the
/// cluster's with the attempt's credential. The listed host is reached; an unlisted one is
/// refused by the runner's proxy (a line of the step's log, counted) and never asked of the
/// cluster's; a credential the engine no longer knows (the attempt ended) lets nothing out.
#[tokio::test]
async fn a_runners_proxy_goes_out_through_the_clusters_with_the_attempts_credential() {
    use plue_types::protocol::NetworkPolicy;
    let (listed, listed_reached) = upstream().await;
    let (other, other_reached) = upstream().await;
    let hosts = vec![format!("127.0.0.1:{listed}")];
    // base64("attempt:g.1"): what the runner's proxy sends for the grant "g.1".
    let engine = Arc::new(Engine {
        live: BTreeMap::from([("YXR0ZW1wdDpnLjE=".to_owned(), grant(7, &hosts))]),
    });
    let cluster = proxy(engine, Vec::new()).await;
    let (log, mut lines) = tokio::sync::mpsc::channel(16);
    let policy = NetworkPolicy::Allow(hosts.clone());
    let gateway = format!("http://127.0.0.1:{cluster}");
    let step = crate::network::through_gateway(&gateway, &policy, Some("g.1"), &log)
        .await
        .unwrap();
    let mut env = std::collections::BTreeMap::new();
    step.set_env(&mut env);
    let port: u16 = env["HTTP_PROXY"]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let get = |target: u16| {
        format!("GET http://127.0.0.1:{target}/ HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\n")
    };
    let answer = exchange(port, &get(listed)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    let answer = exchange(port, &get(other)).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let tunnel = format!("CONNECT 127.0.0.1:{listed} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: 127.0.0.1:{listed}\r\n\r\n");
    let answer = exchange(port, &tunnel).await;
    assert!(answer.contains("HTTP/1.1 200 OK"), "{answer}");
    assert_eq!(listed_reached.load(Ordering::SeqCst), 2);
    assert_eq!(other_reached.load(Ordering::SeqCst), 0);
    assert_eq!(step.finish().await, 1);
    let (_, line) = lines.recv().await.unwrap();
    assert_eq!(
        line,
        format!("network: refused 127.0.0.1:{other} (not in this step's allow-list)")
    );

    // The step going around its runner's proxy, straight to the cluster's: no credential.
    let answer = exchange(cluster, &get(listed)).await;
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");

    // A grant the engine does not answer for (its attempt ended): nothing leaves.
    let ended = crate::network::through_gateway(&gateway, &policy, Some("g.2"), &log)
        .await
        .unwrap();
    let mut env = std::collections::BTreeMap::new();
    ended.set_env(&mut env);
    let port: u16 = env["HTTP_PROXY"]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let answer = exchange(port, &get(listed)).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert_eq!(listed_reached.load(Ordering::SeqCst), 2);
    ended.finish().await;
}

/// `0.0.0.0` (and `::`) is the proxy's own host: Linux connects to loopback for it. A list
/// naming `0.0.0.0:<port>` must not reach what listens on the proxy's loopback when the
/// operator denies loopback (the chart's `--deny 127.0.0.0/8`), nor with nothing denied.
#[tokio::test]
async fn the_unspecified_address_never_leads_to_the_proxys_own_loopback() {
    let (listed, reached) = upstream().await;
    let engine = Arc::new(Engine {
        live: BTreeMap::from([(
            "bWluZQ==".to_owned(),
            grant(1, &[format!("0.0.0.0:{listed}")]),
        )]),
    });
    for denied in [vec![Cidr::parse("127.0.0.0/8").unwrap()], Vec::new()] {
        let port = proxy(engine.clone(), denied).await;
        for request in [
            format!(
                "GET http://0.0.0.0:{listed}/ HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"
            ),
            format!("CONNECT 0.0.0.0:{listed} HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"),
        ] {
            let answer = exchange(port, &request).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{request:?}: {answer}");
        }
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

/// The cloud metadata services that are not at a link-local address — AWS's IPv6 one
/// (`fd00:ec2::254`, a name's AAAA can lead there) and Alibaba Cloud's (`100.100.100.200`)
/// — are out of reach like `169.254.169.254`, even listed, whatever the operator denies.
#[tokio::test]
async fn the_metadata_services_off_link_local_are_out_of_reach() {
    let never = super::never(Vec::new());
    for address in ["fd00:ec2::254", "100.100.100.200", "::ffff:100.100.100.200"] {
        let ip = address.parse().unwrap();
        assert!(never.iter().any(|net| net.contains(ip)), "{address}");
    }
    let engine = Arc::new(Engine {
        live: BTreeMap::from([(
            "bWV0YQ==".to_owned(),
            grant(3, &["100.100.100.200".to_owned()]),
        )]),
    });
    let port = proxy(engine, Vec::new()).await;
    let answer = exchange(
        port,
        "GET http://100.100.100.200/latest/meta-data/ HTTP/1.1\r\n\
         Proxy-Authorization: Basic bWV0YQ==\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

/// One pod holding every slot of the cluster's proxy (connections that never send a head,
/// no credential needed) does not keep another pod's step from going out: a client
/// address holds at most a runner's proxy's share; past it, connections are closed.
#[tokio::test]
async fn one_client_cannot_hold_every_slot() {
    let (listed, reached) = upstream().await;
    let engine = Arc::new(Engine {
        live: BTreeMap::from([(
            "bWluZQ==".to_owned(),
            grant(1, &[format!("127.0.0.1:{listed}")]),
        )]),
    });
    let port = proxy(engine, Vec::new()).await;
    // Another pod: 127.0.0.2, as many idle connections as the proxy serves at once.
    let mut idle = Vec::new();
    for _ in 0..super::MAX_CONNECTIONS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        idle.push(socket.connect(([127, 0, 0, 1], port).into()).await.unwrap());
    }
    let answer = exchange(
        port,
        &format!(
            "GET http://127.0.0.1:{listed}/ HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    drop(idle);
}

/// attack: a step (or anyone) that got hold of an attempt's credential uses it from another
/// pod. The proxy asks the engine with the connection's own address, and the engine answers
/// only for the pod the credential's runner runs in: `407`, nothing reached; the same
/// credential from its pod still goes out.
#[tokio::test]
async fn a_credential_replayed_from_another_pod_lets_nothing_out() {
    let (listed, reached) = upstream().await;
    let engine = Arc::new(Engine {
        live: BTreeMap::from([(
            "bWluZQ==".to_owned(),
            grant(1, &[format!("127.0.0.1:{listed}")]),
        )]),
    });
    let port = proxy(engine, Vec::new()).await;
    for request in [
        format!(
            "GET http://127.0.0.1:{listed}/ HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"
        ),
        format!(
            "CONNECT 127.0.0.1:{listed} HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"
        ),
    ] {
        // Another pod: 127.0.0.2.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 407"), "{request:?}: {answer}");
        assert!(answer.contains("not this pod's"), "{answer}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0);
    let answer = exchange(
        port,
        &format!(
            "GET http://127.0.0.1:{listed}/ HTTP/1.1\r\nProxy-Authorization: Basic bWluZQ==\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}
