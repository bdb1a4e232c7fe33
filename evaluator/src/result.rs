//! Structured results of `llm` steps: `Step.llm(..., result=..., fail_when=...)`.
//!
//! A step with a result must end its conversation by calling the `finish` tool, whose input
//! schema is the result schema; the fields of that input become the step's outputs.
//!
//! - [`ResultSpec`] is what the plan holds: the shorthand `"verdict"` or a JSON Schema
//!   object. [`ResultSpec::schema`] is the schema either way ([`verdict_schema`] for the
//!   shorthand).
//! - [`FailWhen`] is the small grammar that turns a result into a failure: a map from a
//!   result field to the values that fail the step (`{"verdict": ["reject"]}`). The step
//!   fails when ANY listed field equals ANY of its values (JSON equality; a field the
//!   result does not hold never matches; the runner's `llm::tools::finish` applies it).
//!   [`effective_fail_when`] adds the shorthand's implied `{"verdict": ["reject"]}`.
//! - [`check`] is the plan-validation check of both (pure, no schema compiler here: the
//!   runner compiles the schema with `jsonschema` when the step starts and fails the step
//!   with the compiler's message if it does not compile).
//!
//! Invariants (checked by [`check`]): the schema is a JSON object of at most
//! [`MAX_SCHEMA_BYTES`] whose `type`, if given, is `"object"` (the `finish` tool's input is
//! an object, as the Messages API requires of every tool), with a `properties` object whose
//! names are valid output names (`[A-Za-z_][A-Za-z0-9_-]*`), at most [`MAX_FIELDS`] of
//! them; every `fail_when` field is one of those properties and lists 1 to
//! [`MAX_FAIL_VALUES`] scalar values; `fail_when` needs `result`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The largest result schema, as compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// The most fields a result may have (each becomes an output; the runner's limit is 64
/// outputs in all).
pub const MAX_FIELDS: usize = 32;
/// The most values one `fail_when` field may list.
pub const MAX_FAIL_VALUES: usize = 32;
/// The longest `system_prompt=` (checked with the step's other options at validation).
pub const MAX_SYSTEM_PROMPT_BYTES: usize = 32 * 1024;
/// The shorthand's name.
pub const VERDICT: &str = "verdict";

/// `result=`: the shorthand `"verdict"` or a JSON Schema object. Serialises as the string
/// `"verdict"` or the schema itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResultSpec {
    /// `result="verdict"`: `{"verdict": "approve"|"reject", "reason": str}`, a `reject`
    /// failing the step with the reason.
    Shorthand(Shorthand),
    /// A JSON Schema for the `finish` tool's input.
    Schema(BTreeMap<String, Value>),
}

/// The named result shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shorthand {
    Verdict,
}

/// `fail_when=`: result field → the values that fail the step.
pub type FailWhen = BTreeMap<String, Vec<Value>>;

impl ResultSpec {
    /// The JSON Schema of the `finish` tool's input.
    pub fn schema(&self) -> Value {
        match self {
            ResultSpec::Shorthand(Shorthand::Verdict) => verdict_schema(),
            ResultSpec::Schema(schema) => Value::Object(schema.clone().into_iter().collect()),
        }
    }
}

/// The verdict shorthand's schema.
pub fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "verdict": {
                "type": "string",
                "enum": ["approve", "reject"],
                "description": "approve to let the work go on; reject to send it back"
            },
            "reason": {
                "type": "string",
                "description": "why: what is wrong and what must change when rejecting"
            }
        },
        "required": ["verdict", "reason"],
        "additionalProperties": false
    })
}

/// What fails the step: `fail_when`, plus `{"verdict": ["reject"]}` for the shorthand.
pub fn effective_fail_when(result: &ResultSpec, fail_when: Option<&FailWhen>) -> FailWhen {
    let mut effective = fail_when.cloned().unwrap_or_default();
    if matches!(result, ResultSpec::Shorthand(Shorthand::Verdict)) {
        let values = effective.entry(VERDICT.to_owned()).or_default();
        if !values.contains(&json!("reject")) {
            values.push(json!("reject"));
        }
    }
    effective
}

