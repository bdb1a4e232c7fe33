//! Layer (a) at run time: the capabilities a workflow file gets, as one plain description
//! ([`DIALECT`]) plus the few host functions that replace risky builtins.
//!
//! The compile-time AST check (in `sandbox.py`) and the run-time functions here read the
//! same policy, so `x.__class__` and `getattr(x, "__cl" + "ass__")` are refused by one rule.
//! Every function a workflow can reach is Rust: there is no Python function of ours whose
//! `__globals__` could lead back to the host.
//!
//! Modules are never handed out: `import json` gives a fresh module object holding only the
//! vetted names below, so `json.decoder`, `json.codecs.sys` and the like do not exist.

use std::cell::RefCell;

use pyo3::exceptions::{PyAttributeError, PyImportError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyString, PyTuple};
use unicode_normalization::UnicodeNormalization;

/// What a module wrapper exposes.
pub(crate) enum Exposed {
    /// Every public name: for C modules made only of functions, types and numbers.
    AllPublic,
    Only(&'static [&'static str]),
}

/// The capabilities of the workflow language.
pub(crate) struct Dialect {
    /// Importable modules and what each exposes. `plue` is handled separately.
    pub(crate) modules: &'static [(&'static str, Exposed)],
    /// Attribute names refused besides every name starting with `_`.
    pub(crate) denied_attributes: &'static [&'static str],
    /// Attribute-name prefixes of frames, code objects, generators and tracebacks.
    pub(crate) denied_attribute_prefixes: &'static [&'static str],
    /// Real builtins a workflow may use as they are.
    pub(crate) builtins: &'static [&'static str],
    /// Builtins that are deliberately absent; using one is reported at compile time.
    pub(crate) forbidden_builtins: &'static [&'static str],
}

pub(crate) static DIALECT: Dialect = Dialect {
    modules: &[
        (
            "json",
            Exposed::Only(&["dumps", "loads", "JSONDecodeError"]),
        ),
        ("math", Exposed::AllPublic),
        (
            "re",
            Exposed::Only(&[
                "compile",
                "escape",
                "findall",
                "finditer",
                "fullmatch",
                "match",
                "search",
                "split",
                "sub",
                "subn",
                "error",
                "A",
                "ASCII",
                "I",
                "IGNORECASE",
                "M",
                "MULTILINE",
                "S",
                "DOTALL",
                "X",
                "VERBOSE",
                "NOFLAG",
            ]),
        ),
        ("itertools", Exposed::AllPublic),
        (
            "functools",
            Exposed::Only(&["reduce", "partial", "cmp_to_key"]),
        ),
        (
            "string",
            Exposed::Only(&[
                "ascii_letters",
                "ascii_lowercase",
                "ascii_uppercase",
                "digits",
                "hexdigits",
                "octdigits",
                "punctuation",
                "whitespace",
                "printable",
                "capwords",
            ]),
        ),
        ("shlex", Exposed::Only(&["quote", "split", "join"])),
        (
            "textwrap",
            Exposed::Only(&["dedent", "indent", "wrap", "fill", "shorten"]),
        ),
    ],
    denied_attributes: &["format", "format_map", "mro"],
    denied_attribute_prefixes: &["gi_", "cr_", "ag_", "f_", "tb_", "co_"],
    builtins: &[
        "abs",
        "all",
        "any",
        "ascii",
        "bin",
        "bool",
        "callable",
        "chr",
        "dict",
        "divmod",
        "enumerate",
        "filter",
        "float",
        "frozenset",
        "hex",
        "int",
        "isinstance",
        "iter",
        "len",
        "list",
        "map",
        "max",
        "min",
        "next",
        "oct",
        "ord",
        "pow",
        "range",
        "repr",
        "reversed",
        "round",
        "set",
        "slice",
        "sorted",
        "str",
        "sum",
        "tuple",
        "zip",
        "ArithmeticError",
        "AssertionError",
        "AttributeError",
        "Exception",
        "IndexError",
        "KeyError",
        "LookupError",
        "NameError",
        "NotImplementedError",
        "OverflowError",
        "RuntimeError",
        "StopIteration",
        "TypeError",
        "ValueError",
        "ZeroDivisionError",
    ],
    forbidden_builtins: &[
        "eval",
        "exec",
        "compile",
        "open",
        "input",
        "breakpoint",
        "globals",
        "locals",
        "vars",
        "dir",
        "help",
        "id",
        "hash",
        "type",
        "object",
        "super",
        "setattr",
        "delattr",
        "memoryview",
        "bytearray",
        "classmethod",
        "staticmethod",
        "property",
        "exit",
        "quit",
        "__import__",
        "__build_class__",
    ],
};

