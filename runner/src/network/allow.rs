//! A step's allow-list, parsed again here with the plan's grammar (`evaluator::network`):
//! the runner enforces only what it understood itself, never a plan's word for it.
//!
//! A host is allowed when a pattern names it exactly (`pypi.org`), or it is a subdomain
//! of a `*.` pattern (`*.github.com` allows `api.github.com`, never `github.com`), and the
//! pattern's port, when it gives one, is the port asked for. Names compare lowercase
//! without a trailing dot; anything that is not a DNS name or an IPv4 address (an IPv6
//! literal, a name with `_` or `%`) is never allowed.

/// The most patterns one step's allow-list may hold (the plan's limit too).
const MAX_HOSTS: usize = 64;

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    host: String,
    subdomains: bool,
    port: Option<u16>,
}

/// The hosts a step may reach through the egress proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AllowList {
    patterns: Vec<Pattern>,
}

impl AllowList {
    /// Parses `hosts`; the error names the first pattern the runner does not accept.
    pub(super) fn parse(hosts: &[String]) -> Result<AllowList, String> {
        if hosts.len() > MAX_HOSTS {
            return Err(format!(
                "the allow-list holds {} hosts; at most {MAX_HOSTS} are allowed",
                hosts.len()
            ));
        }
        let patterns = hosts
            .iter()
            .map(|host| parse(host).ok_or_else(|| format!("invalid host pattern '{host}'")))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { patterns })
    }

    /// Whether some pattern names `host` itself (any port): a loopback name the list gives
    /// means the runner host's, so the step's clients must not bypass the proxy for it.
    pub(super) fn names(&self, host: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| !pattern.subdomains && pattern.host == host)
    }

    /// Whether some pattern matches the name `host`, whatever its port (DNS questions).
    pub(super) fn allows_name(&self, host: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| self.matches(pattern, host, pattern.port.unwrap_or(0)))
    }

    fn matches(&self, pattern: &Pattern, host: &str, port: u16) -> bool {
        let Some(host) = normalise(host) else {
            return false;
        };
        let name = if pattern.subdomains {
            host.strip_suffix(pattern.host.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            host == pattern.host
        };
        name && pattern.port.is_none_or(|allowed| allowed == port)
    }

    /// Whether `host:port` may be reached (`host` as the step wrote it).
    pub(super) fn allows(&self, host: &str, port: u16) -> bool {
        self.patterns
            .iter()
            .any(|pattern| self.matches(pattern, host, port))
    }
}

/// `host` lowercase without a trailing dot, when it is a DNS name or an IPv4 address.
fn normalise(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (is_name(&host) || host.parse::<std::net::Ipv4Addr>().is_ok()).then_some(host)
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

fn parse(pattern: &str) -> Option<Pattern> {
    let (host, port) = match pattern.rsplit_once(':') {
        Some((host, port)) => {
            if port.is_empty() || port.starts_with('0') || !port.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            (host, Some(port.parse::<u16>().ok().filter(|p| *p > 0)?))
        }
        None => (pattern, None),
    };
    let (host, subdomains) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    let address = host.parse::<std::net::Ipv4Addr>().is_ok();
    if !(is_name(host) || address) || (address && subdomains) {
        return None;
    }
    Some(Pattern {
        host: host.to_owned(),
        subdomains,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::AllowList;

    fn list(hosts: &[&str]) -> AllowList {
        AllowList::parse(&hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_ports_and_subdomains_match_as_documented() {
        let allow = list(&["pypi.org", "*.github.com:443", "127.0.0.1:8080"]);
        assert!(allow.allows("pypi.org", 443));
        assert!(allow.allows("PyPI.org.", 80));
        assert!(allow.allows("api.github.com", 443));
        assert!(allow.allows("a.b.github.com", 443));
        assert!(allow.allows("127.0.0.1", 8080));
        for (host, port) in [
            ("github.com", 443),
            ("api.github.com", 80),
            ("evilgithub.com", 443),
            ("pypi.org.evil.example", 443),
            ("files.pypi.org", 443),
            ("127.0.0.1", 8081),
            ("127.0.0.2", 8080),
            ("[::1]", 8080),
            ("pypi.org%00", 443),
            ("", 443),
        ] {
            assert!(!allow.allows(host, port), "{host}:{port} was allowed");
        }
    }

    #[test]
    fn a_pattern_the_runner_does_not_understand_is_refused() {
        for bad in ["a.*.com", "*", "x:0", "x:65536", "Upper.COM", "*.1.2.3.4"] {
            assert!(
                AllowList::parse(&[bad.to_owned()]).is_err(),
                "{bad} was accepted"
            );
        }
        let many: Vec<String> = (0..65).map(|i| format!("h{i}.example")).collect();
        assert!(AllowList::parse(&many).is_err());
    }
}
