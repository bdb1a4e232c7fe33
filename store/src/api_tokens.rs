//! API tokens of users, and the dashboard's server-side sessions, in the store.
//!
//! Invariants:
//! - Tokens and session ids are stored only as SHA-256 hashes.
//! - A token is valid while it is not revoked, not expired and its user is not disabled;
//!   [`Store::token_by_hash`] is the one place that says so. A session is valid while the
//!   token that opened it is (the caller checks the admin token's hash itself) and before
//!   its own `expires_at`; revoking a token deletes its sessions in the same transaction.
//! - A token made with another token ([`Store::create_user_token_minted_by`]) records its
//!   maker (`owner_hash`, the column legacy rows used for the same) and lives no longer:
//!   revoking a token revokes every token made with it, down the line, in the same
//!   transaction, and a token revoked meanwhile makes none.
//! - Tokens made before users existed (`user_id` NULL) are adopted at start-up by
//!   [`Store::adopt_legacy_tokens`], before any request is served.

use super::people::{NewUser, UserKind, UserRow};
use super::{now_ms, Store};
use crate::tx::Conn;
use crate::tx::Statement;

/// An API token as listed (never its value).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    /// The highest role it acts with (`None`: its user's own).
    pub max_role: Option<String>,
    /// JSON array of the repositories it may act on (`None`: all of its user's).
    pub repos: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub token_hash: &'a str,
    pub max_role: Option<&'a str>,
    /// JSON array of repository names.
    pub repos: Option<&'a str>,
    pub expires_at: Option<i64>,
}

/// A valid token and its user.
#[derive(Debug, Clone)]
pub struct ValidToken {
    pub token: TokenRow,
    pub user: UserRow,
}

/// A user adopted from a token made before users existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub user: String,
    pub tokens: usize,
}

const TOKEN_COLUMNS: &str = "t.id, t.user_id, t.name, t.max_role, t.repos, t.created_at, \
                             t.expires_at, t.revoked_at, t.last_used_at";
const USER_COLUMNS: &str = "u.id AS u_id, u.name AS u_name, u.kind AS u_kind, \
                            u.admin AS u_admin, u.created_at AS u_created_at, \
                            u.disabled_at AS u_disabled_at";

/// A token and its user, as [`Store::token_by_hash`] reads them ([`TOKEN_COLUMNS`],
/// [`USER_COLUMNS`]).
#[derive(sqlx::FromRow, serde::Deserialize)]
struct TokenAndUser {
    id: i64,
    user_id: i64,
    name: String,
    max_role: Option<String>,
    repos: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    u_id: i64,
    u_name: String,
    #[sqlx(try_from = "String")]
    u_kind: UserKind,
    u_admin: bool,
    u_created_at: i64,
    u_disabled_at: Option<i64>,
}

impl TokenAndUser {
    fn valid(self) -> ValidToken {
        ValidToken {
            token: TokenRow {
                id: self.id,
                user_id: self.user_id,
                name: self.name,
                max_role: self.max_role,
                repos: self.repos,
                created_at: self.created_at,
                expires_at: self.expires_at,
                revoked_at: self.revoked_at,
                last_used_at: self.last_used_at,
            },
            user: UserRow {
                id: self.u_id,
                name: self.u_name,
                kind: self.u_kind,
                admin: self.u_admin,
                created_at: self.u_created_at,
                disabled_at: self.u_disabled_at,
            },
        }
    }
}

/// A session's token hash and its user, as [`Store::session`] reads them
/// ([`USER_COLUMNS`]).
#[derive(sqlx::FromRow, serde::Deserialize)]
struct SessionAndUser {
    token_hash: String,
    u_id: i64,
    u_name: String,
    #[sqlx(try_from = "String")]
    u_kind: UserKind,
    u_admin: bool,
    u_created_at: i64,
    u_disabled_at: Option<i64>,
}

