//! The engine's check of everything one attempt proposed, against the step's
//! `SafeOutputs` and the run's secrets. Pure: no IO.
//!
//! Invariants (any failure refuses *all* of the attempt's proposals, with the first
//! reason):
//! - counts and sizes: one pull request at most and only when allowed, comments and issues
//!   within their counts, one labels proposal naming only allowed, clean labels; titles,
//!   bodies and the diff within their bounds (the diff also within 1 MiB whatever the plan).
//! - the diff is parsed as `git apply` reads it, strictly: nothing before the first
//!   `diff --git`, hunks consumed by their line counts, every header line known. Every
//!   path it names — both sides of the `diff --git` line, `---`/`+++`, rename and copy
//!   sources and targets, C-quoted or not — must be relative, without `..` or a `.git`
//!   component, match `paths_allow` and no deny glob (the plan's and
//!   `evaluator::safe_outputs::DEFAULT_DENY`, also compared lowercased and with each
//!   part's trailing dots and spaces dropped, as NTFS does). Modes 120000
//!   (symbolic link) and 160000 (submodule) are refused anywhere; binary patches are
//!   refused (their content cannot be checked for secrets here). At most `max_files`.
//! - the diff holds no NUL: a file is binary by its content wherever its first NUL is (git
//!   looks only at the first 8,000 bytes, so a UTF-16 copy of a secret after them reached
//!   a diff as "text").
//! - every text and the diff pass the run's outbound wall ([`plue_outbound`], made from
//!   every secret the run holds or has held): no secret in any spelling it knows, in any
//!   view a reader of the forge sees; texts link only to `allow_links` hosts and the
//!   repository's forge, and mention nobody (`@name`), read as a forge renders them.
//! - binary by content everywhere, judged on the whole new content: the applier reads back
//!   every file the built commit adds *or modifies*, whole (not the diff's hunks), and
//!   [`check_new_file`] refuses one holding a secret of the run as UTF-8 or in a wide
//!   encoding (UTF-16LE/BE, UTF-32LE/BE, with or without a byte-order mark) starting at
//!   any byte, odd offsets too, or holding a NUL anywhere (binary), or too large to read
//!   ([`MAX_JUDGED_FILE_BYTES`]) — new and modified files alike.
//! - a refusal of the diff's content (a NUL, a binary patch, a secret found in one file's
//!   part of it) or of a built file names the file.
//! - a reason is made of the wall's findings and the proposal's own text (a path, a
//!   label): the caller redacts it with the same wall before anyone sees it.
//!
//! The diff's parser and its path rules are `validate/diff.rs`.

use evaluator::glob::GlobError;
use evaluator::safe_outputs::SafeOutputs;
use plue_outbound::spellings::Spelling;
use plue_outbound::{Checker, Outbound, Refusal, Secrets};
use plue_types::protocol::{Proposal, MAX_BODY_BYTES, MAX_DIFF_BYTES, MAX_TITLE_BYTES};

use diff::file_parts;
pub use diff::{check_changes, check_diff};

mod diff;

/// What the proposals are checked against.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub outputs: &'a SafeOutputs,
    /// The run's wall: its secrets, links to the forge's hosts and `allow_links`.
    pub wall: Checker,
}

impl<'a> Rules<'a> {
    /// The rules of a step with `outputs`, in a run with `secrets`, whose repository's
    /// forge is at `forge_hosts`.
    pub fn new(outputs: &'a SafeOutputs, secrets: &Secrets, forge_hosts: &[String]) -> Rules<'a> {
        let hosts = forge_hosts.iter().chain(&outputs.allow_links);
        Rules {
            outputs,
            wall: Checker::new(secrets, hosts),
        }
    }

    /// These rules, letting the texts refer to the run's own `repository` (`owner/name`);
    /// references to any other are refused.
    pub fn with_repository(mut self, repository: Option<&str>) -> Rules<'a> {
        if let Some(repository) = repository {
            self.wall = self.wall.with_repository(repository);
        }
        self
    }
}

