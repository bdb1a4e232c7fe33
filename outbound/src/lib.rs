//! The outbound wall: the one checker every text the engine sends to a forge or shows a
//! reader passes, and [`Outbound`], the only type such text has.
//!
//! An agent's run is steered by whoever wrote the text it read, so everything it produces
//! — a pull request, a comment, a label, a refusal that quotes a file name, a transcript —
//! may carry a secret of the run or a link of the attacker's out through text the engine
//! itself writes. The wall stands where text leaves: a [`Checker`] is made from *all* the
//! run's secrets ([`Secrets`]) and the hosts its links may name, and it either passes a
//! text as it is ([`Checker::check`], for what an agent proposed: refused if anything is
//! found), or makes it safe to show ([`Checker::redact`], for what the engine quotes:
//! secrets masked, foreign links removed — a [`Redacted`] text, which reaches a forge only
//! quoted as a code span or with its mentions defused).
//!
//! Invariants:
//! - An [`Outbound`] is made only here, and always passes [`Checker::check`] of the wall
//!   that made it: the forge writer, commit statuses, commit messages and branch names
//!   take nothing else, so a new path that forgets the wall does not compile. Which
//!   secrets and hosts a [`Checker`] holds is its maker's ([`Checker::new`] takes any):
//!   the engine makes a run's from every value the run ever held, in
//!   `plue_core::outbound_wall` (and the safe outputs' rules from the same values); a
//!   `Checker` made from fewer would pass what the run's would not — kept by review and
//!   the wall's tests, not by a type. A
//!   [`Redacted`] text holds no secret and no foreign link, but may hold a mention (a
//!   reader of the dashboard is notified of nothing): it becomes [`Outbound`] only through
//!   [`Redacted::code_span`] or [`Redacted::defused`].
//! - Text bound for a forge is read as the forge renders it ([`markdown`]: a CommonMark +
//!   GFM renderer configured as GitHub's, its HTML read by a WHATWG HTML tokenizer): every
//!   URL an element of it names is parsed by a WHATWG URL parser (`url`) and passes only
//!   as `http`/`https` to an allowed host (or `mailto:` an allowed host; a relative URL
//!   stays on the forge); the text nodes where the forge links by itself (outside links
//!   and code) are also scanned for bare URLs ([`links`]), mentions and references to
//!   other repositories.
//! - Secrets are looked for in the rendered text (text nodes, alt and title texts, URLs)
//!   and in the raw text in the views of [`render`]: as it is, as a browser shows raw HTML
//!   (comments and tags dropped, character references of any length decoded, invisible
//!   characters removed), without Markdown's inline marks, percent-decoded; in a diff (which
//!   no forge renders as Markdown) only in those raw views and its added lines joined.
//! - Every spelling of [`spellings`] of every secret of the run is looked for, without
//!   ASCII case but for base64's (`GHP_…`, mixed-case hex read the same), and also in a
//!   view's letters and digits alone when the spelling has [`MIN_SKELETON`] of them (a
//!   secret cut by spaces, line breaks, a table's cells or a link's brackets).
//! - Every check is linear in the text's length (an attacker's megabyte is no stall).
//! - A redacted text is a fixed point of what a reader sees: decoding it again shows
//!   nothing new, so what was checked is what is shown.
//! - Not found: a secret cut over two texts, or encoded beyond these spellings; a step
//!   that must not leak a secret should not hold it.
//!
//! A secret's spellings as looked for, and the views of a text they are looked for in, are
//! `needles.rs`.

pub mod links;
pub mod markdown;
mod needles;
pub mod render;
pub mod spellings;
mod texts;

pub use texts::{Masked, Outbound, Redacted};

use needles::{Needle, Views};
use spellings::Spelling;

/// The secret values of a run: every value it holds or has held. Never printed.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// No secrets.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds `value` (an empty or repeated one is not kept).
    pub fn add(&mut self, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() && !self.0.contains(&value) {
            self.0.push(value);
        }
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: Into<String>> Extend<S> for Secrets {
    fn extend<T: IntoIterator<Item = S>>(&mut self, values: T) {
        for value in values {
            self.add(value);
        }
    }
}

impl<S: Into<String>> FromIterator<S> for Secrets {
    fn from_iter<T: IntoIterator<Item = S>>(values: T) -> Secrets {
        let mut secrets = Secrets::new();
        secrets.extend(values);
        secrets
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.0.len())
    }
}

