//! Parsed outputs of finished steps, kept per run so that advancing a run costs what the
//! steps it dispatches read, not what the whole run has stored.
//!
//! An advance asks the store only for the outputs of finished steps that some pending step
//! reads ([`crate::dispatch::reads`]: its dependencies and the steps its templates name)
//! and that this cache does not hold yet; each is parsed once per run and engine. Entries
//! are keyed by step run *and iteration*: the outputs one iteration of a step run stored
//! never change (a step run only moves forward within an iteration, and a review loop
//! starts a new one), so an entry is never stale; another replica simply fills its own
//! cache from the store.
//!
//! Bounds: a run stores at most [`MAX_RUN_OUTPUT_BYTES`] of outputs (the step whose outputs
//! would pass it fails, see `rules::step_after`), and the cache holds at most
//! [`CACHE_BYTES`] of output text in all, dropping whole runs (least recently used first)
//! past it. A run leaves the cache when it finishes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use evaluator::plan::Plan;

use super::plan_facts::PlanFacts;
use crate::dispatch;

/// The outputs of one step run, shared with the dispatches that read them.
pub type Outputs = Arc<BTreeMap<String, String>>;

/// Stored outputs (JSON text) parsed; text that does not parse counts as no outputs (the
/// runner API validates what it stores).
pub fn parse(json: &str) -> Outputs {
    Arc::new(serde_json::from_str(json).unwrap_or_default())
}

/// What all the step runs of one run may store as outputs (JSON bytes). Past it, the step
/// whose outputs would pass it fails and its outputs are dropped.
pub const MAX_RUN_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

/// What the cache holds at most, over all runs (output text bytes).
pub const CACHE_BYTES: usize = 2 * MAX_RUN_OUTPUT_BYTES;

/// How many runs the cache keeps (their read sets are as large as their plans).
const MAX_RUNS: usize = 256;

/// Parsed outputs and read sets of recent runs.
pub struct OutputCache {
    runs: HashMap<i64, RunOutputs>,
    bytes: usize,
    /// The most `bytes` may be ([`CACHE_BYTES`]).
    limit: usize,
    /// Bumped on every use; a run's `used` says when it was last used.
    clock: u64,
}

impl Default for OutputCache {
    fn default() -> OutputCache {
        OutputCache::with_limit(CACHE_BYTES)
    }
}

#[derive(Default)]
struct RunOutputs {
    /// For each step (by index), the steps whose results its dispatch reads.
    reads: Option<Arc<Vec<Vec<usize>>>>,
    /// For each step (by index), the steps it depends on ([`schedule::dependency_indices`]).
    deps: Option<Arc<Vec<Vec<usize>>>>,
    /// What the executor looks up in the plan ([`PlanFacts`]).
    facts: Option<Arc<PlanFacts>>,
    /// By (step run, iteration).
    by_step_run: HashMap<(i64, i64), Outputs>,
    bytes: usize,
    used: u64,
}

impl OutputCache {
    /// A cache holding at most `limit` bytes of output text.
    pub fn with_limit(limit: usize) -> OutputCache {
        OutputCache {
            runs: HashMap::new(),
            bytes: 0,
            limit,
            clock: 0,
        }
    }

    /// What each step of run `run_id` (whose plan is `plan`) reads, computed once per run.
    pub fn reads(&mut self, run_id: i64, plan: &Plan) -> Arc<Vec<Vec<usize>>> {
        let run = self.run(run_id);
        run.reads
            .get_or_insert_with(|| Arc::new(dispatch::reads(plan)))
            .clone()
    }

    /// What each step of run `run_id` depends on, by index, computed once per run (the
    /// rules look it up on every advance).
    pub fn deps(&mut self, run_id: i64, plan: &Plan) -> Arc<Vec<Vec<usize>>> {
        let run = self.run(run_id);
        run.deps
            .get_or_insert_with(|| Arc::new(crate::schedule::dependency_indices(plan)))
            .clone()
    }

    /// The `PlanFacts` of run `run_id` (whose plan is `plan`), worked out once per run.
    pub fn facts(&mut self, run_id: i64, plan: &Plan) -> Arc<PlanFacts> {
        let run = self.run(run_id);
        run.facts
            .get_or_insert_with(|| Arc::new(PlanFacts::of(plan)))
            .clone()
    }

