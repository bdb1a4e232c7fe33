//! Rules on where added code reaches: a URL or public IP address to a host that is neither
//! the repository's forge nor in `allow_links` nor a well-known documentation or code host
//! (`new-endpoint`, a warning), a known exfiltration or tunnelling service or a public
//! webhook (`exfil-endpoint`, critical), and hosts hidden from a reader — a numeric or hex
//! IP in a URL, a user part that reads as a host (`https://github.com@evil.example`),
//! punycode or lookalike characters, a URL shortener (`disguised-endpoint`, critical in
//! code).
//!
//! Invariants: links in documentation and in comments of code are not endpoints (nothing
//! contacts them), texts' links are the run's wall's, and lockfiles' resolved URLs are the
//! `manifests` rules' — none gives a `new-endpoint`, but all are read for exfiltration
//! services and disguised hosts; reserved names
//! (`localhost`, `example.com`, `*.test`, `*.invalid`, `*.local`, ...), private, loopback
//! and link-local addresses and the hosts that only name standards (`www.w3.org`, license
//! URLs) are never endpoints; an allowed host allows its subdomains.

use std::net::Ipv4Addr;
use std::sync::LazyLock;

use regex::Regex;

use super::super::fold;
use super::super::verdict::{Finding, Severity};
use super::super::Scope;
use super::{excerpt, Doc, Kind};

static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:https?|ftps?|wss?|tcp|udp|ssh|git|sftp|smb|ldaps?|rtmp|telnet|gopher)://[^\s'\x22<>()\[\]{}\\^`|,;]+")
        .expect("the URL pattern compiles")
});

static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^\w.])((?:\d{1,3}\.){3}\d{1,3})(?:[^\w.]|$)")
        .expect("the IP pattern compiles")
});

/// Services that take data from anyone or expose a local port: no agent change has a reason
/// to reach them.
const EXFIL_SERVICES: [&str; 26] = [
    "webhook.site",
    "requestbin.com",
    "requestbin.net",
    "pipedream.net",
    "m.pipedream.net",
    "ngrok.io",
    "ngrok-free.app",
    "ngrok.app",
    "burpcollaborator.net",
    "oastify.com",
    "interact.sh",
    "oast.fun",
    "oast.live",
    "oast.me",
    "oast.pro",
    "canarytokens.com",
    "pastebin.com",
    "paste.ee",
    "hastebin.com",
    "transfer.sh",
    "file.io",
    "0x0.st",
    "termbin.com",
    "serveo.net",
    "localtunnel.me",
    "trycloudflare.com",
];

/// Paths of well-known hosts that take data from anyone (webhooks, bots).
const EXFIL_PATHS: [&str; 5] = [
    "discord.com/api/webhooks",
    "discordapp.com/api/webhooks",
    "api.telegram.org/bot",
    "hooks.slack.com/services",
    "outlook.office.com/webhook",
];

/// URL shorteners: where they lead is not in the change.
const SHORTENERS: [&str; 12] = [
    "bit.ly",
    "tinyurl.com",
    "t.co",
    "goo.gl",
    "is.gd",
    "ow.ly",
    "rb.gy",
    "cutt.ly",
    "shorturl.at",
    "tiny.cc",
    "buff.ly",
    "rebrand.ly",
];

/// Hosts of documentation, registries' pages and code hosts' own pages: a URL naming one
/// is no *new* endpoint (running what it serves is the command rules' business).
const WELL_KNOWN: [&str; 22] = [
    "github.com",
    "gitlab.com",
    "codeberg.org",
    "docs.rs",
    "crates.io",
    "pypi.org",
    "npmjs.com",
    "www.npmjs.com",
    "python.org",
    "www.python.org",
    "docs.python.org",
    "rust-lang.org",
    "www.rust-lang.org",
    "doc.rust-lang.org",
    "developer.mozilla.org",
    "en.wikipedia.org",
    "stackoverflow.com",
    "go.dev",
    "pkg.go.dev",
    "nodejs.org",
    "docs.github.com",
    "semver.org",
];

/// Hosts whose URLs name a standard or a license rather than something contacted.
const REFERENCE_HOSTS: [&str; 14] = [
    "www.w3.org",
    "w3.org",
    "schemas.xmlsoap.org",
    "schemas.microsoft.com",
    "schemas.android.com",
    "json-schema.org",
    "purl.org",
    "xmlns.com",
    "www.apache.org",
    "www.gnu.org",
    "opensource.org",
    "spdx.org",
    "creativecommons.org",
    "ns.adobe.com",
];

