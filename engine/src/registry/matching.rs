//! Trigger matching: does a plan's trigger list ask for a run on this occasion? Pure.
//!
//! Rules (GitHub Actions' where Plue's contract is silent):
//! - Globs use GitHub's filter syntax: `*` does not cross `/`, `**` does. They are compiled
//!   by `evaluator::glob::compile`, exactly as validation compiled them; a pattern that does
//!   not compile matches nothing. Matching never panics.
//! - push: `refs/heads/<b>` against `branches`, `refs/tags/<t>` against `tags`; a deleted
//!   ref never gets here (the registry starts nothing for it).
//! - pull_request: the action must be listed and the base branch must match `branches`.
//! - `paths`: at least one changed file must match; `paths_ignore`: files matching are
//!   dropped first and nothing left means no run. When the changed files are unknown the
//!   path filters do not hold a run back.
//! - schedule: the plan has a schedule trigger with that exact cron expression.
//! - manual: the plan has a manual trigger.

use evaluator::glob::{compile, Pattern};
use evaluator::plan::{Plan, Trigger};

/// What happened, as far as matching is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Occasion<'a> {
    Push {
        git_ref: &'a str,
        changed_files: Option<&'a [String]>,
    },
    PullRequest {
        action: &'a str,
        base_branch: &'a str,
        changed_files: Option<&'a [String]>,
    },
    Schedule {
        cron: &'a str,
    },
    Manual,
}

/// Whether any trigger of `plan` matches `occasion`.
pub fn matches(plan: &Plan, occasion: Occasion<'_>) -> bool {
    plan.triggers.iter().any(|t| trigger_matches(t, occasion))
}

fn trigger_matches(trigger: &Trigger, occasion: Occasion<'_>) -> bool {
    match (trigger, occasion) {
        (
            Trigger::Push {
                branches,
                tags,
                paths,
                paths_ignore,
            },
            Occasion::Push {
                git_ref,
                changed_files,
            },
        ) => {
            let name_matches = if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
                any_glob(branches, branch)
            } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
                any_glob(tags, tag)
            } else {
                false
            };
            name_matches && paths_match(paths, paths_ignore, changed_files)
        }
        (
            Trigger::PullRequest {
                branches,
                actions,
                paths,
                paths_ignore,
            },
            Occasion::PullRequest {
                action,
                base_branch,
                changed_files,
            },
        ) => {
            actions.iter().any(|a| a == action)
                && any_glob(branches, base_branch)
                && paths_match(paths, paths_ignore, changed_files)
        }
        (Trigger::Schedule { cron }, Occasion::Schedule { cron: fired }) => cron == fired,
        (Trigger::Manual { .. }, Occasion::Manual) => true,
        _ => false,
    }
}

fn matcher(glob: &str) -> Option<Pattern> {
    compile(glob).ok()
}

fn any_glob(globs: &[String], name: &str) -> bool {
    globs
        .iter()
        .filter_map(|g| matcher(g))
        .any(|m| m.is_match(name))
}

