//! The GitHub App's own deliveries: `installation` (`created`, `deleted`, `suspend`,
//! `unsuspend`, `new_permissions_accepted`) and `installation_repositories` (`added`,
//! `removed`), read into an [`InstallationEvent`]. Field names are those of
//! @octokit/webhooks-schemas (`installation`, `installation$created`,
//! `installation_repositories$added`, …): `installation.{id, account.login, account.type
//! (or target_type), permissions, events, suspended_at}`, `repositories[].full_name`,
//! `repositories_added[]`, `repositories_removed[]`.
//!
//! Invariants: pure; a repository or account name that is not one GitHub allows is dropped,
//! never kept as some other name; permissions keep only `name: level` pairs of plain words
//! and events only plain words, so what the store keeps and the API shows is bounded data.

use std::collections::BTreeMap;

use plue_types::status::InstallationState;
use serde::Deserialize;

use super::PayloadError;

/// The most repositories kept of one delivery (GitHub sends at most a few hundred).
const MAX_REPOSITORIES: usize = 10_000;

/// What an installation event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationEvent {
    /// `installation` or `installation_repositories`'s `action`.
    pub action: String,
    pub installation: Installation,
    /// Repositories the installation may reach from now on.
    pub added: Vec<String>,
    /// Repositories it may no longer reach.
    pub removed: Vec<String>,
    /// The forge's numeric id of each added repository the event names one for (what a
    /// repository registered from it is bound to).
    pub added_ids: BTreeMap<String, i64>,
}

/// An installation as the event describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub id: i64,
    /// The login it is installed on.
    pub account: String,
    /// `User`, `Organization` or `Enterprise`.
    pub account_type: String,
    pub state: InstallationState,
    pub permissions: BTreeMap<String, String>,
    pub events: Vec<String>,
}

#[derive(Deserialize)]
struct EventJson {
    action: String,
    installation: InstallationJson,
    #[serde(default)]
    repositories: Option<Vec<RepositoryJson>>,
    #[serde(default)]
    repositories_added: Option<Vec<RepositoryJson>>,
    #[serde(default)]
    repositories_removed: Option<Vec<RepositoryJson>>,
}