impl Dialect {
    /// Whether `name` (already NFKC-normalised) may be read as an attribute.
    pub(crate) fn attribute_allowed(&self, name: &str) -> bool {
        !name.starts_with('_')
            && !self.denied_attributes.contains(&name)
            && !self
                .denied_attribute_prefixes
                .iter()
                .any(|p| name.starts_with(p))
    }

    pub(crate) fn module_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.modules.iter().map(|(name, _)| *name)
    }
}

/// Python's identifier normalisation, applied to names that arrive as strings.
fn normalise(name: &str) -> String {
    name.nfkc().collect()
}

fn refuse_attribute(name: &str) -> PyErr {
    PyAttributeError::new_err(format!(
        "access to attribute '{name}' is not allowed in workflow files"
    ))
}

/// `getattr(object, name[, default])`, refusing what the dialect refuses.
#[pyfunction]
#[pyo3(name = "getattr", signature = (object, name, *default))]
fn safe_getattr<'py>(
    object: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
    default: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    if default.len() > 1 {
        return Err(PyTypeError::new_err(format!(
            "getattr expected at most 3 arguments, got {}",
            default.len() + 2
        )));
    }
    let name = checked_name(name, "getattr")?;
    match object.getattr(name.as_str()) {
        Ok(value) => Ok(value),
        Err(e) if e.is_instance_of::<PyAttributeError>(object.py()) && !default.is_empty() => {
            default.get_item(0)
        }
        Err(e) => Err(e),
    }
}

/// `hasattr(object, name)`, refusing what the dialect refuses.
#[pyfunction]
#[pyo3(name = "hasattr")]
fn safe_hasattr(object: &Bound<'_, PyAny>, name: &Bound<'_, PyAny>) -> PyResult<bool> {
    let name = checked_name(name, "hasattr")?;
    object.hasattr(name.as_str())
}

fn checked_name(name: &Bound<'_, PyAny>, function: &str) -> PyResult<String> {
    let name = name
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{function}(): attribute name must be a str")))?
        .to_str()?
        .to_owned();
    let normalised = normalise(&name);
    if !DIALECT.attribute_allowed(&normalised) || !DIALECT.attribute_allowed(&name) {
        return Err(refuse_attribute(&name));
    }
    Ok(name)
}

/// The real modules, imported before lock-down; wrappers are built from them.
static REAL_MODULES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
/// The `plue` module with `Plan`, `Step` and `Trigger`.
static PLUE_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Imports every allowed module now, while the file system is still reachable.
pub(crate) fn preload(py: Python<'_>, plue: Bound<'_, PyModule>) -> PyResult<()> {
    let modules = PyDict::new(py);
    for name in DIALECT.module_names() {
        modules.set_item(name, py.import(name)?)?;
    }
    let _ = REAL_MODULES.set(py, modules.unbind());
    let _ = PLUE_MODULE.set(py, plue.unbind());
    Ok(())
}

/// `__import__`: `plue`, or a fresh wrapper of an allowed module; nothing else.
#[pyfunction]
#[pyo3(name = "__import__", signature = (name, globals=None, locals=None, fromlist=None, level=0))]
fn safe_import<'py>(
    py: Python<'py>,
    name: &str,
    globals: Option<&Bound<'py, PyAny>>,
    locals: Option<&Bound<'py, PyAny>>,
    fromlist: Option<&Bound<'py, PyAny>>,
    level: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let _ = (globals, locals);
    if level != 0 {
        return Err(PyImportError::new_err(
            "relative imports are not allowed in workflow files",
        ));
    }
    if name == "plue" {
        let plue = PLUE_MODULE
            .get(py)
            .ok_or_else(|| PyImportError::new_err("plue is not available"))?;
        return Ok(plue.bind(py).clone().into_any());
    }
    let Some((_, exposed)) = DIALECT.modules.iter().find(|(m, _)| *m == name) else {
        return Err(import_refused(name));
    };
    let real = REAL_MODULES
        .get(py)
        .and_then(|m| m.bind(py).get_item(name).ok().flatten())
        .ok_or_else(|| import_refused(name))?;
    // Not the real module's name: on a failed `from json import decoder`, CPython falls back
    // to `sys.modules[module.__name__ + ".decoder"]`, which must find nothing.
    // regression: `from json import decoder` handed out the real json.decoder module.
    let wrapper = PyModule::new(py, &format!("plue-sandbox:{name}"))?;
    match exposed {
        Exposed::Only(names) => {
            for attribute in *names {
                if let Ok(value) = real.getattr(*attribute) {
                    wrapper.add(*attribute, value)?;
                }
            }
        }
        Exposed::AllPublic => {
            for attribute in real.dir()?.iter() {
                let attribute = attribute.cast_into::<PyString>()?;
                let text = attribute.to_str()?;
                if DIALECT.attribute_allowed(text) {
                    wrapper.add(text, real.getattr(text)?)?;
                }
            }
        }
    }
    if let Some(fromlist) = fromlist.filter(|f| !f.is_none()) {
        for item in fromlist.try_iter()? {
            let item = item?;
            let wanted = item.cast::<PyString>()?.to_str()?;
            if !wrapper.hasattr(wanted)? {
                return Err(PyImportError::new_err(format!(
                    "cannot import '{wanted}' from '{name}' in a workflow file"
                )));
            }
        }
    }
    Ok(wrapper.into_any())
}

