//! The runner agent (not built yet): protocol types between engine and runner, workspace
//! checkout, and the `bash`, `python` and `llm` step executors.
//!
//! Architecture invariant: the runner never touches the database; it speaks only the
//! engine's `/internal/...` HTTP API. This crate is an empty shell until the execution-core
//! issue lands; it exists now so the dependency direction `engine → runner → prompts` is
//! fixed from the start.
