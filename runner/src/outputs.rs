//! Parses the file a step writes its outputs to (`$PLUE_OUTPUT`).
//!
//! The format is GitHub Actions' `$GITHUB_OUTPUT`:
//! - `key=value` sets `key` to everything after the first `=`;
//! - `key<<DELIMITER`, then value lines, then a line that is exactly `DELIMITER`, sets a
//!   multi-line value (its lines joined with `\n`, no trailing newline);
//! - blank lines are ignored, a trailing `\r` is removed from every line, and a later value
//!   for a key replaces the earlier one.
//!
//! Keys match `[A-Za-z_][A-Za-z0-9_-]*`. Limits: [`MAX_OUTPUTS`] keys, values of at most
//! [`MAX_OUTPUT_VALUE_BYTES`], a file of at most [`MAX_FILE_BYTES`]. Every error names the
//! line it is about, so the user can find it. An output whose name holds a secret of the
//! attempt is refused by [`check_names`] (values are masked; a name would be stored, shown
//! and turned into later steps' variable names in clear).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use crate::mask::Masker;
use plue_types::protocol::{MAX_OUTPUTS, MAX_OUTPUT_VALUE_BYTES};

/// The largest `$PLUE_OUTPUT` file accepted.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// How much of an offending line an error message echoes.
const ECHO_CHARS: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// `$PLUE_OUTPUT` was replaced by a symlink, FIFO, directory or device.
    #[error("PLUE_OUTPUT is not a regular file (a symlink, FIFO or directory is refused)")]
    NotAFile,
    /// A line that is neither `key=value` nor `key<<DELIMITER`.
    #[error("PLUE_OUTPUT line {line}: expected key=value or key<<DELIMITER, got '{text}'")]
    Syntax { line: usize, text: String },
    /// A key outside `[A-Za-z_][A-Za-z0-9_-]*`.
    #[error(
        "PLUE_OUTPUT line {line}: invalid output name '{key}' (must match [A-Za-z_][A-Za-z0-9_-]*)"
    )]
    InvalidKey { line: usize, key: String },
    /// `key<<` with nothing after it.
    #[error("PLUE_OUTPUT line {line}: '{key}<<' needs a delimiter, e.g. '{key}<<EOF'")]
    EmptyDelimiter { line: usize, key: String },
    /// `key<<DELIMITER` without a closing `DELIMITER` line.
    #[error(
        "PLUE_OUTPUT line {line}: '{key}<<{delimiter}' is never closed by a line '{delimiter}'"
    )]
    Unterminated {
        line: usize,
        key: String,
        delimiter: String,
    },
    /// More distinct keys than [`MAX_OUTPUTS`].
    #[error("PLUE_OUTPUT line {line}: more than {max} outputs", max = MAX_OUTPUTS)]
    TooManyOutputs { line: usize },
    /// A value longer than [`MAX_OUTPUT_VALUE_BYTES`].
    #[error(
        "PLUE_OUTPUT line {line}: the value of '{key}' is {bytes} bytes, over the limit of {max}",
        max = MAX_OUTPUT_VALUE_BYTES
    )]
    ValueTooLong {
        line: usize,
        key: String,
        bytes: usize,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("PLUE_OUTPUT is {bytes} bytes, over the limit of {max}", max = MAX_FILE_BYTES)]
    FileTooLarge { bytes: u64 },
    /// The file is not UTF-8.
    #[error("PLUE_OUTPUT line {line}: not valid UTF-8")]
    NotUtf8 { line: usize },
    /// An output's name holds a secret of the attempt: it would be stored and shown in
    /// clear and become part of later steps' variable names. Says where, never what.
    #[error(
        "PLUE_OUTPUT: the name of output {position} of {count} (in name order) contains a \
         secret of this step, so no output is kept; write secrets only as values, which \
         are masked"
    )]
    SecretInName { position: usize, count: usize },
    /// The file exists but could not be read.
    #[error("reading PLUE_OUTPUT {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Parses `$PLUE_OUTPUT` content.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, OutputError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(OutputError::FileTooLarge {
            bytes: text.len() as u64,
        });
    }
    let mut outputs = BTreeMap::new();
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .enumerate()
        .map(|(index, line)| (index + 1, line));
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = match split_line(line) {
            Some(Assignment::Value(key, value)) => (key, value.to_owned()),
            Some(Assignment::Heredoc(key, delimiter)) => {
                check_key(number, key)?;
                if delimiter.is_empty() {
                    return Err(OutputError::EmptyDelimiter {
                        line: number,
                        key: key.to_owned(),
                    });
                }
                let mut value: Vec<&str> = Vec::new();
                loop {
                    match lines.next() {
                        Some((_, l)) if l == delimiter => break,
                        Some((_, l)) => value.push(l),
                        None => {
                            return Err(OutputError::Unterminated {
                                line: number,
                                key: key.to_owned(),
                                delimiter: delimiter.to_owned(),
                            })
                        }
                    }
                }
                (key, value.join("\n"))
            }
            None => {
                return Err(OutputError::Syntax {
                    line: number,
                    text: echo(line),
                })
            }
        };
        check_key(number, key)?;
        if value.len() > MAX_OUTPUT_VALUE_BYTES {
            let (key, bytes) = (key.to_owned(), value.len());
            return Err(OutputError::ValueTooLong {
                line: number,
                key,
                bytes,
            });
        }
        if outputs.len() == MAX_OUTPUTS && !outputs.contains_key(key) {
            return Err(OutputError::TooManyOutputs { line: number });
        }
        outputs.insert(key.to_owned(), value);
    }
    Ok(outputs)
}

