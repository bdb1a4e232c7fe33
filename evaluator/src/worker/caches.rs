//! The `Cache(...)` host type of the `plue` module, and how `Step.bash`, `Step.python` and
//! `Plan` read their `caches=` option.
//!
//! Like `SafeOutputs`: a frozen Rust class whose constructor converts its arguments into
//! plan data at once and checks them ([`crate::caches::check`]), so a bad path fails on the
//! line that wrote it; it compares by value and refuses to be hashed. Validation checks the
//! plan's caches again in the parent.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::convert::{self, Options};
use crate::caches::{check, default_name, Cache};
use crate::plan::StepKind;

/// `Cache(paths=[...], key=[...], restore_prefixes=[], name=None)`: directories a `bash`
/// or `python` step keeps from one run to the next. `paths` are relative to the
/// workspace, or to the step's home when they start with `~/` (`["target",
/// "~/.cargo/registry"]`); never absolute, never `..`; at most 16. `key` names workspace
/// files (`["Cargo.lock"]`, at least one, at most 16): the cache's key is its name and the
/// SHA-256 of these files' paths and contents, so changing one makes a new key. Before the
/// step starts the runner restores the entry of the exact key, else the newest entry whose
/// key starts with one of `restore_prefixes` (tried in order, e.g. `["rust-"]`); after the
/// step succeeds it saves the paths under the exact key when that key missed. `name`
/// (`[a-z0-9_-]`, at most 40 characters, unique among a step's caches) starts every key;
/// without it one is made from the paths. A run restores only entries its own partition or
/// a more trusted one saved (see the guide's Caches page).
#[pyclass(module = "plue", name = "Cache", frozen, immutable_type)]
pub(crate) struct CacheObject {
    pub(crate) cache: Cache,
}

#[pymethods]
impl CacheObject {
    #[new]
    #[pyo3(signature = (**options))]
    fn new(options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        const F: &str = "Cache()";
        let mut options = Options::new(F, options, &[]);
        let paths =
            match options.take("paths")? {
                Some(v) => one_or_list(&v, "Cache(): paths")?,
                None => return Err(PyTypeError::new_err(
                    "Cache(): paths= is required, e.g. paths=[\"target\", \"~/.cargo/registry\"]",
                )),
            };
        let key = match options.take("key")? {
            Some(v) => one_or_list(&v, "Cache(): key")?,
            None => {
                return Err(PyTypeError::new_err(
                    "Cache(): key= is required: the workspace files whose contents make the key, e.g. key=[\"Cargo.lock\"]",
                ))
            }
        };
        let restore_prefixes = options
            .take("restore_prefixes")?
            .map(|v| one_or_list(&v, "Cache(): restore_prefixes"))
            .transpose()?
            .unwrap_or_default();
        let name = convert::optional_string(options.take("name")?, "Cache(): name")?
            .unwrap_or_else(|| default_name(&paths));
        options.finish()?;
        let cache = Cache {
            name,
            paths,
            key,
            restore_prefixes,
        };
        if let Some(problem) = check(std::slice::from_ref(&cache)).into_iter().next() {
            return Err(PyValueError::new_err(format!("{F}: {problem}")));
        }
        Ok(CacheObject { cache })
    }

    /// The cache's name (the one given, or the one made from its paths).
    #[getter]
    fn name(&self) -> &str {
        &self.cache.name
    }

    /// Equal when the data is equal, never by identity.
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        self.cache == other.get().cache
    }

    /// Unhashable: a hash by identity would make `set()` order depend on addresses.
    fn __hash__(&self) -> PyResult<isize> {
        Err(PyTypeError::new_err("unhashable type: 'Cache'"))
    }

    fn __repr__(&self) -> String {
        format!("Cache({:?})", self.cache.name)
    }
}

/// A list of strings, or one string as a list of one.
fn one_or_list(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Ok(vec![convert::string(value, what)?]);
    }
    convert::string_list(value, what)
}

/// `caches=[Cache(...), ...]` of a step or the plan: `None` when not given (a step then
/// takes the plan's); the list checked as a whole (at most 8, names unique). `kind` is
/// the step's, `None` for the plan: only a step that runs a process has caches.
pub(crate) fn from_options(
    options: &mut Options<'_>,
    kind: Option<StepKind>,
) -> PyResult<Option<Vec<Cache>>> {
    let function = options.function();
    let Some(value) = options.take("caches")? else {
        return Ok(None);
    };
    if let Some(kind) = kind {
        if !kind.starts_process() {
            return Err(PyTypeError::new_err(format!(
                "{function}: caches= goes on a {} (or on the Plan, for all of them)",
                StepKind::listed(StepKind::starts_process, "Step.", "or"),
            )));
        }
    }
    let mut caches = Vec::new();
    for (i, item) in convert::sequence(&value, &format!("{function}: caches"))?
        .iter()
        .enumerate()
    {
        let cache = item.cast::<CacheObject>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{function}: caches[{i}] must be made with Cache(paths=[...], key=[...])"
            ))
        })?;
        caches.push(cache.get().cache.clone());
    }
    if let Some(problem) = check(&caches).into_iter().next() {
        return Err(PyValueError::new_err(format!("{function}: {problem}")));
    }
    Ok(Some(caches))
}
