//! A [`LogBatch`] on the wire: how a runner writes its lines and how the engine reads them.
//!
//! Written *packed*: what the lines share, once — the first seq (a runner numbers an
//! attempt's lines one by one, so a batch's seqs follow each other), the timestamps and the
//! streams as runs of equal values — then the texts:
//! `{"seq":41,"ts":[[1795552332349,500],[1,12]],"streams":[["stdout",512]],"text":["41",…]}`.
//! A timestamp run holds how far it is from the run before it (the first run: from 0),
//! with wrapping arithmetic. The engine parses each batch while the step that printed it
//! waits for the acknowledgement, and a line of output is usually a few bytes: its seq,
//! stream and timestamp, each parsed again per line, were most of that parse.
//!
//! Read: the packed form, and the form before it, `{"lines":[[seq, stream, text, ts_ms],
//! …]}` (lines as objects too), which earlier runners send; a batch whose seqs do not
//! follow each other is also written that way.
//!
//! Invariants: reading what was written gives back every line, field for field, in order;
//! a packed value whose runs do not cover its texts exactly, whose seqs would pass `u64`,
//! or that mixes the two forms is refused — an error, never lines made up — and its counts
//! are checked before any line is built.

use std::borrow::Borrow;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

use super::{LogBatch, LogLine, Stream, MAX_BATCH_LINES};

impl Serialize for LogBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PackedLines(&self.lines).serialize(serializer)
    }
}

/// Lines (owned, or borrowed: the engine's store writes its log chunks this way too),
/// serialized as a [`LogBatch`] is: packed, or in the lines form when their seqs do not
/// follow each other. A [`LogBatch`] reads either back.
pub struct PackedLines<'a, L>(pub &'a [L]);

impl<L: Borrow<LogLine> + Serialize> Serialize for PackedLines<'_, L> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let lines = self.0;
        let consecutive = lines
            .windows(2)
            .all(|w| w[0].borrow().seq.checked_add(1) == Some(w[1].borrow().seq));
        let Some(first) = lines.first().filter(|_| consecutive) else {
            let mut batch = serializer.serialize_struct("LogBatch", 1)?;
            batch.serialize_field("lines", lines)?;
            return batch.end();
        };
        let mut ts: Vec<(i64, u64)> = Vec::new();
        let mut streams: Vec<(Stream, u64)> = Vec::new();
        // The timestamp of the current run.
        let mut run_ts = 0i64;
        for line in lines.iter().map(Borrow::borrow) {
            match ts.last_mut() {
                Some((_, count)) if line.ts_ms == run_ts => *count += 1,
                _ => {
                    ts.push((line.ts_ms.wrapping_sub(run_ts), 1));
                    run_ts = line.ts_ms;
                }
            }
            match streams.last_mut() {
                Some((stream, count)) if *stream == line.stream => *count += 1,
                _ => streams.push((line.stream, 1)),
            }
        }
        let mut batch = serializer.serialize_struct("LogBatch", 4)?;
        batch.serialize_field("seq", &first.borrow().seq)?;
        batch.serialize_field("ts", &ts)?;
        batch.serialize_field("streams", &streams)?;
        batch.serialize_field("text", &Texts(lines))?;
        batch.end()
    }
}

/// The texts of lines, serialized as an array without collecting them first.
struct Texts<'a, L>(&'a [L]);

impl<L: Borrow<LogLine>> Serialize for Texts<'_, L> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|line| line.borrow().text.as_str()))
    }
}

/// Either form as read, before it is checked. No list is read past [`MAX_BATCH_LINES`]
/// items: a body of empty texts (`"",` is three bytes) would otherwise make a String for
/// every three bytes of it before the batch's size is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireBatch {
    #[serde(default, deserialize_with = "at_most_a_batch")]
    lines: Option<Vec<LogLine>>,
    seq: Option<u64>,
    #[serde(default, deserialize_with = "at_most_a_batch")]
    ts: Option<Vec<(i64, u64)>>,
    #[serde(default, deserialize_with = "at_most_a_batch")]
    streams: Option<Vec<(Stream, u64)>>,
    #[serde(default, deserialize_with = "at_most_a_batch")]
    text: Option<Vec<String>>,
}

