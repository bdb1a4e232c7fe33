//! A step's network policy (`network=` on `Step.bash`, `Step.python` and `Step.llm`): the
//! plan's [`Network`] and the grammar of its host patterns.
//!
//! Invariants:
//! - [`Network`] serialises as `"none"`, `"open"` or a JSON array of host patterns, and a
//!   step without `network=` has none at all (`Step.network` is `None`, absent from the
//!   canonical JSON), so plans written before this field keep their `plan_hash`.
//! - Deserialising accepts any strings in an allow-list; [`check`] is what says whether
//!   each is a pattern (validation reports every bad one at the step's place in the file).
//! - A pattern is a lowercase DNS name, or an IPv4 address, with an optional `:port`
//!   (1–65535); `*.` only as the whole first label of a name (`*.github.com` matches
//!   `api.github.com` and `a.b.github.com`, never `github.com` itself). At most
//!   [`MAX_HOSTS`] patterns. The runner parses the list again with the same rules before
//!   it enforces it: it trusts no plan.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most patterns one step's allow-list may hold.
pub const MAX_HOSTS: usize = 64;

/// The longest DNS name (RFC 1035, without the trailing dot).
const MAX_NAME_LEN: usize = 253;

/// What a step's processes may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Loopback only: its own, empty network namespace.
    None,
    /// The host's network, as before network policies existed.
    Open,
    /// Only these hosts, through the runner's egress proxy.
    Allow(Vec<String>),
}

impl Network {
    /// The policy's name in messages and metrics: `none`, `open` or `allow`.
    pub fn name(&self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Open => "open",
            Network::Allow(_) => "allow",
        }
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Network::None => serializer.serialize_str("none"),
            Network::Open => serializer.serialize_str("open"),
            Network::Allow(hosts) => hosts.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Hosts(Vec<String>),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Word(word) => match word.as_str() {
                "none" => Ok(Network::None),
                "open" => Ok(Network::Open),
                other => Err(serde::de::Error::custom(format!(
                    "network must be 'none', 'open' or a list of hosts, got '{other}'"
                ))),
            },
            Raw::Hosts(hosts) => Ok(Network::Allow(hosts)),
        }
    }
}

/// A parsed host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// The name without a leading `*.`, or the address.
    pub host: String,
    /// `*.` was given: any name ending in `.{host}`, never `host` itself.
    pub subdomains: bool,
    /// The only port allowed; any when `None`.
    pub port: Option<u16>,
}

impl HostPattern {
    /// Whether the pattern names `host:port` (`host` lowercase, without a trailing dot): the
    /// name itself, or for `*.` a subdomain of it (never the name), and the pattern's port
    /// when it gives one — the runner's proxy matches alike.
    pub fn names(&self, host: &str, port: u16) -> bool {
        let name = if self.subdomains {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            host == self.host
        };
        name && self.port.is_none_or(|allowed| allowed == port)
    }
}

/// A pattern [`parse_pattern`] refused: the pattern and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern '{pattern}': {rule}")]
pub struct BadHostPattern {
    pub pattern: String,
    pub rule: HostRule,
}

/// The rules of a host pattern (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRule {
    #[error("the port must be a number from 1 to 65535")]
    Port,
    #[error("a host name is missing")]
    MissingName,
    #[error("a host name is at most 253 characters")]
    NameTooLong,
    #[error("'*.' goes only before a DNS name, not an address")]
    WildcardAddress,
    #[error("'*' may only be the whole first label, as in '*.github.com'")]
    WildcardPlace,
    #[error("each dot-separated label holds 1 to 63 characters")]
    LabelLength,
    #[error("a label neither starts nor ends with '-'")]
    LabelHyphen,
    /// A character outside `a-z 0-9 - .`; `lowercase` is the pattern to write instead
    /// when the character was an upper-case letter.
    #[error(
        "'{found}' is not allowed; use lowercase letters, digits, '-' and '.'{}",
        lowercase.as_ref().map(|p| format!(" (write '{p}')")).unwrap_or_default()
    )]
    Character {
        found: char,
        lowercase: Option<String>,
    },
    #[error("a name whose last label is all digits is neither a DNS name nor an IPv4 address")]
    NumericLastLabel,
}

