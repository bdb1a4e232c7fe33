//! What every page's header shows: whether someone is signed in, who, the session's form
//! token and where sign-in returns to. Data only: [`super::session`] fills it from the
//! session, and error pages ([`super::error`]) carry it.

use serde::Serialize;

/// What every page's header shows.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Chrome {
    pub(super) signed_in: bool,
    /// The signed-in user's name.
    pub(super) user: Option<String>,
    /// The session's form token (writes are offered only with one).
    pub(super) csrf: Option<String>,
    /// Where sign-in returns to.
    pub(super) path: String,
    /// No one is signed in on an engine that has users: lists hide what only signed-in
    /// users may read, and say that signing in may show more.
    pub(super) signed_out: bool,
}
