//! "Did you mean" suggestions under one budget per plan.
//!
//! [`Budget`] is what validating one plan may still spend — suggestions, candidate
//! comparisons and edit-distance cells, each capped for the whole plan rather than per
//! check, and wall-clock time — and is passed through every check. The edit distance
//! ([`bounded_distance`]) computes only the band it could show and stops past it, so one
//! suggestion costs at most [`MAX_CANDIDATES`] x `(2 * 23 + 1) * 64` cells and a plan at
//! most [`MAX_CELLS`], whatever it holds.

use std::time::{Duration, Instant};

/// Longest name a suggestion is computed for; longer names get none (the edit distance
/// is quadratic in the length).
pub const MAX_SUGGESTED_LEN: usize = 64;
/// Most candidates compared for one name.
const MAX_CANDIDATES: usize = 1000;
/// Most suggestions computed for one plan: as many as there are diagnostics to show.
pub const MAX_SUGGESTIONS: usize = 50;
/// Most candidate comparisons for one plan, all suggestions together.
pub const MAX_COMPARISONS: usize = 20_000;
/// Most edit-distance cells computed for one plan, all suggestions together (one cell is
/// a few instructions: this is a millisecond or two).
pub const MAX_CELLS: usize = 1_000_000;

/// What validating one plan may still spend: "did you mean" suggestions (their number,
/// candidate comparisons and edit-distance cells, each capped per plan, not per check)
/// and wall-clock time. One per plan, passed through every check; once a cap is reached
/// no further suggestion is computed (the messages stay, without the hint), and once the
/// deadline has passed every check stops and validation answers with one line.
#[derive(Debug)]
pub struct Budget {
    deadline: Option<(Instant, Duration)>,
    expired: bool,
    /// The work done so far.
    pub spent: Work,
}

/// Work counters of a [`Budget`], deterministic for a plan (tests and benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Suggestions computed.
    pub suggestions: usize,
    /// Candidates compared.
    pub comparisons: usize,
    /// Edit-distance cells computed.
    pub cells: usize,
}

impl Budget {
    /// A budget with no deadline (`plue check`, tests).
    pub fn unlimited_time() -> Budget {
        Budget {
            deadline: None,
            expired: false,
            spent: Work::default(),
        }
    }

    /// A budget whose time ends `bound` from now.
    pub fn within(bound: Duration) -> Budget {
        Budget::until(Instant::now() + bound, bound)
    }

    /// A budget whose time ends at `deadline`; `bound` is what the message says.
    pub fn until(deadline: Instant, bound: Duration) -> Budget {
        Budget {
            deadline: Some((deadline, bound)),
            expired: false,
            spent: Work::default(),
        }
    }

    /// Whether the deadline has passed (and stays so once it has). Checked by every
    /// validation loop at each item; a clock read is a few tens of nanoseconds.
    pub fn expired(&mut self) -> bool {
        if !self.expired {
            if let Some((deadline, _)) = self.deadline {
                self.expired = Instant::now() >= deadline;
            }
        }
        self.expired
    }

    /// The one line validation answers with once [`Budget::expired`].
    pub fn expired_message(&self) -> String {
        match self.deadline {
            Some((_, bound)) => {
                format!("validating the plan took longer than {bound:?} and was stopped")
            }
            None => "validating the plan was stopped".to_string(),
        }
    }

    /// The closest candidate to `wrong`, if one is close enough and the budget allows:
    /// names longer than [`MAX_SUGGESTED_LEN`] are neither looked up nor offered, and
    /// nothing is computed past the plan's caps or deadline.
    pub fn suggestion<'a>(
        &mut self,
        wrong: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        if wrong.len() > MAX_SUGGESTED_LEN
            || self.spent.suggestions >= MAX_SUGGESTIONS
            || self.expired()
        {
            return None;
        }
        self.spent.suggestions += 1;
        let wrong: Chars = Chars::new(wrong)?;
        let mut best: Option<(usize, &'a str)> = None;
        for candidate in candidates.into_iter().take(MAX_CANDIDATES) {
            if self.spent.comparisons >= MAX_COMPARISONS || self.spent.cells >= MAX_CELLS {
                // The plan's share is spent: the message goes out without a hint.
                break;
            }
            self.spent.comparisons += 1;
            if candidate.len() > MAX_SUGGESTED_LEN {
                continue;
            }
            // What may be shown, and only strictly better than the best so far (the first
            // of equally close candidates wins).
            let shown = (candidate.len().max(wrong.bytes) / 3).max(1) + 1;
            let max = best.map_or(shown, |(d, _)| shown.min(d.saturating_sub(1)));
            let Some(other) = Chars::new(candidate) else {
                continue;
            };
            let cells_left = MAX_CELLS - self.spent.cells;
            let found = bounded_distance(
                wrong.get(),
                other.get(),
                max,
                cells_left,
                &mut self.spent.cells,
            );
            if let Some(distance) = found.filter(|&d| d > 0) {
                best = Some((distance, candidate));
            }
        }
        best.map(|(_, c)| c)
    }

