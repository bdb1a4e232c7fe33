//! Which installations of the engine's GitHub App the operator accepts: those on an account
//! named by `plue serve --installation-owner` (a user or an organization; none by default).
//!
//! Anyone can install a public App on their own account, and GitHub then signs that
//! installation's deliveries with the App's one webhook secret: a verified signature says
//! GitHub sent it, not that the operator wants to serve that account. So every installation
//! is judged here, by its account alone.
//!
//! Invariants:
//! - Nothing is accepted by default: an empty list refuses every installation.
//! - An account is compared as GitHub compares logins (ASCII case ignored); there is no
//!   pattern, so no name accepts an account the operator did not write out.
//! - A judgement is a pure function of the list and the account: the same everywhere it is
//!   made (an installation event, a delivery, an engine's start).

/// The accounts whose installations the engine accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallationOwners {
    accounts: Vec<String>,
}

/// Why an installation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallationRefused {
    /// Its account is not one the operator named.
    #[error(
        "the App is installed on account '{account}', which is not among the accounts this \
         engine accepts installations from (plue serve --installation-owner)"
    )]
    NotAnOwner {
        /// The account it is installed on.
        account: String,
    },
}

impl InstallationOwners {
    /// The accounts `accounts` (logins; surrounding blanks and empty entries dropped).
    pub fn new<I, S>(accounts: I) -> InstallationOwners
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        InstallationOwners {
            accounts: accounts
                .into_iter()
                .map(|a| a.as_ref().trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
        }
    }

    /// Whether an installation on `account` is accepted, or why not.
    pub fn judge(&self, account: &str) -> Result<(), InstallationRefused> {
        if self
            .accounts
            .iter()
            .any(|owner| owner.eq_ignore_ascii_case(account.trim()))
        {
            return Ok(());
        }
        Err(InstallationRefused::NotAnOwner {
            account: account.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The attack: a stranger installs the App on her own account, or on one whose name
    // merely resembles an accepted one.
    #[test]
    fn only_a_named_account_is_accepted() {
        assert!(InstallationOwners::default().judge("acme").is_err());
        let owners = InstallationOwners::new(["acme", " Widgets ", ""]);
        for accepted in ["acme", "ACME", "widgets", "Widgets"] {
            assert_eq!(owners.judge(accepted), Ok(()), "{accepted}");
        }
        for stranger in [
            "mallory",
            "acme-evil",
            "acm",
            "evil-acme",
            "",
            "*",
            "acme/app",
        ] {
            let refused = owners.judge(stranger).unwrap_err();
            assert!(
                refused.to_string().contains("--installation-owner"),
                "{refused}"
            );
        }
    }
}
