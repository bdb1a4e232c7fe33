//! The `lines` value of a `log_chunks` row: how a chunk's lines are written and read.
//!
//! Written as one JSON object that says once what the lines share — the first seq (every
//! seq only when they are not consecutive), the timestamps and the streams as runs of
//! equal values — and then the texts:
//! `{"seq":41,"ts":[[1795552332349,500],[1,12]],"streams":[["stdout",512]],"text":["41",…]}`.
//! A timestamp run holds how far it is from the run before it (the first run: from 0).
//! A line of output is usually a few bytes, and its seq, stream and timestamp written out
//! in full (`[41,"stdout","41",1795552332349]`, the first form) were most of the bytes
//! SQLite wrote, to its write-ahead log and again at every checkpoint.
//!
//! Both forms are read: chunks written before (`[[seq, stream, text, ts], …]`, also what
//! the migration from a row per line wrote) read as they always did.
//!
//! Invariants: [`decode`] of [`encode`] gives back every line, in order, field for field,
//! whatever the values (timestamps are differenced with wrapping arithmetic, so even a
//! runner's absurd clock round-trips); a value that does not add up (runs that do not
//! cover the texts exactly, a seq past `u64`) is an error, never lines made up.

use anyhow::{bail, Context};
use runner::protocol::LogLine;
use serde::{Deserialize, Serialize};

/// A line as a chunk gives it back: `(seq, stream, text, ts)`.
pub(super) type DecodedLine = (u64, String, String, i64);

/// The written form, borrowing the lines.
#[derive(Serialize)]
struct Packed<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seqs: Option<Vec<u64>>,
    ts: Vec<(i64, usize)>,
    streams: Vec<(&'static str, usize)>,
    text: Vec<&'a str>,
}

/// The read form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unpacked {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    seqs: Option<Vec<u64>>,
    ts: Vec<(i64, usize)>,
    streams: Vec<(String, usize)>,
    text: Vec<String>,
}

/// The `lines` value of a chunk of `lines` (in seq order, at least one).
pub(super) fn encode(lines: &[&LogLine]) -> serde_json::Result<String> {
    let consecutive = lines
        .windows(2)
        .all(|w| w[0].seq.checked_add(1) == Some(w[1].seq));
    let mut ts: Vec<(i64, usize)> = Vec::new();
    let mut streams: Vec<(&'static str, usize)> = Vec::new();
    // The timestamp of the current run (the previous run's, when a new one starts).
    let mut run_ts = 0i64;
    for line in lines {
        match ts.last_mut() {
            Some((_, count)) if line.ts_ms == run_ts => *count += 1,
            _ => {
                ts.push((line.ts_ms.wrapping_sub(run_ts), 1));
                run_ts = line.ts_ms;
            }
        }
        let stream = line.stream.as_str();
        match streams.last_mut() {
            Some((name, count)) if *name == stream => *count += 1,
            _ => streams.push((stream, 1)),
        }
    }
    serde_json::to_string(&Packed {
        seq: consecutive.then(|| lines.first().map_or(0, |l| l.seq)),
        seqs: (!consecutive).then(|| lines.iter().map(|l| l.seq).collect()),
        ts,
        streams,
        text: lines.iter().map(|l| l.text.as_str()).collect(),
    })
}

/// The lines of a chunk's `lines` value, in either form.
pub(super) fn decode(value: &str) -> anyhow::Result<Vec<DecodedLine>> {
    if value.trim_start().starts_with('[') {
        // The first form: an array of `[seq, stream, text, ts]`.
        return serde_json::from_str(value).context("a chunk of the first form");
    }
    let packed: Unpacked = serde_json::from_str(value).context("a packed chunk")?;
    let count = packed.text.len();
    let seqs: Vec<u64> = match (packed.seq, packed.seqs) {
        (Some(first), None) => (0..count as u64)
            .map(|i| first.checked_add(i).context("a seq past the largest"))
            .collect::<anyhow::Result<_>>()?,
        (None, Some(seqs)) if seqs.len() == count => seqs,
        (None, Some(seqs)) => bail!("{} seqs for {count} lines", seqs.len()),
        _ => bail!("a packed chunk has either `seq` or `seqs`"),
    };
    let ts = expand(packed.ts.into_iter(), count, "timestamps")?;
    let streams = expand(packed.streams.into_iter(), count, "streams")?;
    let mut lines = Vec::with_capacity(count);
    let mut at = 0i64;
    let mut ts = ts.into_iter();
    let mut streams = streams.into_iter();
    for (seq, text) in seqs.into_iter().zip(packed.text) {
        let (Some((delta, first_of_run)), Some((stream, _))) = (ts.next(), streams.next()) else {
            unreachable!("both expanded to one value per line");
        };
        if first_of_run {
            at = at.wrapping_add(delta);
        }
        lines.push((seq, stream, text, at));
    }
    Ok(lines)
}

/// Runs of `(value, count)` as one `(value, first of its run)` per line; the counts must
/// cover exactly `lines` lines.
fn expand<T: Clone>(
    runs: impl Iterator<Item = (T, usize)>,
    lines: usize,
    what: &str,
) -> anyhow::Result<Vec<(T, bool)>> {
    let mut out = Vec::with_capacity(lines);
    for (value, count) in runs {
        // `lines - out.len()`: never below zero, where `out.len() + count` could wrap.
        if count == 0 || count > lines - out.len() {
            bail!("the runs of {what} do not add up to the chunk's {lines} lines");
        }
        out.push((value.clone(), true));
        out.extend(std::iter::repeat_n((value, false), count - 1));
    }
    if out.len() != lines {
        bail!("the runs of {what} do not add up to the chunk's {lines} lines");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner::protocol::Stream;

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