/// Parses one pattern; the error names the pattern and the rule it breaks.
pub fn parse_pattern(pattern: &str) -> Result<HostPattern, BadHostPattern> {
    let bad = |rule: HostRule| {
        Err(BadHostPattern {
            pattern: pattern.to_owned(),
            rule,
        })
    };
    let (host, port) = match pattern.rsplit_once(':') {
        Some((host, port)) => {
            let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            match port.parse::<u16>() {
                Ok(parsed) if digits && parsed > 0 && !port.starts_with('0') => {
                    (host, Some(parsed))
                }
                _ => return bad(HostRule::Port),
            }
        }
        None => (pattern, None),
    };
    let (name, subdomains) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    if name.is_empty() {
        return bad(HostRule::MissingName);
    }
    if name.len() > MAX_NAME_LEN {
        return bad(HostRule::NameTooLong);
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        if subdomains {
            return bad(HostRule::WildcardAddress);
        }
        return Ok(HostPattern {
            host: name.to_owned(),
            subdomains,
            port,
        });
    }
    for label in name.split('.') {
        if label == "*" || label.contains('*') {
            return bad(HostRule::WildcardPlace);
        }
        if label.is_empty() || label.len() > 63 {
            return bad(HostRule::LabelLength);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad(HostRule::LabelHyphen);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return bad(HostRule::Character {
                found: c,
                lowercase: c.is_ascii_uppercase().then(|| pattern.to_ascii_lowercase()),
            });
        }
    }
    if name
        .split('.')
        .next_back()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad(HostRule::NumericLastLabel);
    }
    Ok(HostPattern {
        host: name.to_owned(),
        subdomains,
        port,
    })
}

/// Every problem of `network` (empty when it is valid), each a sentence.
pub fn check(network: &Network) -> Vec<String> {
    let Network::Allow(hosts) = network else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if hosts.len() > MAX_HOSTS {
        problems.push(format!(
            "network= lists {} hosts; at most {MAX_HOSTS} are allowed",
            hosts.len()
        ));
    }
    for host in hosts.iter().take(MAX_HOSTS) {
        if let Err(problem) = parse_pattern(host) {
            problems.push(problem.to_string());
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_a_word_or_a_list_and_back() {
        for (network, json) in [
            (Network::None, r#""none""#),
            (Network::Open, r#""open""#),
            (
                Network::Allow(vec!["pypi.org".into(), "*.github.com:443".into()]),
                r#"["pypi.org","*.github.com:443"]"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&network).unwrap(), json);
            assert_eq!(serde_json::from_str::<Network>(json).unwrap(), network);
        }
        assert!(serde_json::from_str::<Network>(r#""closed""#).is_err());
    }

    #[test]
    fn patterns_follow_the_grammar() {
        let ok = parse_pattern("*.github.com:443").unwrap();
        assert_eq!(
            ok,
            HostPattern {
                host: "github.com".into(),
                subdomains: true,
                port: Some(443)
            }
        );
        assert!(parse_pattern("pypi.org").is_ok());
        assert!(parse_pattern("localhost:8080").is_ok());
        assert!(parse_pattern("127.0.0.1:80").is_ok());
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "*github.com",
            "Example.com",
            "exa mple.com",
            "host:0",
            "host:65536",
            "host:08",
            "host:",
            "-a.com",
            "a..com",
            "*.127.0.0.1",
            "http://x.com",
            "1.2.3",
        ] {
            assert!(parse_pattern(bad).is_err(), "{bad:?} was accepted");
        }
        let upper = parse_pattern("Example.com").unwrap_err();
        assert_eq!(
            upper.rule,
            HostRule::Character {
                found: 'E',
                lowercase: Some("example.com".into())
            }
        );
        assert_eq!(
            upper.to_string(),
            "invalid host pattern 'Example.com': 'E' is not allowed; use lowercase letters, \
             digits, '-' and '.' (write 'example.com')"
        );
        assert_eq!(
            parse_pattern("host:0").unwrap_err().to_string(),
            "invalid host pattern 'host:0': the port must be a number from 1 to 65535"
        );
    }

    #[test]
    fn too_many_hosts_is_one_problem() {
        let many = Network::Allow((0..65).map(|i| format!("h{i}.example")).collect());
        assert_eq!(check(&many).len(), 1);
        assert!(check(&Network::None).is_empty());
    }
}
