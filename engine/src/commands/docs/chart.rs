//! The Helm chart's values: every key `values.schema.json` allows, with its type, its
//! default from `values.yaml`, and the schema's description — or, where the schema has
//! none, the key's `# --` comment in `values.yaml` (the helm-docs convention).

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::Context;
use serde_json::Value;

use super::markdown::{cell, code_cell};

const SCHEMA: &str = include_str!("../../../../charts/plue/values.schema.json");
const VALUES: &str = include_str!("../../../../charts/plue/values.yaml");

pub(super) fn page() -> anyhow::Result<String> {
    let schema: Value = serde_json::from_str(SCHEMA).context("charts/plue/values.schema.json")?;
    let defaults: Value = yaml_serde::from_str(VALUES).context("charts/plue/values.yaml")?;
    let mut out = String::from("# The Helm chart's values\n\n");
    let _ = writeln!(
        out,
        "Every key of `charts/plue` (`helm install plue charts/plue --set KEY=VALUE` or \
         `-f values.yaml`). The chart's schema refuses any other key, so a misspelt one fails \
         the install. Defaults are those of `charts/plue/values.yaml`; its comments say more.\n"
    );
    let _ = writeln!(
        out,
        "| key | type | default | description |\n|---|---|---|---|"
    );
    let comments = comments(VALUES);
    let mut rows = Vec::new();
    walk(&schema, &schema, "", Some(&defaults), &comments, &mut rows);
    for row in rows {
        out.push_str(&row);
    }
    if let Some(definitions) = schema.get("definitions").and_then(Value::as_object) {
        out.push_str("\nShared types:\n\n");
        for (name, definition) in definitions {
            let _ = writeln!(
                out,
                "- `{name}`: {}",
                cell(
                    definition
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                )
            );
        }
    }
    Ok(out)
}

fn walk(
    root: &Value,
    node: &Value,
    path: &str,
    default: Option<&Value>,
    comments: &BTreeMap<String, String>,
    rows: &mut Vec<String>,
) {
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, property) in properties {
        let key_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let value = default.and_then(|d| d.get(key));
        let resolved = resolve(root, property);
        rows.push(format!(
            "| {} | {} | {} | {} |\n",
            code_cell(&key_path),
            cell(&type_of(property, resolved)),
            value.map(shown).unwrap_or_default(),
            cell(
                property
                    .get("description")
                    .or_else(|| resolved.get("description"))
                    .and_then(Value::as_str)
                    .or_else(|| comments.get(&key_path).map(String::as_str))
                    .unwrap_or("")
            )
        ));
        walk(root, resolved, &key_path, value, comments, rows);
        if let Some(items) = resolved.get("items") {
            let items = resolve(root, items);
            walk(root, items, &format!("{key_path}[]"), None, comments, rows);
        }
    }
}

/// The `# --` comments of `values.yaml`, by the dotted path of the key they stand above
/// (keys inside lists are left out: the schema describes those).
fn comments(yaml: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut comment: Option<String> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if let Some(rest) = text.strip_prefix("# --") {
            comment = Some(rest.trim().to_string());
            continue;
        }
        if let Some(rest) = text.strip_prefix('#') {
            if let Some(c) = comment.as_mut() {
                c.push(' ');
                c.push_str(rest.trim());
            }
            continue;
        }
        if text.is_empty() {
            comment = None;
            continue;
        }
        if text.starts_with('-') {
            // A list item: what follows until the indentation drops belongs to a list.
            stack.retain(|(i, _)| *i < indent);
            stack.push((indent, "[]".to_string()));
            comment = None;
            continue;
        }
        let Some((key, _)) = text.split_once(':') else {
            comment = None;
            continue;
        };
        stack.retain(|(i, _)| *i < indent);
        stack.push((indent, key.trim().to_string()));
        if let Some(c) = comment.take() {
            if !stack.iter().any(|(_, k)| k == "[]") {
                let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
                found.insert(path.join("."), c);
            }
        }
    }
    found
}

/// A `$ref` to the schema's own definitions, followed.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .unwrap_or(node),
        None => node,
    }
}

fn type_of(property: &Value, resolved: &Value) -> String {
    if let Some(reference) = property.get("$ref").and_then(Value::as_str) {
        return reference
            .rsplit('/')
            .next()
            .unwrap_or(reference)
            .to_string();
    }
    let mut text = match resolved.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => {
            let options = resolved
                .get("anyOf")
                .or_else(|| resolved.get("oneOf"))
                .and_then(Value::as_array);
            match options {
                Some(options) => options
                    .iter()
                    .map(|o| match o.get("const") {
                        Some(c) => format!("{c}"),
                        None => type_of(o, o),
                    })
                    .collect::<Vec<_>>()
                    .join(" or "),
                None if resolved.get("enum").is_some() => String::new(),
                None => "any".to_string(),
            }
        }
    };
    if let Some(choices) = resolved.get("enum").and_then(Value::as_array) {
        let choices: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
        text = if text.is_empty() {
            format!("one of {}", choices.join(", "))
        } else {
            format!("{text}: one of {}", choices.join(", "))
        };
    }
    match (
        resolved.get("minimum").and_then(Value::as_f64),
        resolved.get("maximum").and_then(Value::as_f64),
    ) {
        (Some(min), Some(max)) => text.push_str(&format!(", {min}–{max}")),
        (Some(min), None) => text.push_str(&format!(", ≥ {min}")),
        (None, Some(max)) => text.push_str(&format!(", ≤ {max}")),
        (None, None) => {}
    }
    text
}

/// A default as a short code span; objects are described by their keys' rows instead.
fn shown(value: &Value) -> String {
    match value {
        Value::Object(map) if !map.is_empty() => String::new(),
        Value::Array(items) if items.iter().any(|i| i.is_object()) => String::new(),
        _ => code_cell(&value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nested_keys_and_defaults_are_listed() {
        let page = super::page().unwrap();
        assert!(
            page.contains("| `pool.classes[].min_warm` | integer"),
            "{page}"
        );
        assert!(
            page.contains("| `pool.createNamespace` | boolean | `true` |"),
            "{page}"
        );
    }
}
