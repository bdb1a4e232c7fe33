//! The claim as SQL: the rule of which step run a runner may take, and the statements that
//! take one — one per backend, each written whole with named parameters, which this table
//! names (every statement here takes its values from [`ClaimFor::values`]):
//!
//! | parameter | from | meaning |
//! |---|---|---|
//! | `:now` | `ClaimFor::now` | the claim's time: a step run ready at or before it may be taken; the attempt's `claimed_at`, an idle runner's `state_since`, a busy runner's claim's `acked_at` |
//! | `:label_sets` | `ClaimFor::label_sets` | the canonical forms of every subset of the runner's labels: `text[]` on PostgreSQL, a JSON array read with `json_each` on SQLite |
//! | `:runner` | `ClaimFor::runner_id` | the claiming runner |
//! | `:forks_only` | `ClaimFor::takes` | true when it takes only steps of a fork's run |
//! | `:default_timeout_ms` | [`DEFAULT_ATTEMPT_TIMEOUT_MS`] | an attempt's time limit when its step names none |
//! | `:step_run` | the claim's row | SQLite only, after its claim: the step run it took |
//!
//! PostgreSQL claims in one statement (a data-modifying `WITH`: pick, mark the runner,
//! claim, insert the attempt); SQLite, which has no data-modifying `WITH`, claims the step
//! run in one statement and then inserts the attempt and marks the runner in the same
//! transaction ([`SQLITE_NEW_ATTEMPT`], [`RUNNER_BUSY`]), its one writer keeping anything
//! from slipping between.
//!
//! Invariant: the rule ([`claimable_by_runner!`]) is written once and every statement that
//! asks who may take what — the claims, a debug session's claim, the two questions a poll
//! asks of ready work — is built around it; a statement's text differs between the
//! backends only where named here: how a set of labels is matched, the row locks, and
//! what SQLite does in separate statements.

use crate::tx::{Arg, NamedSql, Statement};

use super::{ClaimFor, Takes};

/// An attempt's time limit when its step names none (ms).
pub(crate) const DEFAULT_ATTEMPT_TIMEOUT_MS: i64 = 3_600_000;

/// Whether `:label_sets` holds a step run's labels (`step_runs` in scope): the one
/// difference between the backends' rules.
macro_rules! labels_match {
    (postgres) => {
        "labels = ANY(:label_sets)"
    };
    (sqlite) => {
        "labels IN (SELECT value FROM json_each(:label_sets))"
    };
}

/// Whether runner `:runner`'s scope lets it take a step run (`step_runs` in scope): one of
/// its label sets; secrets only to a runner allowed them; fork steps only to a runner
/// accepting forks, and only fork steps when `:forks_only`. Never NULL: a step run's labels
/// and `needs_secrets` are never.
macro_rules! in_scope_of_runner {
    ($backend:ident) => {
        concat!(
            "(",
            $crate::claims::statements::labels_match!($backend),
            "
              AND (NOT needs_secrets
                   OR EXISTS (SELECT 1 FROM runners WHERE id = :runner AND secrets))
              AND (EXISTS (SELECT 1 FROM runners WHERE id = :runner AND accept_forks)
                   OR EXISTS (SELECT 1 FROM runs WHERE runs.id = step_runs.run_id
                              AND runs.secrets_allowed))
              AND NOT (:forks_only AND EXISTS (SELECT 1 FROM runs
                                               WHERE runs.id = step_runs.run_id
                                                 AND runs.secrets_allowed)))"
        )
    };
}

/// Whether runner `:runner` may claim at all (`runners` in scope): it is live and not
/// suspect (a suspect runner proves alive with a heartbeat or a new poll, which clear the
/// mark).
macro_rules! runner_may_claim {
    () => {
        "state IN ('idle', 'busy') AND suspect_since IS NULL"
    };
}

