//! Step caches in the plan: `Cache(paths=[...], key=[...], restore_prefixes=[...],
//! name=None)` on a `bash` or `python` step (or on the `Plan`, for each such step that
//! declares none of its own), and the rules every declaration is checked against.
//!
//! Invariants:
//! - A [`Cache`] in a plan always has its name: when the file gives none, [`default_name`]
//!   derives one from the paths, deterministically (a slug of the paths and 8 hex digits of
//!   their SHA-256), so the same file always makes the same plan and `plan_hash`.
//! - [`check`] is what says a declaration is usable: the host type runs it when `Cache()`
//!   is called (the error on the line that wrote it) and validation runs it again on every
//!   step of the plan a worker returns (a subverted worker's plan is refused the same way).
//!   It is linear in the declaration and echoes user text only through
//!   [`crate::text::echo`].
//! - Cached paths are relative to the workspace, or to the step's home when they start
//!   with `~/`; key files are workspace files. Neither is ever absolute, empty or holds
//!   `..`: the runner checks them again before it touches the disk.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::text::echo;

/// The most caches one step may declare.
pub const MAX_CACHES: usize = 8;
/// The most paths one cache may hold.
pub const MAX_PATHS: usize = 16;
/// The most key files one cache may name.
pub const MAX_KEY_FILES: usize = 16;
/// The most restore prefixes one cache may list.
pub const MAX_RESTORE_PREFIXES: usize = 8;
/// The longest cache name.
pub const MAX_NAME_LEN: usize = 40;
/// The longest path or key file, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// The longest restore prefix (a key is at most `plue_types`' `MAX_KEY_BYTES`, 256).
pub const MAX_PREFIX_LEN: usize = 200;

/// One cache of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// `[a-z0-9_-]{1,40}`, unique among the step's caches; the keys start with it.
    pub name: String,
    /// What is cached: relative to the workspace, or to the step's home with `~/`.
    pub paths: Vec<String>,
    /// Workspace files whose paths and contents make the key, in this order.
    pub key: Vec<String>,
    /// Key prefixes to restore from when the exact key misses, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_prefixes: Vec<String>,
}

/// The name of a cache declared without one: a slug of its paths (lowercase letters,
/// digits, `_`, runs of anything else as one `-`, at most 31 characters) and `-` with the
/// first 8 hex digits of the SHA-256 of the paths (each followed by a NUL), so two caches
/// of different paths never share a name by accident. `target` → `target-<8 hex>`.
pub fn default_name(paths: &[String]) -> String {
    let mut slug = String::new();
    for c in paths.join("-").chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 31 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let mut hasher = Sha256::new();
    for path in paths {
        hasher.update(path.as_bytes());
        hasher.update([0]);
    }
    let digest = hex::encode(hasher.finalize());
    if slug.is_empty() {
        format!("cache-{}", &digest[..8])
    } else {
        format!("{slug}-{}", &digest[..8])
    }
}

/// Every problem of one step's caches, each one line naming the cache (`cache 'rust':
/// ...`), at most a few per cache. Empty when the step may have them.
pub fn check(caches: &[Cache]) -> Vec<String> {
    let mut problems = Vec::new();
    if caches.len() > MAX_CACHES {
        problems.push(format!(
            "{} caches; a step may have at most {MAX_CACHES}",
            caches.len()
        ));
        return problems;
    }
    for (i, cache) in caches.iter().enumerate() {
        let before = problems.len();
        check_one(cache, &mut problems);
        let named = problems.len() > before;
        if !named
            && caches[..i]
                .iter()
                .any(|other| other.name == cache.name && is_name(&cache.name))
        {
            problems.push(format!(
                "two caches are named '{}'; give each its own name=",
                cache.name
            ));
        }
    }
    problems
}

