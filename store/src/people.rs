//! Users, groups and the forge logins linked to users, in the store.
//!
//! Invariants:
//! - A user's id never changes and is what every rule compares; names are unique
//!   case-insensitively (`name_key` = lower(name), a unique column), so no one can be
//!   created under another's name in another case. `admin` is the migration's own row.
//! - A disabled user keeps its id (its runs and audit rows still name it) but no token or
//!   session of it is valid ([`super::api_tokens`] joins on `disabled_at IS NULL`).
//! - A forge login belongs to at most one user per forge (`(forge, login_key)` is the key).

use super::{is_unique_violation, now_ms, Store};
use crate::tx::Conn;
use crate::tx::Statement;

/// Who a user is: stored as `person` or `bot` (`users.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    Person,
    Bot,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Person => "person",
            UserKind::Bot => "bot",
        }
    }
}

impl std::fmt::Display for UserKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// For rows decoded with `#[sqlx(try_from = "String")]`: a word no kind has is an error.
impl TryFrom<String> for UserKind {
    type Error = anyhow::Error;

    fn try_from(text: String) -> anyhow::Result<UserKind> {
        match text.as_str() {
            "person" => Ok(UserKind::Person),
            "bot" => Ok(UserKind::Bot),
            _ => anyhow::bail!("unknown user kind {text:?}"),
        }
    }
}

/// A user to create ([`Store::create_user`]).
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    /// Checked by [`valid_name`] first.
    pub name: &'a str,
    pub kind: UserKind,
    /// An installation admin.
    pub admin: bool,
}

impl<'a> NewUser<'a> {
    /// A person who is not an admin.
    pub fn person(name: &'a str) -> Self {
        NewUser {
            name,
            kind: UserKind::Person,
            admin: false,
        }
    }
}

/// A user as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: UserKind,
    pub admin: bool,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// A group of users, named as `@name` in reviewer and approver lists.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct GroupRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

/// A forge login linked to a user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct ForgeLoginRow {
    pub user_id: i64,
    pub forge: String,
    pub login: String,
}

/// Why a name could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// Another user (or group) already has this name in some case.
    #[error("the name '{0}' is taken")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Whether `name` may name a user or a group: 1 to 39 ASCII letters, digits, `.`, `_` and
/// `-`, starting with a letter or digit (what GitHub and Gitea allow for logins, so a user
/// can carry their forge login as their name).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 39
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Who started a run, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triggerer {
    /// As shown: a user name, `schedule`, a forge login.
    pub name: String,
    pub user_id: Option<i64>,
    /// `github:octocat` for a run a forge's webhook started; more than one separated by
    /// spaces when more than one login started it (`github:octocat github:mallory`: a
    /// `synchronize` mallory pushed onto octocat's pull request).
    pub forge_login: Option<String>,
}

const USER_COLUMNS: &str = "id, name, kind, admin, created_at, disabled_at";

/// What an insert that takes a name came to: a unique violation is [`NameError::Taken`]
/// (`taken`, the name), any other failure the store's, in the context `storing`.
fn taking_name<T>(
    inserted: anyhow::Result<T>,
    taken: impl FnOnce() -> String,
    storing: &'static str,
) -> Result<T, NameError> {
    match inserted {
        Ok(done) => Ok(done),
        Err(e) if is_unique_violation(&e) => Err(NameError::Taken(taken())),
        Err(e) => Err(NameError::Store(e.context(storing))),
    }
}

impl Store {
    /// Creates a user; [`NameError::Taken`] when the name exists in any case.
    pub async fn create_user(&self, new: &NewUser<'_>) -> Result<i64, NameError> {
        let NewUser { name, kind, admin } = *new;
        let inserted: anyhow::Result<i64> = self
            .one_scalar(
                Statement::new(
                    "INSERT INTO users (name, name_key, kind, admin, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(name)
                .bind(name.to_lowercase())
                .bind(kind.as_str())
                .bind(admin)
                .bind(now_ms()),
            )
            .await;
        taking_name(inserted, || name.to_string(), "storing a user")
    }

    /// The user named `name` (in any case).
    pub async fn user_by_name(&self, name: &str) -> anyhow::Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name_key = $1");
        self.row::<UserRow>(Statement::new(&sql).bind(name.to_lowercase()))
            .await
    }

