//! The kinds of text the wall makes, each with what it may reach: [`Outbound`] (passed
//! [`crate::Checker::check`]: a forge), [`Redacted`] (no secret, no foreign link: a reader,
//! and a forge only quoted or defused), [`Masked`] (no secret where it stands: a reader of
//! text shown as it is). Their constructors are the crate's alone.

use crate::links;

/// Text that passed the wall: the only kind the engine sends to a forge or keeps for a
/// reader where the compiler can see it. Made only by a [`Checker`].
///
/// [`Checker`]: crate::Checker
#[derive(Clone, PartialEq, Eq)]
pub struct Outbound(pub(crate) String);

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
///
/// [`Checker::redact`]: crate::Checker::redact
/// [`Checker::mask`]: crate::Checker::mask
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub(crate) String);

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
    ///
    /// [`Checker::check`]: crate::Checker::check
    pub fn code_span(&self) -> Outbound {
        Outbound(code_span(self.defused().as_str()))
    }

    /// This text with every mention defused (`@name` as `＠name`), for a forge's plain
    /// text (a commit status's description).
    pub fn defused(&self) -> Outbound {
        Outbound(defuse(&self.0))
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

/// `text` with every mention's `@` as `＠`.
fn defuse(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for (span, _) in links::mentions(text) {
        out.push_str(&text[from..span.start]);
        out.push('\u{ff20}');
        from = span.start + 1;
    }
    out.push_str(&text[from..]);
    out
}

/// Text with every spelling of a secret of the run masked ([`Checker::mask`]), for a reader
/// shown it as it is, never rendered (a transcript): it may still hold links and mentions,
/// and so never reaches a forge.
///
/// [`Checker::mask`]: crate::Checker::mask
#[derive(Clone, PartialEq, Eq)]
pub struct Masked(pub(crate) String);

impl Masked {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Masked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Masked {
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
