//! Signing people in with a forge account or an OpenID Connect provider, in the store: the
//! sign-ins under way, the OpenID Connect subjects users sign in as, the group memberships
//! a groups claim gave, and `plue login`'s one-time codes (migration 0048).
//!
//! Invariants:
//! - A sign-in under way is found only by the SHA-256 of the id its browser holds, and
//!   [`Store::take_sign_in`] deletes it as it reads it: its `state`, PKCE verifier and nonce
//!   are checked at most once, and never after `expires_at`. A `plue login` code likewise
//!   ([`Store::take_cli_code`]).
//! - An OpenID Connect subject is `(issuer, subject)` compared exactly (a `sub` is
//!   case-sensitive); a forge account is the existing forge-login link
//!   (`user_forge_logins`, [`super::people`]). Either belongs to at most one user.
//! - A first sign-in creates its user and the link in one transaction, so there is never a
//!   signed-in user without its link; a second sign-in racing it finds the link.
//! - A groups claim changes only memberships of groups that exist and that it named, or
//!   that an earlier claim gave ([`Store::follow_group_claim`]): one an admin gave by hand
//!   is never removed by a sign-in.

use anyhow::Context;

use super::people::UserRow;
use super::{is_unique_violation, now_ms, Store};
use crate::tx::Conn;
use crate::tx::Statement;

/// A sign-in to remember until the provider sends the browser back.
#[derive(Debug, Clone)]
pub struct NewSignIn<'a> {
    /// SHA-256 of the random id in the browser's cookie.
    pub id_hash: &'a str,
    pub provider: &'a str,
    pub state: &'a str,
    /// The PKCE verifier whose S256 challenge the provider was given.
    pub verifier: &'a str,
    pub nonce: &'a str,
    /// A local path to return to.
    pub next_path: &'a str,
    /// Set when `plue login` started it.
    pub cli: Option<CliRequest>,
    pub expires_at: i64,
}

/// What `plue login` asked: where to send its code, its state, its PKCE challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliRequest {
    pub redirect: String,
    pub state: String,
    pub challenge: String,
}

/// A sign-in under way, as taken back by [`Store::take_sign_in`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInRow {
    pub provider: String,
    pub state: String,
    pub verifier: String,
    pub nonce: String,
    pub next_path: String,
    pub cli: Option<CliRequest>,
}

/// Who a provider said signed in.
#[derive(Debug, Clone, Copy)]
pub enum SignInIdentity<'a> {
    /// A forge login (`github`, `gitea`): the forge-login links of `people`.
    Forge { forge: &'a str, login: &'a str },
    /// An OpenID Connect subject.
    Subject { issuer: &'a str, subject: &'a str },
}

/// What a groups claim changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

type AttemptTuple = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

const USER_COLUMNS: &str = "u.id, u.name, u.kind, u.admin, u.created_at, u.disabled_at";

