//! `GET /api/openapi.json`: the public API's contract, generated from the handlers'
//! `#[utoipa::path]` attributes and the `ToSchema` shapes of [`super::views`].
//!
//! Invariants: every `/api` route is registered from its handler's own `#[utoipa::path]`
//! ([`super::routes`] feeds `utoipa_axum::routes!`), so the router cannot serve a path or a
//! method the document does not list — the tests below probe the real router to hold that;
//! each operation lists every status its handler (and the caller middleware) can answer, the
//! errors with the [`super::views::ErrorView`] body of [`crate::http_error::ApiError`].
//! The answers many operations give alike (the 500, the usual 401s) are declared once here
//! ([`EngineFailed`], [`Unauthorized`], ...) and referenced from each operation as
//! `#/components/responses/<name>`; an answer with words of its own stays in its operation.
//!
//! The document is readable without a token, though reads are private: it is built from
//! the code alone, is the same for every engine of a version, and holds no data of this one
//! (no repository, run, runner or token) — and a client needs it to learn how to send one.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayItems, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi, ToResponse};

use super::views::ErrorView;

/// The name of the bearer token scheme; operations' `security(...)` spell it out as a
/// literal (all utoipa takes), and a test checks that writes name it.
const BEARER: &str = "bearer";

/// What every operation shares: info, tags, the security scheme. The paths come from the
/// router ([`super::openapi`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plue API",
        description = "The public API of a Plue engine: runs, steps and their logs, \
                       approvals, runners, the warm pool, repositories, their secrets and \
                       schedules, manual dispatch, API tokens and runner registration \
                       tokens.\n\nA caller is a user, through `Authorization: Bearer \
                       <token>`: the admin token (`PLUE_ADMIN_TOKEN`, the `admin` user) or \
                       one of a user's API tokens (`plue token create`). What it may do \
                       is its role on each repository — `reader` (runs, logs, artifacts, \
                       approvals, schedules, environments), `writer` (and dispatch, \
                       re-run, cancel, decide the approvals it is named for), \
                       `maintainer` (and settings, members, secrets, environments) — or \
                       an installation admin's (users, groups, repositories, runner \
                       tokens, server files). Without a token a caller reads only the \
                       repositories whose reads are public; a repository the caller may \
                       not read answers 404, as if it did not exist. Every error answers \
                       `{\"error\": \"...\"}`; a 5xx says nothing more than `internal \
                       error`."
    ),
    modifiers(&BearerToken),
    components(responses(EngineFailed, Unauthorized, InvalidToken, RunNotPublic, RepoNotPublic, SignedInRead)),
    tags(
        (name = "runs", description = "Runs, their steps and re-runs"),
        (name = "logs", description = "Step logs: JSON lines or a live SSE stream"),
        (name = "approvals", description = "People deciding approval steps and environment reviews"),
        (name = "debug", description = "Debug sessions: a failed step run again with a shell in its workspace (`plue debug`)"),
        (name = "proposals", description = "What llm steps proposed to the forge (safe outputs) and people deciding them"),
        (name = "runners", description = "Runners and the warm pool"),
        (name = "repos", description = "Registered repositories, secrets, dispatch, schedules"),
        (name = "environments", description = "A repository's environments: allowed refs, reviewers, wait timer, secrets"),
        (name = "tokens", description = "API tokens and runner registration tokens"),
        (name = "users", description = "Users, their forge logins, groups and the audit trail"),
        (name = "meta", description = "This document"),
    )
)]
pub(crate) struct ApiDoc;

/// 500 on every operation that reaches the store: what failed is in the engine's log, the
/// body says only `internal error`. An operation names it `(status = 500, response =
/// EngineFailed)`. These types are descriptions for the document, never built: the field
/// names the body's schema (`Error`) and is never read.
#[derive(ToResponse)]
#[response(description = "The engine failed (see its log)")]
pub(super) struct EngineFailed(#[allow(dead_code)] ErrorView);

/// 401 of an operation for signed-in callers only (every write, admin reads).
#[derive(ToResponse)]
#[response(description = "No valid bearer token")]
pub(super) struct Unauthorized(#[allow(dead_code)] ErrorView);

/// 401 of an installation-wide read (runners, the pool, every schedule): not anonymous,
/// though such an operation also accepts no token at all in the document's security.
#[derive(ToResponse)]
#[response(description = "No valid token: installation-wide reads are for signed-in users")]
pub(super) struct SignedInRead(#[allow(dead_code)] ErrorView);

/// 401 of an operation any caller may reach, when a token is sent but opens nothing.
#[derive(ToResponse)]
#[response(description = "The token is not valid")]
pub(super) struct InvalidToken(#[allow(dead_code)] ErrorView);

/// 401 of a read of a run: anonymous callers read only public repositories' runs.
#[derive(ToResponse)]
#[response(description = "No valid token, and the run is not public")]
pub(super) struct RunNotPublic(#[allow(dead_code)] ErrorView);

/// 401 of a read of a repository: anonymous callers read only public repositories.
#[derive(ToResponse)]
#[response(description = "No valid token, and the repository is not public")]
pub(super) struct RepoNotPublic(#[allow(dead_code)] ErrorView);

/// Adds the bearer token scheme that writes (and private reads) need.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (PLUE_ADMIN_TOKEN) or a user's API token made \
                         with `plue token create` or POST /api/tokens; a token acts with \
                         at most its user's roles.",
                    ))
                    .build(),
            ),
        );
    }
}

