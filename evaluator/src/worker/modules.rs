//! `use(...)` inside the worker: the host function, and the `Module` and `ModuleFunction`
//! host types workflow code holds instead of any Python object of a used module's own.
//!
//! The worker cannot fetch (it has no network and no filesystem): `use` finds the pinned
//! commit (given, or from the lock file's entries the parent passed), and either evaluates
//! the source the parent supplied for it (`load_module` in `sandbox.py`, under the same
//! checks as a workflow file) or records the module as needed and fails the evaluation,
//! which then answers [`crate::protocol::Frame::NeedModules`] whatever the file did with
//! the exception. A call of a module function goes through `call_function` in
//! `sandbox.py`: parameters checked against the declared types, the result checked to be
//! steps naming only secrets the caller passed and declaring no `id_tokens`. The state is
//! the evaluation's own (one forked child per evaluation).

use std::cell::RefCell;
use std::collections::BTreeMap;

use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyTuple};

use super::host::StepObject;
use crate::diagnostic::did_you_mean;
use crate::modules::{
    check_commit, check_path, check_ref, check_repository, spelling, ModuleRequest, ModulesIn,
    LOCK_FILE, MAX_MODULES,
};

/// (repository, path, commit).
type Key = (String, String, String);

#[derive(Default)]
struct State {
    modules: ModulesIn,
    needed: Vec<ModuleRequest>,
    /// Loaded modules: their label and exported functions by name.
    loaded: BTreeMap<Key, (String, BTreeMap<String, Py<PyAny>>)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// The bootstrap's `load_module(label, filename, source)` and
/// `call_function(label, name, function, args, kwargs)`.
static LOAD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CALL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(crate) fn set_bootstrap(py: Python<'_>, bootstrap: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = LOAD.set(py, bootstrap.getattr("load_module")?.unbind());
    let _ = CALL.set(py, bootstrap.getattr("call_function")?.unbind());
    Ok(())
}

/// Starts an evaluation with what the parent gave it.
pub(crate) fn begin(modules: ModulesIn) {
    STATE.with(|s| {
        *s.borrow_mut() = State {
            modules,
            ..State::default()
        }
    });
}

/// The modules the evaluation met and was not given.
pub(crate) fn take_needed() -> Vec<ModuleRequest> {
    STATE.with(|s| std::mem::take(&mut s.borrow_mut().needed))
}

fn text(value: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    value
        .extract::<String>()
        .map_err(|_| PyTypeError::new_err(format!("use(): {what} must be a str")))
}

/// `use(repository, path, commit=None, ref=None)`: a module of another repository,
/// pinned by a full commit or by a tag or branch recorded in `.plue/lock.json`
/// (`plue lock`). Returns a module whose functions build steps.
#[pyfunction]
#[pyo3(name = "use", signature = (repository, path, *, commit=None, r#ref=None))]
fn use_module(
    py: Python<'_>,
    repository: &Bound<'_, PyAny>,
    path: &Bound<'_, PyAny>,
    commit: Option<&Bound<'_, PyAny>>,
    r#ref: Option<&Bound<'_, PyAny>>,
) -> PyResult<ModuleObject> {
    let repository = text(repository, "the repository")?;
    let path = text(path, "the path")?;
    let commit = commit.map(|c| text(c, "commit")).transpose()?;
    let git_ref = r#ref.map(|r| text(r, "ref")).transpose()?;
    let spelled = spelling(&repository, &path, commit.as_deref(), git_ref.as_deref());
    let refuse = |e: String| PyValueError::new_err(format!("{spelled}: {e}"));
    check_repository(&repository).map_err(refuse)?;
    check_path(&path).map_err(refuse)?;
    let (commit, resolve_refs, locked) = STATE.with(|s| {
        let s = s.borrow();
        let locked = git_ref.as_deref().and_then(|r| {
            s.modules
                .lock
                .iter()
                .find(|e| e.repository == repository && e.path == path && e.git_ref == r)
                .map(|e| e.commit.clone())
        });
        (commit.clone(), s.modules.resolve_refs, locked)
    });
    let commit = match (commit, &git_ref) {
        (Some(_), Some(_)) => return Err(refuse("give commit= or ref=, not both".into())),
        (None, None) => {
            return Err(refuse(format!(
                "unpinned: pin it with commit=\"<40 hex digits>\", or with ref=\"<tag>\" \
                 recorded in {LOCK_FILE} by 'plue lock'"
            )))
        }
        (Some(commit), None) => {
            check_commit(&commit).map_err(refuse)?;
            commit
        }
        (None, Some(git_ref)) => {
            check_ref(git_ref).map_err(refuse)?;
            match locked {
                Some(commit) => commit,
                None if resolve_refs => {
                    return Err(need(ModuleRequest {
                        repository,
                        path,
                        commit: None,
                        git_ref: Some(git_ref.clone()),
                    }))
                }
                None => {
                    return Err(refuse(format!(
                        "not in {LOCK_FILE} — run 'plue lock' to pin it"
                    )))
                }
            }
        }
    };
    let key = (repository.clone(), path.clone(), commit.clone());
    if let Some(module) = loaded(&key) {
        return Ok(module);
    }
    let source = STATE.with(|s| {
        s.borrow()
            .modules
            .sources
            .iter()
            .find(|m| m.repository == key.0 && m.path == key.1 && m.commit == key.2)
            .map(|m| m.source.clone())
    });
    let Some(source) = source else {
        return Err(need(ModuleRequest {
            repository,
            path,
            commit: Some(commit),
            git_ref,
        }));
    };
    let label = format!("{repository}/{path}@{}", &commit[..12]);
    let filename = format!("<module {repository}/{path}>");
    let load = LOAD
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("the module loader is not installed"))?;
    let exported = load.bind(py).call1((&label, filename, source))?;
    let exported = exported.cast::<PyDict>()?;
    let mut functions = BTreeMap::new();
    for (name, function) in exported.iter() {
        functions.insert(name.extract::<String>()?, function.unbind());
    }
    STATE.with(|s| {
        s.borrow_mut()
            .loaded
            .insert(key.clone(), (label.clone(), functions))
    });
    Ok(loaded(&key).expect("just loaded"))
}