impl Store {
    /// Remembers a sign-in under way (and forgets the expired ones). False (nothing
    /// stored) when `most` sign-ins are under way already: anyone may start one, so their
    /// number is bounded.
    pub async fn begin_sign_in(&self, new: &NewSignIn<'_>, most: i64) -> anyhow::Result<bool> {
        let cli = new.cli.as_ref();
        {
            self.execute(
                Statement::new("DELETE FROM sign_in_attempts WHERE expires_at <= $1")
                    .bind(now_ms()),
            )
            .await?;
            let live: i64 = self
                .one_scalar(
                    Statement::new("SELECT COUNT(*) FROM sign_in_attempts WHERE expires_at > $1")
                        .bind(now_ms()),
                )
                .await?;
            if live >= most {
                return Ok(false);
            }
            self.execute(
                Statement::new(
                    "INSERT INTO sign_in_attempts (id_hash, provider, state, verifier, nonce, \
                     next_path, cli_redirect, cli_state, cli_challenge, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(new.id_hash)
                .bind(new.provider)
                .bind(new.state)
                .bind(new.verifier)
                .bind(new.nonce)
                .bind(new.next_path)
                .bind(cli.map(|c| c.redirect.as_str()))
                .bind(cli.map(|c| c.state.as_str()))
                .bind(cli.map(|c| c.challenge.as_str()))
                .bind(new.expires_at),
            )
            .await?;
        };
        Ok(true)
    }

    /// The sign-in under way whose id hashes to `id_hash`, deleted as it is read: a second
    /// call finds nothing. `None` too when it expired by `now`.
    pub async fn take_sign_in(&self, id_hash: &str, now: i64) -> anyhow::Result<Option<SignInRow>> {
        let row: Option<AttemptTuple> = self
            .row(
                Statement::new(
                    "DELETE FROM sign_in_attempts WHERE id_hash = $1 RETURNING provider, state, \
                     verifier, nonce, next_path, cli_redirect, cli_state, cli_challenge, \
                     expires_at",
                )
                .bind(id_hash),
            )
            .await?;
        Ok(row.and_then(
            |(
                provider,
                state,
                verifier,
                nonce,
                next_path,
                redirect,
                cli_state,
                challenge,
                expires,
            )| {
                if expires <= now {
                    return None;
                }
                let cli = match (redirect, cli_state, challenge) {
                    (Some(redirect), Some(state), Some(challenge)) => Some(CliRequest {
                        redirect,
                        state,
                        challenge,
                    }),
                    _ => None,
                };
                Some(SignInRow {
                    provider,
                    state,
                    verifier,
                    nonce,
                    next_path,
                    cli,
                })
            },
        ))
    }

    /// The user `identity` is linked to, disabled or not (a disabled user must be refused,
    /// never replaced by a new one).
    pub async fn user_of_sign_in(
        &self,
        identity: SignInIdentity<'_>,
    ) -> anyhow::Result<Option<UserRow>> {
        let (sql, first, second) = match identity {
            SignInIdentity::Forge { forge, login } => (
                format!(
                    "SELECT {USER_COLUMNS} FROM users u JOIN user_forge_logins f \
                     ON f.user_id = u.id WHERE f.forge = $1 AND f.login_key = $2"
                ),
                forge.to_string(),
                login.to_lowercase(),
            ),
            SignInIdentity::Subject { issuer, subject } => (
                format!(
                    "SELECT {USER_COLUMNS} FROM users u JOIN sign_in_subjects s \
                     ON s.user_id = u.id WHERE s.issuer = $1 AND s.subject = $2"
                ),
                issuer.to_string(),
                subject.to_string(),
            ),
        };
        self.row::<UserRow>(Statement::new(&sql).bind(&first).bind(&second))
            .await
    }

    /// Creates the user a first sign-in as `identity` makes, named `base` or, when that is
    /// taken, `base-2`, `base-3`, ... (each a [`super::valid_name`]: the caller's `base` is
    /// one of at most 35 characters), and links `identity` to it, in one transaction.
    /// `None` when `identity` got linked meanwhile (a sign-in racing this one): look again.
    pub async fn create_signed_in_user(
        &self,
        base: &str,
        identity: SignInIdentity<'_>,
    ) -> anyhow::Result<Option<UserRow>> {
        anyhow::ensure!(
            super::valid_name(base) && base.len() <= 35,
            "'{base}' cannot name a user"
        );
        let now = now_ms();
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            let mut name = None;
            for n in 1..=999u32 {
                let candidate = if n == 1 {
                    base.to_string()
                } else {
                    format!("{base}-{n}")
                };
                let taken: Option<i64> = tx
                    .scalar(
                        Statement::new("SELECT id FROM users WHERE name_key = $1")
                            .bind(candidate.to_lowercase()),
                    )
                    .await?;
                if taken.is_none() {
                    name = Some(candidate);
                    break;
                }
            }
            let Some(name) = name else {
                anyhow::bail!("no free user name starting with '{base}'");
            };
            let id: i64 = tx
                .scalar(
                    Statement::new(
                        "INSERT INTO users (name, name_key, kind, admin, created_at) \
                         VALUES ($1, $2, 'person', FALSE, $3) RETURNING id",
                    )
                    .bind(&name)
                    .bind(name.to_lowercase())
                    .bind(now),
                )
                .await?
                .context("no row returned")?;
            let linked = match identity {
                SignInIdentity::Forge { forge, login } => {
                    tx.execute(
                        Statement::new(
                            "INSERT INTO user_forge_logins (user_id, forge, login, login_key) \
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(id)
                        .bind(forge)
                        .bind(login)
                        .bind(login.to_lowercase()),
                    )
                    .await
                }
                SignInIdentity::Subject { issuer, subject } => {
                    tx.execute(
                        Statement::new(
                            "INSERT INTO sign_in_subjects (issuer, subject, user_id) \
                             VALUES ($1, $2, $3)",
                        )
                        .bind(issuer)
                        .bind(subject)
                        .bind(id),
                    )
                    .await
                }
            };
            match linked {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => return Ok(None),
                Err(e) => return Err(e.context("linking a signed-in user")),
            }
            tx.commit().await?;
            Ok(Some(UserRow {
                id,
                name,
                kind: super::UserKind::Person,
                admin: false,
                created_at: now,
                disabled_at: None,
            }))
        }
    }

    /// Makes user `user_id`'s memberships follow a groups claim: every existing group
    /// `claimed` names (in any case) gets the user (recorded as the claim's grant unless
    /// the user was a member already), and every membership an earlier claim granted in a
    /// group `claimed` no longer names is removed. Other memberships are untouched.
    pub async fn follow_group_claim(
        &self,
        user_id: i64,
        claimed: &[String],
    ) -> anyhow::Result<GroupChanges> {
        let keys: std::collections::BTreeSet<String> =
            claimed.iter().map(|name| name.to_lowercase()).collect();
        let mut changes = GroupChanges::default();
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            for key in &keys {
                let group: Option<(i64, String)> = tx
                    .row(
                        Statement::new("SELECT id, name FROM user_groups WHERE name_key = $1")
                            .bind(key),
                    )
                    .await?;
                let Some((group_id, name)) = group else {
                    continue;
                };
                let added = tx
                    .execute(
                        Statement::new(
                            "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(group_id)
                        .bind(user_id),
                    )
                    .await?;
                if added > 0 {
                    tx.execute(
                        Statement::new(
                            "INSERT INTO sign_in_group_grants (user_id, group_id) VALUES ($1, $2) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(user_id)
                        .bind(group_id),
                    )
                    .await?;
                    changes.added.push(name);
                }
            }
            let granted: Vec<(i64, String, String)> = tx
                .rows(
                    Statement::new(
                        "SELECT g.id, g.name, g.name_key FROM sign_in_group_grants s \
                         JOIN user_groups g ON g.id = s.group_id WHERE s.user_id = $1",
                    )
                    .bind(user_id),
                )
                .await?;
            for (group_id, name, key) in granted {
                if keys.contains(&key) {
                    continue;
                }
                tx.execute(
                    Statement::new(
                        "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2",
                    )
                    .bind(group_id)
                    .bind(user_id),
                )
                .await?;
                tx.execute(
                    Statement::new(
                        "DELETE FROM sign_in_group_grants WHERE group_id = $1 AND user_id = $2",
                    )
                    .bind(group_id)
                    .bind(user_id),
                )
                .await?;
                changes.removed.push(name);
            }
            tx.commit().await?;
        };
        Ok(changes)
    }

    /// Stores a `plue login` one-time code (by its hash) for user `user_id`, exchanged
    /// with the verifier of `challenge` before `expires_at`.
    pub async fn create_cli_code(
        &self,
        code_hash: &str,
        user_id: i64,
        provider: &str,
        challenge: &str,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        {
            self.execute(
                Statement::new("DELETE FROM sign_in_cli_codes WHERE expires_at <= $1")
                    .bind(now_ms()),
            )
            .await?;
            self.execute(
                Statement::new(
                    "INSERT INTO sign_in_cli_codes (code_hash, user_id, provider, challenge, \
                     expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(code_hash)
                .bind(user_id)
                .bind(provider)
                .bind(challenge)
                .bind(expires_at),
            )
            .await?;
        };
        Ok(())
    }

    /// The `plue login` code hashing to `code_hash`, deleted as it is read: its user, its
    /// provider and its PKCE challenge. `None` when unknown, used or expired by `now`.
    pub async fn take_cli_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> anyhow::Result<Option<(i64, String, String)>> {
        let row: Option<(i64, String, String, i64)> = self
            .row(
                Statement::new(
                    "DELETE FROM sign_in_cli_codes WHERE code_hash = $1 \
                     RETURNING user_id, provider, challenge, expires_at",
                )
                .bind(code_hash),
            )
            .await?;
        Ok(row
            .filter(|(.., expires)| *expires > now)
            .map(|(user, provider, challenge, _)| (user, provider, challenge)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::stores;

    fn attempt<'a>(id_hash: &'a str, expires_at: i64) -> NewSignIn<'a> {
        NewSignIn {
            id_hash,
            provider: "github",
            state: "state",
            verifier: "verifier",
            nonce: "nonce",
            next_path: "/runs/1",
            cli: Some(CliRequest {
                redirect: "http://127.0.0.1:9/callback".into(),
                state: "cli".into(),
                challenge: "challenge".into(),
            }),
            expires_at,
        }
    }

    #[tokio::test]
    async fn a_sign_in_is_taken_once_and_never_after_it_expired() {
        for (store, _dir) in stores().await {
            let now = now_ms();
            assert!(store
                .begin_sign_in(&attempt("live", now + 60_000), 2)
                .await
                .unwrap());
            assert!(store
                .begin_sign_in(&attempt("old", now + 1), 2)
                .await
                .unwrap());
            assert!(
                !store
                    .begin_sign_in(&attempt("third", now + 60_000), 1)
                    .await
                    .unwrap(),
                "bounded: one is under way at least"
            );
            let taken = store.take_sign_in("live", now).await.unwrap().unwrap();
            assert_eq!(taken.state, "state");
            assert_eq!(taken.next_path, "/runs/1");
            assert_eq!(taken.cli.unwrap().challenge, "challenge");
            assert_eq!(store.take_sign_in("live", now).await.unwrap(), None);
            assert_eq!(store.take_sign_in("old", now + 2).await.unwrap(), None);
            assert_eq!(
                store.take_sign_in("old", now).await.unwrap(),
                None,
                "deleted"
            );
            // A plue login code likewise.
            let user = store
                .create_user(&crate::NewUser::person("coder"))
                .await
                .unwrap();
            store
                .create_cli_code("code", user, "github", "ch", now + 60_000)
                .await
                .unwrap();
            assert_eq!(
                store.take_cli_code("code", now).await.unwrap(),
                Some((user, "github".to_string(), "ch".to_string()))
            );
            assert_eq!(store.take_cli_code("code", now).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn accounts_link_once_and_names_are_made_unique() {
        for (store, _dir) in stores().await {
            store
                .create_user(&crate::NewUser::person("Jane"))
                .await
                .unwrap();
            let subject = SignInIdentity::Subject {
                issuer: "https://id.example",
                subject: "Abc",
            };
            let jane = store
                .create_signed_in_user("jane", subject)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(jane.name, "jane-2");
            assert_eq!(
                store.user_of_sign_in(subject).await.unwrap().unwrap().id,
                jane.id
            );
            // Subjects are exact: another case is another subject.
            let other_case = SignInIdentity::Subject {
                issuer: "https://id.example",
                subject: "abc",
            };
            assert_eq!(store.user_of_sign_in(other_case).await.unwrap(), None);
            // Linked already (a racing sign-in): nothing is created.
            assert_eq!(
                store.create_signed_in_user("x", subject).await.unwrap(),
                None
            );
            assert!(store.user_by_name("x").await.unwrap().is_none());
            // A forge login, found in any case, disabled or not.
            let forge = SignInIdentity::Forge {
                forge: "gitea",
                login: "Octo",
            };
            let octo = store
                .create_signed_in_user("Octo", forge)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                store.user_of_forge_login("gitea", "octo").await.unwrap(),
                Some(octo.id)
            );
            store.disable_user(octo.id).await.unwrap();
            let found = store
                .user_of_sign_in(SignInIdentity::Forge {
                    forge: "gitea",
                    login: "OCTO",
                })
                .await
                .unwrap()
                .unwrap();
            assert!(found.disabled_at.is_some());
        }
    }

    #[tokio::test]
    async fn a_groups_claim_changes_only_what_claims_gave() {
        for (store, _dir) in stores().await {
            let user = store
                .create_user(&crate::NewUser::person("dev"))
                .await
                .unwrap();
            let release = store.create_group("Release").await.unwrap();
            let ops = store.create_group("ops").await.unwrap();
            store.add_group_member(ops, user).await.unwrap();
            let changes = store
                .follow_group_claim(user, &["release".into(), "ops".into(), "none".into()])
                .await
                .unwrap();
            assert_eq!(changes.added, ["Release"]);
            assert!(changes.removed.is_empty());
            let changes = store.follow_group_claim(user, &[]).await.unwrap();
            assert_eq!(changes.removed, ["Release"]);
            assert_eq!(
                store.group_keys_of(user).await.unwrap(),
                ["ops"],
                "hand-given stays"
            );
            let _ = release;
        }
    }
}