/// Plan validation of `result` and `fail_when`: every problem as a message.
pub fn check(result: Option<&ResultSpec>, fail_when: Option<&FailWhen>) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(result) = result else {
        if fail_when.is_some() {
            problems
                .push("fail_when needs result= (the fields it names are the result's)".to_owned());
        }
        return problems;
    };
    let schema = result.schema();
    let size = schema.to_string().len();
    if size > MAX_SCHEMA_BYTES {
        problems.push(format!(
            "result: the schema is {size} bytes, more than the limit of {MAX_SCHEMA_BYTES}"
        ));
    }
    if let Some(kind) = schema.get("type") {
        if kind != "object" {
            problems.push(format!(
                "result: the finish tool's input is an object, so `type` must be \"object\", got {kind}"
            ));
        }
    }
    let properties = match schema.get("properties") {
        Some(Value::Object(properties)) => properties.clone(),
        Some(other) => {
            problems.push(format!(
                "result: `properties` must be an object of field schemas, got {other}"
            ));
            Default::default()
        }
        None => {
            problems.push(
                "result: the schema needs `properties` (its fields become the step's outputs)"
                    .to_owned(),
            );
            Default::default()
        }
    };
    if properties.len() > MAX_FIELDS {
        problems.push(format!(
            "result: {} fields, more than the limit of {MAX_FIELDS}",
            properties.len()
        ));
    }
    for name in properties.keys() {
        if !valid_output_name(name) {
            problems.push(format!(
                "result: field '{name}' is not a valid output name (must match [A-Za-z_][A-Za-z0-9_-]*)"
            ));
        }
    }
    for (field, values) in fail_when.into_iter().flatten() {
        if !properties.contains_key(field) {
            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
            problems.push(format!(
                "fail_when: '{field}' is not a field of the result (fields: {})",
                known.join(", ")
            ));
        }
        if values.is_empty() || values.len() > MAX_FAIL_VALUES {
            problems.push(format!(
                "fail_when: '{field}' must list 1 to {MAX_FAIL_VALUES} values, got {}",
                values.len()
            ));
        }
        if let Some(value) = values.iter().find(|v| v.is_array() || v.is_object()) {
            problems.push(format!(
                "fail_when: '{field}' compares with strings, numbers, booleans or None, got {value}"
            ));
        }
    }
    problems
}

/// `[A-Za-z_][A-Za-z0-9_-]*`, the rule of `$PLUE_OUTPUT` names.
fn valid_output_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(value: Value) -> ResultSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_shorthand_and_a_schema_serialise_as_written() {
        let verdict: ResultSpec = serde_json::from_value(json!("verdict")).unwrap();
        assert_eq!(verdict, ResultSpec::Shorthand(Shorthand::Verdict));
        assert_eq!(serde_json::to_value(&verdict).unwrap(), json!("verdict"));
        assert_eq!(verdict.schema(), verdict_schema());
        let custom =
            schema(json!({"type": "object", "properties": {"score": {"type": "integer"}}}));
        assert_eq!(
            serde_json::to_string(&custom).unwrap(),
            r#"{"properties":{"score":{"type":"integer"}},"type":"object"}"#
        );
        assert!(serde_json::from_value::<ResultSpec>(json!("nope")).is_err());
    }

    #[test]
    fn the_verdict_implies_failing_on_reject() {
        let verdict = ResultSpec::Shorthand(Shorthand::Verdict);
        let expected = FailWhen::from([("verdict".into(), vec![json!("reject")])]);
        assert_eq!(effective_fail_when(&verdict, None), expected);
        let mut own = FailWhen::from([("verdict".into(), vec![json!("reject")])]);
        assert_eq!(effective_fail_when(&verdict, Some(&own)), expected);
        own.insert("reason".into(), vec![json!("")]);
        assert_eq!(effective_fail_when(&verdict, Some(&own)).len(), 2);
        let custom = ResultSpec::Schema(BTreeMap::new());
        assert!(effective_fail_when(&custom, None).is_empty());
    }

    #[test]
    fn check_refuses_what_the_finish_tool_cannot_be() {
        assert!(check(Some(&ResultSpec::Shorthand(Shorthand::Verdict)), None).is_empty());
        let fine = schema(json!({"type": "object", "properties": {"ok": {"type": "boolean"}}}));
        let fail = FailWhen::from([("ok".into(), vec![json!(false)])]);
        assert!(check(Some(&fine), Some(&fail)).is_empty());

        let problems = check(None, Some(&fail));
        assert!(
            problems[0].contains("fail_when needs result="),
            "{problems:?}"
        );
        let problems = check(Some(&schema(json!({"type": "array"}))), None);
        assert!(
            problems.iter().any(|p| p.contains("must be \"object\"")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("needs `properties`")),
            "{problems:?}"
        );
        let problems = check(Some(&schema(json!({"properties": {"bad name": {}}}))), None);
        assert!(
            problems[0].contains("'bad name' is not a valid output name"),
            "{problems:?}"
        );
        let unknown = FailWhen::from([("verdict".into(), vec![json!("no")])]);
        let problems = check(Some(&fine), Some(&unknown));
        assert!(
            problems[0].contains("'verdict' is not a field of the result (fields: ok)"),
            "{problems:?}"
        );
        let nested = FailWhen::from([("ok".into(), vec![json!([1])])]);
        assert!(check(Some(&fine), Some(&nested))[0].contains("compares with strings"));
        let empty = FailWhen::from([("ok".into(), vec![])]);
        assert!(check(Some(&fine), Some(&empty))[0].contains("1 to 32 values"));
        let big =
            schema(json!({"properties": {"a": {"description": "x".repeat(MAX_SCHEMA_BYTES)}}}));
        assert!(check(Some(&big), None)[0].contains("more than the limit"));
    }
}