/// Records a module to fetch and returns the error that ends this round of evaluation.
fn need(request: ModuleRequest) -> PyErr {
    let spelled = spelling(
        &request.repository,
        &request.path,
        request.commit.as_deref(),
        request.git_ref.as_deref(),
    );
    let too_many = STATE.with(|s| {
        let mut s = s.borrow_mut();
        if !s.needed.contains(&request) {
            s.needed.push(request);
        }
        s.modules.sources.len() + s.needed.len() > MAX_MODULES
    });
    if too_many {
        return PyValueError::new_err(format!(
            "{spelled}: a workflow may use at most {MAX_MODULES} modules"
        ));
    }
    PyRuntimeError::new_err(format!("{spelled}: the module is not fetched yet"))
}

fn loaded(key: &Key) -> Option<ModuleObject> {
    STATE.with(|s| {
        s.borrow().loaded.get(key).map(|(label, functions)| {
            Python::attach(|py| ModuleObject {
                label: label.clone(),
                functions: functions
                    .iter()
                    .map(|(name, f)| (name.clone(), f.clone_ref(py)))
                    .collect(),
            })
        })
    })
}

/// `use(repository, path, commit=None, ref=None)`: a module of another repository, what
/// `use` returns. `steps = use("acme/plue-steps", "rust.plue.py", commit="<40 hex>")` pins
/// it by full commit; `ref="v1"` (a tag or branch) uses the commit `.plue/lock.json` pins
/// it to (`plue lock` writes it), and a ref the lock file lacks, or a `use` with neither,
/// is refused. `steps.cargo_test(features=["x"])` calls the module's public function
/// `cargo_test`: its arguments are checked against the types it declares (`str`, `int`,
/// `float`, `bool`, `list[...]`, `dict[str, ...]`, `X | None`) and it returns steps, which
/// may name only the secrets and environment whose names the call passed, and declare no
/// `id_tokens=` (a token would carry the calling repository's identity). The module's
/// repository, path and commit are part of the plan and its hash (`plan.modules`). At most
/// 16 modules, 256 KiB each; a module may not `use` another. See the guide's "Sharing
/// steps".
#[pyclass(module = "plue", name = "Module", frozen, immutable_type)]
pub(crate) struct ModuleObject {
    label: String,
    functions: BTreeMap<String, Py<PyAny>>,
}

#[pymethods]
impl ModuleObject {
    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<ModuleFunction> {
        match self.functions.get(name) {
            Some(function) => Ok(ModuleFunction {
                label: self.label.clone(),
                name: name.to_string(),
                function: function.clone_ref(py),
            }),
            None => {
                let hint = did_you_mean(name, self.functions.keys().map(String::as_str));
                Err(PyAttributeError::new_err(format!(
                    "{} has no function '{name}'{hint}",
                    self.label
                )))
            }
        }
    }

    fn __hash__(&self) -> PyResult<isize> {
        Err(PyTypeError::new_err("a Module is unhashable"))
    }

    fn __repr__(&self) -> String {
        format!("Module({})", self.label)
    }
}

/// A used module's function; calling it checks the arguments and the steps it returns.
#[pyclass(module = "plue", name = "ModuleFunction", frozen, immutable_type)]
pub(crate) struct ModuleFunction {
    label: String,
    name: String,
    function: Py<PyAny>,
}

#[pymethods]
impl ModuleFunction {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let call = CALL
            .get(py)
            .ok_or_else(|| PyRuntimeError::new_err("the module caller is not installed"))?;
        let kwargs = match kwargs {
            Some(kwargs) => kwargs.clone(),
            None => PyDict::new(py),
        };
        Ok(call
            .bind(py)
            .call1((
                &self.label,
                &self.name,
                self.function.bind(py),
                args,
                kwargs,
            ))?
            .unbind())
    }

    fn __hash__(&self) -> PyResult<isize> {
        Err(PyTypeError::new_err("a module function is unhashable"))
    }

    fn __repr__(&self) -> String {
        format!("{}.{}", self.label, self.name)
    }
}

/// For the bootstrap only: a step's id, the secrets it names, its environment and the
/// variables of the `id_tokens` it declares.
#[pyfunction]
fn step_grants(step: &Bound<'_, StepObject>) -> (String, Vec<String>, Option<String>, Vec<String>) {
    let step = &step.get().step;
    (
        step.id.clone(),
        step.secrets.clone(),
        step.environment.clone(),
        step.id_tokens.keys().cloned().collect(),
    )
}

/// Registers `use` (for the workflow's namespace) and `step_grants` on the host module.
pub(crate) fn register(host: &Bound<'_, PyModule>) -> PyResult<()> {
    host.add_function(wrap_pyfunction!(use_module, host)?)?;
    host.add_function(wrap_pyfunction!(step_grants, host)?)?;
    host.add_class::<ModuleObject>()?;
    host.add_class::<ModuleFunction>()?;
    Ok(())
}
