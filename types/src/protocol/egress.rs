//! The cluster's egress proxy (`plue egress-proxy`) asking the engine about an attempt's
//! credential: its own part of `/internal`, authenticated by the proxy's token
//! (`Authorization: Bearer`), never a runner's.
//!
//! `POST` [`CHECK`] with an [`EgressCheck`] for each connection: `200` with the
//! [`EgressGrant`] when the credential is a grant the engine minted, its attempt is still
//! claimed or running, and the connection comes from the pod of the runner that claimed it
//! (`peer`); `403` otherwise (unknown, forged, ended, or replayed from anywhere else).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `POST`: which attempt holds a credential, and its allow-list.
pub const CHECK: &str = "/internal/egress/check";
/// The longest credential asked about (a grant of 64 long host patterns, base64-encoded).
pub const MAX_CREDENTIAL_BYTES: usize = 64 * 1024;

/// A connection's `Proxy-Authorization: Basic` credential as the client sent it (the base64
/// of `attempt:<grant>`), and the address the connection came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressCheck {
    pub credential: String,
    /// The connection's peer address as the proxy saw it (an IPv4-mapped IPv6 address
    /// given as IPv4): the engine answers only when it is the address of the pod whose
    /// runner holds the attempt.
    pub peer: IpAddr,
}

/// What a live grant allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressGrant {
    pub attempt_id: i64,
    pub hosts: Vec<String>,
}
