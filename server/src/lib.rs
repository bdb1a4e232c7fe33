//! The engine's servers: everything that answers a request, on top of `plue-core`.
//!
//! - [`api`]: the public HTTP API (OpenAPI); [`web`]: the dashboard (HTML pages at `/`);
//!   [`access`]: who may do what, for both.
//! - [`webhooks`]: the forges' deliveries, verified and handed to the registry.
//! - [`internal_api`]: the runner protocol's server side; [`debug_relay`]: `plue debug`'s
//!   terminal relayed between a user and a runner; [`sweeper`]: the engine's timers.
//! - [`oidc`]: the engine as the OpenID Connect issuer of steps' tokens (`/.well-known`).
//! - [`sign_in`]: people signing in with their forge account or an OpenID Connect provider.
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz` and the request counter; [`pool_gauges`]:
//!   the pools' counts in the metrics' terms.
//! - [`server`]: wires the above into a running engine; [`runner_socket`]: the private Unix
//!   socket `plue run`'s own runners reach it on.
//! - [`http_error`], [`json_body`]: how every handler answers a failure and reads a body;
//!   `percent`: how the links the API and the dashboard build encode what they carry.
//!
//! Invariants: the core never calls up into this crate (Cargo refuses the cycle); every
//! handler decides access through [`access`] before it reads a run, a repository or a
//! secret. The layers below are named by their own crates (`plue_core::executor`,
//! `plue_store::Store`, ...): this crate re-exports none of them.

pub mod access;
pub mod api;
pub mod debug_relay;
pub mod due_wake;
pub mod http_error;
pub mod internal_api;
pub mod json_body;
pub mod oidc;
pub mod ops;
mod percent;
pub mod pool_gauges;
pub mod runner_socket;
pub mod server;
pub mod sign_in;
pub mod sweeper;
#[cfg(test)]
mod testing;
pub mod web;
pub mod webhooks;
