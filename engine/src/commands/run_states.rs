//! `plue run`'s copy of its run's step states, kept current by re-reading only the step
//! runs that may have moved: those the engine says it moved ([`Events::watch_steps`]) and
//! those the copy holds as claimed, running or waiting. A 10,000-step run re-read whole
//! every 50 ms cost the engine more with every step the run had (the read holds SQLite's
//! one connection for tens of milliseconds).
//!
//! Invariants:
//! - the watch is registered before the first whole read, so no move is missed between;
//! - a step run the copy holds as pending or queued changes only by an advance, a start or
//!   a completion, each of which tells the watch; the claimed, running and waiting ones
//!   (few: at most one a runner, and the approvals) are re-read every time, so a change
//!   nobody announces (a claim, an approval decided, a runner lost) is still seen;
//! - rows come back in plan order, as [`Store::step_states`] gives them.

use std::collections::{BTreeSet, HashMap};

use plue_store::events::Events;
use plue_store::{StepRunRow, Store};
use plue_types::status::StepStatus;
use tokio::sync::mpsc::UnboundedReceiver;

pub(crate) struct RunStates {
    run_id: i64,
    steps: Vec<StepRunRow>,
    /// Step run id → index in `steps`.
    index: HashMap<i64, usize>,
    watch: UnboundedReceiver<Vec<i64>>,
}

impl RunStates {
    /// Watches run `run_id`, then reads every step of it.
    pub(crate) async fn read(
        events: &Events,
        store: &Store,
        run_id: i64,
    ) -> anyhow::Result<RunStates> {
        let watch = events.watch_steps(run_id);
        let mut states = RunStates {
            run_id,
            steps: Vec::new(),
            index: HashMap::new(),
            watch,
        };
        states.read_all(store).await?;
        Ok(states)
    }

    /// Every step, in plan order, as last read.
    pub(crate) fn all(&self) -> &[StepRunRow] {
        &self.steps
    }

    /// Reads every step again (after missed events) and returns them all.
    pub(crate) async fn read_all(&mut self, store: &Store) -> anyhow::Result<Vec<StepRunRow>> {
        while self.watch.try_recv().is_ok() {}
        self.steps = store.step_states(self.run_id).await?;
        self.index = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        Ok(self.steps.clone())
    }

    /// Re-reads the steps that may have moved since the last read and returns them as read
    /// now, in plan order (unchanged ones among them too).
    pub(crate) async fn read_moved(&mut self, store: &Store) -> anyhow::Result<Vec<StepRunRow>> {
        let mut ids: BTreeSet<i64> = self
            .steps
            .iter()
            .filter(|s| {
                matches!(
                    s.status,
                    StepStatus::Claimed | StepStatus::Running | StepStatus::Waiting
                )
            })
            .map(|s| s.id)
            .collect();
        while let Ok(moved) = self.watch.try_recv() {
            ids.extend(moved);
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.into_iter().collect();
        let rows = store.step_states_of(self.run_id, &ids).await?;
        for row in &rows {
            if let Some(&i) = self.index.get(&row.id) {
                self.steps[i] = row.clone();
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use evaluator::plan::{Plan, Step};
    use plue_store::events::Event;
    use plue_store::testing::Sql;

    use super::*;

    /// A stored run of `n` independent pending steps: its store (and the directory it
    /// lives in), its id and its step runs' ids in plan order.
    async fn run_of(n: usize) -> (Store, Option<tempfile::TempDir>, i64, Vec<i64>) {
        let (store, dir) = plue_store::testing::sqlite().await;
        let steps = (0..n)
            .map(|i| Step::bash(format!("s{i}"), "true"))
            .collect();
        let plan = Plan::new("p", steps);
        let json = serde_json::to_string(&plan).unwrap();
        let run_id = store
            .create_run(&plue_store::testing::local_run(&plan, &json), 1)
            .await
            .unwrap()
            .id;
        let ids = store
            .step_states(run_id)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        (store, dir, run_id, ids)
    }

    /// Changes a step run's status behind everyone's back.
    async fn set_status(store: &Store, id: i64, status: &str) {
        Sql::new("UPDATE step_runs SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(store)
            .await;
    }

    #[tokio::test]
    async fn only_what_moved_and_what_is_active_is_read_again() {
        let (store, _dir, run_id, ids) = run_of(5).await;
        let events = Events::default();
        let mut states = RunStates::read(&events, &store, run_id).await.unwrap();
        assert_eq!(states.all().len(), 5);
        assert!(
            states.read_moved(&store).await.unwrap().is_empty(),
            "nothing moved"
        );

        // A move nobody announced is not read; an announced one is.
        set_status(&store, ids[3], "skipped").await;
        set_status(&store, ids[1], "running").await;
        events.steps_moved(run_id, &[ids[1]]);
        events.steps_moved(run_id + 1, &[ids[3]]);
        events.send(Event::Step { run_id });
        let read: Vec<(i64, String)> = states
            .read_moved(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.status.to_string()))
            .collect();
        assert_eq!(read, vec![(ids[1], "running".to_string())]);
        assert_eq!(states.all()[1].status, StepStatus::Running);
        assert_eq!(
            states.all()[3].status,
            StepStatus::Pending,
            "not announced: not read"
        );

        // A running step is read again every time, announced or not, until it is final.
        set_status(&store, ids[1], "succeeded").await;
        assert_eq!(states.read_moved(&store).await.unwrap().len(), 1);
        assert_eq!(states.all()[1].status, StepStatus::Succeeded);
        assert!(
            states.read_moved(&store).await.unwrap().is_empty(),
            "final: not again"
        );

        // Ids of another run are never read through this run's copy.
        events.steps_moved(run_id, &[ids[0], i64::MAX]);
        let read = states.read_moved(&store).await.unwrap();
        assert_eq!(read.iter().map(|s| s.id).collect::<Vec<_>>(), vec![ids[0]]);

        // A whole read sees everything, announced or not.
        let all = states.read_all(&store).await.unwrap();
        assert_eq!(all[3].status, StepStatus::Skipped);
        assert_eq!(states.all()[3].status, StepStatus::Skipped);
    }

    #[tokio::test]
    async fn more_moves_than_one_statement_takes_are_read_in_plan_order() {
        let (store, _dir, run_id, ids) = run_of(600).await;
        let events = Events::default();
        let mut states = RunStates::read(&events, &store, run_id).await.unwrap();
        let mut moved: Vec<i64> = ids.iter().rev().copied().collect();
        moved.push(ids[7]);
        events.steps_moved(run_id, &moved);
        let read = states.read_moved(&store).await.unwrap();
        assert_eq!(read.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    }
}