impl SessionAndUser {
    fn user_and_token_hash(self) -> (UserRow, String) {
        let user = UserRow {
            id: self.u_id,
            name: self.u_name,
            kind: self.u_kind,
            admin: self.u_admin,
            created_at: self.u_created_at,
            disabled_at: self.u_disabled_at,
        };
        (user, self.token_hash)
    }
}

impl Store {
    /// Stores a token of a user by its hash.
    pub async fn create_user_token(&self, new: &NewToken<'_>) -> anyhow::Result<i64> {
        self.one_scalar(
            Statement::new(
                "INSERT INTO api_tokens (name, token_hash, user_id, max_role, repos, expires_at, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(new.name)
            .bind(new.token_hash)
            .bind(new.user_id)
            .bind(new.max_role)
            .bind(new.repos)
            .bind(new.expires_at)
            .bind(now_ms()),
        )
        .await
    }

    /// [`Store::create_user_token`] for a token made with token `maker`, which it records:
    /// revoking `maker` revokes it. `None` (nothing stored) when `maker` is revoked by now.
    pub async fn create_user_token_minted_by(
        &self,
        new: &NewToken<'_>,
        maker: i64,
    ) -> anyhow::Result<Option<i64>> {
        // On PostgreSQL the maker's row is locked: a revocation running at the same time
        // either waits for this token (and then revokes it too) or makes this insert find
        // the maker revoked. SQLite has one writer anyway.
        let sql = |lock: &str| {
            format!(
                "INSERT INTO api_tokens (name, token_hash, user_id, max_role, repos, expires_at, \
                 created_at, owner_hash) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, token_hash FROM api_tokens \
                 WHERE id = $8 AND revoked_at IS NULL{lock} RETURNING id"
            )
        };
        let (sqlite, postgres) = (sql(""), sql(" FOR UPDATE"));
        self.scalar(
            Statement::per_backend(&sqlite, &postgres)
                .bind(new.name)
                .bind(new.token_hash)
                .bind(new.user_id)
                .bind(new.max_role)
                .bind(new.repos)
                .bind(new.expires_at)
                .bind(now_ms())
                .bind(maker),
        )
        .await
    }

    /// The valid token with this hash and its user: not revoked, not expired at `now`,
    /// its user not disabled. Notes when it was last used (at most once a minute).
    pub async fn token_by_hash(
        &self,
        token_hash: &str,
        now: i64,
    ) -> anyhow::Result<Option<ValidToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS} FROM api_tokens t \
             JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL \
               AND (t.expires_at IS NULL OR t.expires_at > $2) AND u.disabled_at IS NULL"
        );
        let found = self
            .row::<TokenAndUser>(Statement::new(&sql).bind(token_hash).bind(now))
            .await?
            .map(TokenAndUser::valid);
        if let Some(valid) = &found {
            if valid
                .token
                .last_used_at
                .is_none_or(|at| now.saturating_sub(at) > 60_000)
            {
                self.execute(
                    Statement::new("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(valid.token.id),
                )
                .await
                .map(|_| ())?;
            }
        }
        Ok(found)
    }

    /// The tokens of a user (every user's with `None`), newest first, revoked ones included.
    pub async fn list_tokens(&self, user_id: Option<i64>) -> anyhow::Result<Vec<TokenRow>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t \
             WHERE t.user_id IS NOT NULL AND ($1 IS NULL OR t.user_id = $1) ORDER BY t.id DESC"
        );
        self.rows::<TokenRow>(Statement::new(&sql).bind(user_id))
            .await
    }

    pub async fn token_by_id(&self, id: i64) -> anyhow::Result<Option<TokenRow>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.id = $1");
        self.row::<TokenRow>(Statement::new(&sql).bind(id)).await
    }

    /// Whether token `id` was made with token `maker`, directly or down the line.
    pub async fn token_made_by(&self, id: i64, maker: i64) -> anyhow::Result<bool> {
        let maker_hash: Option<String> = self
            .scalar(Statement::new("SELECT token_hash FROM api_tokens WHERE id = $1").bind(maker))
            .await?;
        let Some(maker_hash) = maker_hash else {
            return Ok(false);
        };
        let mut made_by: Option<String> = self
            .scalar(Statement::new("SELECT owner_hash FROM api_tokens WHERE id = $1").bind(id))
            .await?
            .flatten();
        // A chain is as long as tokens were made with tokens; a cycle cannot be stored (a
        // maker exists before what it makes), the bound is for safety.
        for _ in 0..1000 {
            match made_by {
                None => return Ok(false),
                Some(hash) if hash == maker_hash => return Ok(true),
                Some(hash) => {
                    made_by = self
                        .scalar(
                            Statement::new(
                                "SELECT owner_hash FROM api_tokens WHERE token_hash = $1",
                            )
                            .bind(&hash),
                        )
                        .await?
                        .flatten();
                }
            }
        }
        Ok(false)
    }

    /// Revokes token `id`, every token made with it (down the line), and the sessions they
    /// opened, in one transaction. False when there is no such token or it was revoked
    /// already.
    pub async fn revoke_token(&self, id: i64) -> anyhow::Result<bool> {
        let now = now_ms();
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            let hash: Option<String> = tx
                .scalar(
                    Statement::new(
                        "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 \
                         AND revoked_at IS NULL RETURNING token_hash",
                    )
                    .bind(now)
                    .bind(id),
                )
                .await?;
            let revoked = hash.is_some();
            // regression: a stolen token minted another before it was revoked, and that one
            // kept working.
            let mut work: Vec<String> = hash.into_iter().collect();
            while let Some(hash) = work.pop() {
                tx.execute(
                    Statement::new("DELETE FROM sessions WHERE token_hash = $1").bind(&hash),
                )
                .await?;
                let made: Vec<String> = tx
                    .scalars(
                        Statement::new(
                            "UPDATE api_tokens SET revoked_at = $1 WHERE owner_hash = $2 \
                             AND user_id IS NOT NULL AND revoked_at IS NULL RETURNING token_hash",
                        )
                        .bind(now)
                        .bind(&hash),
                    )
                    .await?;
                work.extend(made);
            }
            tx.commit().await?;
            Ok(revoked)
        }
    }

    /// Gives every token made before users existed a user: one per distinct name
    /// (case-insensitively; a name that is not a valid user name, or `admin`, becomes
    /// `legacy-<id>`), with `maintainer` on every repository, so existing installations keep
    /// working. Tokens minted with another token (`owner_hash`) go to that token's user,
    /// adopted now or before. A user that exists before this adoption is never given a
    /// legacy token (nor maintainer everywhere): such a token gets a `legacy-<id>` user of
    /// its own. Returns who was adopted, for the start-up warning.
    pub async fn adopt_legacy_tokens(&self) -> anyhow::Result<Vec<Adopted>> {
        let rows: Vec<(i64, String, Option<String>, String)> = self
            .rows(Statement::new(
                "SELECT id, name, owner_hash, token_hash FROM api_tokens WHERE user_id IS NULL \
                 ORDER BY id",
            ))
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut adopted: Vec<Adopted> = Vec::new();
        let mut by_hash = std::collections::HashMap::new();
        // Users made by this adoption: only these take further legacy tokens by name.
        // regression: a legacy row named like an existing user (an old replica still
        // minting during a rolling upgrade: `POST /api/tokens {"name":"alice"}`) became
        // alice's token, and alice got maintainer on every repository.
        let mut made = std::collections::HashSet::new();
        // Owners first: a minted token follows its owner, which is a row without owner_hash.
        let (owners, minted): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(_, _, owner, _)| owner.is_none());
        for (id, name, owner_hash, hash) in owners.into_iter().chain(minted) {
            let owner = match owner_hash {
                None => None,
                Some(owner) => match by_hash.get(&owner).copied() {
                    Some(user_id) => Some(user_id),
                    // Its owner was adopted by an earlier start.
                    None => self
                        .scalar::<Option<i64>>(
                            Statement::new("SELECT user_id FROM api_tokens WHERE token_hash = $1")
                                .bind(&owner),
                        )
                        .await?
                        .flatten(),
                },
            };
            let user_id = match owner {
                Some(user_id) => user_id,
                None => {
                    let wanted = if super::people::valid_name(&name)
                        && !name.eq_ignore_ascii_case("admin")
                    {
                        name.clone()
                    } else {
                        format!("legacy-{id}")
                    };
                    let (user, shown) = self.legacy_user(&wanted, id, &made).await?;
                    made.insert(user);
                    self.grant_every_repository(user, "maintainer").await?;
                    match adopted.iter_mut().find(|a| a.user == shown) {
                        Some(a) => a.tokens += 1,
                        None => adopted.push(Adopted {
                            user: shown,
                            tokens: 1,
                        }),
                    }
                    user
                }
            };
            by_hash.insert(hash.clone(), user_id);
            self.execute(
                Statement::new("UPDATE api_tokens SET user_id = $1 WHERE id = $2")
                    .bind(user_id)
                    .bind(id),
            )
            .await
            .map(|_| ())?;
        }
        Ok(adopted)
    }

    /// The user legacy token `token_id` goes to: `wanted` when this adoption made it or no
    /// one has the name, else a fresh `legacy-<id>[-n]`; its id and name.
    async fn legacy_user(
        &self,
        wanted: &str,
        token_id: i64,
        made: &std::collections::HashSet<i64>,
    ) -> anyhow::Result<(i64, String)> {
        let fallback = format!("legacy-{token_id}");
        let candidates = std::iter::once(wanted.to_string())
            .chain(std::iter::once(fallback.clone()))
            .chain((2..).map(|n| format!("{fallback}-{n}")));
        for candidate in candidates.take(100) {
            match self.user_by_name(&candidate).await? {
                Some(user) if made.contains(&user.id) => return Ok((user.id, user.name)),
                Some(_) => continue,
                None => {
                    let id = self
                        .create_user(&NewUser::person(&candidate))
                        .await
                        .map_err(anyhow::Error::from)?;
                    return Ok((id, candidate));
                }
            }
        }
        anyhow::bail!("no free user name for the token {token_id} from before users")
    }

    /// Opens a dashboard session for `user_id`, signed in with the token hashed as
    /// `token_hash`, until `expires_at`.
    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        token_hash: &str,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        {
            // Expired sessions are dropped as new ones open: the table does not grow.
            self.execute(Statement::new("DELETE FROM sessions WHERE expires_at <= $1").bind(now))
                .await?;
            self.execute(
                Statement::new(
                    "INSERT INTO sessions (id_hash, user_id, token_hash, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id_hash)
                .bind(user_id)
                .bind(token_hash)
                .bind(now)
                .bind(expires_at),
            )
            .await?;
        };
        Ok(())
    }

    /// The live session with this id hash at `now`: its user (not disabled) and the hash of
    /// the token that opened it. Whether that token is still valid is the caller's check.
    pub async fn session(
        &self,
        id_hash: &str,
        now: i64,
    ) -> anyhow::Result<Option<(UserRow, String)>> {
        let sql = format!(
            "SELECT s.token_hash, {USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL"
        );
        Ok(self
            .row::<SessionAndUser>(Statement::new(&sql).bind(id_hash).bind(now))
            .await?
            .map(SessionAndUser::user_and_token_hash))
    }

    /// Ends a session (sign-out).
    pub async fn delete_session(&self, id_hash: &str) -> anyhow::Result<()> {
        self.execute(Statement::new("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash))
            .await
            .map(|_| ())?;
        Ok(())
    }
}