    /// `" (did you mean 'x'?)"` or the empty string.
    pub fn did_you_mean<'a>(
        &mut self,
        wrong: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> String {
        self.suggestion(wrong, candidates)
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default()
    }
}

/// Renders "did you mean 'x'?" for the closest candidate, if one is close enough, with a
/// budget of its own: for short fixed lists (keyword names, tools, actions). Validation
/// of a plan uses the plan's [`Budget`] instead.
pub fn suggestion<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    Budget::unlimited_time().suggestion(wrong, candidates)
}

/// `" (did you mean 'x'?)"` or the empty string (see [`suggestion`]).
pub fn did_you_mean<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    Budget::unlimited_time().did_you_mean(wrong, candidates)
}

/// The characters of a name of at most [`MAX_SUGGESTED_LEN`] bytes, on the stack.
struct Chars {
    chars: [char; MAX_SUGGESTED_LEN],
    len: usize,
    bytes: usize,
}

impl Chars {
    fn new(text: &str) -> Option<Chars> {
        if text.len() > MAX_SUGGESTED_LEN {
            return None;
        }
        let mut chars = ['\0'; MAX_SUGGESTED_LEN];
        let mut len = 0;
        for c in text.chars() {
            chars[len] = c;
            len += 1;
        }
        Some(Chars {
            chars,
            len,
            bytes: text.len(),
        })
    }

    fn get(&self) -> &[char] {
        &self.chars[..self.len]
    }
}

