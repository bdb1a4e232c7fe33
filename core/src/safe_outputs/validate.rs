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

use evaluator::glob::{compile, GlobError, Pattern};
use evaluator::safe_outputs::SafeOutputs;
use plue_outbound::spellings::Spelling;
use plue_outbound::{Checker, Outbound, Refusal, Secrets};
use plue_types::protocol::{Proposal, MAX_BODY_BYTES, MAX_DIFF_BYTES, MAX_TITLE_BYTES};

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

/// Each file's part of `diff` (from its `diff --git` line to the next), with the path of
/// its new side when the line can be read.
fn file_parts(diff: &str) -> Vec<(Option<String>, &str)> {
    let mut starts: Vec<usize> = diff
        .match_indices("\ndiff --git ")
        .map(|(at, _)| at + 1)
        .collect();
    if diff.starts_with("diff --git ") {
        starts.insert(0, 0);
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(diff.len());
            let part = &diff[start..end];
            (file_of_header(part), part)
        })
        .collect()
}

/// The new side's path of the `diff --git` line `text` starts with.
fn file_of_header(text: &str) -> Option<String> {
    let line = text.split('\n').next()?;
    git_line_paths(line.strip_prefix("diff --git ")?)?.pop()
}

/// The file of `diff` whose part holds byte `at`.
fn file_at(diff: &str, at: usize) -> Option<String> {
    let start = match diff[..at].rfind("\ndiff --git ") {
        Some(newline) => newline + 1,
        None if diff.starts_with("diff --git ") => 0,
        None => return None,
    };
    file_of_header(&diff[start..])
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

/// The compiled allow and deny globs of `so`.
struct PathRules {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
}

impl PathRules {
    fn new(so: &SafeOutputs) -> Result<PathRules, DiffRefused> {
        let compiled = |globs: Vec<&str>| -> Result<Vec<Pattern>, DiffRefused> {
            globs
                .into_iter()
                .map(|g| {
                    compile(g).map_err(|source| DiffRefused::Glob {
                        glob: g.to_owned(),
                        source,
                    })
                })
                .collect()
        };
        Ok(PathRules {
            allow: compiled(so.paths_allow.iter().map(String::as_str).collect())?,
            deny: compiled(so.deny())?,
        })
    }

    fn check(&self, path: &str) -> Result<(), DiffRefused> {
        if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.contains('\0') {
            return Err(DiffRefused::BadPath(path.to_owned()));
        }
        for part in path.split('/') {
            let folded = part.to_lowercase();
            let folded = folded.trim_end_matches(['.', ' ']);
            if part.is_empty() || part == "." || part == ".." {
                return Err(DiffRefused::BadPath(path.to_owned()));
            }
            if folded == ".git" {
                return Err(DiffRefused::InGitDirectory(path.to_owned()));
            }
        }
        let lower = path.to_lowercase();
        // As a Windows checkout names it: each part without its trailing dots and spaces.
        let trimmed: Vec<&str> = lower
            .split('/')
            .map(|part| part.trim_end_matches(['.', ' ']))
            .collect();
        let trimmed = trimmed.join("/");
        if self
            .deny
            .iter()
            .any(|d| d.is_match(path) || d.is_match(&lower) || d.is_match(&trimmed))
        {
            return Err(DiffRefused::Denied(path.to_owned()));
        }
        if !self.allow.iter().any(|a| a.is_match(path)) {
            return Err(DiffRefused::NotAllowed(path.to_owned()));
        }
        Ok(())
    }
}

/// Checks what a built commit changes — `(old mode, new mode, path)` as `git diff-tree -r
/// --no-renames` reports them, `000000` for a side that does not exist — by the rules the
/// diff's paths and modes were checked by, so that a diff `git apply` reads otherwise than
/// [`check_diff`] still changes no denied path and adds no link or submodule.
pub fn check_changes(
    changes: &[(String, String, String)],
    so: &SafeOutputs,
) -> Result<(), DiffRefused> {
    let rules = PathRules::new(so)?;
    for (old, new, path) in changes {
        if [old, new]
            .iter()
            .any(|m| matches!(m.as_str(), "120000" | "160000"))
        {
            return Err(DiffRefused::CommitLinkOrSubmodule {
                path: path.clone(),
                mode: new.clone(),
            });
        }
        rules.check(path)?;
    }
    Ok(())
}

/// Where the parser is in the diff.
enum At {
    Start,
    Header,
    Hunk { old: u64, new: u64 },
}

/// Checks every header and path of `diff`; the number of files it changes.
pub fn check_diff(diff: &str, so: &SafeOutputs) -> Result<usize, DiffRefused> {
    if let Some(at) = diff.find('\0') {
        return Err(DiffRefused::Nul {
            path: file_at(diff, at),
        });
    }
    let rules = PathRules::new(so)?;
    let mut at = At::Start;
    let mut files = 0;
    // The new side of the file whose part of the diff the line is in.
    let mut file: Option<String> = None;
    let last = diff.split('\n').count() - 1;
    for (number, line) in diff.split('\n').enumerate() {
        let at_line = |problem: LineProblem| DiffRefused::Line {
            line: number + 1,
            problem,
        };
        let bad = |problem: LineProblem| Err(at_line(problem));
        if let At::Hunk { old, new } = &mut at {
            if *old > 0 || *new > 0 {
                match line.as_bytes().first() {
                    Some(b' ') => {
                        *old = old.saturating_sub(1);
                        *new = new.saturating_sub(1);
                    }
                    Some(b'-') if *old > 0 => *old -= 1,
                    Some(b'+') if *new > 0 => *new -= 1,
                    Some(b'\\') => {}
                    _ => return bad(LineProblem::HunkEndsEarly),
                }
                continue;
            }
            if line.starts_with('\\') {
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("diff --git ") {
            files += 1;
            let paths = git_line_paths(rest).ok_or(DiffRefused::UnreadableGitLine)?;
            for path in &paths {
                rules.check(path)?;
            }
            file = paths.last().cloned();
            at = At::Header;
            continue;
        }
        match at {
            At::Start => {
                if !line.is_empty() {
                    return bad(LineProblem::BeforeFirstFile);
                }
            }
            At::Header => {
                if line.starts_with("@@ ") {
                    at = hunk(line).ok_or_else(|| at_line(LineProblem::UnreadableHunkHeader))?;
                } else if line.is_empty() && number == last {
                    // The newline ending a file's headers with no hunk after them (an
                    // empty file added or removed, a mode changed).
                } else if line == "GIT binary patch" || line.starts_with("Binary files ") {
                    return Err(DiffRefused::Binary { path: file });
                } else {
                    header(line, &rules).map_err(at_line)?;
                }
            }
            At::Hunk { .. } => {
                if line.starts_with("@@ ") {
                    at = hunk(line).ok_or_else(|| at_line(LineProblem::UnreadableHunkHeader))?;
                } else if !line.is_empty() {
                    return bad(LineProblem::OutsideHunk);
                }
            }
        }
    }
    Ok(files)
}

/// `@@ -a,b +c,d @@`: the old and new line counts.
fn hunk(line: &str) -> Option<At> {
    let mut parts = line.split(' ');
    let _ = parts.next();
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((_, n)) => n.parse().ok(),
            None => range.parse::<u64>().ok().map(|_| 1),
        }
    };
    let old = count(parts.next()?.strip_prefix('-')?)?;
    let new = count(parts.next()?.strip_prefix('+')?)?;
    Some(At::Hunk { old, new })
}

/// One extended header line of a file's diff.
fn header(line: &str, rules: &PathRules) -> Result<(), LineProblem> {
    const MODES: [&str; 6] = [
        "old mode ",
        "new mode ",
        "deleted file mode ",
        "new file mode ",
        "similarity index ",
        "dissimilarity index ",
    ];
    let path_headers = [
        "--- ",
        "+++ ",
        "rename from ",
        "rename to ",
        "copy from ",
        "copy to ",
    ];
    // The mode is the last word of a mode line or of an `index a..b MODE` line.
    let mode = if line.starts_with("index ") || MODES[..4].iter().any(|m| line.starts_with(m)) {
        line.rsplit(' ').next()
    } else {
        None
    };
    if matches!(mode, Some("120000" | "160000")) {
        return Err(LineProblem::LinkOrSubmodule);
    }
    if let Some(prefix) = path_headers.iter().find(|p| line.starts_with(**p)) {
        let raw = &line[prefix.len()..];
        if raw == "/dev/null" {
            return Ok(());
        }
        let path = unquote(raw).ok_or(LineProblem::UnreadablePath)?;
        let path = if prefix.starts_with("---") || prefix.starts_with("+++") {
            let stripped = path
                .strip_prefix("a/")
                .or_else(|| path.strip_prefix("b/"))
                .ok_or(LineProblem::NoSidePrefix)?;
            stripped.to_owned()
        } else {
            path
        };
        return rules
            .check(&path)
            .map_err(|e| LineProblem::Path(Box::new(e)));
    }
    if MODES.iter().any(|m| line.starts_with(m)) || line.starts_with("index ") {
        return Ok(());
    }
    Err(LineProblem::UnknownHeader(
        line.chars().take(60).collect::<String>(),
    ))
}

/// The paths of a `diff --git a/X b/Y` line (without the prefixes), quoted or not. An
/// unquoted line with spaces can be read several ways (`a/x b/y b/z`): every reading's
/// paths are returned, so each is checked.
fn git_line_paths(rest: &str) -> Option<Vec<String>> {
    if rest.starts_with('"') {
        let end = quoted_end(rest)?;
        let first = unquote(&rest[..end])?;
        let second = rest[end..].strip_prefix(' ')?;
        let second = if second.starts_with('"') {
            unquote(second)?
        } else {
            second.to_owned()
        };
        return Some(vec![
            first.strip_prefix("a/")?.to_owned(),
            second.strip_prefix("b/")?.to_owned(),
        ]);
    }
    if let Some(q) = rest.find(" \"b/") {
        let second = unquote(&rest[q + 1..])?;
        return Some(vec![
            rest[..q].strip_prefix("a/")?.to_owned(),
            second.strip_prefix("b/")?.to_owned(),
        ]);
    }
    let first = rest.strip_prefix("a/")?;
    let mut paths = Vec::new();
    for (at, _) in first.match_indices(" b/") {
        paths.push(first[..at].to_owned());
        paths.push(first[at + 3..].to_owned());
    }
    (!paths.is_empty()).then_some(paths)
}

/// The byte just after the closing quote of the C-quoted string starting `text`.
fn quoted_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A path as git writes it: as it is, or C-quoted (`"a\tb\303\251"`).
fn unquote(text: &str) -> Option<String> {
    let Some(inner) = text.strip_prefix('"') else {
        return Some(text.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let bytes = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1)?;
        i += 2;
        out.push(match next {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'v' => 11,
            b'"' => b'"',
            b'\\' => b'\\',
            b'0'..=b'3' => {
                let digits = bytes.get(i - 1..i + 2)?;
                i += 2;
                u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok()?
            }
            _ => return None,
        });
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