/// axum's catch-all segment `{*name}` (the router's spelling, which `routes!` takes from
/// the handler's `path`) is `{name}` in OpenAPI: the spec names it so.
pub(super) fn plain_wildcards(doc: &mut utoipa::openapi::OpenApi) {
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
}

/// utoipa spells an optional body (`Option<T>`) as "`null` or T"; the handlers take an
/// absent body, not a `null` one (that is a 422). This keeps T alone, not required.
pub(super) fn optional_bodies(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for body in operations
            .into_iter()
            .flatten()
            .filter_map(|operation| operation.request_body.as_mut())
        {
            for content in body.content.values_mut() {
                let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
                    continue;
                };
                let mut rest = one_of.items.iter().filter(|item| !is_null(item));
                if let (Some(only), None) = (rest.next(), rest.next()) {
                    content.schema = Some(only.clone());
                    body.required = Some(Required::False);
                }
            }
        }
    }
}

/// What a derive cannot say about a handler's rule, said here so a schema-valid request is
/// not refused (utoipa puts a field's `pattern` on the array, not on its items): the
/// repositories a new API token is narrowed to are each `owner/name`, an environment's
/// reviewers each a user name or an `@group`; a debug terminal's `cols` and `rows` come
/// together.
pub(super) fn handler_rules(doc: &mut utoipa::openapi::OpenApi) {
    // As `CreateRepo.name`'s.
    items_pattern(
        doc,
        "CreateToken",
        "repos",
        r"^[A-Za-z0-9._-]{1,100}/[A-Za-z0-9._-]{1,100}$",
    );
    // `store::valid_name`, after an optional `@`.
    items_pattern(
        doc,
        "PutEnvironment",
        "reviewers",
        r"^@?[A-Za-z0-9][A-Za-z0-9._-]{0,38}$",
    );
    window_size_together(doc);
}

/// `DebugInput`: `cols` and `rows` are both integers or both absent (or `null`), as
/// `debug::input` takes them. OpenAPI 3.1 reads JSON Schema 2020-12, whose
/// `dependentRequired` would still let one be `null` beside the other; so the object, and
/// any of the two shapes: both integers, or neither anything but `null`.
fn window_size_together(doc: &mut utoipa::openapi::OpenApi) {
    let schemas = &mut doc
        .components
        .as_mut()
        .expect("the document has components")
        .schemas;
    let Some(RefOr::T(Schema::Object(object))) = schemas.remove("DebugInput") else {
        panic!("DebugInput is no longer an object");
    };
    for field in ["cols", "rows"] {
        assert!(
            object.properties.contains_key(field),
            "DebugInput.{field} is gone"
        );
    }
    let typed = |kind: Type| ObjectBuilder::new().schema_type(kind).build();
    let both = ObjectBuilder::new()
        .property("cols", typed(Type::Integer))
        .property("rows", typed(Type::Integer))
        .required("cols")
        .required("rows");
    let neither = ObjectBuilder::new()
        .property("cols", typed(Type::Null))
        .property("rows", typed(Type::Null));
    let description = object.description.clone();
    let together = AllOfBuilder::new()
        .item(object)
        .item(AnyOfBuilder::new().item(both).item(neither))
        .description(
            description
                .map(|d| format!("{d} A window size is `cols` and `rows` together, or neither.")),
        );
    schemas.insert("DebugInput".to_string(), together.into());
}

/// Each item of the array `component.field` (a string) matches `pattern`.
fn items_pattern(doc: &mut utoipa::openapi::OpenApi, component: &str, field: &str, pattern: &str) {
    let item = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .build();
    let array = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut(component))
        .and_then(|schema| match schema {
            RefOr::T(Schema::Object(object)) => object.properties.get_mut(field),
            _ => None,
        });
    match array {
        Some(RefOr::T(Schema::Array(array))) => {
            array.items = ArrayItems::RefOrSchema(Box::new(item.into()))
        }
        _ => panic!("{component}.{field} is no longer an array of strings"),
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(object))
        if object.schema_type == SchemaType::Type(Type::Null))
}

/// The document, built once.
static SPEC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(super::openapi);

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This API's OpenAPI document",
    description = "Readable without a token, though reads are private: it is built from \
                   the code and holds no data of this engine.",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value),
    )
)]
pub(super) async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(&SPEC)
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