/// The optimal-string-alignment distance between `a` and `b` (insertions, deletions,
/// substitutions and swaps of neighbours, each 1) if it is at most `max`, else `None`.
///
/// Hand-written rather than `strsim` (which has no cutoff, allocates a full matrix and a
/// map per call) or `rapidfuzz` (a large crate, last released in 2023, that cannot say how
/// much it computed): names here are at most [`MAX_SUGGESTED_LEN`] characters, so the
/// rows live on the stack, and the plan's [`Budget`] needs the exact number of cells.
/// Only cells within `max` of the diagonal are computed (a farther one is more than `max`
/// already), a length difference above `max` computes nothing, and a row whose every
/// cell is above `max` stops the computation. At most `cells_left` cells are computed
/// (then `None`); each one computed is added to `cells`.
fn bounded_distance(
    a: &[char],
    b: &[char],
    max: usize,
    cells_left: usize,
    cells: &mut usize,
) -> Option<usize> {
    const FAR: usize = usize::MAX / 2;
    let (n, m) = (a.len(), b.len());
    if n.abs_diff(m) > max {
        return None;
    }
    if n == 0 || m == 0 {
        return Some(n.max(m));
    }
    // Rows i-2, i-1 and i of the matrix; cell j of a row is the distance between the
    // first i characters of `a` and the first j of `b`.
    let mut before = [FAR; MAX_SUGGESTED_LEN + 1];
    let mut above = [FAR; MAX_SUGGESTED_LEN + 1];
    let mut row = [FAR; MAX_SUGGESTED_LEN + 1];
    for (j, cell) in above.iter_mut().enumerate().take(m.min(max) + 1) {
        *cell = j;
    }
    let mut spent = 0;
    for i in 1..=n {
        let low = i.saturating_sub(max).max(1);
        let high = (i + max).min(m);
        if spent + (high + 1 - low) > cells_left {
            *cells += spent;
            return None;
        }
        spent += high + 1 - low;
        // The cells left of and right of the band read as too far.
        row[low - 1] = if low == 1 && i <= max { i } else { FAR };
        if high < m {
            row[high + 1] = FAR;
        }
        let mut smallest = row[low - 1];
        for j in low..=high {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (above[j] + 1).min(row[j - 1] + 1).min(above[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
            smallest = smallest.min(d);
        }
        if smallest > max {
            *cells += spent;
            return None;
        }
        std::mem::swap(&mut before, &mut above);
        std::mem::swap(&mut above, &mut row);
    }
    *cells += spent;
    (above[m] <= max).then_some(above[m])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_have_bounded_cost() {
        let long = "x".repeat(520_000);
        let mut budget = Budget::unlimited_time();
        assert_eq!(budget.suggestion(&long, ["x", "xx"]), None);
        assert_eq!(budget.suggestion("xx", [long.as_str()]), None);
        assert_eq!(budget.spent.cells, 0);
    }

    fn distance(a: &str, b: &str, max: usize) -> (Option<usize>, usize) {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut cells = 0;
        let found = bounded_distance(&a, &b, max, usize::MAX, &mut cells);
        (found, cells)
    }

    #[test]
    fn the_edit_distance_stops_past_what_it_would_show() {
        assert_eq!(distance("kitten", "sitting", 5).0, Some(3));
        assert_eq!(distance("kitten", "sitting", 2).0, None);
        assert_eq!(
            distance("retires", "retries", 3).0,
            Some(1),
            "a swap is one edit"
        );
        assert_eq!(distance("", "abc", 3).0, Some(3));
        assert_eq!(distance("ab", "ab", 1).0, Some(0));
        assert_eq!(distance("äb", "ab", 1).0, Some(1), "characters, not bytes");
        // A length difference past the threshold computes nothing.
        assert_eq!(distance(&"a".repeat(64), "a", 5), (None, 0));
        // Only the band around the diagonal: at most 2 * max + 1 cells a row.
        let (a, b) = ("a".repeat(63) + "b", "a".repeat(63) + "c");
        let (found, cells) = distance(&a, &b, 3);
        assert_eq!(found, Some(1));
        assert!(cells <= 7 * 64, "{cells}");
        // Names that differ from the start stop after a few rows.
        let (found, cells) = distance(&"a".repeat(64), &"b".repeat(64), 3);
        assert_eq!(found, None);
        assert!(cells <= 4 * 7, "{cells}");
        // And never past the cells left.
        let mut cells = 0;
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        assert_eq!(bounded_distance(&a, &b, 3, 100, &mut cells), None);
        assert!(cells <= 100, "{cells}");
    }

    // regression: "did you mean" ran once per bad name of a plan, each over every
    // candidate with a full matrix (10.7 s of CPU for one 1 MB file).
    #[test]
    fn one_budget_caps_every_suggestion_of_a_plan() {
        let names: Vec<String> = (0..1000).map(|i| format!("{:x<60}{i:04}", "d")).collect();
        let mut budget = Budget::unlimited_time();
        let mut hints = 0;
        for i in 0..10_000 {
            let wrong = format!("{:x<60}{i:04}", "n");
            if budget
                .suggestion(&wrong, names.iter().map(String::as_str))
                .is_some()
            {
                hints += 1;
            }
        }
        let spent = budget.spent;
        assert!(spent.suggestions <= MAX_SUGGESTIONS, "{spent:?}");
        assert!(spent.comparisons <= MAX_COMPARISONS, "{spent:?}");
        assert!(spent.cells <= MAX_CELLS, "{spent:?}");
        assert!(hints > 0, "the first names still get a hint");
    }

    #[test]
    fn the_closest_candidate_wins_and_the_first_of_equals() {
        let mut budget = Budget::unlimited_time();
        assert_eq!(
            budget.suggestion("buld", ["build", "bulk", "buildx"]),
            Some("build")
        );
        assert_eq!(budget.suggestion("tst", ["test", "tast"]), Some("test"));
        assert_eq!(budget.suggestion("same", ["same"]), None, "not itself");
    }

    #[test]
    fn an_expired_budget_suggests_nothing() {
        let mut budget = Budget::until(Instant::now(), Duration::from_secs(2));
        assert!(budget.expired());
        assert_eq!(budget.suggestion("tset", ["test"]), None);
        assert_eq!(budget.spent, Work::default());
        assert_eq!(
            budget.expired_message(),
            "validating the plan took longer than 2s and was stopped"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let names = ["depends_on", "timeout", "retries"];
        assert_eq!(suggestion("depend_on", names), Some("depends_on"));
        assert_eq!(suggestion("retires", names), Some("retries"));
        assert_eq!(suggestion("colour", names), None);
        assert_eq!(
            did_you_mean("tset", ["test", "build"]),
            " (did you mean 'test'?)"
        );
    }
}
