//! Retrying Kubernetes API calls: server errors (5xx), throttling (429, honouring the
//! server's `retryAfterSeconds`), transport failures and calls that take too long are
//! tried again with exponential backoff; answers that retrying cannot change (404, 409,
//! 422, 403) are returned at once for the caller to judge.
//!
//! Invariant: one call never takes longer than [`Policy::budget`] in all, so a hung API
//! server delays the controller's loop, never stops it.

use std::future::Future;
use std::time::{Duration, Instant};

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Each attempt is abandoned after this long.
    pub(super) attempt_timeout: Duration,
    pub(super) first_delay: Duration,
    pub(super) max_delay: Duration,
    /// All attempts and waits together.
    pub(super) budget: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            attempt_timeout: Duration::from_secs(10),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            budget: Duration::from_secs(30),
        }
    }
}

/// A call that failed for good (after retries where they could help).
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    /// The server's answer (not found, already exists, conflict, invalid, forbidden, or
    /// a server error still there when the budget ran out).
    #[error("{what}: the API server answered {code} {reason}: {message}")]
    Api {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer in time, or the connection failed, until the budget ran out.
    #[error("{what}: {detail}")]
    Unreachable { what: String, detail: String },
}

impl CallError {
    pub(super) fn code(&self) -> Option<u16> {
        match self {
            CallError::Api { code, .. } => Some(*code),
            CallError::Unreachable { .. } => None,
        }
    }

    pub(super) fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub(super) fn is_already_exists(&self) -> bool {
        matches!(self, CallError::Api { code: 409, reason, .. } if reason == "AlreadyExists")
    }
}

/// Whether an answer is worth trying again, and how long the server asked to wait.
fn retryable(error: &kube::Error) -> (bool, Option<Duration>) {
    match error {
        kube::Error::Api(status) => {
            let wait = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s)));
            (status.code == 429 || status.code >= 500, wait)
        }
        // Transport, TLS, decoding of a cut-off body: the next attempt may well work.
        _ => (true, None),
    }
}

/// Runs `call` until it succeeds, fails in a way retrying cannot change, or the budget is
/// spent; `what` names the call in errors ("creating pod pool-x-1").
pub(super) async fn call<T, F, Fut>(policy: Policy, what: &str, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let started = Instant::now();
    let mut delay = policy.first_delay;
    loop {
        let outcome = tokio::time::timeout(policy.attempt_timeout, call()).await;
        let (error, retry, wait) = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => {
                let (retry, wait) = retryable(&error);
                (Some(error), retry, wait)
            }
            Err(_) => (None, true, None),
        };
        let wait = wait.unwrap_or(delay).min(policy.max_delay);
        if !retry || started.elapsed() + wait >= policy.budget {
            return Err(match error {
                Some(kube::Error::Api(status)) => CallError::Api {
                    what: what.to_string(),
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                },
                Some(other) => CallError::Unreachable {
                    what: what.to_string(),
                    detail: other.to_string(),
                },
                None => CallError::Unreachable {
                    what: what.to_string(),
                    detail: format!("no answer within {:?}", policy.attempt_timeout),
                },
            });
        }
        if let Some(error) = &error {
            tracing::debug!("{what}: {error}; retrying in {wait:?}");
        }
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(policy.max_delay);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kube::core::Status;

    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            Status {
                code,
                reason: reason.into(),
                message: "m".into(),
                ..Status::default()
            }
            .boxed(),
        )
    }

    fn quick() -> Policy {
        Policy {
            attempt_timeout: Duration::from_millis(50),
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            budget: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn server_errors_and_timeouts_are_retried_conflicts_are_not() {
        let calls = AtomicUsize::new(0);
        let answer = call(quick(), "x", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(api(500, "InternalError")),
                1 => Err(api(429, "TooManyRequests")),
                2 => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(0)
                }
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(answer.unwrap(), 3);
        let calls = AtomicUsize::new(0);
        let refused = call(quick(), "creating pod p", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(api(409, "AlreadyExists"))
        })
        .await
        .unwrap_err();
        assert!(refused.is_already_exists());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(refused
            .to_string()
            .starts_with("creating pod p: the API server answered 409"));
    }

    #[tokio::test]
    async fn a_server_that_keeps_failing_costs_at_most_the_budget() {
        let started = Instant::now();
        let failed = call(quick(), "x", || async {
            Err::<(), _>(api(503, "ServiceUnavailable"))
        })
        .await
        .unwrap_err();
        assert_eq!(failed.code(), Some(503));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