pub(crate) fn check(doc: &Doc<'_>, scope: &Scope<'_>, found: &mut Vec<Finding>) {
    let mut reported: Vec<String> = Vec::new();
    for (index, line) in doc.lines.iter().enumerate() {
        let at = if line.number > 0 {
            line.number
        } else {
            index as u32 + 1
        };
        let folded = fold::chars(&line.text);
        for url in URL.find_iter(&line.text).chain(URL.find_iter(&folded)) {
            let url = url.as_str();
            let Some(host) = plue_outbound::host_of(url) else {
                continue;
            };
            if reported.contains(&host) {
                continue;
            }
            if let Some(finding) = judge_url(doc, scope, at, url, &host) {
                reported.push(host);
                found.push(finding);
            }
        }
        if matches!(doc.kind, Kind::Code) {
            for capture in IPV4.captures_iter(&line.text) {
                let ip = &capture[1];
                let Ok(address) = ip.parse::<Ipv4Addr>() else {
                    continue;
                };
                if !public(address)
                    || reported.iter().any(|r| r == ip)
                    || versionish(&line.text, ip)
                {
                    continue;
                }
                reported.push(ip.to_owned());
                found.push(doc.finding(
                    "new-endpoint",
                    Severity::Warning,
                    at,
                    format!("reaches the IP address {ip}: {}", excerpt(&line.text)),
                ));
            }
        }
    }
}

fn judge_url(doc: &Doc<'_>, scope: &Scope<'_>, at: u32, url: &str, host: &str) -> Option<Finding> {
    let shown = excerpt(url);
    let lower = url.to_ascii_lowercase();
    let rest = lower.split_once("://").map_or(lower.as_str(), |(_, r)| r);
    if EXFIL_SERVICES.iter().any(|s| within(host, s))
        || host.ends_with(".oast.site")
        || EXFIL_PATHS.iter().any(|p| rest.starts_with(p))
    {
        return Some(doc.finding(
            "exfil-endpoint",
            doc.weigh(Severity::Critical),
            at,
            format!(
                "reaches {host}, a service that collects data or tunnels to a machine: {shown}"
            ),
        ));
    }
    let authority = url.split_once("://")?.1.split(['/', '?', '#']).next()?;
    let numeric = host.parse::<Ipv4Addr>().is_err()
        && (host.starts_with("0x")
            || (host.len() >= 8 && host.chars().all(|c| c.is_ascii_digit())));
    let user_host = authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains('.'));
    let lookalike = host.starts_with("xn--") || host.contains(".xn--") || fold::disguised(host);
    let shortened = SHORTENERS.contains(&host);
    let impersonates = impersonated(scope, host);
    if numeric || user_host || lookalike || shortened || impersonates.is_some() {
        let why = if let Some(forge) = &impersonates {
            format!("a name that passes for {forge}'s but is not")
        } else if shortened {
            "a URL shortener, which hides where it leads".to_string()
        } else if numeric {
            "a host written as a number".to_string()
        } else if user_host {
            "a user part that reads as another host".to_string()
        } else {
            "a host spelt with punycode or lookalike characters".to_string()
        };
        return Some(doc.finding(
            "disguised-endpoint",
            doc.weigh(Severity::Critical),
            at,
            format!("reaches {host} through {why}: {shown}"),
        ));
    }
    // Documentation links and texts' links (the run's wall owns those) are no endpoints,
    // nor is a URL in a comment of code: nothing contacts it.
    let comment = comment_line(doc, at);
    if matches!(doc.kind, Kind::Docs | Kind::Lock | Kind::Text)
        || comment
        || !is_endpoint(scope, host)
    {
        return None;
    }
    Some(doc.finding(
        "new-endpoint",
        Severity::Warning,
        at,
        format!("reaches {host}, which is not the forge's nor in allow_links: {shown}"),
    ))
}

/// The forge's own sibling domains: hosts that carry its name and are its.
const FORGE_SIBLINGS: [&str; 16] = [
    "github.io",
    "github.dev",
    "github.blog",
    "githubusercontent.com",
    "githubassets.com",
    "githubstatus.com",
    "githubapp.com",
    "githubcopilot.com",
    "gitlab.io",
    "gitlab.net",
    "gitlab-static.net",
    "gitlabstatus.com",
    "gitea.io",
    "gitea.com",
    "forgejo.org",
    "codeberg.page",
];

