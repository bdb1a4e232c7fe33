//! Reading a tool call's JSON input: each helper names the argument and the expected type
//! in its error, which the model reads.

use serde_json::Value;

pub(super) fn string_arg<'a>(input: &'a Value, tool: &str, name: &str) -> Result<&'a str, String> {
    input[name]
        .as_str()
        .ok_or_else(|| format!("{tool} needs a string '{name}'"))
}

pub(super) fn optional_string_arg<'a>(
    input: &'a Value,
    name: &str,
) -> Result<Option<&'a str>, String> {
    match &input[name] {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text)),
        other => Err(format!("'{name}' must be a string, not {other}")),
    }
}

pub(super) fn bool_arg(input: &Value, name: &str) -> Result<Option<bool>, String> {
    match &input[name] {
        Value::Null => Ok(None),
        Value::Bool(value) => Ok(Some(*value)),
        other => Err(format!("'{name}' must be true or false, not {other}")),
    }
}

pub(super) fn count_arg(input: &Value, name: &str) -> Result<Option<usize>, String> {
    match &input[name] {
        Value::Null => Ok(None),
        value => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("'{name}' must be a non-negative integer, not {value}")),
    }
}
