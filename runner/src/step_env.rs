//! A step's environment: built from an allow-list, never inherited.
//!
//! Layers, later ones winning:
//! 1. the runner's *base*: by default only `PATH`, `LANG`, `LC_ALL` and `TZ` of the runner's
//!    own environment ([`Base::minimal`]); under `plue run` the caller's whole environment
//!    minus every credential ([`Base::inherited`]) — it is the caller's own machine;
//! 2. the attempt's variables: `HOME` and `TMPDIR` inside the attempt's directory, `CI`,
//!    `PLUE_OUTPUT`, `PLUE_WORKSPACE`;
//! 3. the dispatch's `env` (the plan's and the step's `env`, the `PLUE_*` step variables);
//! 4. the secrets the step names.
//!
//! Invariants: nothing reaches a step process that is not in the map this module returns
//! (the process is spawned with a cleared environment); no layer ever carries an engine or
//! runner credential ([`CREDENTIAL_VARS`]) unless a step names a secret of that name.

use std::collections::BTreeMap;
use std::path::Path;

/// The environment variable the registration token may come from; removed from steps.
pub const TOKEN_ENV: &str = "PLUE_RUNNER_TOKEN";

/// Variables that hold engine or runner credentials: never part of a base.
pub const CREDENTIAL_VARS: &[&str] = &[
    "PLUE_RUNNER_TOKEN",
    "PLUE_ADMIN_TOKEN",
    "PLUE_SECRET_KEY",
    "PLUE_TOKEN",
    "PLUE_FORGE_TOKEN",
    "PLUE_WEBHOOK_SECRET",
    "DATABASE_URL",
    // Paths, not values: a step that knows the path learns where the key is, and its
    // sandbox keeps it from reading the file; withheld all the same.
    "PLUE_SIGNING_KEY",
    "PLUE_GITHUB_APP_KEY_FILE",
    "PLUE_GITHUB_APP_WEBHOOK_SECRET_FILE",
    // The egress proxy's token signs every allow-list attempt's credential.
    "PLUE_EGRESS_PROXY_TOKEN_FILE",
    // The sign-in providers' client secrets (`plue serve`'s sign-in flags).
    "PLUE_OIDC_CLIENT_SECRET_FILE",
    "PLUE_GITHUB_SIGN_IN_CLIENT_SECRET_FILE",
    "PLUE_GITEA_SIGN_IN_CLIENT_SECRET_FILE",
];

/// The variables a minimal base takes from the runner's environment.
const MINIMAL_VARS: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// `PATH` when the runner has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The bottom layer of every step environment of one runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base(BTreeMap<String, String>);

impl Base {
    /// `PATH`, `LANG`, `LC_ALL` and `TZ` of `vars` (the runner's environment), with a
    /// default `PATH` and `LANG`.
    pub fn minimal(vars: impl IntoIterator<Item = (String, String)>) -> Base {
        Base::minimal_with(vars, &[])
    }

    /// [`Base::minimal`] plus the variables named in `passed` (an operator's `--pass-env`,
    /// e.g. `HTTPS_PROXY`); credentials are never passed (see [`check_passable`]).
    pub fn minimal_with(
        vars: impl IntoIterator<Item = (String, String)>,
        passed: &[String],
    ) -> Base {
        let mut base: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(name, _)| {
                MINIMAL_VARS.contains(&name.as_str())
                    || (passed.iter().any(|p| p == name)
                        && !CREDENTIAL_VARS.contains(&name.as_str()))
            })
            .collect();
        base.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        base.entry("LANG".into())
            .or_insert_with(|| "C.UTF-8".into());
        Base(base)
    }

    /// All of `vars` except credentials and `withheld` (the names of secrets, which go only
    /// to the steps that name them).
    pub fn inherited(
        vars: impl IntoIterator<Item = (String, String)>,
        withheld: &[String],
    ) -> Base {
        let base = vars
            .into_iter()
            .filter(|(name, _)| {
                !CREDENTIAL_VARS.contains(&name.as_str()) && !withheld.iter().any(|w| w == name)
            })
            .collect();
        Base(base)
    }

    /// The variables, by name.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The runner process's own environment: inherited, or minimal plus `passed`.
    pub fn of_this_process(inherit: bool, passed: &[String]) -> Base {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        if inherit {
            Base::inherited(vars, &[])
        } else {
            Base::minimal_with(vars, passed)
        }
    }
}

/// A variable [`check_passable`] will not pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPassable {
    /// One of the engine's or a runner's credentials ([`CREDENTIAL_VARS`]).
    #[error("{0} is a credential of the engine or a runner: it is never passed to steps")]
    Credential(String),
    /// Empty, or holding `=` or NUL.
    #[error("'{0}' is not an environment variable name")]
    BadName(String),
}

