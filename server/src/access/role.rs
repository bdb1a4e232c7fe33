//! The roles a user holds on a repository, in order: `reader < writer < maintainer`.
//!
//! Invariant: the store keeps a role as [`Role::as_str`]; a stored name this module does
//! not know grants nothing ([`Role::parse`] gives `None`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a user may do on one repository; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read runs, steps, logs, artifacts, outputs, approvals, schedules and environments.
    Reader,
    /// And dispatch, re-run, cancel, and decide the approvals it is named for.
    Writer,
    /// And the repository's settings, secrets, environments and members.
    Maintainer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Writer, Role::Maintainer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Maintainer => "maintainer",
        }
    }

    /// The role named `name` (exactly as [`Role::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Role`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a role (expected reader, writer or maintainer)")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Role, UnknownRole> {
        Role::parse(name).ok_or_else(|| UnknownRole(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Reader < Role::Writer && Role::Writer < Role::Maintainer);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(Role::parse("admin"), None);
        assert_eq!(Role::parse("Writer"), None, "stored names are exact");
        assert_eq!(
            "owner".parse::<Role>().unwrap_err().to_string(),
            "'owner' is not a role (expected reader, writer or maintainer)"
        );
    }
}
