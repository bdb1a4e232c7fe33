//! The words of a notification: `<replica> q=<queued> s c=<run>,<run>...` (the replica's
//! id in hex; `q`, `s` (a sweep) and `c` only when there is something to say; more words
//! may follow, which a reader skips). Small by construction: one payload lists at most
//! [`MAX_CANCELS`] runs, so it stays far below PostgreSQL's 8000-byte limit, and a
//! batch with more becomes several payloads.

use crate::events::Hint;

/// Run ids one payload lists at most (each at most 20 characters and a comma).
pub(super) const MAX_CANCELS: usize = 256;

/// Hints gathered to be said in one notification.
#[derive(Debug, Default)]
pub(super) struct Batch {
    queued: usize,
    sweep: bool,
    cancels: Vec<i64>,
}

impl Batch {
    pub(super) fn add(&mut self, hint: Hint) {
        match hint {
            Hint::Queued(n) => self.queued = self.queued.saturating_add(n),
            Hint::Sweep => self.sweep = true,
            Hint::Cancel { run_id } => {
                if !self.cancels.contains(&run_id) {
                    self.cancels.push(run_id);
                }
            }
        }
    }

    /// The payloads saying the batch: one, unless it cancels more than [`MAX_CANCELS`]
    /// runs. Nothing for an empty batch.
    pub(super) fn payloads(&self, replica: u64) -> Vec<String> {
        let mut payloads = Vec::new();
        let mut cancels = self.cancels.chunks(MAX_CANCELS);
        let mut first = cancels.next();
        if self.queued > 0 || self.sweep || first.is_some() {
            loop {
                let mut text = format!("{replica:016x}");
                if self.queued > 0 && payloads.is_empty() {
                    text.push_str(&format!(" q={}", self.queued));
                }
                if self.sweep && payloads.is_empty() {
                    text.push_str(" s");
                }
                if let Some(runs) = first {
                    let runs: Vec<String> = runs.iter().map(i64::to_string).collect();
                    text.push_str(&format!(" c={}", runs.join(",")));
                }
                payloads.push(text);
                first = cancels.next();
                if first.is_none() {
                    break;
                }
            }
        }
        payloads
    }
}

/// A notification as read.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Heard {
    pub(super) replica: u64,
    pub(super) hints: Vec<Hint>,
}

impl Heard {
    /// `None` when `payload` does not start with a replica id or a word it knows is
    /// malformed.
    pub(super) fn parse(payload: &str) -> Option<Heard> {
        let mut words = payload.split(' ');
        let replica = u64::from_str_radix(words.next()?, 16).ok()?;
        let mut hints = Vec::new();
        for word in words {
            if word == "s" {
                hints.push(Hint::Sweep);
            } else if let Some(n) = word.strip_prefix("q=") {
                hints.push(Hint::Queued(n.parse().ok()?));
            } else if let Some(runs) = word.strip_prefix("c=") {
                for run in runs.split(',') {
                    hints.push(Hint::Cancel {
                        run_id: run.parse().ok()?,
                    });
                }
            }
        }
        Some(Heard { replica, hints })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_adds_its_queueings_and_lists_each_cancel_once() {
        let mut batch = Batch::default();
        assert!(batch.payloads(7).is_empty(), "nothing to say");
        batch.add(Hint::Queued(2));
        batch.add(Hint::Cancel { run_id: 41 });
        batch.add(Hint::Queued(3));
        batch.add(Hint::Cancel { run_id: 41 });
        batch.add(Hint::Cancel { run_id: 42 });
        batch.add(Hint::Sweep);
        batch.add(Hint::Sweep);
        let payloads = batch.payloads(0xab);
        assert_eq!(payloads, vec!["00000000000000ab q=5 s c=41,42"]);
        let heard = Heard::parse(&payloads[0]).unwrap();
        assert_eq!(
            heard,
            Heard {
                replica: 0xab,
                hints: vec![
                    Hint::Queued(5),
                    Hint::Sweep,
                    Hint::Cancel { run_id: 41 },
                    Hint::Cancel { run_id: 42 }
                ],
            }
        );
    }

    #[test]
    fn many_cancels_make_several_small_payloads_with_the_queueing_said_once() {
        let mut batch = Batch::default();
        batch.add(Hint::Queued(1));
        for run_id in 0..(2 * MAX_CANCELS as i64 + 1) {
            batch.add(Hint::Cancel {
                run_id: i64::MAX - run_id,
            });
        }
        let payloads = batch.payloads(u64::MAX);
        assert_eq!(payloads.len(), 3);
        assert!(
            payloads.iter().all(|p| p.len() < 8000),
            "PostgreSQL's limit"
        );
        let hints: Vec<Hint> = payloads
            .iter()
            .flat_map(|p| Heard::parse(p).unwrap().hints)
            .collect();
        assert_eq!(hints.len(), 1 + 2 * MAX_CANCELS + 1);
        assert_eq!(hints.iter().filter(|h| **h == Hint::Queued(1)).count(), 1);
    }

    #[test]
    fn unknown_words_are_skipped_and_malformed_ones_refused() {
        let heard = Heard::parse("ff q=1 later=thing").unwrap();
        assert_eq!(heard.hints, vec![Hint::Queued(1)]);
        assert_eq!(Heard::parse("ff").unwrap().hints, vec![]);
        for bad in ["", "zz q=1", "ff q=x", "ff c=1,,2", "ff q=-1"] {
            assert!(Heard::parse(bad).is_none(), "{bad:?}");
        }
    }
}