/// Why a text may not leave as it is. Its `Display` names what was found, never the
/// secret; a host or a name it quotes is attacker text, so a reason made of it goes
/// through [`Checker::redact`] before it is stored or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A secret of the run, in this spelling.
    Secret(Spelling),
    /// A link to a host that is not allowed.
    Link { host: String },
    /// A mention, which would notify someone.
    Mention { name: String },
    /// A link whose scheme is not `http` or `https` (`mailto:` a foreign domain,
    /// `javascript:`, `data:`, …).
    Scheme { scheme: String },
    /// A reference to another repository (`owner/repo#1`, `owner/repo@sha`), which the
    /// forge links and records on that repository's timeline.
    Reference { target: String },
    /// A link a browser cannot read, or Markdown that cannot be read as the forge reads
    /// it ([`markdown::Reading::unreadable`]): refused rather than guessed.
    Unreadable,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Secret(spelling) => write!(f, "holds a secret of the run ({spelling})"),
            Refusal::Link { host } => write!(f, "links to {host:?}, which is not allowed"),
            Refusal::Mention { name } => write!(f, "mentions @{name}"),
            Refusal::Scheme { scheme } => {
                write!(f, "links with the scheme {scheme:?}, which is not allowed")
            }
            Refusal::Reference { target } => {
                write!(f, "refers to {target:?}, another repository")
            }
            Refusal::Unreadable => {
                f.write_str("holds a link or markup that cannot be read as the forge renders it")
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// What replaces a secret in a redacted text.
pub const MASK: &str = "***";
/// What replaces a whole text in which a secret could not be masked where it stood.
pub const WITHHELD: &str = "[withheld: it held a secret of the run]";
/// What replaces a link to a host that is not allowed in a redacted text.
pub const LINK_REMOVED: &str = "[link removed]";

/// Shortest run of letters and digits a secret's spelling is looked for as, in a text's
/// letters and digits alone ([`render::skeleton`]).
pub const MIN_SKELETON: usize = 8;

/// The wall for one run: its secrets in every spelling and the hosts its links may name.
#[derive(Clone)]
pub struct Checker {
    needles: Vec<Needle>,
    hosts: Vec<String>,
    /// The run's repository (`owner/name`, lowercase), which its texts may refer to.
    repository: Option<String>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("spellings", &self.needles.len())
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl Checker {
    /// A checker for `secrets` whose texts may link to `hosts` (lowercase host names, the
    /// forge's and the engine's own among them), and nowhere else.
    pub fn new<H: AsRef<str>>(secrets: &Secrets, hosts: impl IntoIterator<Item = H>) -> Checker {
        let mut needles: Vec<Needle> = secrets
            .0
            .iter()
            .flat_map(|s| spellings::of(s))
            .map(|(spelling, text)| Needle::new(spelling, text))
            .collect();
        // Longest first: a masked longer secret leaves no part of itself for a shorter one.
        needles.sort_by_key(|n| std::cmp::Reverse(n.text.len()));
        needles.dedup_by(|a, b| a.text == b.text && a.folded == b.folded);
        let hosts = hosts
            .into_iter()
            .map(|h| h.as_ref().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Checker {
            needles,
            hosts,
            repository: None,
        }
    }

    /// This checker, letting texts refer to `repository` (`owner/name`): the run's own.
    pub fn with_repository(mut self, repository: &str) -> Checker {
        self.repository = Some(repository.to_ascii_lowercase());
        self
    }

    /// A checker with more hosts its texts may link to.
    pub fn allowing<H: AsRef<str>>(&self, hosts: impl IntoIterator<Item = H>) -> Checker {
        let mut more = self.clone();
        more.hosts.extend(
            hosts
                .into_iter()
                .map(|h| h.as_ref().trim_end_matches('.').to_ascii_lowercase()),
        );
        more
    }

    /// Whether `host` may be linked to.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// How a secret of the run is spelt in `text`, in any view a reader may see: the raw
    /// text's and the rendered text's.
    pub fn secret_in(&self, text: &str) -> Option<Spelling> {
        if self.needles.is_empty() {
            return None;
        }
        self.secret_in_views(&Views::rendered(text, &markdown::read(text)))
    }

    /// How a secret of the run is spelt in `text`, which no forge renders (a diff, a file
    /// name): in its raw views alone.
    fn secret_in_raw(&self, text: &str) -> Option<Spelling> {
        if self.needles.is_empty() {
            return None;
        }
        self.secret_in_views(&Views::of(text))
    }

    fn secret_in_views(&self, views: &Views) -> Option<Spelling> {
        // Spelt whole first, so what is found is named by its spelling.
        self.needles
            .iter()
            .find(|needle| views.hold(needle))
            .or_else(|| self.needles.iter().find(|needle| views.hold_cut(needle)))
            .map(|needle| needle.spelling)
    }

    /// How a secret of the run is spelt in the diff `diff`: anywhere in it, with git's
    /// C-quoting read (a path's octal escapes), or in its added lines joined (a secret cut
    /// over two lines).
    pub fn secret_in_diff(&self, diff: &str) -> Option<Spelling> {
        if let Some(found) = self.secret_in_raw(diff) {
            return Some(found);
        }
        // Its quoted paths as git reads them (a file named `"b/\147\150\160…"` is named
        // `ghp…` once applied).
        if diff.contains('\\') {
            if let Some(found) = self.secret_in_raw(&render::c_unquoted(diff)) {
                return Some(found);
            }
        }
        let added: String = diff
            .split('\n')
            .filter(|line| !line.starts_with("+++"))
            .filter_map(|line| line.strip_prefix('+'))
            .collect();
        self.secret_in_raw(&added)
    }

    /// Why the link `url` (an attribute's value, as a browser reads it) may not be in a
    /// text bound for a forge, if it may not: parsed by a WHATWG URL parser, relative to a
    /// page of the forge; only `http`/`https` to an allowed host (or staying on the forge)
    /// and `mailto:` an allowed host pass.
    pub fn link_refusal(&self, url: &str) -> Option<Refusal> {
        // A page of the forge no text can name (`.invalid` is reserved): a relative link
        // resolved against it and still on it stays on the forge.
        const PAGE: &str = "https://forge.invalid/owner/name/issues/1";
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(url::ParseError::RelativeUrlWithoutBase) => {
                match url::Url::parse(PAGE).and_then(|page| page.join(url)) {
                    Ok(joined) if joined.host_str() == Some("forge.invalid") => return None,
                    Ok(joined) => joined,
                    Err(_) => return Some(Refusal::Unreadable),
                }
            }
            Err(_) => return Some(Refusal::Unreadable),
        };
        match parsed.scheme() {
            "http" | "https" => {}
            "mailto" => {
                let domain = parsed.path().rsplit('@').next().unwrap_or("");
                let domain = domain.split(['?', '#']).next().unwrap_or("");
                let domain = render::percent_decoded(domain);
                return (!self.allows_host(&domain)).then(|| Refusal::Link {
                    host: domain.to_ascii_lowercase(),
                });
            }
            scheme => {
                return Some(Refusal::Scheme {
                    scheme: scheme.to_owned(),
                })
            }
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Some(Refusal::Unreadable),
        };
        (!self.allows_host(&host)).then_some(Refusal::Link { host })
    }

    /// The first link, mention or reference to another repository that `text`, read as
    /// the forge renders it, holds and may not: every URL of its rendered HTML
    /// ([`Checker::link_refusal`]), and in the text nodes where the forge links by itself,
    /// a bare URL to a host that is not allowed (scanned as well as rendered: other forges'
    /// linkers read a little wider than GitHub's), a mention or a reference.
    pub fn markup_refusal(&self, text: &str) -> Option<Refusal> {
        self.markup_refusal_of(text, &markdown::read(text))
    }

    /// [`Checker::markup_refusal`] of `text`, whose reading is `reading`.
    fn markup_refusal_of(&self, text: &str, reading: &markdown::Reading) -> Option<Refusal> {
        if reading.unreadable {
            return Some(Refusal::Unreadable);
        }
        if let Some(refusal) = reading.urls.iter().find_map(|u| self.link_refusal(u)) {
            return Some(refusal);
        }
        let allowed = |host: &str| self.hosts.iter().any(|h| h == host);
        // A URL a reader is shown, linked or not (in code, cut by a tag), and the raw
        // text's own (a reference definition nothing uses is not rendered): scanned, since
        // a reader may copy it and other forges' linkers read a little wider.
        let shown = [
            render::strip_invisible(&reading.visible),
            reading.visible.clone(),
            render::decoded(text),
        ];
        if let Some(link) = shown
            .iter()
            .find_map(|view| links::foreign_links(view, &allowed).into_iter().next())
        {
            return Some(Refusal::Link { host: link.host });
        }
        // Where the forge links mentions and references: its text nodes outside links and
        // code, with and without the characters no reader sees (`a\u{200b}@name`
        // mentions).
        let linkable = [
            reading.linkable.clone(),
            render::strip_invisible(&reading.linkable),
            render::strip_invisible(&reading.linkable_joined),
        ];
        // An e-mail address the forge would link as `mailto:` (a renderer may miss one the
        // forge's finds), to a domain that is not allowed.
        if let Some(host) = linkable
            .iter()
            .flat_map(|view| links::email_domains(view))
            .find(|domain| !self.allows_host(domain))
        {
            return Some(Refusal::Link { host });
        }
        if let Some((_, name)) = linkable.iter().find_map(|view| links::mention(view)) {
            return Some(Refusal::Mention { name });
        }
        linkable
            .iter()
            .flat_map(|view| links::references(view))
            .find(|target| self.repository.as_deref() != Some(target.repository.as_str()))
            .map(|target| Refusal::Reference {
                target: target.text,
            })
    }

    /// `text` as it is, if, read as the forge renders it, it holds no secret of the run in
    /// any spelling, links to no host but the allowed ones, mentions nobody and refers to
    /// no other repository: for text an agent proposed.
    pub fn check(&self, text: &str) -> Result<Outbound, Refusal> {
        // Rendered once for both questions.
        let reading = markdown::read(text);
        if !self.needles.is_empty() {
            if let Some(spelling) = self.secret_in_views(&Views::rendered(text, &reading)) {
                return Err(Refusal::Secret(spelling));
            }
        }
        if let Some(refusal) = self.markup_refusal_of(text, &reading) {
            return Err(refusal);
        }
        Ok(Outbound(text.to_owned()))
    }

    /// `diff` as it is, if it holds no secret of the run (links inside a file's content
    /// are the file's, not rendered by the forge as the proposal's text).
    pub fn check_diff(&self, diff: &str) -> Result<Outbound, Refusal> {
        match self.secret_in_diff(diff) {
            Some(spelling) => Err(Refusal::Secret(spelling)),
            None => Ok(Outbound(diff.to_owned())),
        }
    }

    /// Whether the wall knows any secret (a run without secrets masks nothing).
    pub fn has_secrets(&self) -> bool {
        !self.needles.is_empty()
    }

    /// `text` with every spelling of every secret replaced where it stands, or `None` when
    /// it holds none: for a log line, shown as it is (escaped, never rendered), so only the
    /// spellings a reader sees literally matter — and cheap enough for every line.
    pub fn mask_spellings(&self, text: &str) -> Option<String> {
        let masked = self.mask_all(text);
        (masked != text).then_some(masked)
    }

    /// `text` with every spelling of every secret masked where it stands (without ASCII case
    /// but base64's), longest first.
    fn mask_all(&self, text: &str) -> String {
        let mut masked = text.to_owned();
        let mut lower = text.to_ascii_lowercase();
        for needle in &self.needles {
            let holds = match needle.folded {
                true => lower.contains(needle.text.as_str()),
                false => masked.contains(needle.text.as_str()),
            };
            if holds {
                masked = needle.mask_in(&masked);
                lower = masked.to_ascii_lowercase();
            }
        }
        masked
    }

    /// `text` with every spelling of every secret of the run masked where it stands and
    /// nothing else changed, for text shown as it is and never rendered (a transcript's
    /// messages on the dashboard and in the API); [`WITHHELD`] when a secret shows only
    /// once decoded.
    pub fn mask(&self, text: &str) -> Masked {
        let masked = self.mask_all(text);
        match self.secret_in(&masked) {
            Some(_) => Masked(WITHHELD.to_owned()),
            None => Masked(masked),
        }
    }

    /// `text` made safe to show or send, for text the engine quotes but did not write (a
    /// refusal's reason, a step's failure, a refused proposal kept to be shown): as a
    /// reader would see it, every spelling of every secret masked ([`WITHHELD`] in place
    /// of the whole text when one shows only once decoded), links to other hosts removed
    /// ([`LINK_REMOVED`]). Plain text, mentions kept: quoted on a forge through
    /// [`Redacted::code_span`].
    pub fn redact(&self, text: &str) -> Redacted {
        // What a reader sees, decoded until decoding shows nothing new (`&amp;#64;` is a
        // literal `&#64;` once, and would be an `@` if shown through Markdown again).
        let mut shown = text.to_owned();
        for _ in 0..8 {
            let next = render::visible(&shown);
            if next == shown {
                break;
            }
            shown = next;
        }
        shown = self.mask_all(&shown);
        if self.secret_in(&shown).is_some() || render::visible(&shown) != shown {
            return Redacted(WITHHELD.to_owned());
        }
        let allowed = |host: &str| self.hosts.iter().any(|h| h == host);
        for _ in 0..64 {
            let found = links::foreign_links(&shown, &allowed);
            if found.is_empty() {
                break;
            }
            let mut out = String::with_capacity(shown.len());
            let mut from = 0;
            for link in &found {
                out.push_str(&shown[from..link.span.start]);
                out.push_str(LINK_REMOVED);
                from = link.span.end;
            }
            out.push_str(&shown[from..]);
            shown = out;
        }
        // Shown as plain text (and on a forge only as a code span): no secret, and no
        // link a reader could follow out.
        let foreign = !links::foreign_links(&shown, &allowed).is_empty();
        match self.secret_in(&shown).is_some() || foreign {
            false => Redacted(shown),
            true => Redacted(WITHHELD.to_owned()),
        }
    }
}

/// The lowercase host of an `scheme://[user@]host[:port]/...` URL.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod tests;