/// Why an attempt's proposals were refused (to be redacted before it is shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("more than one pull request proposed")]
    SecondPullRequest,
    #[error("the step may not propose a pull request")]
    PullRequestNotAllowed,
    #[error("more than {0} comments proposed")]
    TooManyComments(u32),
    #[error("more than {0} issues proposed")]
    TooManyIssues(u32),
    #[error("labels proposed more than once")]
    LabelsTwice,
    #[error("the diff is {bytes} bytes; max_diff_bytes is {max}")]
    DiffTooLarge { bytes: usize, max: u64 },
    #[error("the diff changes {files} files; max_files is {max}")]
    TooManyFiles { files: usize, max: u32 },
    /// A label outside the label grammar (`evaluator::safe_outputs::check_label`).
    #[error("label {label:?} {why}")]
    BadLabel { label: String, why: &'static str },
    #[error("label {0:?} is not in the step's labels")]
    LabelNotAllowed(String),
    /// A title or body (`what`: "a comment", "the pull request's title", ...) too long.
    #[error("{what} is {bytes} bytes; at most {max}")]
    TextTooLong {
        what: &'static str,
        bytes: usize,
        max: usize,
    },
    /// The run's outbound wall refused `what` (a secret, a link, a mention).
    #[error("{}", wall_message(what, refusal))]
    Wall {
        what: &'static str,
        refusal: Refusal,
    },
    /// The run's outbound wall refused one file's part of the diff.
    #[error("the diff {refusal} in its change to {path:?}")]
    FileWall { path: String, refusal: Refusal },
    /// A file the built commit adds or changes, judged by its whole new content.
    #[error("the file {path:?} {problem}")]
    File { path: String, problem: FileProblem },
    /// The diff (or a built commit's changes) breaks a path or syntax rule.
    #[error(transparent)]
    Diff(#[from] DiffRefused),
}

fn wall_message(what: &str, refusal: &Refusal) -> String {
    match refusal {
        Refusal::Link { host } => format!("{what} links to {host:?}, which is not in allow_links"),
        other => format!("{what} {other}"),
    }
}

/// Why a diff, or the changes of the commit built from it, were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffRefused {
    /// A glob of the step's `paths_allow` or deny list does not compile.
    #[error("glob {glob:?}: {source}")]
    Glob { glob: String, source: GlobError },
    /// Empty, absolute, with a backslash, NUL, `.` or `..` part, or an empty part.
    #[error("the diff names the path {0:?}")]
    BadPath(String),
    #[error("the diff changes {0:?} inside a .git directory")]
    InGitDirectory(String),
    #[error("the diff changes {0:?}, which is denied")]
    Denied(String),
    #[error("the diff changes {0:?}, which paths_allow does not allow")]
    NotAllowed(String),
    /// The built commit holds a link or submodule (`mode` is the new side's).
    #[error("the built commit makes {path:?} a symbolic link or a submodule (mode {mode})")]
    CommitLinkOrSubmodule { path: String, mode: String },
    /// A NUL byte in the diff, in the part of the file named (`None`: before any file).
    #[error(
        "the diff changes {}, a binary file (it holds a NUL byte); binary changes are not accepted (the engine cannot check them for secrets)",
        named(path)
    )]
    Nul { path: Option<String> },
    /// A binary patch, of the file named.
    #[error(
        "the diff changes {}, a binary file; binary changes are not accepted (the engine cannot check them for secrets)",
        named(path)
    )]
    Binary { path: Option<String> },
    #[error("the diff has a 'diff --git' line it cannot read")]
    UnreadableGitLine,
    /// A line of the diff (numbered from 1) that breaks the syntax or names a bad path.
    #[error("the diff's line {line}: {problem}")]
    Line { line: usize, problem: LineProblem },
}

/// A file a refusal names, or what stands for it when none could be read.
fn named(path: &Option<String>) -> String {
    match path {
        Some(path) => format!("{path:?}"),
        None => "a file".to_owned(),
    }
}

/// What is wrong with the whole new content of a file the built commit adds or changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    /// A secret of the run, spelt `spelling` in the content read as `encoding`.
    #[error(
        "holds a secret of the run in its new content ({spelling}; the file read as {encoding})"
    )]
    Secret {
        spelling: Spelling,
        encoding: &'static str,
    },
    /// A NUL byte at `offset`: binary by its content, wherever the NUL is.
    #[error(
        "is binary by its new content (a NUL byte at byte {offset}); binary changes are not accepted (the engine cannot check them for secrets)"
    )]
    Binary { offset: usize },
    #[error(
        "is {bytes} bytes once changed; the engine checks files of at most {max} bytes for secrets"
    )]
    TooLarge { bytes: u64, max: u64 },
}

/// The largest new content of a changed file the applier reads whole to judge it; a larger
/// one is refused ([`FileProblem::TooLarge`]).
pub const MAX_JUDGED_FILE_BYTES: u64 = 8 << 20;

