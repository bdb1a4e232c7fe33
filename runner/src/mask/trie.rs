//! The masker's patterns as one Aho-Corasick automaton whose states say how far into a
//! pattern the text read so far may be: fed a byte at a time, it finds every pattern ending
//! at each byte (within one piece or across pieces: its state is carried from one piece to
//! the next) and, at the end of what was read, the longest tail that a pattern may still
//! grow from. The `aho-corasick` crate finds matches faster, but does not say how deep its
//! states are; this one serves the streaming maskers ([`super::StreamMasker`],
//! [`super::AcrossLines`]).
//!
//! Invariants: ASCII case is ignored (patterns and text are folded byte by byte, which
//! keeps every byte where it was); a step costs amortised O(1) (a failure link is followed
//! at most as often as the depth grew) and the automaton's size is linear in the
//! patterns' total length (sparse transitions; only the start state's are a table).

/// A state: an index into the per-state tables, 0 the start (nothing matched).
pub(super) type State = u32;

/// Shortest part of a pattern's start shown before its end arrives, at most: a line whose
/// tail is this much of a pattern's start (or half of a short pattern) is held back
/// ([`Trie::held`]).
pub(super) const SHOWN_AT_MOST: usize = 3;

/// How long a tail of a pattern `len` bytes long must be to be held back: half of it, but
/// no more than [`SHOWN_AT_MOST`] + 1 and no less than 1.
pub(super) fn hold_at(len: usize) -> usize {
    (len / 2).clamp(1, SHOWN_AT_MOST + 1)
}

#[derive(Debug)]
pub(super) struct Trie {
    /// The start state's transition for every (folded) byte.
    start: Box<[State; 256]>,
    /// Each state's trie children, `(byte, state)` sorted by byte:
    /// `edges[first[s]..first[s + 1]]`.
    edges: Vec<(u8, State)>,
    first: Vec<u32>,
    /// Each state's failure link: the state of its longest proper suffix in the trie.
    fail: Vec<State>,
    /// The length of the longest pattern ending at each state (0: none).
    done: Vec<u32>,
    /// The length of the longest proper prefix of a pattern that a text ending at this
    /// state ends with (0: none).
    open: Vec<u32>,
    /// The same, counting only prefixes of at least [`hold_at`] the pattern's length.
    held: Vec<u32>,
    /// The longest pattern's length.
    longest: usize,
}

impl Trie {
    /// The automaton of `patterns` (none empty).
    pub(super) fn new(patterns: &[String]) -> Trie {
        // The trie, node 0 the root: children, depth, whether a pattern ends there, and the
        // shortest pattern through it.
        let mut children: Vec<Vec<(u8, State)>> = vec![Vec::new()];
        let mut depth: Vec<u32> = vec![0];
        let mut ends: Vec<bool> = vec![false];
        let mut shortest: Vec<usize> = vec![usize::MAX];
        for pattern in patterns {
            let mut node = 0usize;
            for &byte in pattern.as_bytes() {
                let byte = byte.to_ascii_lowercase();
                shortest[node] = shortest[node].min(pattern.len());
                node = match children[node].iter().find(|(b, _)| *b == byte) {
                    Some(&(_, child)) => child as usize,
                    None => {
                        let child = children.len();
                        children.push(Vec::new());
                        depth.push(depth[node] + 1);
                        ends.push(false);
                        shortest.push(usize::MAX);
                        children[node].push((byte, child as State));
                        child
                    }
                };
            }
            shortest[node] = shortest[node].min(pattern.len());
            ends[node] = true;
        }
        let states = children.len();
        let mut edges = Vec::with_capacity(states);
        let mut first = Vec::with_capacity(states + 1);
        for kids in &mut children {
            kids.sort_unstable();
            first.push(edges.len() as u32);
            edges.extend_from_slice(kids);
        }
        first.push(edges.len() as u32);
        let mut trie = Trie {
            start: Box::new([0; 256]),
            edges,
            first,
            fail: vec![0; states],
            done: vec![0; states],
            open: vec![0; states],
            held: vec![0; states],
            longest: patterns.iter().map(String::len).max().unwrap_or(0),
        };
        for i in trie.first[0]..trie.first[1] {
            let (byte, child) = trie.edges[i as usize];
            trie.start[byte as usize] = child;
        }
        // Breadth first, so a state's failure link (shallower) is done before it.
        let mut queue = std::collections::VecDeque::from([0 as State]);
        while let Some(state) = queue.pop_front() {
            let s = state as usize;
            if s != 0 {
                let fail = trie.fail[s] as usize;
                // The shortest pattern strictly longer than this state's text through it.
                let below = trie
                    .children(state)
                    .iter()
                    .map(|&(_, c)| shortest[c as usize])
                    .min();
                let d = depth[s];
                trie.done[s] = if ends[s] { d } else { trie.done[fail] };
                trie.open[s] = if below.is_some() { d } else { trie.open[fail] };
                trie.held[s] = match below {
                    Some(len) if d as usize >= hold_at(len) => d,
                    _ => trie.held[fail],
                };
            }
            for i in trie.first[s]..trie.first[s + 1] {
                let (byte, child) = trie.edges[i as usize];
                trie.fail[child as usize] = match state {
                    0 => 0,
                    _ => trie.step(trie.fail[s], byte),
                };
                queue.push_back(child);
            }
        }
        trie
    }