/// Whether runner `:runner` may take a step run (`step_runs` in scope): in its scope
/// ([`in_scope_of_runner!`]) and only while it may claim ([`runner_may_claim!`]). The one
/// statement of the rule.
macro_rules! claimable_by_runner {
    ($backend:ident) => {
        concat!(
            "(",
            $crate::claims::statements::in_scope_of_runner!($backend),
            "
              AND EXISTS (SELECT 1 FROM runners WHERE id = :runner AND ",
            $crate::claims::statements::runner_may_claim!(),
            "))"
        )
    };
}

/// A polling runner's claim marks its runner busy from `:now` (since then if it was
/// idle), only while the runner may claim, holding the runner's row until the claim
/// commits: a runner retired, declared lost or marked suspect after the claim read it
/// keeps its state, and the step stays queued. Inside [`PG_CLAIM_IDLE`] (and a debug
/// session's claim); after the claim on SQLite ([`RUNNER_BUSY`]).
macro_rules! runner_busy {
    () => {
        concat!(
            "UPDATE runners SET state = 'busy',
                 state_since = CASE WHEN state = 'idle' THEN :now ELSE state_since END
             WHERE id = :runner AND ",
            $crate::claims::statements::runner_may_claim!()
        )
    };
}

pub(crate) use {
    claimable_by_runner, in_scope_of_runner, labels_match, runner_busy, runner_may_claim,
};

/// A polling runner's claim on PostgreSQL, one statement: picks the oldest ready step run
/// the runner may take (skipping rows other claims hold), marks the runner busy and, only
/// with that mark, claims the step run and inserts its attempt, acknowledged later by its
/// runner (`acked_at` NULL).
pub(crate) static PG_CLAIM_IDLE: NamedSql = NamedSql::new(concat!(
    "WITH picked AS (
         SELECT id FROM step_runs
         WHERE status = 'queued' AND ready_at <= :now AND ",
    claimable_by_runner!(postgres),
    "
         ORDER BY ready_at, id LIMIT 1
         FOR UPDATE SKIP LOCKED),
     busy AS (",
    runner_busy!(),
    "
         AND EXISTS (SELECT 1 FROM picked)
         RETURNING id),
     claimed AS (
         UPDATE step_runs s SET status = 'claimed', attempts = s.attempts + 1
         FROM picked WHERE s.id = picked.id AND EXISTS (SELECT 1 FROM busy)
         RETURNING s.id, s.run_id, s.step_id, s.attempts, s.action, s.timeout_ms,
                   s.iteration, s.ready_at),
     attempt AS (
         INSERT INTO attempts (step_run_id, number, runner_id, status, claimed_at,
                               timeout_ms, iteration, ready_at, acked_at)
         SELECT id, attempts, :runner, 'claimed', :now,
                COALESCE(timeout_ms, :default_timeout_ms), iteration, ready_at, NULL
         FROM claimed
         RETURNING id)
     SELECT claimed.id, claimed.run_id, claimed.step_id, claimed.attempts, claimed.action,
            attempt.id AS attempt_id
     FROM claimed, attempt"
));

/// A claim of a runner that is busy and stays so (inside its completion's transaction) on
/// PostgreSQL, one statement: no mark to write, but the runner's row held shared until the
/// claim commits, and only while the runner may claim — a retirement or a lost verdict
/// committed after the claim read the runner waits for the claim and then finds its
/// attempt, or commits first and the claim, reading the row again, takes nothing. The
/// attempt is acknowledged as it is made (`acked_at` = `:now`: the runner just completed
/// one).
pub(crate) static PG_CLAIM_BUSY: NamedSql = NamedSql::new(concat!(
    "WITH picked AS (
         SELECT id FROM step_runs
         WHERE status = 'queued' AND ready_at <= :now AND ",
    claimable_by_runner!(postgres),
    "
         ORDER BY ready_at, id LIMIT 1
         FOR UPDATE SKIP LOCKED),
     held AS (
         SELECT id FROM runners WHERE id = :runner AND ",
    runner_may_claim!(),
    "
         FOR SHARE),
     claimed AS (
         UPDATE step_runs s SET status = 'claimed', attempts = s.attempts + 1
         FROM picked WHERE s.id = picked.id AND EXISTS (SELECT 1 FROM held)
         RETURNING s.id, s.run_id, s.step_id, s.attempts, s.action, s.timeout_ms,
                   s.iteration, s.ready_at),
     attempt AS (
         INSERT INTO attempts (step_run_id, number, runner_id, status, claimed_at,
                               timeout_ms, iteration, ready_at, acked_at)
         SELECT id, attempts, :runner, 'claimed', :now,
                COALESCE(timeout_ms, :default_timeout_ms), iteration, ready_at, :now
         FROM claimed
         RETURNING id)
     SELECT claimed.id, claimed.run_id, claimed.step_id, claimed.attempts, claimed.action,
            attempt.id AS attempt_id
     FROM claimed, attempt"
));

/// SQLite's claim: the oldest ready step run the runner may take, moved to `claimed`. Its
/// attempt ([`SQLITE_NEW_ATTEMPT`]) and, for a polling runner, the busy mark
/// ([`RUNNER_BUSY`]) follow in the same transaction.
pub(crate) static SQLITE_CLAIM: NamedSql = NamedSql::new(concat!(
    "UPDATE step_runs SET status = 'claimed', attempts = attempts + 1
     WHERE id = (
         SELECT id FROM step_runs
         WHERE status = 'queued' AND ready_at <= :now AND ",
    claimable_by_runner!(sqlite),
    "
         ORDER BY ready_at, id LIMIT 1)
     RETURNING id, run_id, step_id, attempts, action"
));

