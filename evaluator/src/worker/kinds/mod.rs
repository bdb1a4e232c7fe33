//! Each step kind's part of the `.plue.py` surface: how `Step.<kind>(id, first, **options)`
//! turns its own argument and options into the plan's [`crate::plan::Action`]. One module
//! per kind; the options every kind takes (`depends_on`, `timeout`, …) are
//! `host::build_step`'s, and the `#[staticmethod]` that names each constructor stays in
//! `host.rs` (pyo3 wants one `#[pymethods]` block per class).
//!
//! `plue __docs` reads these files with `host.rs`: each `options.take("name")` here is a
//! keyword option of the kind's constructor in the generated reference.

pub(super) mod approval;
pub(super) mod bash;
pub(super) mod llm;
pub(super) mod python;
