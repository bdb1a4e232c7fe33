//! A prompt's inputs: its JSON Schema compiled once, the `default`s of top-level properties
//! applied, and inputs validated with one message per failing field.
//!
//! Invariants: a [`Schema`] only exists for a schema that is a JSON object, whose `type`
//! (if any) is `"object"` (inputs are always a map) and that compiles against its draft's
//! meta-schema. Compilation never touches the network or the file system: `jsonschema` is
//! built without its resolvers, so an external `$ref` is a compile error. A default is
//! applied only when its property is absent (an explicit `null` stays `null`), and always
//! before validation, so a bad default is reported like a bad input.

use serde_json::{Map, Value};

use crate::error::{InputProblem, Location, PromptError};

/// Longest message echoed for one failing field; an input can be a very large value.
const MAX_MESSAGE_CHARS: usize = 300;

/// A compiled input schema.
pub(crate) struct Schema {
    validator: jsonschema::Validator,
    /// `(property, default)` of the top-level properties that have a `default`.
    defaults: Vec<(String, Value)>,
    /// The names of the top-level properties, for "not an input" messages.
    known: Vec<String>,
}

impl Schema {
    /// Compiles `schema`; errors are reported at `at` (the line of the `schema` key).
    pub(crate) fn compile(schema: &Value, at: Location) -> Result<Schema, PromptError> {
        let invalid = |message: String| PromptError::InvalidSchema {
            at: at.clone(),
            message,
        };
        let Some(object) = schema.as_object() else {
            return Err(invalid(format!(
                "expected a mapping such as `type: object`, got {}",
                brief(schema)
            )));
        };
        if let Some(kind) = object.get("type") {
            if kind != "object" {
                return Err(invalid(format!(
                    "inputs are a mapping of names to values, so `type` must be `object`, got {}",
                    brief(kind)
                )));
            }
        }
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            let path = e.instance_path().to_string();
            let message = match e.kind() {
                jsonschema::error::ValidationErrorKind::Referencing(
                    jsonschema::ReferencingError::Unretrievable { uri, .. },
                ) => format!(
                    "`$ref` to `{uri}` can not be followed: external schemas are never \
                     fetched, so put the definition under `$defs` and refer to it as \
                     `#/$defs/NAME`"
                ),
                _ => e.to_string(),
            };
            if path.is_empty() {
                invalid(message)
            } else {
                invalid(format!("at `{path}`: {message}"))
            }
        })?;
        let defaults = object
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| {
                properties
                    .iter()
                    .filter_map(|(name, property)| {
                        Some((name.clone(), property.get("default")?.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let known = object
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| properties.keys().cloned().collect())
            .unwrap_or_default();
        Ok(Schema {
            validator,
            defaults,
            known,
        })
    }

    /// `inputs` with defaults applied, if they then match the schema.
    pub(crate) fn validate(
        &self,
        source_name: &str,
        inputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, PromptError> {
        let mut inputs = inputs.clone();
        for (name, default) in &self.defaults {
            if !inputs.contains_key(name) {
                inputs.insert(name.clone(), default.clone());
            }
        }
        let instance = Value::Object(inputs);
        let problems: Vec<InputProblem> = self
            .validator
            .iter_errors(&instance)
            .flat_map(|error| self.problems(&error, &instance))
            .collect();
        if !problems.is_empty() {
            return Err(PromptError::InvalidInput {
                at: Location::new(source_name, None),
                problems,
            });
        }
        let Value::Object(inputs) = instance else {
            unreachable!("built as an object above")
        };
        Ok(inputs)
    }

    /// One validation error as the fields it is about and what is wrong with each. A missing
    /// required property, or an unexpected one, is reported at the property's own path rather
    /// than its parent's.
    fn problems(
        &self,
        error: &jsonschema::ValidationError<'_>,
        instance: &Value,
    ) -> Vec<InputProblem> {
        use jsonschema::error::ValidationErrorKind as Kind;
        let path = error.instance_path().to_string();
        let at = |name: &str, message: &str| InputProblem {
            path: format!("{path}/{}", pointer_escape(name)),
            message: message.to_string(),
        };
        let unexpected = |name: &str| {
            if path.is_empty() {
                at(name, &self.not_an_input())
            } else {
                at(name, UNEXPECTED)
            }
        };
        match error.kind() {
            Kind::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_string);
                vec![at(&name, "is required but was not given")]
            }
            Kind::AdditionalProperties { unexpected: names }
            | Kind::UnevaluatedProperties { unexpected: names } => {
                names.iter().map(|name| unexpected(name)).collect()
            }
            // `additionalProperties: false` without `properties` fails as a false schema at the
            // object's path; every property of that object is then unexpected.
            Kind::FalseSchema
                if error
                    .schema_path()
                    .as_str()
                    .ends_with("/additionalProperties") =>
            {
                match instance.pointer(&path).and_then(Value::as_object) {
                    Some(object) => object.keys().map(|name| unexpected(name)).collect(),
                    None => vec![InputProblem {
                        path,
                        message: UNEXPECTED.into(),
                    }],
                }
            }
            _ => vec![InputProblem {
                path,
                message: truncate(error.to_string()),
            }],
        }
    }

    /// The message for a top-level input the schema does not declare.
    fn not_an_input(&self) -> String {
        if self.known.is_empty() {
            "is not an input of this prompt: it takes none".into()
        } else {
            format!(
                "is not an input of this prompt (its inputs: {})",
                self.known.join(", ")
            )
        }
    }
}

/// What an input the schema has no place for is told.
const UNEXPECTED: &str = "is not allowed here: the schema has no such property";

/// Escapes a property name as one JSON pointer segment (RFC 6901).
fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn truncate(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

/// A short rendering of a JSON value for a message.
fn brief(value: &Value) -> String {
    truncate(value.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(schema: Value) -> Schema {
        Schema::compile(&schema, Location::new("p.md", Some(4))).unwrap()
    }

    fn compile_error(schema: Value) -> String {
        match Schema::compile(&schema, Location::new("p.md", Some(4))) {
            Ok(_) => panic!("{schema} compiled"),
            Err(e) => e.to_string(),
        }
    }

    fn inputs(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn review_schema() -> Schema {
        schema(json!({
            "type": "object",
            "properties": {
                "files": {"type": "array", "items": {"type": "string"}},
                "focus": {"type": "string", "default": "correctness"},
                "depth": {"type": "integer", "default": 2}
            },
            "required": ["files"]
        }))
    }

    #[test]
    fn defaults_fill_absent_properties_only() {
        let validated = review_schema()
            .validate("p.md", &inputs(json!({"files": ["a.rs"], "depth": 5})))
            .unwrap();
        assert_eq!(
            Value::Object(validated),
            json!({"files": ["a.rs"], "focus": "correctness", "depth": 5})
        );
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let err = review_schema()
            .validate("p.md", &inputs(json!({})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md: input `/files`: is required but was not given"
        );
    }

    #[test]
    fn a_wrong_item_points_at_its_index() {
        let err = review_schema()
            .validate("p.md", &inputs(json!({"files": ["a.rs", 42]})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md: input `/files/1`: 42 is not of type \"string\""
        );
    }

    #[test]
    fn every_failing_field_is_reported() {
        let err = review_schema()
            .validate("p.md", &inputs(json!({"files": "a.rs", "focus": 3})))
            .unwrap_err();
        let PromptError::InvalidInput { problems, .. } = &err else {
            panic!("{err:?}")
        };
        let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["/files", "/focus"]);
    }

    #[test]
    fn a_problem_with_the_whole_inputs_says_so() {
        let err = schema(json!({"type": "object", "minProperties": 1}))
            .validate("p.md", &Map::new())
            .unwrap_err();
        assert_eq!(err.to_string(), "p.md: inputs: {} has less than 1 property");
    }

    #[test]
    fn an_unexpected_input_is_named() {
        let closed = schema(json!({
            "type": "object",
            "properties": {"files": {"type": "array"}},
            "additionalProperties": false
        }));
        let err = closed
            .validate("p.md", &inputs(json!({"files": [], "fles": 1})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md: input `/fles`: is not an input of this prompt (its inputs: files)"
        );
        let err = schema(json!({"type": "object", "additionalProperties": false}))
            .validate("p.md", &inputs(json!({"extra": 1})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md: input `/extra`: is not an input of this prompt: it takes none"
        );
        let nested = schema(json!({
            "type": "object",
            "properties": {"pr": {"type": "object", "additionalProperties": false}}
        }));
        let err = nested
            .validate("p.md", &inputs(json!({"pr": {"numbr": 1}})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md: input `/pr/numbr`: is not allowed here: the schema has no such property"
        );
    }

    #[test]
    fn a_schema_that_is_not_an_object_schema_is_refused() {
        assert_eq!(
            compile_error(json!({"type": "string"})),
            "p.md:4: `schema` is not a valid JSON Schema: inputs are a mapping of names to \
             values, so `type` must be `object`, got \"string\""
        );
        assert_eq!(
            compile_error(json!(["files"])),
            "p.md:4: `schema` is not a valid JSON Schema: expected a mapping such as \
             `type: object`, got [\"files\"]"
        );
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused_with_the_failing_keyword() {
        let err = compile_error(json!({
            "type": "object",
            "properties": {"files": {"type": "strng"}}
        }));
        assert!(
            err.starts_with(
                "p.md:4: `schema` is not a valid JSON Schema: at `/properties/files/type`: "
            ),
            "{err}"
        );
        assert!(err.contains("\"strng\""), "{err}");
    }

    #[test]
    fn an_external_ref_is_not_fetched() {
        let err = compile_error(json!({
            "type": "object",
            "properties": {"x": {"$ref": "https://example.com/schema.json"}}
        }));
        assert_eq!(
            err,
            "p.md:4: `schema` is not a valid JSON Schema: `$ref` to \
             `https://example.com/schema.json` can not be followed: external schemas are \
             never fetched, so put the definition under `$defs` and refer to it as \
             `#/$defs/NAME`"
        );
        let local = schema(json!({
            "type": "object",
            "$defs": {"path": {"type": "string"}},
            "properties": {"x": {"$ref": "#/$defs/path"}}
        }));
        let err = local
            .validate("p.md", &inputs(json!({"x": 1})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.md: input `/x`: 1 is not of type \"string\""
        );
    }

    #[test]
    fn pointer_segments_are_escaped() {
        assert_eq!(pointer_escape("a/b~c"), "a~1b~0c");
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        let cut = truncate(long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