#[derive(Deserialize)]
struct InstallationJson {
    id: i64,
    #[serde(default)]
    account: Option<AccountJson>,
    #[serde(default)]
    target_type: Option<String>,
    #[serde(default)]
    permissions: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    events: Vec<serde_json::Value>,
    #[serde(default)]
    suspended_at: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AccountJson {
    #[serde(default)]
    login: Option<String>,
    /// An enterprise account has a `slug`, no `login`.
    #[serde(default)]
    slug: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RepositoryJson {
    full_name: String,
    #[serde(default)]
    id: Option<i64>,
}

/// Reads an `installation` or `installation_repositories` delivery (`event`).
pub fn read(event: &str, value: serde_json::Value) -> Result<InstallationEvent, PayloadError> {
    let invalid = |problem: String| PayloadError::Invalid {
        event: event.to_string(),
        problem,
    };
    let json: EventJson = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    if json.installation.id <= 0 {
        return Err(invalid("installation.id is not a positive number".into()));
    }
    let account = json.installation.account.as_ref();
    let login = account
        .and_then(|a| a.login.clone().or_else(|| a.slug.clone()))
        .filter(|l| word(l, 100))
        .ok_or_else(|| invalid("installation.account names no valid login".into()))?;
    let account_type = account
        .and_then(|a| a.kind.clone())
        .or(json.installation.target_type.clone())
        .filter(|t| word(t, 40))
        .unwrap_or_else(|| "User".into());
    let suspended = json
        .installation
        .suspended_at
        .as_ref()
        .is_some_and(|at| !at.is_null());
    let state = match (json.action.as_str(), suspended) {
        ("deleted", _) => InstallationState::Deleted,
        ("suspend", _) => InstallationState::Suspended,
        ("unsuspend", _) => InstallationState::Active,
        (_, true) => InstallationState::Suspended,
        (_, false) => InstallationState::Active,
    };
    let names = |repos: Option<Vec<RepositoryJson>>| -> Vec<String> {
        let mut names: Vec<String> = repos
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.full_name)
            .filter(|n| repository_name(n))
            .take(MAX_REPOSITORIES)
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let ids = |repos: &Option<Vec<RepositoryJson>>| -> BTreeMap<String, i64> {
        repos
            .iter()
            .flatten()
            .filter_map(|r| Some((r.full_name.clone(), r.id.filter(|id| *id > 0)?)))
            .filter(|(n, _)| repository_name(n))
            .take(MAX_REPOSITORIES)
            .collect()
    };
    let added_ids = match (event, json.action.as_str()) {
        ("installation", "created") => ids(&json.repositories),
        ("installation", _) => BTreeMap::new(),
        _ => ids(&json.repositories_added),
    };
    let (added, removed) = match (event, json.action.as_str()) {
        ("installation", "created") => (names(json.repositories), Vec::new()),
        ("installation", "deleted") => (Vec::new(), names(json.repositories)),
        ("installation", _) => (Vec::new(), Vec::new()),
        _ => (
            names(json.repositories_added),
            names(json.repositories_removed),
        ),
    };
    Ok(InstallationEvent {
        action: json
            .action
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect(),
        installation: Installation {
            id: json.installation.id,
            account: login,
            account_type,
            state,
            permissions: json
                .installation
                .permissions
                .into_iter()
                .filter_map(|(name, level)| Some((name, level.as_str()?.to_string())))
                .filter(|(name, level)| word(name, 64) && word(level, 16))
                .take(100)
                .collect(),
            events: json
                .installation
                .events
                .into_iter()
                .filter_map(|e| e.as_str().map(String::from))
                .filter(|e| word(e, 64))
                .take(100)
                .collect(),
        },
        added,
        removed,
        added_ids,
    })
}

/// A plain word of at most `max` characters: ASCII letters, digits, `_`, `-`, `.`.
fn word(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `owner/name` as GitHub allows them.
fn repository_name(name: &str) -> bool {
    match name.split_once('/') {
        Some((owner, repo)) => word(owner, 100) && word(repo, 100) && repo != "." && repo != "..",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ForgeEvent};
    use super::*;
    use crate::Forge;

    fn fixture(name: &str) -> InstallationEvent {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../engine/tests/fixtures/webhooks/github")
            .join(name);
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let event = name.split('-').next().unwrap();
        match parse(Forge::GitHub, event, &body).unwrap() {
            ForgeEvent::Installation(event) => event,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn the_real_installation_events_are_read() {
        let created = fixture("installation-created.json");
        assert_eq!(created.action, "created");
        assert_eq!(
            (
                created.installation.id,
                created.installation.account.as_str(),
                created.installation.account_type.as_str(),
                created.installation.state
            ),
            (957387, "Codertocat", "User", InstallationState::Active)
        );
        assert_eq!(created.added, ["Codertocat/Hello-World"]);
        assert_eq!(created.added_ids["Codertocat/Hello-World"], 186853002);
        assert_eq!(
            created
                .installation
                .permissions
                .get("checks")
                .map(String::as_str),
            Some("write")
        );
        let suspended = fixture("installation-suspend.json");
        assert_eq!(suspended.installation.state, InstallationState::Suspended);
        let deleted = fixture("installation-deleted.json");
        assert_eq!(deleted.installation.state, InstallationState::Deleted);
        let added = fixture("installation_repositories-added.json");
        assert_eq!((added.action.as_str(), added.added.len()), ("added", 1));
        let removed = fixture("installation_repositories-removed.json");
        assert_eq!(removed.removed, ["octocat/Hello-World"]);
        assert!(removed.added.is_empty());
    }

    // The attack: a delivery signed with the App's secret still carries whatever text the
    // App's settings or a repository's name allow; odd names never become other names.
    #[test]
    fn odd_names_permissions_and_events_are_dropped() {
        let body = serde_json::json!({
            "action": "added",
            "installation": {
                "id": 5,
                "account": {"login": "acme", "type": "Organization"},
                "permissions": {"checks": "write", "bad key": "write", "x": {"nested": 1}},
                "events": ["push", "evil\nline", 3],
            },
            "repositories_added": [
                {"full_name": "acme/ok"}, {"full_name": "acme/../x"}, {"full_name": "acme/.."},
                {"full_name": "no-slash"}, {"full_name": "acme/a b"}, {"full_name": "acme/ok"},
            ],
            "repositories_removed": [],
        });
        let event = read("installation_repositories", body).unwrap();
        assert_eq!(event.added, ["acme/ok"]);
        assert_eq!(event.installation.events, ["push"]);
        assert_eq!(event.installation.permissions.len(), 1);
        let no_account = serde_json::json!({"action": "created", "installation": {"id": 5}});
        assert!(read("installation", no_account).is_err());
        let bad_id = serde_json::json!({"action": "created",
            "installation": {"id": -1, "account": {"login": "a"}}});
        assert!(read("installation", bad_id).is_err());
    }
}