/// The scope's public forge that `host` passes itself off as: `host` is neither allowed
/// nor one of the forges' own domains, yet the label it is registered under holds the
/// forge's name, or it starts with the forge's host (`github-login.com`,
/// `secure-github.net`, `github.com.evil.io` for `github.com`; not
/// `github-stats.vercel.app`).
fn impersonated(scope: &Scope<'_>, host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if scope.allows(&host)
        || reserved(&host)
        || WELL_KNOWN.iter().any(|w| within(&host, w))
        || FORGE_SIBLINGS.iter().any(|s| within(&host, s))
    {
        return None;
    }
    const FORGES: [&str; 6] = [
        "github",
        "gitlab",
        "bitbucket",
        "codeberg",
        "gitea",
        "forgejo",
    ];
    // The label a domain is registered under (`github-login` of `a.github-login.com`).
    let labels: Vec<&str> = host.split('.').collect();
    let registered = labels.iter().rev().nth(1).copied().unwrap_or_default();
    scope.hosts.iter().find_map(|allowed| {
        let allowed = allowed.trim_end_matches('.').to_ascii_lowercase();
        let name = allowed.split('.').rev().nth(1)?;
        if !FORGES.contains(&name) {
            // A self-hosted forge's or a company's name is too common a word to judge by.
            return None;
        }
        let passes = registered.contains(name) || host.starts_with(&format!("{allowed}."));
        passes.then_some(allowed)
    })
}

/// Whether line `at` of `doc` is a comment (`//`, `#`, `/*`, `*`, `--`, `<!--`, `;`, a
/// docstring's quotes), with nothing before the comment that runs.
fn comment_line(doc: &Doc<'_>, at: u32) -> bool {
    let Some(line) = doc
        .lines
        .iter()
        .enumerate()
        .find(|(i, l)| l.number == at || (l.number == 0 && *i as u32 + 1 == at))
        .map(|(_, l)| l.text.trim_start())
    else {
        return false;
    };
    ["//", "#", "/*", "* ", "--", "<!--", ";", "\"\"\"", "'''"]
        .iter()
        .any(|p| line.starts_with(p))
        && !line.starts_with("#!")
        && !line.starts_with("#include")
}

/// Whether `host` is an endpoint worth a look: not allowed, reserved, private or a name of
/// a standard.
pub(crate) fn is_endpoint(scope: &Scope<'_>, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if scope.allows(host)
        || REFERENCE_HOSTS.contains(&host)
        || WELL_KNOWN.contains(&host)
        || reserved(host)
    {
        return false;
    }
    if let Ok(v6) = host.parse::<std::net::Ipv6Addr>() {
        return !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast())
            && (v6.segments()[0] & 0xfe00) != 0xfc00
            && (v6.segments()[0] & 0xffc0) != 0xfe80;
    }
    match host.parse::<Ipv4Addr>() {
        Ok(address) => public(address),
        Err(_) => {
            !host.contains(':') && host.contains('.') && !host.contains('$') && !host.contains('%')
        }
    }
}

/// Reserved and placeholder names (RFC 2606, RFC 6761) and local ones.
pub(crate) fn reserved(host: &str) -> bool {
    const NAMES: [&str; 4] = ["localhost", "example.com", "example.org", "example.net"];
    const SUFFIXES: [&str; 8] = [
        ".example",
        ".test",
        ".invalid",
        ".localhost",
        ".local",
        ".internal",
        ".home.arpa",
        ".lan",
    ];
    NAMES.iter().any(|n| within(host, n))
        || SUFFIXES.iter().any(|s| host.ends_with(s))
        || host.contains('{')
        || host.contains('<')
        || host.contains('*')
}

/// `host` is `domain` or one of its subdomains.
pub(crate) fn within(host: &str, domain: &str) -> bool {
    host == domain || host.ends_with(&format!(".{domain}"))
}

fn public(address: Ipv4Addr) -> bool {
    !(address.is_private()
        || address.is_loopback()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_broadcast()
        || address.is_documentation()
        || address.is_multicast()
        || address.octets()[0] == 100 && address.octets()[1] >= 64 && address.octets()[1] < 128)
}

/// Whether `ip` on `line` reads as a version rather than an address.
fn versionish(line: &str, ip: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let Some(at) = lower.find(ip) else {
        return false;
    };
    let before = &lower[..at];
    before.ends_with('v')
        || before.ends_with("version ")
        || before.ends_with("version=")
        || before.ends_with("version = \"")
        || before.ends_with("version\": \"")
        || before.trim_end().ends_with("version")
}

/// The hosts of the URLs on `line`.
pub(crate) fn hosts_in(line: &str) -> Vec<String> {
    URL.find_iter(line)
        .filter_map(|url| plue_outbound::host_of(url.as_str()))
        .collect()
}