/// What is wrong with one line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("a hunk ends before its line counts")]
    HunkEndsEarly,
    #[error("text before the first 'diff --git'")]
    BeforeFirstFile,
    #[error("a hunk header it cannot read")]
    UnreadableHunkHeader,
    #[error("a line outside any hunk")]
    OutsideHunk,
    #[error("a symbolic link or a submodule (mode 120000 or 160000)")]
    LinkOrSubmodule,
    #[error("a path it cannot read")]
    UnreadablePath,
    #[error("a ---/+++ path without its a/ or b/ prefix")]
    NoSidePrefix,
    /// The line's first 60 characters.
    #[error("an unknown header line {0:?}")]
    UnknownHeader(String),
    /// A header's path breaks a path rule.
    #[error(transparent)]
    Path(Box<DiffRefused>),
}

/// `Ok` when every proposal passes; else the first reason.
pub fn validate(proposals: &[Proposal], rules: &Rules<'_>) -> Result<(), Refused> {
    let so = rules.outputs;
    let count = |kind: &str| proposals.iter().filter(|p| p.kind() == kind).count();
    if count("pull_request") > usize::from(so.pull_request) {
        return Err(if so.pull_request {
            Refused::SecondPullRequest
        } else {
            Refused::PullRequestNotAllowed
        });
    }
    if count("comment") > so.comments as usize {
        return Err(Refused::TooManyComments(so.comments));
    }
    if count("issue") > so.issues as usize {
        return Err(Refused::TooManyIssues(so.issues));
    }
    if count("labels") > 1 {
        return Err(Refused::LabelsTwice);
    }
    let refused = |what: &'static str, refusal: Refusal| Refused::Wall { what, refusal };
    for proposal in proposals {
        let mut texts: Vec<(&str, &str, usize)> = Vec::new();
        match proposal {
            Proposal::PullRequest { title, body, diff } => {
                texts.push(("the pull request's title", title, MAX_TITLE_BYTES));
                texts.push(("the pull request's body", body, MAX_BODY_BYTES));
                let max = so.max_diff_bytes.min(MAX_DIFF_BYTES);
                if diff.len() as u64 > max {
                    return Err(Refused::DiffTooLarge {
                        bytes: diff.len(),
                        max,
                    });
                }
                let files = check_diff(diff, so)?;
                if files > so.max_files as usize {
                    return Err(Refused::TooManyFiles {
                        files,
                        max: so.max_files,
                    });
                }
                check_diff_wall(diff, &rules.wall)?;
            }
            Proposal::Comment { body } => texts.push(("a comment", body, MAX_BODY_BYTES)),
            Proposal::Issue { title, body } => {
                texts.push(("an issue's title", title, MAX_TITLE_BYTES));
                texts.push(("an issue's body", body, MAX_BODY_BYTES));
            }
            Proposal::Labels { labels } => {
                for label in labels {
                    evaluator::safe_outputs::check_label(label).map_err(|why| {
                        Refused::BadLabel {
                            label: label.clone(),
                            why,
                        }
                    })?;
                    if !so.labels.contains(label) {
                        return Err(Refused::LabelNotAllowed(label.clone()));
                    }
                    rules.wall.check(label).map_err(|r| refused("a label", r))?;
                }
                if let Some(spelling) = rules.wall.secret_in(&labels.join("\n")) {
                    return Err(refused("a label", Refusal::Secret(spelling)));
                }
            }
        }
        for (what, text, max) in texts {
            if text.len() > max {
                return Err(Refused::TextTooLong {
                    what,
                    bytes: text.len(),
                    max,
                });
            }
            rules.wall.check(text).map_err(|r| refused(what, r))?;
        }
    }
    Ok(())
}

/// `diff` as it is when it passes `wall` ([`Checker::check_diff`]); a refusal names the
/// file whose part of the diff holds what was found (the whole diff is checked first, so
/// nothing cut over two files' parts passes unnamed).
pub fn check_diff_wall(diff: &str, wall: &Checker) -> Result<Outbound, Refused> {
    wall.check_diff(diff).map_err(|refusal| {
        file_parts(diff)
            .into_iter()
            .find_map(|(path, part)| {
                let refusal = wall.check_diff(part).err()?;
                Some(Refused::FileWall {
                    path: path?,
                    refusal,
                })
            })
            .unwrap_or(Refused::Wall {
                what: "the diff",
                refusal,
            })
    })
}

