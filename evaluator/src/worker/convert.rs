//! Python values → plan data, inside the worker.
//!
//! Every conversion names what it was converting in its error ("Step.bash(): timeout must
//! be a number of seconds, got str"), so the user sees the call and the argument. Every
//! string or key that enters the plan is charged to a per-evaluation byte budget, so a file
//! cannot make the worker copy gigabytes into Rust memory before the plan-size check runs.
//! Nested data (`Step.llm(inputs=...)`) is depth-limited: a million-deep list is an error,
//! not a stack overflow.

use std::cell::Cell;
use std::collections::BTreeMap;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::diagnostic::did_you_mean;
use crate::limits::human_bytes;

/// Deepest nesting accepted in step `inputs`.
pub(crate) const MAX_DEPTH: usize = 32;

thread_local! {
    static BUDGET: Cell<usize> = const { Cell::new(usize::MAX) };
    static BUDGET_LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Starts a new evaluation with `bytes` of plan data allowed.
pub(crate) fn reset_budget(bytes: usize) {
    BUDGET.with(|b| b.set(bytes));
    BUDGET_LIMIT.with(|b| b.set(bytes));
}

fn charge(bytes: usize) -> PyResult<()> {
    let left = BUDGET.with(|b| b.get());
    if bytes > left {
        let limit = BUDGET_LIMIT.with(|b| b.get());
        return Err(PyValueError::new_err(format!(
            "the plan is larger than its limit of {}",
            human_bytes(limit as u64)
        )));
    }
    BUDGET.with(|b| b.set(left - bytes));
    Ok(())
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}

/// A `str`, charged to the budget.
pub(crate) fn string(value: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    let s = value.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a str, got {}", type_name(value)))
    })?;
    // Charge before copying: the length in bytes is known without a copy. The quotes are
    // charged too, so a million empty strings cost what they cost in the plan's JSON.
    let text = s.to_str()?;
    charge(text.len() + 2)?;
    Ok(text.to_owned())
}

/// `None` or a `str`.
pub(crate) fn optional_string(
    value: Option<Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<Option<String>> {
    match value {
        Some(v) if !v.is_none() => string(&v, what).map(Some),
        _ => Ok(None),
    }
}

/// A `str` (one item) or a list/tuple of `str`.
pub(crate) fn string_list(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Ok(vec![string(value, what)?]);
    }
    sequence(value, what)?
        .iter()
        .enumerate()
        .map(|(i, item)| string(item, &format!("{what}[{i}]")))
        .collect()
}

/// The items of a list or tuple.
pub(crate) fn sequence<'py>(
    value: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if let Ok(list) = value.cast::<PyList>() {
        Ok(list.iter().collect())
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        Ok(tuple.iter().collect())
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be a list, got {}",
            type_name(value)
        )))
    }
}

/// A dict of `str` keys to scalar values, rendered as strings (`True` → `"true"`).
pub(crate) fn string_map(
    value: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<BTreeMap<String, String>> {
    dict_of(value, what, scalar_string)
}

/// A dict of `str` keys to `str` values: no number or bool stands in for a string.
pub(crate) fn str_map(value: &Bound<'_, PyAny>, what: &str) -> PyResult<BTreeMap<String, String>> {
    dict_of(value, what, string)
}

/// A dict of `str` keys, each value converted by `item` (which names it `what['key']`).
fn dict_of(
    value: &Bound<'_, PyAny>,
    what: &str,
    item: fn(&Bound<'_, PyAny>, &str) -> PyResult<String>,
) -> PyResult<BTreeMap<String, String>> {
    let dict = value.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a dict, got {}", type_name(value)))
    })?;
    let mut out = BTreeMap::new();
    for (key, value) in dict.iter() {
        let key = string(&key, &format!("{what} key"))?;
        let value = item(&value, &format!("{what}['{key}']"))?;
        out.insert(key, value);
    }
    Ok(out)
}

/// A str, int, float or bool as a string.
pub(crate) fn scalar_string(value: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if value.is_instance_of::<PyString>() {
        string(value, what)
    } else if let Ok(b) = value.cast::<PyBool>() {
        let text = if b.is_true() { "true" } else { "false" };
        // Quoted in the plan's JSON, like any string.
        charge(text.len() + 2)?;
        Ok(text.into())
    } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        let text = value.str()?.to_str()?.to_owned();
        charge(text.len() + 2)?;
        Ok(text)
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be a str, int, float or bool, got {}",
            type_name(value)
        )))
    }
}

/// A whole, non-negative number of seconds (`int`, or a `float` with no fraction).
pub(crate) fn seconds(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    let bad = || {
        PyValueError::new_err(format!(
            "{what} must be a whole, non-negative number of seconds, got {}",
            repr_short(value)
        ))
    };
    if value.is_instance_of::<PyBool>() {
        return Err(bad());
    }
    if value.is_instance_of::<PyInt>() {
        return value.extract::<u64>().map_err(|_| bad());
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        let f = f.value();
        if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 1e15 {
            return Ok(f as u64);
        }
        return Err(bad());
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a number of seconds, got {}",
        type_name(value)
    )))
}