/// The problems of one declaration, appended to `problems`.
fn check_one(cache: &Cache, problems: &mut Vec<String>) {
    if !is_name(&cache.name) {
        problems.push(format!(
            "cache name '{}' must be 1 to {MAX_NAME_LEN} of a-z, 0-9, '_' or '-'",
            echo(&cache.name)
        ));
        return;
    }
    let at = format!("cache '{}'", cache.name);
    if cache.paths.is_empty() {
        problems.push(format!("{at}: paths= must name at least one path"));
    } else if cache.paths.len() > MAX_PATHS {
        problems.push(format!(
            "{at}: {} paths; a cache may hold at most {MAX_PATHS}",
            cache.paths.len()
        ));
    } else {
        for path in &cache.paths {
            if let Err(why) = cached_path(path) {
                problems.push(format!("{at}: path '{}' {why}", echo(path)));
            }
        }
    }
    if cache.key.is_empty() {
        problems.push(format!(
            "{at}: key= must name at least one workspace file (e.g. ['Cargo.lock'])"
        ));
    } else if cache.key.len() > MAX_KEY_FILES {
        problems.push(format!(
            "{at}: {} key files; a cache may name at most {MAX_KEY_FILES}",
            cache.key.len()
        ));
    } else {
        for file in &cache.key {
            if let Err(why) = key_file(file) {
                problems.push(format!("{at}: key file '{}' {why}", echo(file)));
            }
        }
    }
    if cache.restore_prefixes.len() > MAX_RESTORE_PREFIXES {
        problems.push(format!(
            "{at}: {} restore prefixes; a cache may list at most {MAX_RESTORE_PREFIXES}",
            cache.restore_prefixes.len()
        ));
    } else {
        for prefix in &cache.restore_prefixes {
            if !is_prefix(prefix) {
                problems.push(format!(
                    "{at}: restore prefix '{}' must be 1 to {MAX_PREFIX_LEN} of A-Z, a-z, 0-9, '.', '_' or '-'",
                    echo(prefix)
                ));
            }
        }
    }
}

/// `[a-z0-9_-]{1,40}`.
pub fn is_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `[A-Za-z0-9._-]{1,200}`.
pub fn is_prefix(prefix: &str) -> bool {
    (1..=MAX_PREFIX_LEN).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Where a cached path is, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The step's workspace.
    Workspace,
    /// The step's home directory (`~/...`).
    Home,
}

/// A cached path split into its base and its `/`-separated names (no `.`, no `..`, none
/// empty), or why it is refused.
pub fn cached_path(path: &str) -> Result<(Base, Vec<&str>), &'static str> {
    let (base, rest) = match path.strip_prefix("~/") {
        Some(rest) => (Base::Home, rest),
        None if path.starts_with('~') => {
            return Err("must start with '~/' to be in the step's home (no other user's '~')")
        }
        None => (Base::Workspace, path),
    };
    names(rest).map(|names| (base, names))
}

/// A key file's names (a workspace file), or why it is refused.
pub fn key_file(path: &str) -> Result<Vec<&str>, &'static str> {
    if path.starts_with('~') {
        return Err("must be a workspace file (the home is empty before the step)");
    }
    names(path)
}

