//! Plue's shared vocabulary: the plain data the runner, the store and the engine exchange,
//! below all of them (as `kube-core` is below `kube-client`).
//!
//! - [`protocol`]: the JSON types spoken between the engine and its runners over
//!   `/internal/...` HTTP.
//! - [`budget`]: an `llm` step's token total, and money and counts written for people.
//! - [`handoff`]: hand-off archives' bounds and path rules (the tars are the runner's).
//! - [`partition`]: step caches' trust partitions and trusts (the ladder, what each
//!   reads); the database stores their labels.
//! - [`status`]: where a step run, a run, an attempt, a runner and a provenance statement
//!   are in their lives, and a run's commit status, as enums; the database stores their
//!   lowercase text, and only the store converts.
//! - [`transcript`]: the format of an `llm` attempt's transcript (`transcript.json`).
//! - [`workspace`]: the data directory's `CACHEDIR.TAG` signature and git URLs as shown.
//!
//! Invariant: no IO, no async, no clock — types, their serde forms and pure functions of
//! them. Its dependencies are serde and small pure crates; never an HTTP client, a runtime
//! or a system interface.

pub mod budget;
pub mod handoff;
pub mod mcp;
pub mod partition;
pub mod protocol;
pub mod status;
pub mod transcript;
pub mod workspace;