/// A non-negative `int` that fits in `u32`.
pub(crate) fn count(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u32> {
    if value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>() {
        return value.extract::<u32>().map_err(|_| {
            PyValueError::new_err(format!(
                "{what} must be a non-negative whole number, got {}",
                repr_short(value)
            ))
        });
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be an int, got {}",
        type_name(value)
    )))
}

/// An amount of US dollars: an `int` or `float`, finite, above 0 and at most
/// [`crate::plan::MAX_COST_USD`].
pub(crate) fn usd(value: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    let number = if value.is_instance_of::<PyBool>() {
        None
    } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        value.extract::<f64>().ok()
    } else {
        None
    };
    let Some(usd) = number else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a number of US dollars, got {}",
            type_name(value)
        )));
    };
    if !usd.is_finite() || usd <= 0.0 || usd > crate::plan::MAX_COST_USD {
        return Err(PyValueError::new_err(format!(
            "{what} must be above 0 and at most {} US dollars, got {}",
            crate::plan::MAX_COST_USD,
            repr_short(value)
        )));
    }
    Ok(usd)
}

/// Plain JSON-like data: None, bool, int, float, str, list/tuple, dict with str keys.
/// `what` names the whole value in messages; nesting deeper than [`MAX_DEPTH`] is refused.
pub(crate) fn json_value(
    value: &Bound<'_, PyAny>,
    what: &str,
    depth: usize,
) -> PyResult<serde_json::Value> {
    use serde_json::Value;
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "{what} is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    // Every value costs its separator plus its JSON text (scalars) or brackets (containers).
    // regression: a million zeros cost one byte each here but 32 bytes each in the engine,
    // which decoded a 2 MiB plan into 50 MB before refusing it.
    charge(1)?;
    if value.is_none() {
        charge(4)?;
        Ok(Value::Null)
    } else if let Ok(b) = value.cast::<PyBool>() {
        charge(5)?;
        Ok(Value::Bool(b.is_true()))
    } else if value.is_instance_of::<PyInt>() {
        let number = value.extract::<i64>().map(Value::from).map_err(|_| {
            PyValueError::new_err(format!(
                "{what}: integer {} does not fit in 64 bits",
                repr_short(value)
            ))
        })?;
        charge(number.to_string().len())?;
        Ok(number)
    } else if let Ok(f) = value.cast::<PyFloat>() {
        let number = serde_json::Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| {
                PyValueError::new_err(format!("{what}: {} is not a JSON number", f.value()))
            })?;
        charge(number.to_string().len())?;
        Ok(number)
    } else if value.is_instance_of::<PyString>() {
        Ok(Value::String(string(value, what)?))
    } else if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        charge(1)?;
        sequence(value, what)?
            .iter()
            .map(|item| json_value(item, what, depth + 1))
            .collect::<PyResult<Vec<_>>>()
            .map(Value::Array)
    } else if let Ok(dict) = value.cast::<PyDict>() {
        charge(1)?;
        let mut map = serde_json::Map::new();
        for (key, item) in dict.iter() {
            // The key's quotes are charged by `string`, its colon here.
            charge(1)?;
            let key = string(&key, &format!("{what} key"))?;
            let item = json_value(&item, what, depth + 1)?;
            map.insert(key, item);
        }
        Ok(Value::Object(map))
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be plain data (str, int, float, bool, None, list, dict), got {}",
            type_name(value)
        )))
    }
}

/// `repr(value)`, cut to 60 characters for messages.
fn repr_short(value: &Bound<'_, PyAny>) -> String {
    let text = value
        .repr()
        .and_then(|r| r.to_str().map(str::to_owned))
        .unwrap_or_else(|_| "?".into());
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

/// Keyword options of a constructor: taken one by one; whatever is left is an error with
/// a suggestion drawn from the names that were asked for.
pub(crate) struct Options<'py> {
    function: &'static str,
    given: Option<Bound<'py, PyDict>>,
    known: Vec<&'static str>,
}

impl<'py> Options<'py> {
    /// `function` is how the user calls it, e.g. `"Step.bash()"`; `positional` are the
    /// parameter names bound before `**options`, offered as suggestions too.
    pub(crate) fn new(
        function: &'static str,
        given: Option<&Bound<'py, PyDict>>,
        positional: &[&'static str],
    ) -> Self {
        Options {
            function,
            given: given.cloned(),
            known: positional.to_vec(),
        }
    }

    pub(crate) fn function(&self) -> &'static str {
        self.function
    }

    /// The option `name`, if given and not `None`.
    pub(crate) fn take(&mut self, name: &'static str) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.known.push(name);
        let Some(given) = &self.given else {
            return Ok(None);
        };
        let value = given.get_item(name)?;
        if value.is_some() {
            given.del_item(name)?;
        }
        Ok(value.filter(|v| !v.is_none()))
    }

    /// Fails on the first option nobody took.
    pub(crate) fn finish(self) -> PyResult<()> {
        let Some(given) = self.given else {
            return Ok(());
        };
        if let Some((key, _)) = given.iter().next() {
            let key = key.str()?.to_str()?.to_owned();
            let hint = did_you_mean(&key, self.known.iter().copied());
            return Err(PyTypeError::new_err(format!(
                "{} got an unexpected keyword argument '{key}'{hint}",
                self.function
            )));
        }
        Ok(())
    }
}
