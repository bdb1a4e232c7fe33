//! OpenAPI 3.0 schemas as JSON Schema (draft 4, which OpenAPI 3.0's schema object extends),
//! so a real validator (the `jsonschema` crate) checks instances against them, and the
//! lookup of a field a client reads in a response schema.
//!
//! Invariants: a converted schema stands alone — every `#/components/schemas/NAME` it
//! reaches, transitively, is copied under its `definitions` and its `$ref`s point there;
//! OpenAPI's `nullable: true` becomes "this schema, or null" (OpenAPI 3.0 §4.7.24.1; a
//! `$ref`'s siblings, `nullable` included, are ignored as the specification says); the
//! keywords OpenAPI adds and JSON Schema lacks (`discriminator`, `example`, `xml`, ...)
//! are dropped, so nothing is validated that the description does not say.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

const COMPONENT: &str = "#/components/schemas/";

/// Keywords whose value is one schema, a list of schemas, or a map of schemas.
const ONE: &[&str] = &["items", "not", "additionalProperties"];
const LIST: &[&str] = &["allOf", "anyOf", "oneOf"];
const MAP: &[&str] = &["properties", "patternProperties"];
/// OpenAPI's additions to the schema object, which JSON Schema does not know.
const OPENAPI_ONLY: &[&str] = &[
    "nullable",
    "discriminator",
    "readOnly",
    "writeOnly",
    "xml",
    "externalDocs",
    "example",
    "examples",
    "deprecated",
];

/// `schema` (a schema object of the OpenAPI document `doc`) as a standalone draft 4 JSON
/// Schema.
pub(crate) fn standalone(doc: &Value, schema: &Value) -> Result<Value> {
    let mut wanted = BTreeSet::new();
    let mut root = convert(schema, &mut wanted)?;
    let mut definitions = BTreeMap::new();
    while let Some(name) = wanted
        .iter()
        .find(|n| !definitions.contains_key(*n))
        .cloned()
    {
        let Some(component) = component(doc, &name) else {
            bail!("{COMPONENT}{name} is not in the description");
        };
        definitions.insert(name, convert(component, &mut wanted)?);
    }
    if !definitions.is_empty() {
        let definitions: Map<String, Value> = definitions.into_iter().collect();
        match &mut root {
            Value::Object(map) => {
                map.insert("definitions".into(), Value::Object(definitions));
            }
            _ => root = json!({"allOf": [root], "definitions": definitions}),
        }
    }
    Ok(root)
}

fn component<'d>(doc: &'d Value, name: &str) -> Option<&'d Value> {
    doc.pointer("/components/schemas")?.get(name)
}

/// One schema converted; the components it names are added to `wanted`.
fn convert(schema: &Value, wanted: &mut BTreeSet<String>) -> Result<Value> {
    let Value::Object(map) = schema else {
        // `true`/`false` schemas and the like pass as they are.
        return Ok(schema.clone());
    };
    if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
        let Some(name) = reference.strip_prefix(COMPONENT) else {
            bail!("a schema's $ref '{reference}' names no component schema");
        };
        wanted.insert(name.to_string());
        let pointer = name.replace('~', "~0").replace('/', "~1");
        return Ok(json!({"$ref": format!("#/definitions/{pointer}")}));
    }
    let mut out = Map::new();
    for (key, value) in map {
        let converted = if ONE.contains(&key.as_str()) && value.is_object() {
            convert(value, wanted)?
        } else if LIST.contains(&key.as_str()) {
            let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
            Value::Array(
                items
                    .iter()
                    .map(|item| convert(item, wanted))
                    .collect::<Result<_>>()?,
            )
        } else if MAP.contains(&key.as_str()) {
            let Some(members) = value.as_object() else {
                bail!("'{key}' is not a map of schemas");
            };
            Value::Object(
                members
                    .iter()
                    .map(|(name, member)| Ok((name.clone(), convert(member, wanted)?)))
                    .collect::<Result<_>>()?,
            )
        } else if OPENAPI_ONLY.contains(&key.as_str()) || key.starts_with("x-") {
            continue;
        } else {
            value.clone()
        };
        out.insert(key.clone(), converted);
    }
    if map.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(json!({"anyOf": [Value::Object(out), {"type": "null"}]}));
    }
    Ok(Value::Object(out))
}

/// What the description says of a field a client reads.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Field {
    /// Described; `required` when every object that holds it must have it, `nullable`
    /// when some description of it allows null.
    Described { required: bool, nullable: bool },
    /// No schema on the way has it.
    Missing,
}

