//! Who signed in, as a Plue user: found by the account's link, or created with it at the
//! first sign-in (named after the account, made unique); an OpenID Connect groups claim's
//! memberships follow.

use plue_store::{GroupChanges, SignInIdentity, Store, UserRow};

/// An account a provider vouched for.
#[derive(Debug, Clone)]
pub(super) enum Account {
    Forge { forge: &'static str, login: String },
    Subject { issuer: String, subject: String },
}

impl Account {
    fn identity(&self) -> SignInIdentity<'_> {
        match self {
            Account::Forge { forge, login } => SignInIdentity::Forge { forge, login },
            Account::Subject { issuer, subject } => SignInIdentity::Subject { issuer, subject },
        }
    }

    /// As the audit trail shows it: `github:octocat`, `oidc:id.example:248289761001`.
    pub(super) fn describe(&self) -> String {
        match self {
            Account::Forge { forge, login } => format!("{forge}:{login}"),
            Account::Subject { issuer, subject } => {
                let host = url::Url::parse(issuer)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_else(|| issuer.clone());
                format!("oidc:{host}:{subject}")
            }
        }
    }
}

/// The user `account` is linked to, or (the first time) a new one named after `hint`, and
/// whether it was created now. A disabled user is returned as it is: the caller refuses it.
pub(super) async fn find_or_create(
    store: &Store,
    account: &Account,
    hint: &str,
) -> anyhow::Result<(UserRow, bool)> {
    // Twice at most: a sign-in racing this one may link the account between the two.
    for _ in 0..2 {
        if let Some(user) = store.user_of_sign_in(account.identity()).await? {
            return Ok((user, false));
        }
        if let Some(user) = store
            .create_signed_in_user(&base_name(hint), account.identity())
            .await?
        {
            return Ok((user, true));
        }
    }
    anyhow::bail!("the account {} could not be linked", account.describe())
}

/// Makes the user's memberships follow a groups claim.
pub(super) async fn follow_groups(
    store: &Store,
    user_id: i64,
    groups: &[String],
) -> anyhow::Result<GroupChanges> {
    store.follow_group_claim(user_id, groups).await
}

/// A user name from an account's name: letters, digits, `.`, `_` and `-` kept, anything
/// else `-`, starting with a letter or digit, at most 35 characters (room for a `-N`);
/// `user` when nothing is left.
pub(super) fn base_name(hint: &str) -> String {
    let mapped: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = mapped
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    name.truncate(35);
    if name.is_empty() {
        "user".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_accounts_are_user_names() {
        assert_eq!(base_name("octocat"), "octocat");
        assert_eq!(base_name("Jane Doe"), "Jane-Doe");
        assert_eq!(base_name("jane@example.com"), "jane-example.com");
        assert_eq!(base_name("__x"), "x");
        assert_eq!(base_name("ä"), "user");
        assert_eq!(base_name(&"a".repeat(80)).len(), 35);
        for hint in ["Jane Doe", "-", "..a", "é-é", &"b".repeat(50)] {
            assert!(plue_store::valid_name(&base_name(hint)), "{hint}");
        }
        let account = Account::Subject {
            issuer: "https://id.example/realms/x".into(),
            subject: "248".into(),
        };
        assert_eq!(account.describe(), "oidc:id.example:248");
    }
}