/// Judges one file the built commit adds or changes by its whole new content (`size`
/// bytes; `content` is `None` when it was too large to read): it may hold no secret of the
/// run in any spelling `wall` knows, read as UTF-8 or in a wide encoding starting at any
/// byte (`content_views`), and no NUL byte anywhere (a binary file, which the engine
/// cannot check).
pub fn check_new_file(
    path: &str,
    size: u64,
    content: Option<&[u8]>,
    wall: &Checker,
) -> Result<(), Refused> {
    let refused = |problem: FileProblem| Refused::File {
        path: path.to_owned(),
        problem,
    };
    let Some(content) = content.filter(|_| size <= MAX_JUDGED_FILE_BYTES) else {
        return Err(refused(FileProblem::TooLarge {
            bytes: size,
            max: MAX_JUDGED_FILE_BYTES,
        }));
    };
    if wall.has_secrets() {
        for (encoding, view) in content_views(content) {
            if let Some(spelling) = wall.secret_in(&view) {
                return Err(refused(FileProblem::Secret { spelling, encoding }));
            }
        }
    }
    if let Some(offset) = content.iter().position(|b| *b == 0) {
        return Err(refused(FileProblem::Binary { offset }));
    }
    Ok(())
}

/// `content` as text, each view named by its encoding: as UTF-8 (a byte that is not
/// replaced), then as UTF-16LE, UTF-16BE, UTF-32LE and UTF-32BE decoded from every byte a
/// code unit may start at (0 and 1; 0 to 3), so a wide copy of a secret is read wherever
/// it starts (after a text of odd length, after a byte-order mark, which decodes to an
/// invisible character). A unit that is no character reads as U+FFFD.
fn content_views(content: &[u8]) -> impl Iterator<Item = (&'static str, String)> + '_ {
    const WIDE: [(&str, usize, bool); 4] = [
        ("UTF-16LE", 2, false),
        ("UTF-16BE", 2, true),
        ("UTF-32LE", 4, false),
        ("UTF-32BE", 4, true),
    ];
    let utf8 = std::iter::once(("UTF-8", String::from_utf8_lossy(content).into_owned()));
    let wide = WIDE.into_iter().flat_map(move |(encoding, width, big)| {
        (0..width).map(move |start| (encoding, decode_wide(content, start, width, big)))
    });
    utf8.chain(wide)
}

/// `content` from byte `start` read as `width`-byte code units (2: UTF-16, 4: UTF-32),
/// big-endian or not; a trailing part of a unit is dropped.
fn decode_wide(content: &[u8], start: usize, width: usize, big: bool) -> String {
    let units = content.get(start..).unwrap_or_default().chunks_exact(width);
    if width == 2 {
        let units = units.map(|unit| {
            let bytes = [unit[0], unit[1]];
            if big {
                u16::from_be_bytes(bytes)
            } else {
                u16::from_le_bytes(bytes)
            }
        });
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    } else {
        units
            .map(|unit| {
                let bytes = [unit[0], unit[1], unit[2], unit[3]];
                let value = if big {
                    u32::from_be_bytes(bytes)
                } else {
                    u32::from_le_bytes(bytes)
                };
                char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect()
    }
}

/// `proposal` with every text withheld: kept when it could not be checked.
pub fn withheld(proposal: &Proposal) -> Proposal {
    let gone = || plue_outbound::WITHHELD.to_owned();
    match proposal {
        Proposal::PullRequest { .. } => Proposal::PullRequest {
            title: gone(),
            body: gone(),
            diff: gone(),
        },
        Proposal::Comment { .. } => Proposal::Comment { body: gone() },
        Proposal::Labels { labels } => Proposal::Labels {
            labels: labels.iter().map(|_| gone()).collect(),
        },
        Proposal::Issue { .. } => Proposal::Issue {
            title: gone(),
            body: gone(),
        },
    }
}

/// `proposal` as a reader may be shown it once refused: every text redacted by `wall`
/// (every spelling of every secret masked, links to other hosts removed, mentions
/// defused).
pub fn redact(proposal: &Proposal, wall: &Checker) -> Proposal {
    let clean = |text: &str| wall.redact(text).into_string();
    match proposal {
        Proposal::PullRequest { title, body, diff } => Proposal::PullRequest {
            title: clean(title),
            body: clean(body),
            diff: clean(diff),
        },
        Proposal::Comment { body } => Proposal::Comment { body: clean(body) },
        Proposal::Labels { labels } => Proposal::Labels {
            labels: labels.iter().map(|l| clean(l)).collect(),
        },
        Proposal::Issue { title, body } => Proposal::Issue {
            title: clean(title),
            body: clean(body),
        },
    }
}

#[cfg(test)]
mod tests;
