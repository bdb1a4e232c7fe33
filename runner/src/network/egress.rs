//! What the egress proxy and the DNS stub of one step share: its allow-list, its log, the
//! count of refusals, the networks no connection may reach whatever the list says (the
//! cluster's, for the shared egress proxy of `gateway.rs`) and, in a pod, the cluster's
//! proxy to connect through (`upstream.rs`); and how a refusal is noted (a step log line
//! and the count that becomes `plue_network_refused_total`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::Sender;

use super::allow::AllowList;
use plue_types::protocol::Stream;

/// What every connection's task (and the DNS stub) shares.
pub(super) struct Shared {
    pub(super) allow: AllowList,
    pub(super) log: Sender<(Stream, String)>,
    pub(super) refused: Arc<AtomicU64>,
    /// Networks never connected to, even for an address the list names (the cluster's pod
    /// and service ranges behind the shared egress proxy); empty for a runner's own proxy.
    pub(super) denied: Arc<Vec<Cidr>>,
    /// Where a runner's proxy connects through instead of by itself: the cluster's egress
    /// proxy, with the attempt's credential (a runner in a pod: `upstream.rs`).
    pub(super) upstream: Option<super::upstream::Upstream>,
}

/// An IPv4 or IPv6 network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    address: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.96.0.0/12` or `fd00::/8`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not address/prefix"))?;
        let address: std::net::IpAddr = address
            .parse()
            .map_err(|_| format!("'{text}': '{address}' is not an IP address"))?;
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= most)
            .ok_or_else(|| format!("'{text}': the prefix is not 0..={most}"))?;
        Ok(Cidr { address, prefix })
    }

    /// Whether `ip` (an IPv4-mapped or NAT64 IPv6 address as its IPv4 one: `canonical`)
    /// is in this network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let bits = |prefix: u8, width: u32| -> u128 {
            if prefix == 0 {
                0
            } else {
                (!0u128 << (width - u32::from(prefix))) & (!0u128 >> (128 - width))
            }
        };
        match (self.address, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = bits(self.prefix, 32);
                u128::from(u32::from(net)) & mask == u128::from(u32::from(ip)) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = bits(self.prefix, 128);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `ip` as the address it reaches: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) and one
/// of the NAT64 well-known prefix (`64:ff9b::a.b.c.d`, RFC 6052), which a cluster's NAT64
/// translator carries to `a.b.c.d`, as that IPv4 address; any other as it is.
pub(super) fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::IpAddr;
    match ip.to_canonical() {
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
        }
        other => other,
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// Counts a refusal and says it in the step's log.
pub(super) async fn note_refused(shared: &Shared, target: &str, why: &str) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let _ = shared
        .log
        .send((Stream::System, format!("network: refused {target} ({why})")))
        .await;
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    #[test]
    fn a_nat64_address_is_held_to_the_ipv4_address_it_reaches() {
        let link_local = Cidr::parse("169.254.0.0/16").unwrap();
        assert!(link_local.contains("64:ff9b::a9fe:a9fe".parse().unwrap()));
        assert!(link_local.contains("64:ff9b::169.254.169.254".parse().unwrap()));
        assert!(!link_local.contains("64:ff9b:0:0:1::a9fe:a9fe".parse().unwrap()));
        assert_eq!(
            super::canonical("64:ff9b::7f00:1".parse().unwrap()),
            "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_network_holds_exactly_its_addresses() {
        let services = Cidr::parse("10.96.0.0/12").unwrap();
        for inside in ["10.96.0.1", "10.111.255.255", "::ffff:10.96.0.10"] {
            assert!(services.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["10.112.0.0", "10.95.255.255", "8.8.8.8", "fd00::1"] {
            assert!(!services.contains(outside.parse().unwrap()), "{outside}");
        }
        let six = Cidr::parse("fd00::/8").unwrap();
        assert!(six.contains("fd12::1".parse().unwrap()));
        assert!(!six.contains("fe80::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/32")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129", "10.0.0.0/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
