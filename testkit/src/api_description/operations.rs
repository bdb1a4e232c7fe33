//! Finding a request's operation in an OpenAPI document: its path matched against the path
//! templates (`/repos/{owner}/{repo}/pulls/{pull_number}`), and its parameters (the path
//! item's and the operation's, `$ref`s to `#/components/parameters/...` followed) with
//! their values as the schema types them.
//!
//! Invariants: a template's literal segment matches only that segment, percent-decoded; a
//! `{name}` segment matches one non-empty segment; of several matching templates the one
//! with the most literal segments wins (`/repos/{o}/{r}/pulls/comments` over
//! `/repos/{o}/{r}/pulls/{pull_number}`), as servers route.

use serde_json::{Map, Value};

use crate::forge::query::percent_decode;

/// One operation of the document.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    /// `pulls/create`, or `METHOD template` when it has no `operationId`.
    pub(crate) id: String,
    pub(crate) method: String,
    pub(crate) template: String,
    /// JSON pointer of the operation object in the document.
    pub(crate) pointer: String,
}

impl Operation {
    /// `pulls/create (POST /repos/{owner}/{repo}/pulls)`: how findings name it.
    pub(crate) fn name(&self) -> String {
        format!(
            "{} ({} {})",
            self.id,
            self.method.to_ascii_uppercase(),
            self.template
        )
    }
}

/// A parameter as declared.
#[derive(Debug, Clone)]
pub(crate) struct Parameter {
    pub(crate) name: String,
    /// `path`, `query`, `header` or `cookie`.
    pub(crate) place: String,
    pub(crate) required: bool,
    /// JSON pointer of its schema in the document.
    pub(crate) schema: Option<String>,
}

/// Every path template of `doc`, split into segments.
pub(crate) fn templates(doc: &Value) -> Vec<(String, Vec<String>)> {
    doc.get("paths")
        .and_then(Value::as_object)
        .map(|paths| {
            paths
                .keys()
                .map(|t| (t.clone(), split(t)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
}

fn split(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect()
}

/// Path parameters' names and values (decoded).
pub(crate) type PathValues = Vec<(String, String)>;

/// The operation `method path` is (the path percent-encoded, as sent, without the API's
/// prefix), with its path parameters' values.
pub(crate) fn find(
    doc: &Value,
    templates: &[(String, Vec<String>)],
    method: &str,
    path: &str,
) -> Option<(Operation, PathValues)> {
    let sent: Vec<String> = split(path).iter().map(|s| percent_decode(s)).collect();
    let method = method.to_ascii_lowercase();
    let mut best: Option<(usize, &String, PathValues)> = None;
    for (template, segments) in templates {
        if segments.len() != sent.len() {
            continue;
        }
        let mut values = Vec::new();
        let mut literals = 0;
        let fits = segments.iter().zip(&sent).all(|(want, got)| {
            match want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                Some(name) if !got.is_empty() => {
                    values.push((name.to_string(), got.clone()));
                    true
                }
                Some(_) => false,
                None => {
                    literals += 1;
                    want == got
                }
            }
        });
        let has_method = doc["paths"][template].get(&method).is_some();
        if fits && has_method && best.as_ref().is_none_or(|(l, _, _)| literals > *l) {
            best = Some((literals, template, values));
        }
    }
    let (_, template, values) = best?;
    let pointer = format!("/paths/{}/{method}", escape(template));
    let id = doc
        .pointer(&pointer)
        .and_then(|op| op.get("operationId"))
        .and_then(Value::as_str)
        .map_or_else(
            || format!("{} {template}", method.to_ascii_uppercase()),
            str::to_string,
        );
    Some((
        Operation {
            id,
            method,
            template: template.clone(),
            pointer,
        },
        values,
    ))
}

/// The operation whose `operationId` is `id`.
pub(crate) fn by_id(doc: &Value, id: &str) -> Option<Operation> {
    let paths = doc.get("paths")?.as_object()?;
    for (template, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            if op.get("operationId").and_then(Value::as_str) == Some(id) {
                return Some(Operation {
                    id: id.to_string(),
                    method: method.clone(),
                    template: template.clone(),
                    pointer: format!("/paths/{}/{method}", escape(template)),
                });
            }
        }
    }
    None
}

/// The parameters `operation` declares: the path item's, overridden by the operation's.
pub(crate) fn parameters(doc: &Value, operation: &Operation) -> Vec<Parameter> {
    let item = format!("/paths/{}", escape(&operation.template));
    let mut found: Vec<Parameter> = Vec::new();
    for owner in [item, operation.pointer.clone()] {
        let list = doc
            .pointer(&format!("{owner}/parameters"))
            .and_then(Value::as_array);
        for (index, declared) in list.into_iter().flatten().enumerate() {
            let (declared, at) = match declared.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let at = reference.trim_start_matches('#').to_string();
                    match doc.pointer(&at) {
                        Some(target) => (target, at),
                        None => continue,
                    }
                }
                None => (declared, format!("{owner}/parameters/{index}")),
            };
            let text = |key: &str| declared.get(key).and_then(Value::as_str).unwrap_or("");
            let parameter = Parameter {
                name: text("name").to_string(),
                place: text("in").to_string(),
                required: declared.get("required") == Some(&Value::Bool(true)),
                schema: declared.get("schema").map(|_| format!("{at}/schema")),
            };
            found.retain(|p| !(p.name == parameter.name && p.place == parameter.place));
            found.push(parameter);
        }
    }
    found
}

