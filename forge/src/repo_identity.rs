//! Whether a registered repository is still, on its forge, the repository it was
//! registered as: its forge id (`forge_repo_id`, bound by the first delivery or
//! installation that named it) against the id the forge's API gives its name now
//! (`GET /repos/{owner}/{name}`, both forges).
//!
//! A name can change hands (an organisation renamed, a repository deleted and re-created,
//! a transfer): whoever holds it then would have the old repository's secrets, cached
//! tokens and schedules run for their code. Webhook deliveries carry the id and are checked
//! where they are received; everything the engine starts on its own or at an API caller's
//! word — a dispatch, a schedule's tick, a re-run — asks here first.
//!
//! Invariants:
//! - A bound repository whose name the forge now gives another id, or no longer shows
//!   (404), is [`NotConfirmed::Moved`], and every token cached for that name is forgotten;
//!   nothing is fetched or started for it. A GitHub App token minted or cached for another
//!   id is refused by [`ForgeAuth`] itself ([`PostError::Moved`]) on every use.
//! - A repository not bound yet (no verified delivery or installation named its id) is
//!   bound here to the id its forge gives the name now, on either forge: from then on a
//!   move is seen. One whose forge cannot be asked, or does not say, passes unbound.
//! - A forge that fails to answer for a bound repository is [`NotConfirmed::Unavailable`]:
//!   never taken as the same repository.

use serde::Deserialize;

use super::auth::{ForgeAuth, Refusable, Refused};
use super::lookup::{ApiTarget, Found};
use super::status::PostError;
use plue_store::{RepoRow, Store};

/// Why a repository could not be confirmed to be the one registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotConfirmed {
    /// Its name is another repository's now (or nobody's): a sentence for the caller.
    #[error("{0}")]
    Moved(String),
    /// The forge could not be asked or did not answer: a sentence for the caller.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct RepositoryId {
    id: i64,
}

/// Confirms `repo` is the repository registered under its name (see the module's
/// invariants), binding an unbound one to the id its forge names now.
pub async fn confirm(
    client: &reqwest::Client,
    auth: &ForgeAuth,
    store: &Store,
    repo: &RepoRow,
) -> Result<(), NotConfirmed> {
    // The lookup's token may be refused (revoked): renewed once, like every exchange.
    let asked = auth
        .renewing(repo, || async {
            let target = match ApiTarget::of_repo(auth, repo).await {
                Ok(Some(target)) => target,
                Ok(None) => return Ok(None),
                Err(e) => return Err(Asking::Token(e)),
            };
            match target.get::<RepositoryId>(client, &[]).await {
                Ok(found) => Ok(Some(found)),
                Err(e) => Err(Asking::Forge(e)),
            }
        })
        .await;
    let found = match asked {
        Ok(Some(found)) => Ok(found),
        Ok(None) => return Ok(()),
        Err(Asking::Token(e)) => return Err(refused_token(auth, repo, e)),
        Err(Asking::Forge(e)) => Err(e),
    };
    let bound = repo.forge_repo_id;
    match (found, bound) {
        (Ok(Found::Yes(now)), Some(bound)) if now.id == bound => Ok(()),
        (Ok(Found::Yes(now)), Some(bound)) => {
            auth.forget_repository(repo);
            Err(NotConfirmed::Moved(format!(
                "{} is registered for repository id {bound} on its forge, but the forge now \
                 gives that name to repository id {}: the name belongs to another repository \
                 (renamed, transferred, or deleted and re-created), so nothing starts for it. \
                 Re-register the repository if the move is yours",
                repo.name, now.id
            )))
        }
        (Ok(Found::NotFound), Some(bound)) => {
            auth.forget_repository(repo);
            Err(NotConfirmed::Moved(format!(
                "{} (repository id {bound} on its forge) is no longer found under that name: \
                 it was renamed, transferred or deleted, so nothing starts for it. \
                 Re-register the repository under its new name",
                repo.name
            )))
        }
        (Ok(Found::Yes(now)), None) => match store.bind_forge_repo_id(repo.id, now.id).await {
            Ok(Some(bound)) if bound != now.id => Err(NotConfirmed::Moved(format!(
                "{} was bound meanwhile to repository id {bound}, not {}, the id its forge gives \
                 the name now: nothing starts for it",
                repo.name, now.id
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(NotConfirmed::Unavailable(format!(
                "{}: recording its forge id: {e:#}",
                repo.name
            ))),
        },
        (Ok(_), None) => Ok(()),
        (Err(e), Some(_)) => Err(NotConfirmed::Unavailable(format!(
            "{}: its forge could not confirm the name is still the repository registered: {e:#}",
            repo.name
        ))),
        (Err(e), None) => {
            tracing::info!(repository = %repo.name, "its forge id could not be learnt: {e:#}");
            Ok(())
        }
    }
}

/// What failed while asking: the token could not be had, or the forge did not answer.
enum Asking {
    Token(anyhow::Error),
    Forge(anyhow::Error),
}

impl Refusable for Asking {
    fn refusal(&self) -> Option<&Refused> {
        match self {
            Asking::Token(e) | Asking::Forge(e) => e.refusal(),
        }
    }

    fn final_refusal(self, why: String) -> Self {
        match self {
            Asking::Token(e) => Asking::Token(e.final_refusal(why)),
            Asking::Forge(e) => Asking::Forge(e.final_refusal(why)),
        }
    }
}

/// A token that could not be had for the lookup: a [`PostError::Moved`] is the moved
/// repository; anything else leaves it unconfirmed.
fn refused_token(auth: &ForgeAuth, repo: &RepoRow, error: anyhow::Error) -> NotConfirmed {
    match error.downcast_ref::<PostError>() {
        Some(PostError::Moved(why)) => {
            auth.forget_repository(repo);
            NotConfirmed::Moved(why.clone())
        }
        _ => NotConfirmed::Unavailable(format!(
            "{}: no credential to ask its forge with: {error:#}",
            repo.name
        )),
    }
}
