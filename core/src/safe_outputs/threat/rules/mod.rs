//! The static rules: pure functions over one proposal, each family in its own file,
//! returning [`Finding`]s. [`scan`] reads the proposal once ([`Subject`]: a pull request's
//! files and the lines they add, every text) and runs every family over it.
//!
//! Families: `paths` (CI, workflow, hook, build, install and registry files of any forge or
//! tool; disguised paths), `modes` (executable bits), `manifests` (new dependencies,
//! registries, install hooks, lockfile sources, typosquats), `commands` (piping downloads
//! into a shell, decoding and running, reverse shells, persistence, exfiltration,
//! disabled TLS checks), `network` (new endpoints, known exfiltration services, hidden
//! hosts), `blobs` (encoded blobs, decoded and scanned again), `obfuscation` (direction
//! controls, invisible characters, homoglyphs, character-code strings) and `secrets` (the
//! run's secrets through its wall, well-known credential formats).
//!
//! Invariants: no I/O; every line a pull request adds and every line of every text is
//! read by the line families; a line is matched folded ([`super::fold::chars`]) and with
//! the shell's no-op quoting removed ([`shell_folded`]) as well as as it is; a file of
//! documentation downgrades what its lines hold to warnings (instructions to people are
//! worth a writer's look, not a refusal) but is never skipped; at most
//! [`MAX_PER_RULE_AND_FILE`] findings of one rule in one file and [`MAX_FINDINGS`] in all
//! are kept (the verdict is the same: the first of each is kept).

mod blobs;
mod commands;
mod manifests;
mod modes;
mod network;
mod obfuscation;
mod paths;
mod secrets;

use plue_types::protocol::Proposal;

use super::diff::{self, FileChange, Line};
use super::verdict::{Finding, Severity};
use super::Scope;

/// At most this many findings of one rule in one file (or text) are kept.
pub(crate) const MAX_PER_RULE_AND_FILE: usize = 3;
/// At most this many findings per proposal are kept.
pub(crate) const MAX_FINDINGS: usize = 40;

/// What kind of content a document is, for the rules that read it differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Source, scripts, configuration: what runs or decides what runs.
    Code,
    /// Documentation (`*.md`, `*.rst`, `*.txt`, `docs/`, ...): read by people.
    Docs,
    /// A lockfile: checksums and resolved URLs are its normal content.
    Lock,
    /// A title, body or comment the proposal writes on the forge.
    Text,
}

/// One document the line families read: a file's added lines, or a text's lines.
pub(crate) struct Doc<'a> {
    /// The file (`None` for a text).
    pub(crate) file: Option<&'a str>,
    /// What the text is (`the pull request's body`), for a text.
    pub(crate) what: &'static str,
    pub(crate) kind: Kind,
    pub(crate) lines: Vec<Line>,
}

impl Doc<'_> {
    /// A finding of `rule` at `line` of this document (a text's reason names the text).
    pub(crate) fn finding(
        &self,
        rule: &str,
        severity: Severity,
        line: u32,
        reason: impl Into<String>,
    ) -> Finding {
        let line = (line > 0).then_some(line);
        let reason = match self.file {
            Some(_) => reason.into(),
            None => format!("{}: {}", self.what, reason.into()),
        };
        Finding::new(rule, severity, self.file, line, reason)
    }

    /// `severity`, lowered to a warning in documentation and texts.
    pub(crate) fn weigh(&self, severity: Severity) -> Severity {
        match self.kind {
            Kind::Docs | Kind::Text => Severity::Warning,
            Kind::Code | Kind::Lock => severity,
        }
    }
}

/// A proposal read once for the rules.
pub(crate) struct Subject<'a> {
    pub(crate) files: Vec<FileChange>,
    pub(crate) texts: Vec<(&'static str, &'a str)>,
}

impl<'a> Subject<'a> {
    pub(crate) fn of(proposal: &'a Proposal) -> Subject<'a> {
        match proposal {
            Proposal::PullRequest { title, body, diff } => Subject {
                files: diff::files(diff),
                texts: vec![
                    ("the pull request's title", title),
                    ("the pull request's body", body),
                ],
            },
            Proposal::Comment { body } => Subject {
                files: Vec::new(),
                texts: vec![("a comment", body)],
            },
            Proposal::Issue { title, body } => Subject {
                files: Vec::new(),
                texts: vec![("an issue's title", title), ("an issue's body", body)],
            },
            Proposal::Labels { labels } => Subject {
                files: Vec::new(),
                texts: labels.iter().map(|l| ("a label", l.as_str())).collect(),
            },
        }
    }

    /// Every document the line families read.
    pub(crate) fn docs(&self) -> Vec<Doc<'_>> {
        let files = self.files.iter().map(|file| Doc {
            file: Some(file.path.as_str()),
            what: "a file",
            kind: match kind_of(&file.path) {
                // A "document" made executable or starting with `#!` is a script.
                Kind::Docs if runnable(file) => Kind::Code,
                kind => kind,
            },
            lines: file.added.clone(),
        });
        let texts = self.texts.iter().map(|(what, text)| Doc {
            file: None,
            what,
            kind: Kind::Text,
            lines: text
                .split('\n')
                .enumerate()
                .map(|(n, line)| Line {
                    number: n as u32 + 1,
                    text: line.to_owned(),
                })
                .collect(),
        });
        files.chain(texts).collect()
    }
}

