//! The `finish` tool of an `llm` step with `result=`: how the model hands in its result,
//! and how that result becomes the step's outputs and outcome.
//!
//! Invariants:
//! - The tool's `input_schema` is the step's result schema, compiled once with `jsonschema`
//!   (no resolvers: an external `$ref` is a compile error, which fails the step before the
//!   first request). A schema that does not compile fails the step saying why.
//! - An input that does not match (or holds a field whose name is not a valid output name)
//!   is a tool error naming every mismatch, sent back for the model to correct, at most
//!   [`MAX_CORRECTIONS`] times; one more wrong input fails the step. A matching input ends
//!   the conversation: the calls after it in the same turn are not run.
//! - Outputs: each field as it is when a string, as JSON text otherwise, cut at
//!   [`MAX_OUTPUT_VALUE_BYTES`] on a character boundary; `result` is the whole input as
//!   JSON unless the schema has a `result` field of its own. NUL becomes U+FFFD.
//! - The step fails when any `fail_when` field equals (as JSON) any of its values; the
//!   reason names the field and value and carries the result's `reason` when it is a
//!   string. The outputs are kept either way, so a loop's next round reads them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Map, Value};

use plue_types::protocol::{ResultContract, MAX_OUTPUT_VALUE_BYTES};

/// The tool's name.
pub const NAME: &str = "finish";
/// How many wrong inputs the model may correct before the step fails.
pub const MAX_CORRECTIONS: u32 = 3;
/// The longest mismatch list sent back or put in a reason.
const MAX_MISMATCH_BYTES: usize = 2048;

/// A step's compiled result contract.
pub struct Finish {
    validator: jsonschema::Validator,
    schema: Value,
    fail_when: BTreeMap<String, Vec<Value>>,
    /// Wrong inputs so far.
    wrong: AtomicU32,
}

impl std::fmt::Debug for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finish")
            .field("schema", &self.schema)
            .field("fail_when", &self.fail_when)
            .finish_non_exhaustive()
    }
}

/// What a `finish` call did.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// The input matches: the conversation ends with these fields.
    Done(Map<String, Value>),
    /// The input is wrong: this error goes back to the model.
    Correct(String),
    /// Wrong once more than allowed: the step fails with this reason.
    GiveUp(String),
}

/// How a step that called `finish` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub outputs: BTreeMap<String, String>,
    /// Set when a `fail_when` value matched: the step fails with it.
    pub failure: Option<String>,
}

/// A step's `result=` schema that does not compile (the step fails with this reason).
#[derive(Debug, thiserror::Error)]
#[error("result: the schema does not compile: {0}")]
pub struct BadSchema(jsonschema::ValidationError<'static>);

impl Finish {
    /// Compiles the contract's schema.
    pub fn new(contract: &ResultContract) -> Result<Finish, BadSchema> {
        let validator = jsonschema::validator_for(&contract.schema).map_err(BadSchema)?;
        Ok(Finish {
            validator,
            schema: contract.schema.clone(),
            fail_when: contract.fail_when.clone(),
            wrong: AtomicU32::new(0),
        })
    }

    /// The tool's definition for the request.
    pub fn definition(&self) -> Value {
        json!({
            "name": NAME,
            "description": "Hand in your result and end your work. Call this exactly once, \
                when you are done, with an input matching the schema; its fields become the \
                step's outputs. Nothing you write after it is read.",
            "input_schema": self.schema,
        })
    }

    /// Checks one call's input.
    pub fn call(&self, input: &Value) -> Call {
        let mut mismatches: Vec<String> = self
            .validator
            .iter_errors(input)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() {
                    "input".into()
                } else {
                    path
                };
                format!("{path}: {e}")
            })
            .collect();
        if let Some(fields) = input.as_object() {
            mismatches.extend(
                fields
                    .keys()
                    .filter(|name| !valid_output_name(name))
                    .map(|name| {
                        format!(
                            "field {name:?} is not a valid output name ([A-Za-z_][A-Za-z0-9_-]*)"
                        )
                    }),
            );
        } else if mismatches.is_empty() {
            mismatches.push(format!("input: the input must be an object, got {input}"));
        }
        if mismatches.is_empty() {
            let fields = input.as_object().cloned().unwrap_or_default();
            return Call::Done(fields);
        }
        let listed = super::cap(mismatches.join("; "), MAX_MISMATCH_BYTES);
        let wrong = self.wrong.fetch_add(1, Ordering::Relaxed) + 1;
        if wrong > MAX_CORRECTIONS {
            return Call::GiveUp(format!(
                "the model called {NAME} with an input that does not match the result schema \
                 {wrong} times (at most {MAX_CORRECTIONS} corrections); last: {listed}"
            ));
        }
        let left = MAX_CORRECTIONS + 1 - wrong;
        Call::Correct(format!(
            "the input does not match the result schema: {listed}. Call {NAME} again with a \
             corrected input ({left} more wrong input(s) fail the step)."
        ))
    }

    /// The outputs of `fields` and whether `fail_when` fails the step.
    pub fn ending(&self, fields: &Map<String, Value>) -> Ending {
        let mut outputs: BTreeMap<String, String> = fields
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name.clone(), output_value(text))
            })
            .collect();
        let own_result = self
            .schema
            .get("properties")
            .is_some_and(|p| p.get("result").is_some());
        if !own_result {
            outputs.insert(
                "result".into(),
                output_value(Value::Object(fields.clone()).to_string()),
            );
        }
        let failure = self.fail_when.iter().find_map(|(field, values)| {
            let value = fields.get(field)?;
            values.contains(value).then(|| {
                let mut reason = format!("{field} {value}");
                if let Some(Value::String(why)) = fields.get("reason") {
                    reason.push_str(": ");
                    reason.push_str(why);
                }
                reason
            })
        });
        Ending { outputs, failure }
    }
}