/// The names of a relative path: not absolute, no `..`, not empty, no control character,
/// at most [`MAX_PATH_LEN`] bytes.
fn names(path: &str) -> Result<Vec<&str>, &'static str> {
    if path.len() > MAX_PATH_LEN {
        return Err("is too long (at most 1024 bytes)");
    }
    if path.starts_with('/') {
        return Err(
            "must be relative (to the workspace, or to the home with '~/'), never absolute",
        );
    }
    if path.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    let mut names = Vec::new();
    for name in path.split('/') {
        match name {
            "" | "." => {}
            ".." => return Err("must not hold '..'"),
            name => names.push(name),
        }
    }
    if names.is_empty() {
        return Err("names nothing (the workspace or home itself cannot be cached)");
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(paths: &[&str], key: &[&str]) -> Cache {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        Cache {
            name: default_name(&paths),
            paths,
            key: key.iter().map(|k| k.to_string()).collect(),
            restore_prefixes: Vec::new(),
        }
    }

    #[test]
    fn default_names_are_deterministic_slugs_with_a_digest() {
        let paths = vec!["target".to_string(), "~/.cargo/registry".to_string()];
        let name = default_name(&paths);
        assert!(name.starts_with("target-cargo-registry-"), "{name}");
        assert_eq!(name, default_name(&paths));
        assert!(is_name(&name), "{name}");
        // Same last names, other paths: other names.
        assert_ne!(
            default_name(&["a/target".into()]),
            default_name(&["b/target".into()])
        );
        let long = default_name(&["x".repeat(500)]);
        assert!(is_name(&long) && long.len() <= MAX_NAME_LEN, "{long}");
        let symbols = default_name(&["~/.....".into()]);
        assert!(
            symbols.starts_with("cache-") && is_name(&symbols),
            "{symbols}"
        );
    }

    #[test]
    fn a_good_declaration_has_no_problem() {
        let mut good = cache(
            &["target", "~/.cargo/registry", "./node_modules/"],
            &["Cargo.lock"],
        );
        good.restore_prefixes = vec![format!("{}-", good.name), "Rust.v1_x-".into()];
        assert_eq!(check(&[good]), Vec::<String>::new());
    }

    #[test]
    fn paths_must_stay_in_the_workspace_or_the_home() {
        for (path, why) in [
            ("/etc", "never absolute"),
            ("../up", "'..'"),
            ("a/../../b", "'..'"),
            ("~/../root", "'..'"),
            ("~root/.ssh", "'~/'"),
            ("", "names nothing"),
            (".", "names nothing"),
            ("~/", "names nothing"),
            ("a\nb", "control"),
        ] {
            let problems = check(&[cache(&[path], &["k"])]);
            assert_eq!(problems.len(), 1, "{path:?}: {problems:?}");
            assert!(problems[0].contains(why), "{path:?}: {problems:?}");
            assert!(!problems[0].contains('\n'), "{problems:?}");
        }
    }

    #[test]
    fn key_files_are_workspace_files() {
        for (file, why) in [
            ("/etc/shadow", "never absolute"),
            ("../x", "'..'"),
            ("~/.bashrc", "workspace file"),
            ("", "names nothing"),
        ] {
            let problems = check(&[cache(&["t"], &[file])]);
            assert_eq!(problems.len(), 1, "{file:?}: {problems:?}");
            assert!(problems[0].contains(why), "{file:?}: {problems:?}");
        }
        let none = check(&[cache(&["t"], &[])]);
        assert!(none[0].contains("at least one workspace file"), "{none:?}");
    }

    #[test]
    fn counts_names_and_prefixes_are_bounded() {
        let many: Vec<Cache> = (0..9).map(|i| cache(&[&format!("p{i}")], &["k"])).collect();
        assert!(check(&many)[0].contains("at most 8"));
        let paths: Vec<String> = (0..17).map(|i| format!("p{i}")).collect();
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        assert!(check(&[cache(&paths, &["k"])])[0].contains("at most 16"));
        let mut no_path = cache(&["t"], &["k"]);
        no_path.paths.clear();
        assert!(check(&[no_path])[0].contains("at least one path"));
        let mut upper = cache(&["t"], &["k"]);
        upper.name = "Rust".into();
        assert!(check(&[upper])[0].contains("a-z, 0-9"));
        let mut long = cache(&["t"], &["k"]);
        long.name = "a".repeat(41);
        assert!(check(&[long])[0].contains("1 to 40"));
        let mut prefix = cache(&["t"], &["k"]);
        prefix.restore_prefixes = vec!["rust-%".into(), String::new()];
        let problems = check(&[prefix]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("'rust-%'"), "{problems:?}");
    }

    #[test]
    fn names_are_unique_per_step() {
        let mut a = cache(&["a"], &["k"]);
        let mut b = cache(&["b"], &["k"]);
        a.name = "deps".into();
        b.name = "deps".into();
        let problems = check(&[a, b]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("two caches are named 'deps'"));
    }

    #[test]
    fn the_json_names_every_field_and_refuses_unknown_ones() {
        let c = cache(&["target"], &["Cargo.lock"]);
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.starts_with(r#"{"name":"target-"#)
                && json.ends_with(r#""paths":["target"],"key":["Cargo.lock"]}"#),
            "{json}"
        );
        assert!(serde_json::from_str::<Cache>(
            r#"{"name":"a","paths":["a"],"key":["k"],"partition":"default"}"#
        )
        .is_err());
    }
}
