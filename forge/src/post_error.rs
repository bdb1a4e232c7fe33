//! [`PostError`]: how a request to a forge failed — worth another try, final, the
//! repository moved, or the credential refused ([`Refused`], carrying the token the forge
//! refused so that exactly that one is forgotten) — and [`Refusable`], the question every
//! error type the forge's callers speak answers: is this a refusal of the credential?
//!
//! Invariants: a refusal's token never shows (`Debug` and `Display` say the forge's answer
//! only); nothing here reaches the network or the credentials' caches (`crate::auth` does).

use crate::token::Token;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("{0} (will retry)")]
    Retry(String),
    #[error("{0}")]
    Permanent(String),
    /// The repository's name now names another repository on the forge than the one
    /// registered (its forge id changed): nothing is done with it, whatever the use. Final.
    #[error("{0}")]
    Moved(String),
    /// The forge refused the token the request presented (HTTP 401, `Bad credentials`):
    /// `ForgeAuth::renewing` (in `auth`) forgets that token and tries once more with a
    /// new one, or makes this final.
    #[error("{0}")]
    Refused(Refused),
}

impl PostError {
    /// Its sentence, whatever its kind (as kept for readers once nothing is tried again).
    pub fn into_reason(self) -> String {
        match self {
            PostError::Retry(why) | PostError::Permanent(why) | PostError::Moved(why) => why,
            PostError::Refused(refused) => refused.to_string(),
        }
    }

    /// A lookup's error (`anyhow`, from [`crate::lookup`]) as a write's: the refusal of a
    /// token stays one, anything else is worth another try.
    pub fn of_lookup(error: anyhow::Error) -> PostError {
        match error.refusal() {
            Some(refused) => PostError::Refused(refused.clone()),
            None => PostError::Retry(format!("{error:#}")),
        }
    }
}

/// The forge refused the credential a request presented.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct Refused {
    /// The forge's answer (or git's message), without the token.
    why: String,
    /// The token presented: what is forgotten.
    token: Token,
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refused")
            .field("why", &self.why)
            .finish_non_exhaustive()
    }
}

impl Refused {
    /// `token` was refused; `why` is what the forge said (it must not hold the token).
    pub fn new(why: String, token: Token) -> Refused {
        Refused { why, token }
    }

    /// The token that was refused.
    pub fn token(&self) -> &Token {
        &self.token
    }
}

/// Whether an unsuccessful API answer refuses the credential itself: HTTP 401, or any
/// client error whose message is GitHub's `Bad credentials`.
pub fn http_refused(status: reqwest::StatusCode, body: &str) -> bool {
    status == reqwest::StatusCode::UNAUTHORIZED
        || (status.is_client_error() && body.contains("Bad credentials"))
}

/// Whether git's error text says the remote refused the credential it sent: an HTTP 401,
/// which git reports as `Authentication failed`, or — when it then wanted to ask for a
/// user name and may not prompt — `could not read Username`.
pub fn git_refused(stderr: &str) -> bool {
    const SAYINGS: [&str; 6] = [
        "Authentication failed",
        "could not read Username",
        "could not read Password",
        "The requested URL returned error: 401",
        "Bad credentials",
        "Invalid username or password",
    ];
    SAYINGS.iter().any(|said| stderr.contains(said))
}

/// An error that may carry a [`Refused`].
pub trait Refusable: Sized {
    /// The refusal this error is, if it is one.
    fn refusal(&self) -> Option<&Refused>;
    /// The final error of a refusal that is not renewed: `why` (which says the refusal),
    /// carrying no [`Refused`] any more, so that no outer exchange renews it again.
    fn final_refusal(self, why: String) -> Self;
}

impl Refusable for PostError {
    fn refusal(&self) -> Option<&Refused> {
        match self {
            PostError::Refused(refused) => Some(refused),
            _ => None,
        }
    }

    fn final_refusal(self, why: String) -> Self {
        PostError::Permanent(why)
    }
}

impl Refusable for anyhow::Error {
    fn refusal(&self) -> Option<&Refused> {
        self.chain().find_map(|cause| {
            cause.downcast_ref::<Refused>().or_else(|| {
                cause
                    .downcast_ref::<PostError>()
                    .and_then(Refusable::refusal)
            })
        })
    }

    fn final_refusal(self, why: String) -> Self {
        anyhow::anyhow!(why)
    }
}
