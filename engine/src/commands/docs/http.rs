//! The HTTP API reference: every operation of the OpenAPI document the engine serves at
//! `GET /api/openapi.json`, grouped by tag, with its parameters, body and statuses.

use std::fmt::Write;

use anyhow::Context;
use serde_json::Value;

use super::markdown::{cell, code, code_cell, prose};

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

pub(super) fn page() -> anyhow::Result<String> {
    let doc = serde_json::to_value(plue_server::api::openapi()).context("the OpenAPI document")?;
    let mut out = String::from("# The HTTP API\n\n");
    if let Some(description) = doc.pointer("/info/description").and_then(Value::as_str) {
        let _ = writeln!(out, "{}\n", prose(description));
    }
    let _ = writeln!(
        out,
        "The machine-readable contract, with every schema in full, is `GET /api/openapi.json` \
         (OpenAPI {}, no token needed). Operations marked *token* need \
         `Authorization: Bearer <token>`; *token or none* answer without one for what is \
         public.\n",
        doc.get("openapi").and_then(Value::as_str).unwrap_or("3")
    );
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .context("the document has no paths")?;
    let tags: Vec<(String, String)> = doc
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .map(|t| {
                    (
                        str_at(t, "/name").to_string(),
                        str_at(t, "/description").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut sections: Vec<(String, String)> = tags.clone();
    // Operations whose tag the document does not describe still get a section.
    for item in paths.values() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                let tag = operation_tag(op);
                if !sections.iter().any(|(name, _)| *name == tag) {
                    sections.push((tag, String::new()));
                }
            }
        }
    }
    for (tag, description) in &sections {
        let mut body = String::new();
        for (path, item) in paths {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                if operation_tag(op) == *tag {
                    operation(&doc, method, path, item, op, &mut body);
                }
            }
        }
        if body.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {tag}\n");
        if !description.is_empty() {
            let _ = writeln!(out, "{}\n", prose(description));
        }
        out.push_str(&body);
    }
    Ok(out)
}

fn operation_tag(op: &Value) -> String {
    op.pointer("/tags/0")
        .and_then(Value::as_str)
        .unwrap_or("other")
        .to_string()
}

fn operation(doc: &Value, method: &str, path: &str, item: &Value, op: &Value, out: &mut String) {
    let summary = str_at(op, "/summary");
    let _ = writeln!(
        out,
        "### `{} {path}`\n\n{}{}\n",
        method.to_uppercase(),
        prose(summary),
        if summary.is_empty() { "" } else { "." }
    );
    let description = str_at(op, "/description");
    if !description.is_empty() && description != summary {
        let _ = writeln!(out, "{}\n", prose(description));
    }
    let _ = writeln!(out, "Authentication: {}.\n", auth(op));
    let mut params: Vec<&Value> = Vec::new();
    for source in [item.get("parameters"), op.get("parameters")] {
        if let Some(list) = source.and_then(Value::as_array) {
            params.extend(list);
        }
    }
    if !params.is_empty() {
        let _ = writeln!(
            out,
            "| parameter | in | type | description |\n|---|---|---|---|"
        );
        for p in params {
            let required = if p.get("required").and_then(Value::as_bool) == Some(true) {
                " (required)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "| {}{required} | {} | {} | {} |",
                code_cell(str_at(p, "/name")),
                str_at(p, "/in"),
                code_cell(&type_name(p.get("schema").unwrap_or(&Value::Null))),
                cell(str_at(p, "/description"))
            );
        }
        out.push('\n');
    }
    if let Some(body) = op.get("requestBody") {
        let required = if body.get("required").and_then(Value::as_bool) == Some(true) {
            "required"
        } else {
            "optional"
        };
        let _ = writeln!(
            out,
            "Request body ({required}): {}\n",
            contents(body.get("content"))
        );
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let _ = writeln!(out, "| status | meaning | body |\n|---|---|---|");
        for (status, response) in responses {
            let response = shared_response(doc, response);
            let _ = writeln!(
                out,
                "| {status} | {} | {} |",
                cell(str_at(response, "/description")),
                contents(response.get("content")).replace('|', "\\|")
            );
        }
        out.push('\n');
    }
}

/// `response`, or the answer several operations share that it refers to
/// (`#/components/responses/<name>`).
fn shared_response<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    response
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|target| target.strip_prefix("#/components/responses/"))
        .and_then(|name| doc.pointer(&format!("/components/responses/{name}")))
        .unwrap_or(response)
}

/// Whether the operation needs a token: `security` lists alternatives, `{}` being none.
fn auth(op: &Value) -> &'static str {
    let Some(alternatives) = op.get("security").and_then(Value::as_array) else {
        return "none";
    };
    let open = alternatives
        .iter()
        .any(|a| a.as_object().is_some_and(|o| o.is_empty()));
    let token = alternatives
        .iter()
        .any(|a| a.as_object().is_some_and(|o| !o.is_empty()));
    match (token, open) {
        (true, true) => "*token or none*",
        (true, false) => "*token*",
        _ => "none",
    }
}

/// `application/json` `RunView`, one per content type.
fn contents(content: Option<&Value>) -> String {
    let Some(content) = content.and_then(Value::as_object) else {
        return String::new();
    };
    content
        .iter()
        .map(|(media, v)| {
            let schema = v.get("schema").map(type_name).unwrap_or_default();
            if schema.is_empty() {
                code(media)
            } else {
                format!("{} {}", code(media), code(&schema))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A schema's short name: its component, `[T]` for an array of T, else its type.
fn type_name(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference
            .rsplit('/')
            .next()
            .unwrap_or(reference)
            .to_string();
    }
    if let Some(items) = schema.get("items") {
        return format!("[{}]", type_name(items));
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let names: Vec<String> = options
                .iter()
                .map(type_name)
                .filter(|n| n != "null")
                .collect();
            return names.join(" or ");
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => String::new(),
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_operation_is_listed_with_its_statuses() {
        let page = super::page().unwrap();
        assert!(page.contains("### `GET /api/runs`"), "{page}");
        assert!(page.contains("| 401 |"), "{page}");
        assert!(
            page.contains("### `POST /api/runs/{id}/steps/{step}/approve`"),
            "{page}"
        );
    }
}
