//! The Plue engine as a library: everything the `plue` binary, its tests and benchmarks
//! build on.
//!
//! - [`schedule`]: the run/step state machine and DAG rules — pure data and functions.
//! - [`store`]: all state, in SQLite or PostgreSQL (sqlx).
//! - [`dispatch`]: what a queued step carries to its runner (templates rendered).
//! - [`executor`]: starts runs and moves them forward; [`sweeper`]: the engine's timers.
//! - [`internal_api`]: the runner protocol's server side; [`api`]: the public HTTP API;
//!   [`runner_scope`]: what a registration token lets its runners claim.
//! - [`pool`]: the warm pool controller, its local-process and Kubernetes providers and
//!   the pool configuration file.
//! - [`registry`]: repository events → runs (mirrors, evaluation, trigger matching);
//!   [`webhooks`]: the forges' deliveries; [`forge`]: payloads, signatures, statuses;
//!   [`scheduler`]: cron ticks; [`status_reporter`]: commit statuses owed to forges.
//! - [`auth`], [`tokens`], [`vault`]: API tokens and secrets sealed at rest.
//! - [`server`]: wires the above into a running engine; [`launch`]: file → run;
//!   [`web`]: the dashboard (HTML pages at `/`); [`metrics`]: `/metrics`, `/healthz`, `/readyz`.
//!
//! The CLI lives in the binary (`main.rs`, `cli.rs`, `commands/`).

pub mod access;
pub mod annotations;
pub mod api;
pub mod artifacts;
pub mod debug_relay;
pub mod dispatch;
pub use plue_store::events;
pub mod executor;
pub use plue_forge as forge;
pub mod http_error;
pub mod internal_api;
pub mod json_body;
pub mod launch;
pub mod metrics;
pub use plue_pool as pool;
pub mod pool_gauges;
pub mod pricing;
pub mod registry;
pub use plue_pool::scope as runner_scope;
pub mod safe_outputs;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod status_reporter;
pub use plue_store as store;
pub mod sweeper;
pub use plue_vault::tokens;
pub mod transcripts;
pub use plue_vault as vault;
pub mod web;
pub mod webhooks;
