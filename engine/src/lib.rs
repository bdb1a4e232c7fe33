//! The Plue engine as a library: the parts of the `plue` binary that other code (tests,
//! benchmarks, later the server) builds on.
//!
//! - [`schedule`]: the run/step state machine and DAG rules — pure data and functions.
//!
//! Store, executor, runner pool, API, registry and dashboard arrive with the execution-core
//! and triggers issues; the CLI lives in the binary (`main.rs`, `cli.rs`, `commands/`).

pub mod schedule;