    pub async fn user_by_id(&self, id: i64) -> anyhow::Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        self.row::<UserRow>(Statement::new(&sql).bind(id)).await
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> anyhow::Result<Vec<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name_key");
        self.rows::<UserRow>(Statement::new(&sql)).await
    }

    /// Disables a user: none of its tokens or sessions is valid any more, and its sessions
    /// are deleted. False when there is no such user or it was disabled already.
    pub async fn disable_user(&self, id: i64) -> anyhow::Result<bool> {
        let now = now_ms();
        {
            let mut conn = Conn::acquire(self).await?;
            let mut tx = conn.begin().await?;
            let changed = tx
                .execute(
                    Statement::new(
                        "UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL",
                    )
                    .bind(now)
                    .bind(id),
                )
                .await?;
            tx.execute(Statement::new("DELETE FROM sessions WHERE user_id = $1").bind(id))
                .await?;
            tx.commit().await?;
            Ok(changed > 0)
        }
    }

    /// Makes a user an installation admin, or not.
    pub async fn set_user_admin(&self, id: i64, admin: bool) -> anyhow::Result<bool> {
        Ok(self
            .execute(
                Statement::new("UPDATE users SET admin = $1 WHERE id = $2")
                    .bind(admin)
                    .bind(id),
            )
            .await?
            > 0)
    }

    /// Creates a group; [`NameError::Taken`] when the name exists in any case.
    pub async fn create_group(&self, name: &str) -> Result<i64, NameError> {
        let inserted: anyhow::Result<i64> = self
            .one_scalar(
                Statement::new(
                    "INSERT INTO user_groups (name, name_key, created_at) \
                     VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(name)
                .bind(name.to_lowercase())
                .bind(now_ms()),
            )
            .await;
        taking_name(inserted, || name.to_string(), "storing a group")
    }

    pub async fn group_by_name(&self, name: &str) -> anyhow::Result<Option<GroupRow>> {
        self.row::<GroupRow>(
            Statement::new("SELECT id, name, created_at FROM user_groups WHERE name_key = $1")
                .bind(name.to_lowercase()),
        )
        .await
    }

    pub async fn list_groups(&self) -> anyhow::Result<Vec<GroupRow>> {
        self.rows::<GroupRow>(Statement::new(
            "SELECT id, name, created_at FROM user_groups ORDER BY name_key",
        ))
        .await
    }

    /// Deletes a group (its memberships go with it). False when there was none.
    pub async fn delete_group(&self, id: i64) -> anyhow::Result<bool> {
        Ok(self
            .execute(Statement::new("DELETE FROM user_groups WHERE id = $1").bind(id))
            .await?
            > 0)
    }

    /// Adds a user to a group (again: no change).
    pub async fn add_group_member(&self, group_id: i64, user_id: i64) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
            )
            .bind(group_id)
            .bind(user_id),
        )
        .await
        .map(|_| ())?;
        Ok(())
    }

    /// Removes a user from a group. False when it was not a member.
    pub async fn remove_group_member(&self, group_id: i64, user_id: i64) -> anyhow::Result<bool> {
        Ok(self
            .execute(
                Statement::new("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                    .bind(group_id)
                    .bind(user_id),
            )
            .await?
            > 0)
    }

    /// The members of a group, by name.
    pub async fn group_members(&self, group_id: i64) -> anyhow::Result<Vec<UserRow>> {
        let sql = format!(
            "SELECT {} FROM users u JOIN group_members g ON g.user_id = u.id \
             WHERE g.group_id = $1 ORDER BY u.name_key",
            USER_COLUMNS
                .split(", ")
                .map(|c| format!("u.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.rows::<UserRow>(Statement::new(&sql).bind(group_id))
            .await
    }

    /// The names (lowercase) of the groups user `user_id` is a member of.
    pub async fn group_keys_of(&self, user_id: i64) -> anyhow::Result<Vec<String>> {
        self.scalars(
            Statement::new(
                "SELECT g.name_key FROM user_groups g JOIN group_members m ON m.group_id = g.id \
             WHERE m.user_id = $1 ORDER BY g.name_key",
            )
            .bind(user_id),
        )
        .await
    }

    /// Links a forge login to a user; [`NameError::Taken`] when another user holds it.
    pub async fn link_forge_login(
        &self,
        user_id: i64,
        forge: &str,
        login: &str,
    ) -> Result<(), NameError> {
        let inserted: anyhow::Result<_> = self
            .execute(
                Statement::new(
                    "INSERT INTO user_forge_logins (user_id, forge, login, login_key) \
             VALUES ($1, $2, $3, $4)",
                )
                .bind(user_id)
                .bind(forge)
                .bind(login)
                .bind(login.to_lowercase()),
            )
            .await
            .map(|_| ());
        taking_name(
            inserted,
            || format!("{forge}:{login}"),
            "linking a forge login",
        )
    }

    /// Unlinks a forge login. False when it was not linked to `user_id`.
    pub async fn unlink_forge_login(
        &self,
        user_id: i64,
        forge: &str,
        login: &str,
    ) -> anyhow::Result<bool> {
        Ok(self
            .execute(
                Statement::new(
                    "DELETE FROM user_forge_logins \
                     WHERE user_id = $1 AND forge = $2 AND login_key = $3",
                )
                .bind(user_id)
                .bind(forge)
                .bind(login.to_lowercase()),
            )
            .await?
            > 0)
    }

    /// The user a forge login is linked to.
    pub async fn user_of_forge_login(
        &self,
        forge: &str,
        login: &str,
    ) -> anyhow::Result<Option<i64>> {
        self.scalar(
            Statement::new(
                "SELECT f.user_id FROM user_forge_logins f JOIN users u ON u.id = f.user_id \
             WHERE f.forge = $1 AND f.login_key = $2 AND u.disabled_at IS NULL",
            )
            .bind(forge)
            .bind(login.to_lowercase()),
        )
        .await
    }

    /// The forge logins linked to a user.
    pub async fn forge_logins_of(&self, user_id: i64) -> anyhow::Result<Vec<ForgeLoginRow>> {
        self.rows::<ForgeLoginRow>(
            Statement::new(
                "SELECT user_id, forge, login FROM user_forge_logins WHERE user_id = $1 \
             ORDER BY forge, login_key",
            )
            .bind(user_id),
        )
        .await
    }

    /// Records who started run `run_id`.
    pub async fn record_trigger(&self, run_id: i64, who: &Triggerer) -> anyhow::Result<()> {
        self.execute(
            Statement::new(
                "INSERT INTO run_triggerers (run_id, triggered_by, user_id, forge_login) \
             VALUES ($1, $2, $3, $4)",
            )
            .bind(run_id)
            .bind(&who.name)
            .bind(who.user_id)
            .bind(&who.forge_login),
        )
        .await
        .map(|_| ())?;
        Ok(())
    }

    /// Who started run `run_id`, when that was recorded.
    pub async fn trigger_of(&self, run_id: i64) -> anyhow::Result<Option<Triggerer>> {
        let row: Option<(String, Option<i64>, Option<String>)> = self
            .row(
                Statement::new(
                    "SELECT triggered_by, user_id, forge_login FROM run_triggerers \
                     WHERE run_id = $1",
                )
                .bind(run_id),
            )
            .await?;
        Ok(row.map(|(name, user_id, forge_login)| Triggerer {
            name,
            user_id,
            forge_login,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_logins() {
        for good in ["alice", "Bob-2", "release.bot", "a", "x_y"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "a b",
            "ä",
            "a/b",
            &"a".repeat(40),
            "a\u{202e}",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
