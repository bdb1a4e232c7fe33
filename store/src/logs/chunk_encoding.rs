//! The `lines` value of a `log_chunks` row: how a chunk's lines are written and read.
//!
//! Written as the runner protocol writes a log batch ([`PackedLines`]): once what the lines
//! share — the first seq, the timestamps and the streams as runs of equal values — and then
//! the texts: `{"seq":41,"ts":[[1795552332349,500],[1,12]],"streams":[["stdout",512]],
//! "text":["41",…]}`; lines whose seqs do not follow each other in the batch's lines form.
//! Read back by the protocol's own [`LogBatch`] reader, which reads both. A line of output
//! is usually a few bytes, and its seq, stream and timestamp written out in full
//! (`[41,"stdout","41",1795552332349]`, the first form) were most of the bytes SQLite
//! wrote, to its write-ahead log and again at every checkpoint.
//!
//! Chunks of the first form (`[[seq, stream, text, ts], …]`, also what the migration from
//! a row per line wrote) read as they always did.
//!
//! Invariants: [`decode`] of [`encode`] gives back every line, in order, field for field,
//! whatever the values (timestamps are differenced with wrapping arithmetic, so even a
//! runner's absurd clock round-trips); a value that does not add up (runs that do not
//! cover the texts exactly, a seq past `u64`) is an error, never lines made up. Being the
//! protocol's form, it is read for as long as the engine reads runners' earlier batches.

use anyhow::Context;
use plue_types::protocol::{LogBatch, LogLine, PackedLines};

/// A line as a chunk gives it back: `(seq, stream, text, ts)`.
pub(super) type DecodedLine = (u64, String, String, i64);

/// The `lines` value of a chunk of `lines` (in seq order, at least one).
pub(super) fn encode(lines: &[&LogLine]) -> serde_json::Result<String> {
    serde_json::to_string(&PackedLines(lines))
}

/// The lines of a chunk's `lines` value, in either form.
pub(super) fn decode(value: &str) -> anyhow::Result<Vec<DecodedLine>> {
    if value.trim_start().starts_with('[') {
        // The first form: an array of `[seq, stream, text, ts]`.
        return serde_json::from_str(value).context("a chunk of the first form");
    }
    let batch: LogBatch = serde_json::from_str(value).context("a packed chunk")?;
    Ok(batch
        .lines
        .into_iter()
        .map(|line| {
            (
                line.seq,
                line.stream.as_str().to_owned(),
                line.text,
                line.ts_ms,
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plue_types::protocol::Stream;

    fn line(seq: u64, stream: Stream, text: &str, ts_ms: i64) -> LogLine {
        LogLine {
            seq,
            stream,
            text: text.to_string(),
            ts_ms,
        }
    }

    fn round_trip(lines: &[LogLine]) -> Vec<DecodedLine> {
        let refs: Vec<&LogLine> = lines.iter().collect();
        decode(&encode(&refs).unwrap()).unwrap()
    }

    fn as_decoded(lines: &[LogLine]) -> Vec<DecodedLine> {
        lines
            .iter()
            .map(|l| {
                (
                    l.seq,
                    l.stream.as_str().to_string(),
                    l.text.clone(),
                    l.ts_ms,
                )
            })
            .collect()
    }

    #[test]
    fn every_field_of_every_line_comes_back() {
        let lines = [
            line(7, Stream::Stdout, "a", 1_795_552_332_349),
            line(
                8,
                Stream::Stdout,
                "b \"quoted\" \\ and ünïcode",
                1_795_552_332_349,
            ),
            line(9, Stream::Stderr, "", 1_795_552_332_350),
            line(
                10,
                Stream::Stdout,
                "\u{1b}[31mred\u{1b}[0m",
                1_795_552_332_349,
            ),
            line(11, Stream::System, "tab\there", 1_795_552_332_349),
        ];
        assert_eq!(round_trip(&lines), as_decoded(&lines));
    }

    #[test]
    fn gaps_in_the_seqs_and_absurd_clocks_round_trip() {
        let lines = [
            line(1, Stream::Stdout, "x", i64::MAX),
            line(5, Stream::Token, "y", i64::MIN),
            line(u64::MAX, Stream::Usage, "z", 0),
        ];
        assert_eq!(round_trip(&lines), as_decoded(&lines));
    }

    #[test]
    fn what_lines_share_is_written_once() {
        let lines: Vec<LogLine> = (1..=500)
            .map(|seq| line(seq, Stream::Stdout, &seq.to_string(), 1_795_552_332_349))
            .collect();
        let refs: Vec<&LogLine> = lines.iter().collect();
        let packed = encode(&refs).unwrap();
        let text_bytes: usize = lines.iter().map(|l| l.text.len()).sum();
        // Each text with its quotes and comma, and a few dozen bytes for everything else.
        assert!(
            packed.len() < text_bytes + 3 * lines.len() + 100,
            "{packed}"
        );
        assert_eq!(decode(&packed).unwrap(), as_decoded(&lines));
    }

    #[test]
    fn the_first_form_still_reads() {
        let first = r#"[[3,"stdout","first",7],[4,"stderr","quote \" and \\",8]]"#;
        assert_eq!(
            decode(first).unwrap(),
            [
                (3, "stdout".to_string(), "first".to_string(), 7),
                (4, "stderr".to_string(), "quote \" and \\".to_string(), 8),
            ]
        );
    }

    #[test]
    fn a_value_that_does_not_add_up_is_refused() {
        for bad in [
            r#"{"seq":1,"ts":[[5,2]],"streams":[["stdout",1]],"text":["a"]}"#,
            r#"{"seq":1,"ts":[[5,1]],"streams":[["stdout",2]],"text":["a"]}"#,
            r#"{"seq":1,"ts":[[5,0],[1,1]],"streams":[["stdout",1]],"text":["a"]}"#,
            r#"{"seqs":[1,2],"ts":[[5,1]],"streams":[["stdout",1]],"text":["a"]}"#,
            r#"{"ts":[[5,1]],"streams":[["stdout",1]],"text":["a"]}"#,
            r#"{"seq":1,"seqs":[1],"ts":[[5,1]],"streams":[["stdout",1]],"text":["a"]}"#,
            r#"{"seq":18446744073709551615,"ts":[[5,2]],"streams":[["stdout",2]],"text":["a","b"]}"#,
            r#"{"seq":1,"ts":[[5,1]],"streams":[["stdout",1]],"text":["a"],"extra":1}"#,
            // A count that would wrap the running total (found by review: it panicked).
            r#"{"seq":1,"ts":[[5,1],[1,18446744073709551615]],"streams":[["stdout",1]],"text":["a"]}"#,
            r#"{"seq":1,"ts":[[5,1]],"streams":[["stdout",1],["stderr",18446744073709551615]],"text":["a"]}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