    fn children(&self, state: State) -> &[(u8, State)] {
        let s = state as usize;
        &self.edges[self.first[s] as usize..self.first[s + 1] as usize]
    }

    /// The state after `state` reads `byte`.
    pub(super) fn step(&self, mut state: State, byte: u8) -> State {
        let byte = byte.to_ascii_lowercase();
        loop {
            if state == 0 {
                return self.start[byte as usize];
            }
            let kids = self.children(state);
            if let Ok(at) = kids.binary_search_by_key(&byte, |&(b, _)| b) {
                return kids[at].1;
            }
            state = self.fail[state as usize];
        }
    }

    /// The state after reading `text` from the start.
    pub(super) fn read(&self, text: &[u8]) -> State {
        text.iter().fold(0, |state, &byte| self.step(state, byte))
    }

    /// The length of the longest pattern that ends where the text read ends (0: none).
    pub(super) fn done(&self, state: State) -> usize {
        self.done[state as usize] as usize
    }

    /// The length of the longest tail of the text read that is a proper prefix of a
    /// pattern: what may still become one (0: none).
    pub(super) fn open(&self, state: State) -> usize {
        self.open[state as usize] as usize
    }

    /// [`Trie::open`], counting only tails of at least [`hold_at`] their pattern's length.
    pub(super) fn held(&self, state: State) -> usize {
        self.held[state as usize] as usize
    }

    /// The longest pattern's length in bytes.
    pub(super) fn longest(&self) -> usize {
        self.longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(patterns: &[&str]) -> Trie {
        Trie::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    /// Every state's answers against a plain search of the text read so far.
    fn agrees_with_a_plain_search(patterns: &[&str], text: &str) {
        let t = trie(patterns);
        let lower = text.to_ascii_lowercase();
        let mut state = 0;
        for (i, &byte) in text.as_bytes().iter().enumerate() {
            state = t.step(state, byte);
            let read = &lower.as_bytes()[..=i];
            let done = patterns
                .iter()
                .filter(|p| read.ends_with(p.as_bytes()))
                .map(|p| p.len())
                .max()
                .unwrap_or(0);
            let proper = |min: &dyn Fn(usize) -> usize| {
                patterns
                    .iter()
                    .flat_map(|p| {
                        (min(p.len())..p.len())
                            .filter(|&k| read.ends_with(&p.as_bytes()[..k]))
                            .collect::<Vec<_>>()
                    })
                    .max()
                    .unwrap_or(0)
            };
            assert_eq!(t.done(state), done, "{text:?} at {i}");
            assert_eq!(t.open(state), proper(&|_| 1), "{text:?} at {i}");
            assert_eq!(t.held(state), proper(&hold_at), "{text:?} at {i}");
        }
    }

    #[test]
    fn states_know_what_ends_and_what_may_still_become_a_pattern() {
        agrees_with_a_plain_search(&["hunter2"], "xhunthunter2huNTer2 hunt");
        agrees_with_a_plain_search(&["abab", "babc", "ab"], "abababcababcxbab");
        agrees_with_a_plain_search(&["aaaa", "aaaaaaaa"], "aaaaaaaaaaaaabaaa");
        agrees_with_a_plain_search(&["abcd", "bcdefghi", "cd"], "abcdefghi abcdefgh");
        agrees_with_a_plain_search(&["пароль"], "ключ пароль пар");
    }

    #[test]
    fn hold_thresholds_reveal_less_than_half_and_at_most_three_bytes() {
        for len in 2..40 {
            let shown = hold_at(len) - 1;
            assert!(shown <= SHOWN_AT_MOST && 2 * shown < len, "{len}");
        }
    }
}
