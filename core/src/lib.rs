//! The engine core: what happens to a run between its trigger and its last step, with no
//! HTTP in it.
//!
//! - [`schedule`]: the run/step state machine and DAG rules — pure data and functions.
//! - [`dispatch`]: what a queued step carries to its runner (templates rendered).
//! - [`executor`]: starts runs and moves them forward; [`launch`]: file → run;
//!   [`engine_secrets`]: the engine's own secrets and the repositories each reaches.
//! - [`registry`]: repository events → runs (mirrors, evaluation, trigger matching);
//!   [`scheduler`]: cron ticks; [`status_reporter`]: commit statuses owed to forges.
//! - [`safe_outputs`]: an agent's proposals judged and applied to its repository;
//!   [`outbound_wall`]: a run's wall, which every text sent to a forge or kept for readers
//!   passes (`plue_outbound`).
//! - [`artifacts`], [`transcripts`], [`annotations`]: what steps leave behind.
//! - [`pricing`]: model prices; [`metrics`]: the counters every layer records into.
//! - [`id_tokens`]: the OpenID Connect tokens the engine signs for steps, and its keys;
//!   [`forge_roles`]: people's repository roles learnt from their forge permissions.
//!
//! Invariants: nothing here serves or parses HTTP requests (the servers live in
//! `plue-server`, above this crate); the only way into the store is [`plue_store`]; metrics
//! are recorded through [`metrics::record`] and encoded by [`metrics::encode`], never served
//! from here. The layers below are named by their own crates (`plue_store::Store`,
//! `plue_forge::status`, ...): this crate re-exports none of them.

pub mod annotations;
pub mod artifacts;
pub mod attempts;
pub mod caches;
pub mod dispatch;
pub mod engine_secrets;
pub mod executor;
pub mod forge_roles;
pub mod id_tokens;
pub mod launch;
pub mod metrics;
pub mod outbound_wall;
pub mod pricing;
pub mod registry;
pub mod safe_outputs;
pub mod schedule;
pub mod scheduler;
pub mod status_reporter;
pub mod transcripts;
