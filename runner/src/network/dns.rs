//! The DNS stub an allow-list step's resolver asks (`127.0.0.1:53` in its namespace; the
//! step's `/etc/resolv.conf` names it): a name the list allows is resolved by the runner,
//! in its own namespace, and answered with its A or AAAA records — except through the
//! cluster's egress proxy (a runner in a pod, which has no DNS), where it is answered with
//! none and resolved only by that proxy; every other question is answered `REFUSED`,
//! logged and counted like a refused connection. One question per
//! message over UDP; the message parsing is pure ([`answer`]).

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::egress::Shared;

/// The TTL given to answers: short, the runner resolves again each time.
const TTL_SECS: u32 = 30;
/// Query types answered with addresses.
const A: u16 = 1;
const AAAA: u16 = 28;

/// Serves `socket` until `stop`.
pub(super) async fn serve(socket: UdpSocket, shared: Arc<Shared>, stop: CancellationToken) {
    let mut buffer = [0u8; 512];
    loop {
        let (len, from) = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(_) => continue,
            },
        };
        let Some(question) = Question::parse(&buffer[..len]) else {
            continue;
        };
        let allowed = shared.allow.allows_name(&question.name);
        let addresses = if allowed && shared.upstream.is_some() {
            // Through the cluster's egress proxy (a runner in a pod) a name is resolved by
            // that proxy, never here: the pod has no DNS, and the step's proxy connects by
            // name.
            Vec::new()
        } else if allowed {
            resolve(&question.name, question.kind).await
        } else {
            super::egress::note_refused(
                &shared,
                &question.name,
                "DNS: not in this step's allow-list",
            )
            .await;
            Vec::new()
        };
        let reply = answer(&buffer[..len], &question, allowed, &addresses);
        let _ = socket.send_to(&reply, from).await;
    }
}

async fn resolve(name: &str, kind: u16) -> Vec<IpAddr> {
    let Ok(found) = tokio::net::lookup_host((name, 0)).await else {
        return Vec::new();
    };
    found
        .map(|address| address.ip())
        .filter(|ip| match kind {
            A => ip.is_ipv4(),
            AAAA => ip.is_ipv6(),
            _ => false,
        })
        .collect()
}

/// A query's one question.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Question {
    /// Lowercase, without the trailing dot.
    pub(super) name: String,
    pub(super) kind: u16,
    /// Where the question section ends in the query.
    end: usize,
}

impl Question {
    /// The question of a standard query holding exactly one, or `None`.
    pub(super) fn parse(query: &[u8]) -> Option<Question> {
        if query.len() < 12 || query[2] & 0x80 != 0 || query[2] & 0x78 != 0 {
            return None; // a response, or not a standard query
        }
        if u16::from_be_bytes([query[4], query[5]]) != 1 {
            return None;
        }
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*query.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None; // compression has no place in a question
            }
            let label = query.get(at..at + len)?;
            labels.push(std::str::from_utf8(label).ok()?.to_ascii_lowercase());
            at += len;
        }
        let kind = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
        query.get(at + 2..at + 4)?;
        Some(Question {
            name: labels.join("."),
            kind,
            end: at + 4,
        })
    }
}

/// The reply to `query`: its header and question, then `addresses` (an allowed name), or
/// `REFUSED` with none.
pub(super) fn answer(
    query: &[u8],
    question: &Question,
    allowed: bool,
    addresses: &[IpAddr],
) -> Vec<u8> {
    let mut reply = query[..question.end].to_vec();
    // QR, the opcode and RD kept, RA set; RCODE 0 or 5 (REFUSED).
    reply[2] = 0x80 | (query[2] & 0x79);
    reply[3] = 0x80 | if allowed { 0 } else { 5 };
    let count = u16::try_from(addresses.len()).unwrap_or(0);
    reply[6..8].copy_from_slice(&count.to_be_bytes());
    reply[8..12].fill(0);
    for address in addresses.iter().take(usize::from(count)) {
        reply.extend_from_slice(&[0xc0, 12]); // the question's name
        let (kind, data) = match address {
            IpAddr::V4(v4) => (A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (AAAA, v6.octets().to_vec()),
        };
        reply.extend_from_slice(&kind.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes());
        reply.extend_from_slice(&TTL_SECS.to_be_bytes());
        reply.extend_from_slice(&u16::try_from(data.len()).unwrap_or(0).to_be_bytes());
        reply.extend_from_slice(&data);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, kind: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(u8::try_from(label.len()).unwrap());
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&kind.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn answers_an_allowed_name_and_refuses_the_rest() {
        let q = query("PyPI.org", A);
        let question = Question::parse(&q).unwrap();
        assert_eq!((question.name.as_str(), question.kind), ("pypi.org", A));
        let reply = answer(&q, &question, true, &["151.101.0.223".parse().unwrap()]);
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(reply[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 1);
        assert_eq!(&reply[reply.len() - 4..], &[151, 101, 0, 223]);
        let refused = answer(&q, &question, false, &[]);
        assert_eq!(refused[3] & 0x0f, 5);
        assert_eq!(refused.len(), q.len());
    }

    #[test]
    fn a_malformed_or_multiple_question_is_ignored() {
        assert!(Question::parse(&[0; 11]).is_none());
        let mut two = query("a.example", A);
        two[5] = 2;
        assert!(Question::parse(&two).is_none());
        let mut response = query("a.example", A);
        response[2] |= 0x80;
        assert!(Question::parse(&response).is_none());
        let cut = query("a.example", A);
        assert!(Question::parse(&cut[..cut.len() - 1]).is_none());
    }
}
