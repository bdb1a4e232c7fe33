//! A forge's refusal of the credential it was shown, and the one way every use recovers
//! from it: [`ForgeAuth::renewing`].
//!
//! - [`Refused`] is the error of a request the forge answered "this credential is no good"
//!   (HTTP 401, or GitHub's `Bad credentials`; for git, its `Authentication failed` or the
//!   credential prompt a 401 leads to, [`git_refused`]). It carries the token that was
//!   presented, so that exactly that token is forgotten — whatever its use, even when one
//!   exchange presents tokens of several uses (a summoned run's answers and its check runs).
//! - [`Refusable`] (with [`Refused`], in `crate::post_error`): the error types the forge's
//!   callers speak (`PostError` and `anyhow::Error`) say whether they carry a [`Refused`],
//!   and become final errors.
//! - [`ForgeAuth::renewing`] runs an exchange (which asks [`ForgeAuth`] for its tokens each
//!   time it runs); when the forge refuses an installation token, that token is forgotten
//!   and the exchange runs again, minting a new one. Each use is renewed at most once per
//!   exchange: a new token refused as well is a final error naming the use, and so is a
//!   personal token refused (the engine cannot make another).
//!
//! Invariants: the token never shows (`Debug` and `Display` say the forge's answer only);
//! a refusal is never read as an answer (no permission, no such pull request) — it is
//! either renewed or an error; what was renewed is counted per use ([`renewal_counts`]),
//! for the engine's metrics.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use plue_store::RepoRow;

use super::{ForgeAuth, Token, Use};
use crate::post_error::Refusable;

/// What became of a refused installation token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// It was forgotten and a new one asked for.
    Reminted,
    /// It was the new one, refused as well: the exchange failed.
    RefusedAgain,
}

impl Renewal {
    pub const ALL: [Renewal; 2] = [Renewal::Reminted, Renewal::RefusedAgain];

    pub fn as_str(self) -> &'static str {
        match self {
            Renewal::Reminted => "reminted",
            Renewal::RefusedAgain => "refused_again",
        }
    }
}

/// Refused installation tokens, by [`Use`] and [`Renewal`], in this process.
static COUNTS: [[AtomicU64; 2]; Use::ALL.len()] =
    [const { [const { AtomicU64::new(0) }; 2] }; Use::ALL.len()];

fn count(use_: Use, renewal: Renewal) {
    let row = Use::ALL.iter().position(|u| *u == use_).unwrap_or(0);
    let column = Renewal::ALL.iter().position(|r| *r == renewal).unwrap_or(0);
    COUNTS[row][column].fetch_add(1, Ordering::Relaxed);
}

/// How many installation tokens the forge refused in this process, for every [`Use`] and
/// [`Renewal`] (zeros included): what the engine's metrics export.
pub fn renewal_counts() -> Vec<(Use, Renewal, u64)> {
    let mut counts = Vec::new();
    for (row, use_) in Use::ALL.iter().enumerate() {
        for (column, renewal) in Renewal::ALL.iter().enumerate() {
            counts.push((*use_, *renewal, COUNTS[row][column].load(Ordering::Relaxed)));
        }
    }
    counts
}

impl ForgeAuth {
    /// The forge refused `token`, an installation token of `repo` the engine handed to
    /// another party that cannot ask for a new one (a runner's checkout): it is forgotten
    /// (whatever its use) and counted like a renewal, so the next asker gets a new one.
    /// Its use; `None` when it is not cached any more (renewed already).
    pub fn refused_where_handed(&self, repo: &RepoRow, token: &Token) -> Option<Use> {
        let use_ = self.forget_token(repo, token)?;
        count(use_, Renewal::Reminted);
        tracing::info!(
            repository = %repo.name,
            token_use = use_.as_str(),
            "the forge refused an installation token where the engine had handed it \
             (revoked?): it is forgotten, the next one is minted anew"
        );
        Some(use_)
    }

    /// Runs `exchange` — which asks this `ForgeAuth` for `repo`'s tokens each time it runs
    /// — until it is done, renewing a refused installation token once per use (see the
    /// module doc). The exchange runs again from its start: it must be safe to repeat, as
    /// every forge write of the engine already is (each looks up what an earlier try did).
    pub async fn renewing<T, E, F, Fut>(&self, repo: &RepoRow, mut exchange: F) -> Result<T, E>
    where
        E: Refusable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut renewed: Vec<Use> = Vec::new();
        let mut forgotten_elsewhere = false;
        loop {
            let error = match exchange().await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            let Some(refused) = error.refusal() else {
                return Err(error);
            };
            if !self.is_app(repo) {
                let why = format!(
                    "the forge refused the api_token of {} ({refused}): give the repository a \
                     valid token",
                    repo.name
                );
                return Err(error.final_refusal(why));
            }
            match self.forget_token(repo, refused.token()) {
                Some(use_) if !renewed.contains(&use_) => {
                    renewed.push(use_);
                    count(use_, Renewal::Reminted);
                    tracing::info!(
                        repository = %repo.name,
                        token_use = use_.as_str(),
                        "the forge refused an installation token before its planned refresh \
                         (revoked?): it is forgotten and a new one minted: {refused}"
                    );
                }
                Some(use_) => {
                    count(use_, Renewal::RefusedAgain);
                    let why = format!(
                        "GitHub refused the GitHub App's installation token for {} on {}, and \
                         the new one minted after that refusal too: {refused}",
                        use_.as_str(),
                        repo.name
                    );
                    tracing::warn!(repository = %repo.name, "{why}");
                    return Err(error.final_refusal(why));
                }
                // Another exchange forgot it already (and may have minted its successor).
                None if !forgotten_elsewhere => forgotten_elsewhere = true,
                None => {
                    let why = format!(
                        "GitHub refused the GitHub App's installation tokens for {} again: \
                         {refused}",
                        repo.name
                    );
                    return Err(error.final_refusal(why));
                }
            }
        }
    }
}