/// Looks `path` up in `schema` (of `doc`): dot-separated property names, `[]` for an
/// array's items (`[].head.sha`).
pub(crate) fn field(doc: &Value, schema: &Value, path: &str) -> Field {
    let mut current = vec![(schema, true, false)];
    for step in path.split('.') {
        let mut next = Vec::new();
        for (schema, _, _) in current {
            for (object, nullable) in alternatives(doc, schema, 0) {
                if step == "[]" {
                    if let Some(items) = object.get("items") {
                        next.push((items, true, nullable));
                    }
                } else if let Some(property) = object.pointer(&format!(
                    "/properties/{}",
                    step.replace('~', "~0").replace('/', "~1")
                )) {
                    let required = object
                        .get("required")
                        .and_then(Value::as_array)
                        .is_some_and(|r| r.iter().any(|n| n.as_str() == Some(step)));
                    next.push((property, required, nullable));
                }
            }
        }
        if next.is_empty() {
            return Field::Missing;
        }
        current = next;
    }
    let required = current.iter().all(|(_, required, _)| *required);
    let nullable = current
        .iter()
        .any(|(schema, _, _)| alternatives(doc, schema, 0).iter().any(|(_, n)| *n));
    Field::Described { required, nullable }
}

/// The objects `schema` may be once `$ref`s are followed and `allOf`, `anyOf` and `oneOf`
/// opened, each with whether null is allowed on the way there.
fn alternatives<'d>(doc: &'d Value, schema: &'d Value, depth: usize) -> Vec<(&'d Value, bool)> {
    if depth > 32 {
        return Vec::new();
    }
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(COMPONENT))
    {
        return component(doc, name)
            .map(|c| alternatives(doc, c, depth + 1))
            .unwrap_or_default();
    }
    let nullable = schema.get("nullable") == Some(&Value::Bool(true));
    let mut found = vec![(schema, nullable)];
    for key in LIST {
        for member in schema
            .get(*key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            found.extend(
                alternatives(doc, member, depth + 1)
                    .into_iter()
                    .map(|(s, n)| (s, n || nullable)),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({"components": {"schemas": {
            "user": {"type": "object", "required": ["login"], "properties": {
                "login": {"type": "string"},
                "boss": {"$ref": "#/components/schemas/nullable-user"},
            }},
            "nullable-user": {"type": "object", "nullable": true, "required": ["login"],
                "properties": {"login": {"type": "string"}}},
            "pull": {"type": "object", "required": ["number", "user"], "properties": {
                "number": {"type": "integer"},
                "body": {"type": "string", "nullable": true},
                "user": {"$ref": "#/components/schemas/user"},
                "x-ours": {"type": "string"},
            }, "example": {"anything": true}},
        }}})
    }

    fn valid(schema: &Value, instance: Value) -> bool {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(schema)
            .unwrap()
            .is_valid(&instance)
    }

    #[test]
    fn a_converted_schema_stands_alone_and_reads_nullable_as_openapi_does() {
        let doc = doc();
        let schema = standalone(&doc, &json!({"$ref": "#/components/schemas/pull"})).unwrap();
        let definitions = schema["definitions"].as_object().unwrap();
        assert_eq!(
            definitions.keys().collect::<Vec<_>>(),
            ["nullable-user", "pull", "user"]
        );
        let user = json!({"login": "a", "boss": null});
        assert!(valid(
            &schema,
            json!({"number": 1, "body": null, "user": user})
        ));
        // The attacker's cases: what the description refuses is refused.
        assert!(!valid(&schema, json!({"number": 1})), "user is required");
        assert!(!valid(&schema, json!({"number": null, "user": user})));
        assert!(!valid(
            &schema,
            json!({"number": 1, "user": {"boss": null}})
        ));
        assert!(!valid(&schema, json!({"number": "1", "user": user})));
        // An OpenAPI-only keyword is not a JSON Schema one.
        assert!(!schema.to_string().contains("anything"));
    }

    #[test]
    fn a_ref_to_something_else_than_a_schema_is_an_error() {
        let err = standalone(&doc(), &json!({"$ref": "#/components/responses/x"})).unwrap_err();
        assert!(
            err.to_string().contains("names no component schema"),
            "{err}"
        );
        let err = standalone(&doc(), &json!({"$ref": "#/components/schemas/none"})).unwrap_err();
        assert!(err.to_string().contains("not in the description"), "{err}");
    }

    #[test]
    fn fields_are_found_through_refs_and_say_whether_they_are_required() {
        let doc = doc();
        let pull = json!({"$ref": "#/components/schemas/pull"});
        let list = json!({"type": "array", "items": pull});
        assert_eq!(
            field(&doc, &pull, "user.login"),
            Field::Described {
                required: true,
                nullable: false
            }
        );
        assert_eq!(
            field(&doc, &list, "[].body"),
            Field::Described {
                required: false,
                nullable: true
            }
        );
        assert_eq!(
            field(&doc, &pull, "user.boss"),
            Field::Described {
                required: false,
                nullable: true
            }
        );
        assert_eq!(field(&doc, &pull, "html_url"), Field::Missing);
        assert_eq!(field(&doc, &list, "number"), Field::Missing);
    }
}