/// SQLite: the attempt of the step run `:step_run` its claim took, acknowledged later by
/// a polling runner.
pub(crate) static SQLITE_NEW_ATTEMPT: NamedSql = NamedSql::new(
    "INSERT INTO attempts (step_run_id, number, runner_id, status, claimed_at, timeout_ms,
                           iteration, ready_at, acked_at)
     SELECT id, attempts, :runner, 'claimed', :now, COALESCE(timeout_ms, :default_timeout_ms),
            iteration, ready_at, NULL
     FROM step_runs WHERE id = :step_run
     RETURNING id",
);

/// [`SQLITE_NEW_ATTEMPT`] of a busy runner's claim, acknowledged as it is made.
pub(crate) static SQLITE_NEW_ATTEMPT_ACKED: NamedSql = NamedSql::new(
    "INSERT INTO attempts (step_run_id, number, runner_id, status, claimed_at, timeout_ms,
                           iteration, ready_at, acked_at)
     SELECT id, attempts, :runner, 'claimed', :now, COALESCE(timeout_ms, :default_timeout_ms),
            iteration, ready_at, :now
     FROM step_runs WHERE id = :step_run
     RETURNING id",
);

/// SQLite: a polling runner's busy mark, after its claim ([`runner_busy!`]).
pub(crate) static RUNNER_BUSY: NamedSql = NamedSql::new(runner_busy!());

/// Whether ready work waits that runner `:runner` may not take: a ready step run outside
/// [`claimable_by_runner!`], or a queued debug session (whose labels the poll's own debug
/// claim already matched). 1 or more when so, as a count.
macro_rules! ready_for_others {
    ($backend:ident) => {
        concat!(
            "SELECT (SELECT COUNT(*) FROM (
                         SELECT 1 FROM step_runs
                         WHERE status = 'queued' AND ready_at <= :now AND NOT ",
            claimable_by_runner!($backend),
            "
                         LIMIT 1) AS other)
                    + (SELECT COUNT(*) FROM debug_sessions WHERE status = 'queued')"
        )
    };
}

pub(crate) static PG_READY_FOR_OTHERS: NamedSql = NamedSql::new(ready_for_others!(postgres));
pub(crate) static SQLITE_READY_FOR_OTHERS: NamedSql = NamedSql::new(ready_for_others!(sqlite));

/// Whether ready work waits that runner `:runner` could take were it not suspect or
/// silent: a ready step run in its scope ([`in_scope_of_runner!`]), or any queued debug
/// session. 1 or more when so. What a poll that is no proof of life asks before it answers
/// empty.
macro_rules! ready_in_scope {
    ($backend:ident) => {
        concat!(
            "SELECT (SELECT COUNT(*) FROM (
                         SELECT 1 FROM step_runs
                         WHERE status = 'queued' AND ready_at <= :now AND ",
            in_scope_of_runner!($backend),
            "
                         LIMIT 1) AS mine)
                    + (SELECT COUNT(*) FROM debug_sessions WHERE status = 'queued')"
        )
    };
}

pub(crate) static PG_READY_IN_SCOPE: NamedSql = NamedSql::new(ready_in_scope!(postgres));
pub(crate) static SQLITE_READY_IN_SCOPE: NamedSql = NamedSql::new(ready_in_scope!(sqlite));

impl<'a> ClaimFor<'a> {
    /// `statement` with the claim's values set ([the table](self)); each backend binds those
    /// its text names.
    pub(crate) fn values(&self, statement: Statement<'a>) -> Statement<'a> {
        statement
            .set("now", self.now)
            .set("label_sets", Arg::TextSet(self.label_sets))
            .set("runner", self.runner_id)
            .set("forks_only", self.takes == Takes::ForkStepsOnly)
            .set("default_timeout_ms", DEFAULT_ATTEMPT_TIMEOUT_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement names only parameters of the table, and each backend's copy of one
    /// statement the same ones but where the table says they differ.
    #[test]
    fn the_statements_name_only_the_tables_parameters() {
        let table = [
            "now",
            "label_sets",
            "runner",
            "forks_only",
            "default_timeout_ms",
            "step_run",
        ];
        for statement in [
            &PG_CLAIM_IDLE,
            &PG_CLAIM_BUSY,
            &SQLITE_CLAIM,
            &SQLITE_NEW_ATTEMPT,
            &SQLITE_NEW_ATTEMPT_ACKED,
            &RUNNER_BUSY,
            &PG_READY_FOR_OTHERS,
            &SQLITE_READY_FOR_OTHERS,
            &PG_READY_IN_SCOPE,
            &SQLITE_READY_IN_SCOPE,
        ] {
            for name in statement.names() {
                assert!(table.contains(name), ":{name} in {}", statement.sql());
            }
        }
        let mut pg: Vec<_> = PG_READY_FOR_OTHERS.names().to_vec();
        let mut sqlite: Vec<_> = SQLITE_READY_FOR_OTHERS.names().to_vec();
        pg.sort();
        sqlite.sort();
        assert_eq!(pg, sqlite);
    }
}
