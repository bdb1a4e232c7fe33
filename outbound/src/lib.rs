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
//!   take nothing else, so a new path that forgets the wall does not compile. A
//!   [`Redacted`] text holds no secret and no foreign link, but may hold a mention (a
//!   reader of the dashboard is notified of nothing): it becomes [`Outbound`] only through
//!   [`Redacted::code_span`] or [`Redacted::defused`].
//! - Text is read as the forge will render it ([`render`]): secrets are looked for in the
//!   text as it is, as a reader sees it (HTML comments and tags dropped, character
//!   references of any length decoded, invisible characters removed), without Markdown's
//!   inline marks, percent-decoded, and in a diff's added lines joined; links and mentions
//!   with the markup kept (attributes hold links) and dropped.
//! - Every spelling of [`spellings`] of every secret of the run is looked for.
//! - A redacted text is a fixed point of what a reader sees: decoding it again shows
//!   nothing new, so what was checked is what is shown.
//! - Not found: a secret cut over two texts, or encoded beyond these spellings; a step
//!   that must not leak a secret should not hold it.

pub mod links;
pub mod render;
pub mod spellings;

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
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Secret(spelling) => write!(f, "holds a secret of the run ({spelling})"),
            Refusal::Link { host } => write!(f, "links to {host:?}, which is not allowed"),
            Refusal::Mention { name } => write!(f, "mentions @{name}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Text that passed the wall: the only kind the engine sends to a forge or keeps for a
/// reader where the compiler can see it. Made only by a [`Checker`].
#[derive(Clone, PartialEq, Eq)]
pub struct Outbound(String);

impl Outbound {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

/// Text made safe to show a reader by [`Checker::redact`] or [`Checker::mask`]: no secret
/// of the run in any spelling; from `redact`, no link to a host that is not allowed either.
/// Mentions are kept (a reader of the dashboard or the API is notified of nothing); to
/// reach a forge it goes through [`Redacted::code_span`] or [`Redacted::defused`].
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// This text as a Markdown code span on one line, where a forge renders nothing (no
    /// link, mention, tag or reference), its mentions defused all the same (so the whole
    /// text it is quoted in still passes [`Checker::check`]): how the engine quotes text it
    /// did not write.
    pub fn code_span(&self) -> Outbound {
        Outbound(code_span(self.defused().as_str()))
    }

    /// This text with every mention defused (`@name` as `＠name`), for a forge's plain
    /// text (a commit status's description).
    pub fn defused(&self) -> Outbound {
        let mut text = self.0.clone();
        for (span, _) in links::mentions(&text).iter().rev() {
            text.replace_range(span.start..span.start + 1, "\u{ff20}");
        }
        Outbound(text)
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

/// `text` as a Markdown code span on one line: a fence one backtick longer than its
/// longest run of backticks, a space inside it where the text starts or ends with one.
fn code_span(text: &str) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.trim().is_empty() {
        return "` `".to_owned();
    }
    let longest = one_line
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    // CommonMark strips one space on each side when both are there.
    let pad = if one_line.starts_with('`') || one_line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{one_line}{pad}{fence}")
}

/// What replaces a secret in a redacted text.
pub const MASK: &str = "***";
/// What replaces a whole text in which a secret could not be masked where it stood.
pub const WITHHELD: &str = "[withheld: it held a secret of the run]";
/// What replaces a link to a host that is not allowed in a redacted text.
pub const LINK_REMOVED: &str = "[link removed]";

/// The wall for one run: its secrets in every spelling and the hosts its links may name.
#[derive(Clone)]
pub struct Checker {
    needles: Vec<(Spelling, String)>,
    hosts: Vec<String>,
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
        let mut needles: Vec<(Spelling, String)> =
            secrets.0.iter().flat_map(|s| spellings::of(s)).collect();
        // Longest first: a masked longer secret leaves no part of itself for a shorter one.
        needles.sort_by_key(|(_, n)| std::cmp::Reverse(n.len()));
        needles.dedup_by(|a, b| a.1 == b.1);
        let hosts = hosts
            .into_iter()
            .map(|h| h.as_ref().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Checker { needles, hosts }
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

    /// How a secret of the run is spelt in `text`, in any view a reader may see.
    pub fn secret_in(&self, text: &str) -> Option<Spelling> {
        if self.needles.is_empty() {
            return None;
        }
        let shown = render::visible(text);
        let views = [
            text.to_owned(),
            render::decoded(text),
            render::without_inline_marks(&shown),
            render::percent_decoded(&shown),
            shown,
        ];
        self.needles
            .iter()
            .find(|(_, needle)| views.iter().any(|view| view.contains(needle.as_str())))
            .map(|(spelling, _)| *spelling)
    }

    /// How a secret of the run is spelt in the diff `diff`: anywhere in it, or in its added
    /// lines joined (a secret cut over two lines).
    pub fn secret_in_diff(&self, diff: &str) -> Option<Spelling> {
        if let Some(found) = self.secret_in(diff) {
            return Some(found);
        }
        let added: String = diff
            .split('\n')
            .filter(|line| !line.starts_with("+++"))
            .filter_map(|line| line.strip_prefix('+'))
            .collect();
        self.secret_in(&added)
    }

    /// The first link of `text` to a host that is not allowed, markup kept or dropped.
    pub fn foreign_link(&self, text: &str) -> Option<String> {
        let allowed = |host: &str| self.hosts.iter().any(|h| h == host);
        [render::decoded(text), render::visible(text)]
            .iter()
            .find_map(|view| links::foreign_links(view, &allowed).into_iter().next())
            .map(|link| link.host)
    }

    /// The first mention in `text`, markup kept or dropped.
    pub fn mention(&self, text: &str) -> Option<String> {
        [render::decoded(text), render::visible(text)]
            .iter()
            .find_map(|view| links::mention(view))
            .map(|(_, name)| name)
    }

    /// `text` as it is, if it holds no secret of the run in any spelling, links to no host
    /// but the allowed ones and mentions nobody: for text an agent proposed.
    pub fn check(&self, text: &str) -> Result<Outbound, Refusal> {
        if let Some(spelling) = self.secret_in(text) {
            return Err(Refusal::Secret(spelling));
        }
        if let Some(host) = self.foreign_link(text) {
            return Err(Refusal::Link { host });
        }
        if let Some(name) = self.mention(text) {
            return Err(Refusal::Mention { name });
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
        let mut masked: Option<String> = None;
        for (_, needle) in &self.needles {
            let current = masked.as_deref().unwrap_or(text);
            if current.contains(needle.as_str()) {
                masked = Some(current.replace(needle.as_str(), MASK));
            }
        }
        masked
    }

    /// `text` with every spelling of every secret of the run masked where it stands and
    /// nothing else changed, for text shown as it is and never rendered (a transcript's
    /// messages on the dashboard and in the API); [`WITHHELD`] when a secret shows only
    /// once decoded.
    pub fn mask(&self, text: &str) -> Redacted {
        let mut masked = text.to_owned();
        for (_, needle) in &self.needles {
            if masked.contains(needle.as_str()) {
                masked = masked.replace(needle.as_str(), MASK);
            }
        }
        match self.secret_in(&masked) {
            Some(_) => Redacted(WITHHELD.to_owned()),
            None => Redacted(masked),
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
        for (_, needle) in &self.needles {
            if shown.contains(needle.as_str()) {
                shown = shown.replace(needle.as_str(), MASK);
            }
        }
        if self.secret_in(&shown).is_some() || render::visible(&shown) != shown {
            return Redacted(WITHHELD.to_owned());
        }
        let allowed = |host: &str| self.hosts.iter().any(|h| h == host);
        for _ in 0..64 {
            let found = links::foreign_links(&shown, &allowed);
            if found.is_empty() {
                break;
            }
            for link in found.iter().rev() {
                shown.replace_range(link.span.clone(), LINK_REMOVED);
            }
        }
        match self.check(&shown) {
            Ok(_) | Err(Refusal::Mention { .. }) => Redacted(shown),
            Err(_) => Redacted(WITHHELD.to_owned()),
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
mod tests;
