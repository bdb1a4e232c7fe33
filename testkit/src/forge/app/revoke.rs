//! Scripted revocation of installation tokens, as GitHub revokes them before they expire
//! (the App's key rotated, the installation's permissions changed, a token revoked by
//! `DELETE /installation/token`): [`FakeForge::revoke_tokens_at_next_use`] revokes every
//! token handed out so far at its next use (anywhere, or only where it is next presented
//! to the API, to a git fetch or to a git push), [`FakeForge::revoke_installation_token`]
//! revokes one now.
//!
//! Invariants: a revoked token is refused everywhere from then on, as GitHub refuses it
//! (API: `401 Bad credentials`; git: `401` with a `Basic` challenge), and every refusal of
//! a revoked token is recorded ([`FakeForge::token_refusals`]), so a test can tell that an
//! exchange presented a refused token once, not again and again. Tokens minted after the
//! script are not touched by it.

use std::collections::BTreeMap;

use super::super::lock;
use super::{AppMode, FakeForge};

/// Where an installation token is presented to the forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Presented {
    /// A REST API request.
    Api,
    /// A git fetch (`git-upload-pack` and its ref listing).
    GitFetch,
    /// A git push (`git-receive-pack` and its ref listing).
    GitPush,
}

/// One refusal of a revoked installation token.
#[derive(Debug, Clone)]
pub struct TokenRefusal {
    pub token: String,
    /// The token's permissions (`name -> read|write`): which use it served.
    pub permissions: BTreeMap<String, String>,
    pub presented: Presented,
    /// The request: `GET /repos/o/r/...` or `git fetch o/r`.
    pub request: String,
}

/// A revocation scripted for a token's next use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    /// At its next use, anywhere.
    Anywhere,
    /// At its next use of this kind (other uses pass until then).
    At(Presented),
}

/// Whether token number `index` of `app` is refused when presented at `presented` for
/// `request`: revoked already, or revoked now by a script. A refusal is recorded.
pub(crate) fn refused_at_use(
    app: &mut AppMode,
    index: usize,
    presented: Presented,
    request: &str,
) -> bool {
    let token = &mut app.tokens[index];
    let now = match token.revoke_at_next_use {
        Some(Pending::Anywhere) => true,
        Some(Pending::At(at)) => at == presented,
        None => false,
    };
    if now {
        token.revoked = true;
        token.revoke_at_next_use = None;
    }
    if !token.revoked {
        return false;
    }
    let refusal = TokenRefusal {
        token: token.token.clone(),
        permissions: token.permissions.clone(),
        presented,
        request: request.to_string(),
    };
    app.refusals.push(refusal);
    true
}

impl FakeForge {
    /// Every installation token handed out so far is revoked at its next use — anywhere
    /// (`at: None`), or only when it is next presented `at` that kind of request (its other
    /// uses pass until then). That use is refused, and every later one.
    pub fn revoke_tokens_at_next_use(&self, at: Option<Presented>) {
        let pending = match at {
            None => Pending::Anywhere,
            Some(at) => Pending::At(at),
        };
        if let Some(app) = lock(&self.shared).app.as_mut() {
            for token in app.tokens.iter_mut().filter(|t| !t.revoked) {
                token.revoke_at_next_use = Some(pending);
            }
        }
    }

    /// Revokes the installation token `token` now.
    pub fn revoke_installation_token(&self, token: &str) {
        if let Some(app) = lock(&self.shared).app.as_mut() {
            for handed in app.tokens.iter_mut().filter(|t| t.token == token) {
                handed.revoked = true;
            }
        }
    }

    /// Every refusal of a revoked installation token so far, in order.
    pub fn token_refusals(&self) -> Vec<TokenRefusal> {
        lock(&self.shared)
            .app
            .as_ref()
            .map(|app| app.refusals.clone())
            .unwrap_or_default()
    }

    /// Where the tokens handed out and the refusals stand now: what
    /// [`FakeForge::check_renewals`] compares with.
    pub fn revocation_mark(&self) -> RevocationMark {
        RevocationMark {
            minted: self.installation_tokens().len(),
            refusals: self.token_refusals().len(),
        }
    }

    /// Whether the refusals of revoked tokens since `mark` were each answered as they
    /// should be (no token expiring meanwhile): every refused token presented once — never
    /// again after its refusal — and one new token minted for each, with the refused one's
    /// permissions. The number of refusals; `Err` says what went otherwise.
    pub fn check_renewals(&self, mark: &RevocationMark) -> Result<usize, String> {
        let refusals = self.token_refusals();
        let refusals = refusals.get(mark.refusals..).unwrap_or_default();
        let minted = self.installation_tokens();
        let after = minted.get(mark.minted..).unwrap_or_default();
        for (n, refusal) in refusals.iter().enumerate() {
            if refusals[..n].iter().any(|r| r.token == refusal.token) {
                return Err(format!(
                    "a refused token was presented again ({}): {refusals:#?}",
                    refusal.request
                ));
            }
        }
        if after.len() != refusals.len() {
            let minted: Vec<_> = after.iter().map(|t| &t.permissions).collect();
            return Err(format!(
                "{} tokens minted after {} refusals: {minted:?} after {refusals:#?}",
                after.len(),
                refusals.len()
            ));
        }
        let mut unmatched: Vec<_> = after.iter().map(|t| &t.permissions).collect();
        for refusal in refusals {
            match unmatched.iter().position(|p| **p == refusal.permissions) {
                Some(found) => {
                    unmatched.remove(found);
                }
                None => {
                    return Err(format!(
                        "no new token with the permissions of the one refused at {}: {:?}",
                        refusal.request, refusal.permissions
                    ))
                }
            }
        }
        Ok(refusals.len())
    }
}

/// How many tokens were handed out, and refused, at one moment
/// ([`FakeForge::revocation_mark`]).
#[derive(Debug, Clone, Copy)]
pub struct RevocationMark {
    minted: usize,
    refusals: usize,
}
