//! The evaluator: turns a `.plue.py` file into a validated, deterministic [`Plan`].
//!
//! - [`plan`], [`caches`], [`id_tokens`], [`bounds`], [`concurrency`], [`validate`], [`loops`], [`template`], [`glob`], [`text`], [`mermaid`], [`context`], [`diagnostic`], [`limits`], [`result`], [`inputs`]: the pure
//!   core — plain data and functions, no Python, no IO.
//! - [`pool`]: the warm pool of sandboxed worker processes, and the only way the rest of
//!   Plue evaluates a file ([`EvaluatorPool::evaluate`]).
//! - [`worker`]: the code that runs *inside* a worker process (pyo3, the sandbox).
//! - [`protocol`]: the frames between the two.
//!
//! The evaluator knows nothing about sqlx, kube or axum. `pool`, `worker` and `protocol` are
//! the `sandbox` feature (on by default): without it the crate is the pure core alone, and
//! links no Python.

// Without the sandbox, the links above to its modules have nothing to point at.
#![cfg_attr(not(feature = "sandbox"), allow(rustdoc::broken_intra_doc_links))]

pub mod bounds;
pub mod caches;
pub mod concurrency;
pub mod context;
pub mod diagnostic;
pub mod glob;
pub mod id_tokens;
pub mod inputs;
pub mod limits;
pub mod loops;
pub mod mcp;
pub mod mermaid;
pub mod modules;
pub mod network;
pub mod plan;
#[cfg(feature = "sandbox")]
pub mod pool;
#[cfg(feature = "sandbox")]
pub mod protocol;
pub mod result;
pub mod safe_outputs;
pub mod summon;
pub mod template;
pub mod text;
pub mod validate;
pub mod when_expr;
#[cfg(feature = "sandbox")]
pub mod worker;

pub use context::{EvalContext, Event, PullRequest};
pub use diagnostic::Diagnostic;
pub use limits::Limits;
pub use plan::{Plan, SourceMap};
#[cfg(feature = "sandbox")]
pub use pool::{EvalError, EvaluatedPlan, EvaluatorPool, PoolConfig, WorkerCommand};