fn paths_match(paths: &[String], ignore: &[String], changed: Option<&[String]>) -> bool {
    let Some(changed) = changed else {
        return true;
    };
    if paths.is_empty() && ignore.is_empty() {
        return true;
    }
    // A pattern that does not compile is kept as one that matches nothing, so a `paths`
    // list of only bad patterns filters everything out rather than nothing.
    let ignore: Vec<Pattern> = ignore.iter().filter_map(|g| matcher(g)).collect();
    let include: Vec<Pattern> = paths.iter().filter_map(|g| matcher(g)).collect();
    changed
        .iter()
        .filter(|file| !ignore.iter().any(|m| m.is_match(file.as_str())))
        .any(|file| paths.is_empty() || include.iter().any(|m| m.is_match(file.as_str())))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn plan(triggers: Vec<Trigger>) -> Plan {
        Plan {
            name: "p".into(),
            triggers,
            env: BTreeMap::new(),
            steps: vec![],
            concurrency: None,
        }
    }

    fn push(branches: &[&str], tags: &[&str], paths: &[&str], ignore: &[&str]) -> Trigger {
        Trigger::Push {
            branches: strings(branches),
            tags: strings(tags),
            paths: strings(paths),
            paths_ignore: strings(ignore),
        }
    }

    fn on_push<'a>(git_ref: &'a str, files: Option<&'a [String]>) -> Occasion<'a> {
        Occasion::Push {
            git_ref,
            changed_files: files,
        }
    }

    // regression: a branch glob of a million '?' panicked here (globset's `expect`) and
    // dropped every other workflow of the delivery.
    #[test]
    fn a_glob_that_cannot_compile_matches_nothing_and_does_not_panic() {
        let huge = "?".repeat(1_000_000);
        let p = plan(vec![push(&[huge.as_str(), "release/["], &[], &[], &[])]);
        assert!(!matches(&p, on_push("refs/heads/main", None)));
        let p = plan(vec![push(&["**"], &[], &[huge.as_str()], &[huge.as_str()])]);
        let files = strings(&["src/a.rs"]);
        assert!(!matches(&p, on_push("refs/heads/main", Some(&files))));
    }

    #[test]
    fn branch_and_tag_globs() {
        let p = plan(vec![push(&["main", "release/*"], &["v*"], &[], &[])]);
        assert!(matches(&p, on_push("refs/heads/main", None)));
        assert!(matches(&p, on_push("refs/heads/release/1.0", None)));
        assert!(
            !matches(&p, on_push("refs/heads/release/1.0/hotfix", None)),
            "* stops at /"
        );
        assert!(!matches(&p, on_push("refs/heads/feature", None)));
        assert!(matches(&p, on_push("refs/tags/v1.2", None)));
        assert!(!matches(&p, on_push("refs/tags/1.2", None)));
        assert!(
            !matches(&p, on_push("refs/heads/v1", None)),
            "tags globs are for tags"
        );
        let all = plan(vec![push(&["**"], &[], &[], &[])]);
        assert!(matches(&all, on_push("refs/heads/a/b/c", None)));
        assert!(!matches(&all, on_push("refs/tags/v1", None)));
        assert!(!matches(&all, on_push("refs/pull/1/head", None)));
    }

    #[test]
    fn path_filters() {
        let p = plan(vec![push(
            &["**"],
            &[],
            &["src/**", "Cargo.toml"],
            &["**/*.md"],
        )]);
        let docs = strings(&["src/README.md"]);
        let code = strings(&["docs/a.txt", "src/lib/x.rs"]);
        let top = strings(&["Cargo.toml"]);
        let other = strings(&["docs/a.txt"]);
        assert!(
            !matches(&p, on_push("refs/heads/x", Some(&docs))),
            "ignored"
        );
        assert!(matches(&p, on_push("refs/heads/x", Some(&code))));
        assert!(matches(&p, on_push("refs/heads/x", Some(&top))));
        assert!(!matches(&p, on_push("refs/heads/x", Some(&other))));
        assert!(
            matches(&p, on_push("refs/heads/x", None)),
            "unknown files do not block"
        );
        let only_ignore = plan(vec![push(&["**"], &[], &[], &["docs/**"])]);
        assert!(!matches(
            &only_ignore,
            on_push("refs/heads/x", Some(&other))
        ));
        assert!(matches(&only_ignore, on_push("refs/heads/x", Some(&code))));
    }

    #[test]
    fn pull_requests_match_actions_and_base_branches() {
        let p = plan(vec![Trigger::PullRequest {
            branches: strings(&["main"]),
            actions: strings(&["opened", "synchronize", "reopened"]),
            paths: vec![],
            paths_ignore: vec![],
        }]);
        let pr = |action, base| Occasion::PullRequest {
            action,
            base_branch: base,
            changed_files: None,
        };
        assert!(matches(&p, pr("opened", "main")));
        assert!(matches(&p, pr("synchronize", "main")));
        assert!(!matches(&p, pr("closed", "main")));
        assert!(!matches(&p, pr("opened", "develop")));
        assert!(!matches(&p, on_push("refs/heads/main", None)));
    }

    #[test]
    fn schedules_and_manual() {
        let p = plan(vec![
            Trigger::Schedule {
                cron: "0 3 * * *".into(),
            },
            Trigger::Manual {
                inputs: BTreeMap::new(),
            },
        ]);
        assert!(matches(&p, Occasion::Schedule { cron: "0 3 * * *" }));
        assert!(!matches(&p, Occasion::Schedule { cron: "0 4 * * *" }));
        assert!(matches(&p, Occasion::Manual));
        assert!(!matches(&plan(vec![]), Occasion::Manual));
    }
}