/// `[A-Za-z_][A-Za-z0-9_-]*`, the rule of `$PLUE_OUTPUT` names.
fn valid_output_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `text` as an output value: NUL replaced, cut on a character boundary.
fn output_value(text: String) -> String {
    let mut text = if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    };
    if text.len() > MAX_OUTPUT_VALUE_BYTES {
        let mut cut = MAX_OUTPUT_VALUE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict() -> Finish {
        Finish::new(&ResultContract {
            schema: json!({
                "type": "object",
                "properties": {
                    "verdict": {"type": "string", "enum": ["approve", "reject"]},
                    "reason": {"type": "string"}
                },
                "required": ["verdict", "reason"],
                "additionalProperties": false
            }),
            fail_when: BTreeMap::from([("verdict".into(), vec![json!("reject")])]),
        })
        .unwrap()
    }

    #[test]
    fn a_matching_input_ends_with_its_fields_as_outputs() {
        let finish = verdict();
        let input = json!({"verdict": "approve", "reason": "good"});
        let Call::Done(fields) = finish.call(&input) else {
            panic!("not done")
        };
        let ending = finish.ending(&fields);
        assert_eq!(ending.failure, None);
        assert_eq!(ending.outputs["verdict"], "approve");
        assert_eq!(ending.outputs["reason"], "good");
        assert_eq!(
            serde_json::from_str::<Value>(&ending.outputs["result"]).unwrap(),
            input
        );
    }

    #[test]
    fn a_reject_fails_with_the_reason_and_keeps_the_outputs() {
        let finish = verdict();
        let fields = json!({"verdict": "reject", "reason": "no tests"});
        let ending = finish.ending(fields.as_object().unwrap());
        assert_eq!(
            ending.failure.as_deref(),
            Some("verdict \"reject\": no tests")
        );
        assert_eq!(ending.outputs["reason"], "no tests");
    }

    #[test]
    fn wrong_inputs_are_corrected_at_most_three_times() {
        let finish = verdict();
        let wrong = json!({"verdict": "maybe"});
        for left in [3, 2, 1] {
            let Call::Correct(message) = finish.call(&wrong) else {
                panic!("not a correction")
            };
            assert!(message.contains("\"maybe\" is not one of"), "{message}");
            assert!(
                message.contains("\"reason\" is a required property"),
                "{message}"
            );
            assert!(
                message.contains(&format!("({left} more wrong")),
                "{message}"
            );
        }
        let Call::GiveUp(reason) = finish.call(&wrong) else {
            panic!("not given up")
        };
        assert!(reason.contains("4 times"), "{reason}");
    }

    #[test]
    fn non_string_fields_are_json_and_names_must_be_output_names() {
        let finish = Finish::new(&ResultContract {
            schema: json!({"type": "object", "properties": {
                "score": {"type": "integer"}, "files": {"type": "array"}, "result": {}}}),
            fail_when: BTreeMap::from([("score".into(), vec![json!(0), json!(1)])]),
        })
        .unwrap();
        let fields = json!({"score": 1, "files": ["a", "b"], "result": "x"});
        let ending = finish.ending(fields.as_object().unwrap());
        assert_eq!(ending.outputs["score"], "1");
        assert_eq!(ending.outputs["files"], r#"["a","b"]"#);
        assert_eq!(ending.outputs["result"], "x");
        assert_eq!(ending.failure.as_deref(), Some("score 1"));
        let Call::Correct(message) = finish.call(&json!({"bad name": 1})) else {
            panic!("not a correction")
        };
        assert!(message.contains("not a valid output name"), "{message}");
        assert!(matches!(finish.call(&json!([1])), Call::Correct(_)));
    }

    #[test]
    fn a_schema_that_does_not_compile_or_fetches_is_refused() {
        for schema in [
            json!({"type": "nope"}),
            json!({"$ref": "https://example.com/schema.json"}),
        ] {
            let error = Finish::new(&ResultContract {
                schema,
                fail_when: BTreeMap::new(),
            })
            .unwrap_err()
            .to_string();
            assert!(
                error.starts_with("result: the schema does not compile"),
                "{error}"
            );
        }
    }
}
