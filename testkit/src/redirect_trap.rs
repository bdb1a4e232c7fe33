//! A forge that redirects git elsewhere, and the elsewhere that keeps what git sent it: for
//! checking that a credential given to git (`http.extraHeader`) never reaches a host the
//! forge redirected to.
//!
//! [`RedirectTrap::start`] runs two plain HTTP servers on 127.0.0.1: the forge, which
//! answers every request with a `301` to the same path under the trap's `/moved/`, and the
//! trap, another host:port, which advertises one ref (`main` at [`RedirectTrap::SHA`]) for
//! `git-upload-pack` and `git-receive-pack` as a smart HTTP server would, answers every
//! `POST` (the request a fetch or push sends its wants or pack with) with a `500`, and keeps
//! every `Authorization` header it was sent.
//!
//! With git's default `http.followRedirects=initial`, git follows the forge's redirect for
//! the first request and then sends the rest of the exchange to the trap itself, with every
//! `http.extraHeader`: [`RedirectTrap::authorizations`] shows whether it did.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The redirecting forge and the trap (see the module doc); both stop with the process.
pub struct RedirectTrap {
    forge: u16,
    trap: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RedirectTrap {
    /// The commit the trap advertises as `main`.
    pub const SHA: &'static str = "1111111111111111111111111111111111111111";

    pub fn start() -> std::io::Result<RedirectTrap> {
        let trap = TcpListener::bind("127.0.0.1:0")?;
        let forge = TcpListener::bind("127.0.0.1:0")?;
        let trap_port = trap.local_addr()?.port();
        let forge_port = forge.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for stream in trap.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let _ = answer_trap(stream, &kept);
                });
            }
        });
        std::thread::spawn(move || {
            for stream in forge.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = answer_forge(stream, trap_port);
                });
            }
        });
        Ok(RedirectTrap {
            forge: forge_port,
            trap: trap_port,
            seen,
        })
    }

    /// The forge's URL of `path` (`acme/app.git`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.forge)
    }

    /// The trap's own URL of `path` (another host than the forge: a fork elsewhere).
    pub fn trap_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.trap)
    }

    /// Every `Authorization` header the trap (the host redirected to) was sent.
    pub fn authorizations(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A request's line and headers (lower-cased names); the body is not read.
fn read_head(stream: &TcpStream) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    // Whatever body there is stays unread: the answer comes first and closes.
    Ok((line, headers))
}

fn answer_forge(mut stream: TcpStream, trap_port: u16) -> std::io::Result<()> {
    let (line, _) = read_head(&stream)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let answer = format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:{trap_port}/moved{target}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(answer.as_bytes())
}

fn pkt(text: &str) -> String {
    format!("{:04x}{text}", text.len() + 4)
}

fn answer_trap(mut stream: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let (line, headers) = read_head(&stream)?;
    for (name, value) in &headers {
        if name == "authorization" {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(value.clone());
        }
    }
    if !line.starts_with("GET ") {
        let _ = stream
            .write_all(b"HTTP/1.1 500 Trap\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        // Let git finish sending before the connection closes.
        let mut sink = [0u8; 4096];
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(200)));
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        return Ok(());
    }
    let service = if line.contains("git-receive-pack") {
        "git-receive-pack"
    } else {
        "git-upload-pack"
    };
    let sha = RedirectTrap::SHA;
    let caps = if service == "git-receive-pack" {
        "report-status delete-refs ofs-delta"
    } else {
        "multi_ack_detailed side-band-64k shallow allow-reachable-sha1-in-want allow-tip-sha1-in-want"
    };
    let body = format!(
        "{}0000{}{}0000",
        pkt(&format!("# service={service}\n")),
        pkt(&format!("{sha} refs/heads/main\0{caps}\n")),
        pkt(&format!("{sha} refs/heads/other\n")),
    );
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-{service}-advertisement\r\n\
         Cache-Control: no-cache\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes())
}