/// `value` (a path or query string) typed as `schema` says: an integer, a number or a
/// boolean when it parses as one, else the string (which the schema then refuses).
pub(crate) fn typed(schema: &Value, value: &str) -> Value {
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    let parsed = match kind {
        "integer" => value.parse::<i64>().ok().map(Value::from),
        "number" => value.parse::<f64>().ok().map(Value::from),
        "boolean" => value.parse::<bool>().ok().map(Value::from),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(value.to_string()))
}

/// A JSON pointer's reference token.
pub(crate) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `application/json`'s schema (or another JSON media type's) of a `content` map: its
/// JSON pointer below `at`.
pub(crate) fn json_schema_of(content: &Map<String, Value>, at: &str) -> Option<String> {
    let media = content
        .keys()
        .find(|m| m.as_str() == "application/json")
        .or_else(|| content.keys().find(|m| m.ends_with("json")))?;
    content[media]
        .get("schema")
        .map(|_| format!("{at}/content/{}/schema", escape(media)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"paths": {
            "/repos/{owner}/{repo}/pulls/{pull_number}": {"get": {"operationId": "pulls/get"},
                "parameters": [{"$ref": "#/components/parameters/owner"}]},
            "/repos/{owner}/{repo}/pulls/comments": {"get": {"operationId": "pulls/list-comments",
                "parameters": [{"name": "page", "in": "query", "schema": {"type": "integer"}}]}},
        }, "components": {"parameters": {"owner": {"name": "owner", "in": "path",
            "required": true, "schema": {"type": "string"}}}}})
    }

    #[test]
    fn the_template_with_most_literal_segments_wins_and_values_are_decoded() {
        let doc = doc();
        let templates = templates(&doc);
        let (op, _) = find(&doc, &templates, "GET", "/repos/a/b/pulls/comments").unwrap();
        assert_eq!(op.id, "pulls/list-comments");
        let (op, values) = find(&doc, &templates, "GET", "/repos/a%2Fx/b/pulls/7").unwrap();
        assert_eq!(
            op.name(),
            "pulls/get (GET /repos/{owner}/{repo}/pulls/{pull_number})"
        );
        assert_eq!(values[0], ("owner".to_string(), "a/x".to_string()));
        // The attacker's cases: another method, an empty segment, one segment more.
        assert!(find(&doc, &templates, "POST", "/repos/a/b/pulls/7").is_none());
        assert!(find(&doc, &templates, "GET", "/repos//b/pulls/7").is_none());
        assert!(find(&doc, &templates, "GET", "/repos/a/b/pulls/7/x").is_none());
    }

    #[test]
    fn parameters_follow_refs_and_values_are_typed() {
        let doc = doc();
        let op = by_id(&doc, "pulls/get").unwrap();
        let declared = parameters(&doc, &op);
        assert_eq!(declared.len(), 1);
        assert_eq!(
            (declared[0].name.as_str(), declared[0].place.as_str()),
            ("owner", "path")
        );
        assert_eq!(
            declared[0].schema.as_deref(),
            Some("/components/parameters/owner/schema")
        );
        assert_eq!(typed(&json!({"type": "integer"}), "12"), json!(12));
        assert_eq!(typed(&json!({"type": "integer"}), "1x"), json!("1x"));
        assert_eq!(percent_decode("a%3Ab%2"), "a:b%2");
    }
}