/// A list of at most [`MAX_BATCH_LINES`] items; more is an error as soon as it is seen.
fn at_most_a_batch<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct AtMost<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for AtMost<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_BATCH_LINES} items")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH_LINES));
            while let Some(item) = seq.next_element()? {
                if items.len() == MAX_BATCH_LINES {
                    return Err(serde::de::Error::custom(format!(
                        "a log batch holds at most {MAX_BATCH_LINES} lines"
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer
        .deserialize_seq(AtMost(std::marker::PhantomData))
        .map(Some)
}

impl TryFrom<WireBatch> for LogBatch {
    type Error = String;

    fn try_from(wire: WireBatch) -> Result<LogBatch, String> {
        let (seq, ts, streams, text) =
            match wire {
                WireBatch {
                    lines: Some(lines),
                    seq: None,
                    ts: None,
                    streams: None,
                    text: None,
                } => return Ok(LogBatch { lines }),
                WireBatch {
                    lines: None,
                    seq: Some(seq),
                    ts: Some(ts),
                    streams: Some(streams),
                    text: Some(text),
                } => (seq, ts, streams, text),
                _ => return Err(
                    "a log batch has either `lines` or all of `seq`, `ts`, `streams` and `text`"
                        .into(),
                ),
            };
        let count = text.len();
        covers(ts.iter().map(|run| run.1), count, "timestamp")?;
        covers(streams.iter().map(|run| run.1), count, "stream")?;
        if count > 0 && seq.checked_add(count as u64 - 1).is_none() {
            return Err(format!("{count} lines from seq {seq} pass the largest seq"));
        }
        let mut streams = streams
            .into_iter()
            .flat_map(|(stream, n)| std::iter::repeat_n(stream, n as usize));
        let mut texts = text.into_iter();
        let mut lines = Vec::with_capacity(count);
        let mut ts_ms = 0i64;
        for (delta, n) in ts {
            ts_ms = ts_ms.wrapping_add(delta);
            for _ in 0..n {
                let (Some(text), Some(stream)) = (texts.next(), streams.next()) else {
                    unreachable!("both runs cover the texts exactly");
                };
                lines.push(LogLine {
                    seq: seq + lines.len() as u64,
                    stream,
                    text,
                    ts_ms,
                });
            }
        }
        Ok(LogBatch { lines })
    }
}

/// Checks that runs of these counts cover exactly `lines` lines.
fn covers(counts: impl Iterator<Item = u64>, lines: usize, what: &str) -> Result<(), String> {
    let mut total = 0u64;
    for n in counts {
        if n == 0 {
            return Err(format!("an empty {what} run"));
        }
        total = total
            .checked_add(n)
            .ok_or_else(|| format!("the {what} runs overflow"))?;
    }
    if total != lines as u64 {
        return Err(format!(
            "the {what} runs cover {total} lines, the texts {lines}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, stream: Stream, text: &str, ts_ms: i64) -> LogLine {
        LogLine {
            seq,
            stream,
            text: text.into(),
            ts_ms,
        }
    }

    fn round_trip(lines: Vec<LogLine>) -> String {
        let batch = LogBatch { lines };
        let sent = serde_json::to_string(&batch).unwrap();
        assert_eq!(
            serde_json::from_str::<LogBatch>(&sent).unwrap(),
            batch,
            "{sent}"
        );
        sent
    }

    #[test]
    fn a_batch_is_sent_packed_and_read_back_field_for_field() {
        let sent = round_trip(vec![
            line(41, Stream::Stdout, "41", 1_795_552_332_349),
            line(42, Stream::Stdout, "a \"quoted\"\n", 1_795_552_332_349),
            line(43, Stream::Stderr, "", 1_795_552_332_350),
            line(44, Stream::Stdout, "é", 1_795_552_332_350),
        ]);
        assert_eq!(
            sent,
            r#"{"seq":41,"ts":[[1795552332349,2],[1,2]],"streams":[["stdout",2],["stderr",1],["stdout",1]],"text":["41","a \"quoted\"\n","","é"]}"#
        );
    }

    #[test]
    fn clocks_that_go_back_or_are_absurd_round_trip() {
        round_trip(vec![
            line(1, Stream::System, "a", i64::MAX),
            line(2, Stream::System, "b", i64::MIN),
            line(3, Stream::Token, "c", 0),
            line(4, Stream::Usage, "d", -5),
            line(u64::MAX, Stream::Usage, "e", 7),
        ]);
        round_trip(vec![line(u64::MAX, Stream::ToolCall, "last", 1)]);
        round_trip(Vec::new());
    }

    #[test]
    fn seqs_that_do_not_follow_each_other_are_sent_as_lines() {
        let sent = round_trip(vec![
            line(7, Stream::Stderr, "x", 1),
            line(9, Stream::Stderr, "y", 1),
        ]);
        assert_eq!(sent, r#"{"lines":[[7,"stderr","x",1],[9,"stderr","y",1]]}"#);
    }

    #[test]
    fn a_packed_batch_that_does_not_add_up_is_refused() {
        for bad in [
            // Runs short of, or past, the texts.
            r#"{"seq":1,"ts":[[5,1]],"streams":[["stdout",2]],"text":["a","b"]}"#,
            r#"{"seq":1,"ts":[[5,3]],"streams":[["stdout",2]],"text":["a","b"]}"#,
            r#"{"seq":1,"ts":[[5,2]],"streams":[["stdout",1]],"text":["a","b"]}"#,
            // Counts that would wrap, a run of nothing, a huge count for one text.
            r#"{"seq":1,"ts":[[5,18446744073709551615],[1,2]],"streams":[["stdout",1]],"text":["a"]}"#,
            r#"{"seq":1,"ts":[[5,0],[1,1]],"streams":[["stdout",1]],"text":["a"]}"#,
            r#"{"seq":1,"ts":[[5,1]],"streams":[["stdout",4000000000]],"text":["a"]}"#,
            // Seqs past the largest.
            r#"{"seq":18446744073709551615,"ts":[[5,2]],"streams":[["stdout",2]],"text":["a","b"]}"#,
            // Two forms at once, a part missing, an unknown field or stream.
            r#"{"lines":[],"seq":1,"ts":[],"streams":[],"text":[]}"#,
            r#"{"seq":1,"ts":[[5,1]],"text":["a"]}"#,
            r#"{"seq":1,"ts":[[5,1]],"streams":[["stdout",1]],"text":["a"],"more":1}"#,
            r#"{"seq":1,"ts":[[5,1]],"streams":[["nope",1]],"text":["a"]}"#,
            r#"{}"#,
        ] {
            assert!(serde_json::from_str::<LogBatch>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_list_is_read_past_a_batch_of_lines() {
        let texts = |n: usize| vec!["\"\""; n].join(",");
        let packed = |n: usize| {
            format!(
                r#"{{"seq":1,"ts":[[1,{n}]],"streams":[["stdout",{n}]],"text":[{}]}}"#,
                texts(n)
            )
        };
        let full = serde_json::from_str::<LogBatch>(&packed(MAX_BATCH_LINES)).unwrap();
        assert_eq!(full.lines.len(), MAX_BATCH_LINES);
        let error = serde_json::from_str::<LogBatch>(&packed(MAX_BATCH_LINES + 1)).unwrap_err();
        assert!(error.to_string().contains("at most"), "{error}");
        let lines = vec![r#"[1,"stdout","",1]"#; MAX_BATCH_LINES + 1].join(",");
        let old_form = format!(r#"{{"lines":[{lines}]}}"#);
        assert!(serde_json::from_str::<LogBatch>(&old_form).is_err());
        let runs = vec!["[1,1]"; MAX_BATCH_LINES + 1].join(",");
        let many_runs = format!(r#"{{"seq":1,"ts":[{runs}],"streams":[],"text":[]}}"#);
        assert!(serde_json::from_str::<LogBatch>(&many_runs).is_err());
    }
}
