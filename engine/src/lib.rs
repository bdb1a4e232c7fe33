//! The Plue engine as a library: everything the `plue` binary, its tests and benchmarks
//! build on, under one set of paths.
//!
//! The layers, bottom up (each a crate; Cargo keeps the arrows one-way):
//! - `plue-store` ([`store`], [`events`]), `plue-vault` ([`vault`], [`tokens`]),
//!   `plue-forge` ([`forge`]): state, secrets and the forges' formats.
//! - `plue-pool` ([`pool`], [`runner_scope`]): the warm pools and their providers.
//! - `plue-core`: runs moved forward ([`executor`], [`dispatch`], [`schedule`]), events
//!   turned into runs ([`registry`], [`launch`], [`scheduler`]), [`safe_outputs`],
//!   [`artifacts`] and [`metrics`].
//! - `plue-server`: [`api`], [`web`], [`webhooks`], [`internal_api`], [`ops`] and
//!   [`server`], which wires them into a running engine.
//!
//! The CLI lives in the binary (`main.rs`, `cli.rs`, `commands/`).

pub use plue_core::{
    annotations, artifacts, dispatch, engine_secrets, events, executor, forge, launch, metrics,
    pool, pricing, registry, runner_scope, safe_outputs, schedule, scheduler, status_reporter,
    store, tokens, transcripts, vault,
};
pub use plue_server::{
    access, api, debug_relay, http_error, internal_api, json_body, ops, pool_gauges, runner_socket,
    server, sign_in, sweeper, web, webhooks,
};