    /// The outputs of `step_run` (step run id, iteration), if held.
    pub fn get(&mut self, run_id: i64, step_run: (i64, i64)) -> Option<Outputs> {
        self.run(run_id).by_step_run.get(&step_run).cloned()
    }

    /// Parses and keeps the stored outputs (`json`) of a finished step run (id, iteration);
    /// returns them. Text that does not parse counts as no outputs (the runner API
    /// validates what it stores).
    pub fn insert(&mut self, run_id: i64, step_run_id: (i64, i64), json: &str) -> Outputs {
        let outputs = parse(json);
        self.keep(run_id, step_run_id, outputs.clone());
        outputs
    }

    /// Keeps the outputs of a finished step run (id, iteration), parsed with [`parse`]:
    /// only outputs the store has committed (an entry is never stale).
    pub fn keep(&mut self, run_id: i64, step_run_id: (i64, i64), outputs: Outputs) {
        let size: usize = outputs.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.make_room(run_id, size);
        let run = self.run(run_id);
        if let Some(old) = run.by_step_run.insert(step_run_id, outputs.clone()) {
            let old_size: usize = old.iter().map(|(k, v)| k.len() + v.len()).sum();
            run.bytes -= old_size;
            self.bytes -= old_size;
        }
        let run = self.run(run_id);
        run.bytes += size;
        self.bytes += size;
    }

    /// Drops what is kept for `run_id` (it finished).
    pub fn forget(&mut self, run_id: i64) {
        if let Some(run) = self.runs.remove(&run_id) {
            self.bytes -= run.bytes;
        }
    }

    /// Output text bytes held, over all runs.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn run(&mut self, run_id: i64) -> &mut RunOutputs {
        self.clock += 1;
        if self.runs.len() >= MAX_RUNS && !self.runs.contains_key(&run_id) {
            // Runs another replica finished never reach `forget` here.
            let oldest = self.runs.iter().min_by_key(|(_, run)| run.used);
            if let Some(id) = oldest.map(|(id, _)| *id) {
                self.forget(id);
            }
        }
        let run = self.runs.entry(run_id).or_default();
        run.used = self.clock;
        run
    }

    /// Drops the least recently used other runs until `size` more bytes fit.
    fn make_room(&mut self, run_id: i64, size: usize) {
        while self.bytes + size > self.limit {
            let oldest = self
                .runs
                .iter()
                .filter(|(id, run)| **id != run_id && run.bytes > 0)
                .min_by_key(|(_, run)| run.used)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => self.forget(id),
                // Only this run is left: it is within its own bound, below the cache's.
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_parsed_once_and_shared() {
        let mut cache = OutputCache::default();
        assert!(cache.get(1, (10, 1)).is_none());
        let first = cache.insert(1, (10, 1), r#"{"k":"value"}"#);
        assert_eq!(first["k"], "value");
        assert!(Arc::ptr_eq(&first, &cache.get(1, (10, 1)).unwrap()));
        assert!(
            cache.get(1, (10, 2)).is_none(),
            "another iteration of a review loop stored other outputs"
        );
        assert_eq!(cache.bytes(), 6);
        assert!(cache.insert(1, (11, 1), "not json").is_empty());
        cache.forget(1);
        assert_eq!(cache.bytes(), 0);
        assert!(cache.get(1, (10, 1)).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_bound_dropping_the_oldest_runs() {
        let mut cache = OutputCache::with_limit(400);
        let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(99));
        for run in 0..5 {
            cache.insert(run, (run * 10, 1), &big);
            cache.insert(run, (run * 10 + 1, 1), &big);
            assert!(cache.bytes() <= 400, "{}", cache.bytes());
        }
        // The newest runs are kept, the oldest dropped.
        assert!(cache.get(4, (40, 1)).is_some() && cache.get(3, (31, 1)).is_some());
        assert!(cache.get(0, (0, 1)).is_none() && cache.get(2, (20, 1)).is_none());
        assert_eq!(cache.bytes(), 400);
        for run in 0..2 * MAX_RUNS as i64 {
            cache.get(100 + run, (1, 1));
        }
        assert_eq!(cache.runs.len(), MAX_RUNS);
        assert_eq!(cache.bytes(), 0);
    }
}