/// Every finding of the rules for `proposal`, most severe first.
pub(crate) fn scan(proposal: &Proposal, scope: &Scope<'_>) -> Vec<Finding> {
    let subject = Subject::of(proposal);
    let mut found = Vec::new();
    paths::check(&subject, &mut found);
    modes::check(&subject, &mut found);
    manifests::check(&subject, &mut found);
    for doc in subject.docs() {
        commands::check(&doc, scope, &mut found);
        network::check(&doc, scope, &mut found);
        blobs::check(&doc, scope, &mut found);
        obfuscation::check(&doc, &mut found);
        secrets::check(&doc, scope, &mut found);
    }
    bounded(found)
}

/// `found`, most severe first, at most [`MAX_PER_RULE_AND_FILE`] of one rule in one place
/// and [`MAX_FINDINGS`] in all.
fn bounded(mut found: Vec<Finding>) -> Vec<Finding> {
    found.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let mut kept: Vec<Finding> = Vec::new();
    for finding in found {
        let same = kept
            .iter()
            .filter(|k| k.rule == finding.rule && k.file == finding.file)
            .count();
        let repeat = kept.iter().any(|k| {
            k.rule == finding.rule && k.file == finding.file && k.reason == finding.reason
        });
        if same < MAX_PER_RULE_AND_FILE && !repeat && kept.len() < MAX_FINDINGS {
            kept.push(finding);
        }
    }
    kept
}

/// Whether `file` runs as a program: its new mode is executable or its first line is `#!`.
fn runnable(file: &FileChange) -> bool {
    let executable = file
        .new_mode
        .as_deref()
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        .is_some_and(|m| m & 0o111 != 0 && m & 0o170000 != 0o120000);
    executable
        || file
            .added
            .iter()
            .any(|l| l.number == 1 && l.text.starts_with("#!"))
}

/// What kind of document the file at `path` is.
pub(crate) fn kind_of(path: &str) -> Kind {
    let folded = super::fold::path(path);
    let name = folded.rsplit('/').next().unwrap_or(&folded);
    if manifests::is_lockfile(name) {
        return Kind::Lock;
    }
    let docs_ext = [
        ".md",
        ".markdown",
        ".rst",
        ".txt",
        ".adoc",
        ".asciidoc",
        ".org",
        ".textile",
    ];
    let is_requirements = name.starts_with("requirements")
        || name.starts_with("constraints")
        || name == "cmakelists.txt";
    if !is_requirements && docs_ext.iter().any(|ext| name.ends_with(ext)) {
        return Kind::Docs;
    }
    if [
        "license",
        "licence",
        "copying",
        "authors",
        "notice",
        "changelog",
    ]
    .contains(&name)
    {
        return Kind::Docs;
    }
    Kind::Code
}

/// `line` as the shell reads it once its no-op spellings are gone: empty quotes (`c''url`),
/// backslashes before letters and digits (`c\url`), `${IFS}` and `$IFS` as spaces, folded
/// ([`super::fold::chars`]).
pub(crate) fn shell_folded(line: &str) -> String {
    let folded = super::fold::chars(line);
    let mut out = folded
        .replace("''", "")
        .replace("\"\"", "")
        .replace("${IFS}", " ")
        .replace("$IFS", " ");
    let bytes: Vec<char> = out.chars().collect();
    let mut cleaned = String::with_capacity(out.len());
    let mut i = 0;
    while i < bytes.len() {
        // Outside quotes the shell reads `\u` as `u`: the escape is dropped (the line as
        // it is, escapes and all, is matched too).
        if bytes[i] == '\\' && bytes.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        cleaned.push(bytes[i]);
        i += 1;
    }
    out = cleaned;
    out
}

/// At most 80 characters of `text`, trimmed, for a reason.
pub(crate) fn excerpt(text: &str) -> String {
    let text = text.trim();
    let mut short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_files() {
        assert_eq!(kind_of("README.md"), Kind::Docs);
        assert_eq!(kind_of("docs/guide.rst"), Kind::Docs);
        assert_eq!(kind_of("requirements.txt"), Kind::Code);
        assert_eq!(kind_of("Cargo.lock"), Kind::Lock);
        assert_eq!(kind_of("src/main.rs"), Kind::Code);
    }

    #[test]
    fn the_shell_reads_through_no_op_quoting() {
        assert_eq!(shell_folded("c''ur\"\"l x |b\\ash"), "curl x |bash");
        assert_eq!(shell_folded("c\\url x|ba\\sh"), "curl x|bash");
        assert_eq!(shell_folded("curl${IFS}x"), "curl x");
    }
}
