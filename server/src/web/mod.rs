//! The dashboard: HTML pages rendered by the server at `/` — runs, a run's DAG and steps, a
//! step's live log, repositories and their workflows, the runners and the pool — with a
//! little JavaScript from `/assets` for the live parts. Templates (`templates/`) and assets
//! (`assets/`) are compiled into the binary; nothing needs a front-end build.
//!
//! [`router`] is the only entry point. Pages read through the [`Store`](plue_store::Store)
//! and the API's view types; writes (cancel, re-run, dispatch) and the log stream go through
//! the public API itself, called in-process as the session's caller (`forward`), so the
//! dashboard can never do more than the API lets that user do.
//!
//! Invariants:
//! - Every page resolves its [`Caller`](crate::access::Caller) from the session cookie
//!   (`session`) and shows only what it may read: lists are filtered in the query by
//!   [`Caller::readable`](crate::access::Caller::readable), a page of a thing the caller
//!   may not read is the 404 of a missing one (the sign-in page for the anonymous), and
//!   writes are offered only to callers whose role allows them (the API checks again).
//! - Every response carries a Content-Security-Policy that allows scripts, styles and
//!   connections only from this origin and no inline script or style, plus `nosniff` and
//!   `frame-ancestors 'none'`: a missed escape cannot run code.
//! - Every string from a workflow, a log or a forge is escaped by the template engine
//!   (`render`); logs are turned into DOM text nodes by `assets/log.js`, never HTML.
//! - Template contexts derive `Serialize` here; they are page models, not the API's wire
//!   format (that stays in `api/views.rs`).

#[cfg(test)]
mod access_tests;
mod assets;
mod chrome;
mod dag;
mod error;
mod forward;
mod icons;
mod live;
mod log;
mod log_approval;
mod log_conversation;
mod log_steps;
mod render;
mod repo_caches;
mod repos;
mod run;
mod run_approval;
mod run_facts;
mod run_failure;
mod run_timeline;
mod runners;
mod runs;
mod session;
pub(crate) use session::{cookie, local_path, session_cookies, sign_in_page};
#[cfg(test)]
mod signed_out_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::access::Resolver;
use crate::api::ApiState;
// The pages' links encode their path segments and query values with it.
use crate::percent::encode;

/// What the dashboard needs from a running engine.
#[derive(Clone)]
pub struct WebState {
    /// The public API's state: the dashboard reads its store and calls its router.
    pub api: ApiState,
    /// Cookies are `Secure` (the engine's public URL is https).
    pub secure_cookies: bool,
    /// The sign-in providers the sign-in page links to (`crate::sign_in` serves them).
    pub sign_in_links: Vec<SignInLink>,
    /// Routes served under the dashboard's layers (its chrome, headers and sign-in page):
    /// the sign-in providers' (`crate::sign_in`), which this module does not know.
    pub extra: Router,
}

/// A sign-in provider as the sign-in page links to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignInLink {
    pub name: String,
    pub label: String,
    /// `/sign-in/{name}`.
    pub href: String,
}

/// The dashboard's shared state (cheap to clone).
#[derive(Clone)]
struct Web(Arc<Inner>);

struct Inner {
    state: ApiState,
    /// The public API, called in-process for writes and log streams.
    api: Router,
    secure_cookies: bool,
    sign_in_links: Vec<SignInLink>,
}

impl std::ops::Deref for Web {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Web {
    fn store(&self) -> &plue_store::Store {
        self.state.executor.store()
    }

    fn resolver(&self) -> &Resolver {
        &self.state.resolver
    }
}

/// The Content-Security-Policy of every dashboard response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes: `/` (runs), `/runs/{id}`, `/runs/{id}/steps/{step}` (log),
/// `/runners`, `/login`, `/assets/...`, and the fallback: an HTML 404 page for any other
/// URL (JSON under `/api/`, `/internal/` and `/webhooks/`), so the server that merges this
/// router sets no fallback of its own.
pub fn router(state: WebState) -> Router {
    let web = Web(Arc::new(Inner {
        api: crate::api::router(state.api.clone()),
        state: state.api,
        secure_cookies: state.secure_cookies,
        sign_in_links: state.sign_in_links,
    }));
    Router::new()
        .route("/", get(runs::page))
        .route("/runs/rows", get(runs::rows))
        .route("/runs/{id}", get(run::page))
        .route("/runs/{id}/live", get(run::live))
        .route("/runs/{id}/timeline", get(run_timeline::page))
        .route("/runs/{id}/timeline/live", get(run_timeline::live))
        .route("/runs/{id}/cancel", post(run::cancel))
        .route("/runs/{id}/rerun", post(run::rerun))
        .route("/runs/{id}/rerun-failed", post(run::rerun_failed))
        .route(
            "/runs/{id}/steps/{step}/approve",
            post(run_approval::approve),
        )
        .route("/runs/{id}/steps/{step}/reject", post(run_approval::reject))
        .route(
            "/runs/{id}/proposals/{pid}/{verb}",
            post(run::decide_proposal),
        )
        .route("/runs/{id}/steps/{step}", get(log::page))
        .route("/runs/{id}/steps/{step}/stream", get(log::stream))
        .route("/runs/{id}/steps/{step}/raw", get(log::raw))
        .route("/live", get(live::stream))
        .route("/runners", get(runners::page))
        .route("/repos", get(repos::list))
        .route("/repos/{owner}/{name}", get(repos::page))
        .route("/repos/{owner}/{name}/dispatch", post(repos::dispatch))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/{file}", get(assets::serve))
        .fallback(error::not_found)
        .with_state(web.clone())
        .merge(state.extra)
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            session::with_chrome,
        ))
        .layer(axum::middleware::from_fn_with_state(
            web,
            session::clear_legacy_cookie,
        ))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `/runs/{id}`'s id, or a 404 page (an id that is not a number names no run).
fn parse_run_id(raw: &str) -> error::WebResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| error::WebError::not_found(format!("There is no run '{raw}'.")))
}