/// Refuses to pass a credential on by name (`--pass-env PLUE_ADMIN_TOKEN`).
pub fn check_passable(name: &str) -> Result<(), NotPassable> {
    if CREDENTIAL_VARS.contains(&name) {
        return Err(NotPassable::Credential(name.to_owned()));
    }
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(NotPassable::BadName(name.to_owned()));
    }
    Ok(())
}

/// Where an attempt lives, for the attempt's own variables.
#[derive(Debug, Clone, Copy)]
pub struct AttemptPaths<'a> {
    pub workspace: &'a Path,
    pub output_file: &'a Path,
    pub home: &'a Path,
    pub tmp: &'a Path,
}

/// The complete environment of one step process (see the module doc for the layers).
/// `secrets` are the values of the secrets the step names.
pub fn build(
    base: &Base,
    paths: AttemptPaths<'_>,
    dispatch_env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = base.0.clone();
    env.insert("HOME".into(), paths.home.display().to_string());
    env.insert("TMPDIR".into(), paths.tmp.display().to_string());
    env.insert("CI".into(), "true".into());
    env.insert(
        "PLUE_OUTPUT".into(),
        paths.output_file.display().to_string(),
    );
    env.insert(
        "PLUE_WORKSPACE".into(),
        paths.workspace.display().to_string(),
    );
    env.extend(dispatch_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn engine_like_environment() -> Vec<(String, String)> {
        vars(&[
            ("PATH", "/opt/bin:/usr/bin"),
            ("LANG", "de_DE.UTF-8"),
            ("PLUE_ADMIN_TOKEN", "admin-secret"),
            ("PLUE_SECRET_KEY", "vault-key"),
            ("PLUE_RUNNER_TOKEN", "runner-secret"),
            ("PLUE_TOKEN", "api-token"),
            ("DATABASE_URL", "postgres://u:pw@db/plue"),
            ("DEPLOY_KEY", "named-by---secret"),
            ("EDITOR", "vi"),
        ])
    }

    #[test]
    fn a_minimal_base_takes_only_the_allow_list() {
        let base = Base::minimal(engine_like_environment());
        assert_eq!(
            base.0,
            BTreeMap::from([
                ("PATH".to_string(), "/opt/bin:/usr/bin".to_string()),
                ("LANG".to_string(), "de_DE.UTF-8".to_string()),
            ])
        );
        let passed = Base::minimal_with(
            engine_like_environment(),
            &["EDITOR".to_string(), "PLUE_ADMIN_TOKEN".to_string()],
        );
        assert_eq!(passed.0["EDITOR"], "vi");
        assert!(!passed.0.contains_key("PLUE_ADMIN_TOKEN"));
        assert_eq!(
            check_passable("PLUE_SECRET_KEY"),
            Err(NotPassable::Credential("PLUE_SECRET_KEY".into()))
        );
        assert_eq!(
            check_passable("A=B").unwrap_err().to_string(),
            "'A=B' is not an environment variable name"
        );
        assert!(check_passable("HTTPS_PROXY").is_ok());
        let empty = Base::minimal(Vec::new());
        assert_eq!(empty.0["PATH"], DEFAULT_PATH);
        assert_eq!(empty.0["LANG"], "C.UTF-8");
    }

    #[test]
    fn an_inherited_base_never_carries_credentials_or_withheld_secrets() {
        let base = Base::inherited(engine_like_environment(), &["DEPLOY_KEY".to_string()]);
        for name in CREDENTIAL_VARS.iter().copied().chain(["DEPLOY_KEY"]) {
            assert!(!base.0.contains_key(name), "{name} leaked into the base");
        }
        assert_eq!(base.0["EDITOR"], "vi");
    }

    #[test]
    fn layers_apply_in_order_and_secrets_come_last() {
        let base = Base::minimal(vars(&[("PATH", "/usr/bin")]));
        let (ws, out, home, tmp) = (
            PathBuf::from("/w/a/workspace"),
            PathBuf::from("/w/a/output"),
            PathBuf::from("/w/a/home"),
            PathBuf::from("/w/a/tmp"),
        );
        let paths = AttemptPaths {
            workspace: &ws,
            output_file: &out,
            home: &home,
            tmp: &tmp,
        };
        let dispatch = BTreeMap::from([
            ("PLUE_STEP_ID".to_string(), "build".to_string()),
            ("TOKEN".to_string(), "from-env".to_string()),
        ]);
        let secrets = BTreeMap::from([("TOKEN".to_string(), "from-secret".to_string())]);
        let env = build(&base, paths, &dispatch, &secrets);
        assert_eq!(env["HOME"], "/w/a/home");
        assert_eq!(env["TMPDIR"], "/w/a/tmp");
        assert_eq!(env["PLUE_OUTPUT"], "/w/a/output");
        assert_eq!(env["PLUE_WORKSPACE"], "/w/a/workspace");
        assert_eq!(env["CI"], "true");
        assert_eq!(env["PLUE_STEP_ID"], "build");
        assert_eq!(env["TOKEN"], "from-secret");
        assert_eq!(env.len(), 9, "{env:?}");
    }
}