/// Reads and parses the file at `path`; a missing file means no outputs. The size is
/// checked before the content is read.
pub async fn read(path: &Path) -> Result<BTreeMap<String, String>, OutputError> {
    let io_error = |source| OutputError::Io {
        path: path.to_owned(),
        source,
    };
    // The step owns the directory the file is in and may have replaced the file: a symlink
    // is not followed (the runner may be root: `ln -s /etc/shadow $PLUE_OUTPUT` must not
    // turn into outputs) and a FIFO or device is refused instead of blocking the runner.
    let mut options = tokio::fs::OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    let file = match options.open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => return Err(OutputError::NotAFile),
        Err(err) => return Err(io_error(err)),
    };
    let metadata = file.metadata().await.map_err(io_error)?;
    if !metadata.is_file() {
        return Err(OutputError::NotAFile);
    }
    let bytes = metadata.len();
    if bytes > MAX_FILE_BYTES {
        return Err(OutputError::FileTooLarge { bytes });
    }
    // The step's leftovers are dead, but read at most one byte past the limit regardless.
    let mut content = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut content)
        .await
        .map_err(io_error)?;
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(OutputError::FileTooLarge {
            bytes: content.len() as u64,
        });
    }
    let text = String::from_utf8(content).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        OutputError::NotUtf8 {
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    parse(&text)
}

/// Refuses `outputs` when a name holds a secret of `masker` (compared as later steps see
/// the name: see [`Masker::finds_secret_in_name`]). The error gives the name's position
/// among the outputs in name order, not the name.
pub fn check_names(outputs: &BTreeMap<String, String>, masker: &Masker) -> Result<(), OutputError> {
    match outputs
        .keys()
        .position(|name| masker.finds_secret_in_name(name))
    {
        Some(index) => Err(OutputError::SecretInName {
            position: index + 1,
            count: outputs.len(),
        }),
        None => Ok(()),
    }
}

enum Assignment<'a> {
    Value(&'a str, &'a str),
    Heredoc(&'a str, &'a str),
}

/// Splits like GitHub does: whichever of `=` and `<<` comes first decides, so
/// `key=a<<b` is a value and `key<<A=B` a heredoc with delimiter `A=B`.
fn split_line(line: &str) -> Option<Assignment<'_>> {
    match (line.find('='), line.find("<<")) {
        (Some(eq), Some(heredoc)) if heredoc < eq => {
            Some(Assignment::Heredoc(&line[..heredoc], &line[heredoc + 2..]))
        }
        (Some(eq), _) => Some(Assignment::Value(&line[..eq], &line[eq + 1..])),
        (None, Some(heredoc)) => Some(Assignment::Heredoc(&line[..heredoc], &line[heredoc + 2..])),
        (None, None) => None,
    }
}

fn check_key(line: usize, key: &str) -> Result<(), OutputError> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(OutputError::InvalidKey {
            line,
            key: echo(key),
        })
    }
}

fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_output_file_replaced_by_a_symlink_or_fifo_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("root-only");
        std::fs::write(&target, "stolen=the runner's file\n").unwrap();
        let link = dir.path().join("output");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(read(&link).await, Err(OutputError::NotAFile)));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let read_fifo = tokio::time::timeout(std::time::Duration::from_secs(5), read(&fifo));
        assert!(matches!(read_fifo.await, Ok(Err(OutputError::NotAFile))));
        std::fs::write(dir.path().join("plain"), "k=v\n").unwrap();
        assert_eq!(read(&dir.path().join("plain")).await.unwrap()["k"], "v");
    }

    #[tokio::test]
    async fn a_secret_written_as_an_output_name_is_refused_without_echoing_it() {
        // regression: `echo "$TOKEN=1" >> $PLUE_OUTPUT` stored and served the secret in
        // clear, and later steps got it in a variable name.
        let secret = "s3cr3t-Tok3n";
        let masker = Masker::new([secret, "unrelated value"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("output");
        for written in [
            format!("{secret}=1\n"),
            format!("a=ok\nx_{secret}_y=1\n"),
            format!("{}=1\n", secret.to_uppercase()),
            format!("{}<<EOF\nv\nEOF\n", secret.replace('-', "_")),
        ] {
            std::fs::write(&file, &written).unwrap();
            let outputs = read(&file).await.unwrap();
            let err = check_names(&outputs, &masker).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("contains a secret"), "{message}");
            assert!(
                !message.to_lowercase().contains("s3cr3t"),
                "the secret is echoed: {message}"
            );
        }
        let err = check_names(
            &parse(&format!("a=1\nb{secret}=2\nc=3\n")).unwrap(),
            &masker,
        )
        .unwrap_err();
        assert!(err.to_string().contains("output 2 of 3"), "{err}");
        // The secret as a value is fine (it is masked); names near it are too.
        let fine = parse(&format!("token={secret}\ns3cr3t=1\n")).unwrap();
        assert!(check_names(&fine, &masker).is_ok());
        assert!(check_names(&fine, &Masker::default()).is_ok());
    }

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap().into_iter().collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_values_heredocs_and_overrides() {
        let text =
            "a=1\n\nb=x=y\r\nmsg<<EOF\nline one\n\nline=two\nEOF\na=2\nempty=\n_k-2<<END\nEND\n";
        let expected = [
            ("_k-2", ""),
            ("a", "2"),
            ("b", "x=y"),
            ("empty", ""),
            ("msg", "line one\n\nline=two"),
        ];
        assert_eq!(ok(text), pairs(&expected));
        assert_eq!(
            ok("k=a<<b\nh<<A=B\nv\nA=B"),
            pairs(&[("h", "v"), ("k", "a<<b")])
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("a=1\n\noops\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "PLUE_OUTPUT line 3: expected key=value or key<<DELIMITER, got 'oops'"
        );
        let err = parse("a=1\n1bad=2").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PLUE_OUTPUT line 2: invalid output name '1bad'"),
            "{err}"
        );
        let err = parse("x\n=1").unwrap_err();
        assert!(matches!(err, OutputError::Syntax { line: 1, .. }));
        assert!(matches!(
            parse("=1").unwrap_err(),
            OutputError::InvalidKey { line: 1, .. }
        ));
        assert!(matches!(
            parse("a b=1").unwrap_err(),
            OutputError::InvalidKey { .. }
        ));
        let err = parse("a=1\nmsg<<EOF\nno end\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "PLUE_OUTPUT line 2: 'msg<<EOF' is never closed by a line 'EOF'"
        );
        assert!(matches!(
            parse("k<<\nx").unwrap_err(),
            OutputError::EmptyDelimiter { line: 1, .. }
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let many: String = (0..=MAX_OUTPUTS).map(|i| format!("k{i}=v\n")).collect();
        let err = parse(&many).unwrap_err();
        assert!(matches!(err, OutputError::TooManyOutputs { line } if line == MAX_OUTPUTS + 1));
        let repeated: String = (0..MAX_OUTPUTS * 2)
            .map(|i| format!("k{}=v\n", i % MAX_OUTPUTS))
            .collect();
        assert_eq!(parse(&repeated).unwrap().len(), MAX_OUTPUTS);

        let long = format!("k={}", "x".repeat(MAX_OUTPUT_VALUE_BYTES + 1));
        assert!(matches!(
            parse(&long).unwrap_err(),
            OutputError::ValueTooLong { line: 1, .. }
        ));
        let fits = format!("k={}", "x".repeat(MAX_OUTPUT_VALUE_BYTES));
        assert_eq!(parse(&fits).unwrap()["k"].len(), MAX_OUTPUT_VALUE_BYTES);
    }

    #[tokio::test]
    async fn read_handles_missing_large_and_invalid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        assert!(read(&path).await.unwrap().is_empty());

        std::fs::write(&path, "a=1\nb<<X\nmulti\nX\n").unwrap();
        assert_eq!(read(&path).await.unwrap()["b"], "multi");

        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = read(&path).await.unwrap_err();
        assert!(matches!(err, OutputError::FileTooLarge { .. }), "{err}");

        std::fs::write(&path, b"a=1\nb=\xff\n").unwrap();
        assert!(matches!(
            read(&path).await.unwrap_err(),
            OutputError::NotUtf8 { line: 2 }
        ));
    }
}