/// The error for a module outside the allow-list.
pub(crate) fn import_refused(name: &str) -> PyErr {
    let allowed: Vec<&str> = std::iter::once("plue")
        .chain(DIALECT.module_names())
        .collect();
    PyImportError::new_err(format!(
        "import of '{name}' is not allowed in workflow files (allowed: {})",
        allowed.join(", ")
    ))
}

/// Most bytes of printed output kept per evaluation.
const MAX_OUTPUT: usize = 64 * 1024;

thread_local! {
    static OUTPUT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Takes what the last evaluation printed.
pub(crate) fn take_output() -> String {
    OUTPUT.with(|o| std::mem::take(&mut *o.borrow_mut()))
}

/// `print(*values, sep=' ', end='\n')` into a capped buffer; `file=` is ignored.
#[pyfunction]
#[pyo3(name = "print", signature = (*values, sep=None, end=None, file=None, flush=false))]
fn safe_print(
    values: &Bound<'_, PyTuple>,
    sep: Option<&str>,
    end: Option<&str>,
    file: Option<&Bound<'_, PyAny>>,
    flush: bool,
) -> PyResult<()> {
    let _ = (file, flush);
    let mut line = String::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.push_str(sep.unwrap_or(" "));
        }
        line.push_str(value.str()?.to_str()?);
        if line.len() > MAX_OUTPUT {
            break;
        }
    }
    line.push_str(end.unwrap_or("\n"));
    OUTPUT.with(|o| {
        let mut o = o.borrow_mut();
        let room = MAX_OUTPUT.saturating_sub(o.len());
        let mut cut = line.len().min(room);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        o.push_str(&line[..cut]);
    });
    Ok(())
}

/// Policy queries for the bootstrap's AST check (never exposed to workflow code).
#[pyfunction]
fn attribute_allowed(name: &str) -> bool {
    DIALECT.attribute_allowed(name)
}

/// Whether `from module import name` would find `name` (for the AST check).
#[pyfunction]
fn exports(py: Python<'_>, module: &str, name: &str) -> PyResult<bool> {
    match safe_import(py, module, None, None, None, 0) {
        Ok(wrapper) => wrapper.hasattr(name),
        Err(_) => Ok(false),
    }
}

/// Registers the guard functions and the dialect's lists on the host module.
pub(crate) fn register(host: &Bound<'_, PyModule>) -> PyResult<()> {
    host.add_function(wrap_pyfunction!(safe_getattr, host)?)?;
    host.add_function(wrap_pyfunction!(safe_hasattr, host)?)?;
    host.add_function(wrap_pyfunction!(safe_import, host)?)?;
    host.add_function(wrap_pyfunction!(safe_print, host)?)?;
    host.add_function(wrap_pyfunction!(attribute_allowed, host)?)?;
    host.add_function(wrap_pyfunction!(exports, host)?)?;
    host.add("SAFE_BUILTINS", DIALECT.builtins.to_vec())?;
    host.add("FORBIDDEN_BUILTINS", DIALECT.forbidden_builtins.to_vec())?;
    host.add(
        "ALLOWED_MODULES",
        std::iter::once("plue")
            .chain(DIALECT.module_names())
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_policy() {
        for name in [
            "__class__",
            "_private",
            "format",
            "format_map",
            "mro",
            "gi_frame",
            "f_back",
            "tb_frame",
            "co_code",
            "cr_frame",
            "ag_frame",
        ] {
            assert!(!DIALECT.attribute_allowed(name), "{name} must be refused");
        }
        for name in ["append", "items", "join", "number", "changed_files", "sub"] {
            assert!(DIALECT.attribute_allowed(name), "{name} must be allowed");
        }
    }

    #[test]
    fn nfkc_folds_lookalike_underscores() {
        assert_eq!(
            normalise("\u{ff3f}\u{ff3f}class\u{ff3f}\u{ff3f}"),
            "__class__"
        );
        assert_eq!(normalise("𝐨𝐩𝐞𝐧"), "open");
    }

    #[test]
    fn forbidden_and_safe_builtins_do_not_overlap() {
        for name in DIALECT.builtins {
            assert!(!DIALECT.forbidden_builtins.contains(name), "{name}");
        }
    }
}
