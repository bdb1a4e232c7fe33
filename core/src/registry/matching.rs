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
//! - issue: the action must be listed; with `labels`, the label the event added (when the
//!   forge says which) or else one of the issue's labels must be listed.
//! - comment: the action and where the thread is (`issue` or `pull_request`) must be listed
//!   and the body must match `pattern` (compiled by `evaluator::summon::compile_pattern`
//!   as validation compiled it; one that does not compile matches nothing).
//! - Who may start an issue or comment trigger is not decided here: [`summons`] says what
//!   the matching triggers ask, the registry compares it with the author's permission.

use evaluator::glob::{compile, Pattern};
use evaluator::plan::{Authors, Others, Plan, Trigger};

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
    Issue {
        action: &'a str,
        /// The label the event added or removed, when the forge says which.
        label: Option<&'a str>,
        /// The issue's labels after the event.
        labels: &'a [String],
    },
    Comment {
        action: &'a str,
        /// The commented thread is a pull request's.
        on_pull_request: bool,
        body: &'a str,
    },
}

/// What the issue or comment triggers of a plan that match an occasion ask of its author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summons {
    /// The least `authors=` among them: an author holding it gets a normal run.
    pub authors: Authors,
    /// One of them says `others="untrusted"`: anyone else gets a run treated like a fork's.
    pub untrusted: bool,
}

/// The [`Summons`] of `plan`'s matching triggers, `None` when none matches.
pub fn summons(plan: &Plan, occasion: Occasion<'_>) -> Option<Summons> {
    plan.triggers
        .iter()
        .filter(|t| trigger_matches(t, occasion))
        .filter_map(|t| match t {
            Trigger::Issue {
                authors, others, ..
            }
            | Trigger::Comment {
                authors, others, ..
            } => Some(Summons {
                authors: *authors,
                untrusted: *others == Others::Untrusted,
            }),
            _ => None,
        })
        .reduce(|a, b| Summons {
            authors: a.authors.min(b.authors),
            untrusted: a.untrusted || b.untrusted,
        })
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
        (
            Trigger::Issue {
                actions, labels, ..
            },
            Occasion::Issue {
                action,
                label,
                labels: carried,
            },
        ) => {
            actions.iter().any(|a| a == action)
                && (labels.is_empty()
                    || match label {
                        Some(label) => labels.iter().any(|l| l == label),
                        None => carried.iter().any(|c| labels.contains(c)),
                    })
        }
        (
            Trigger::Comment {
                pattern,
                on,
                actions,
                ..
            },
            Occasion::Comment {
                action,
                on_pull_request,
                body,
            },
        ) => {
            let thread = if on_pull_request {
                "pull_request"
            } else {
                "issue"
            };
            actions.iter().any(|a| a == action)
                && on.iter().any(|o| o == thread)
                && evaluator::summon::compile_pattern(pattern).is_ok_and(|re| re.is_match(body))
        }
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
            triggers,
            ..Plan::new("p", vec![])
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

    fn comment_trigger(pattern: &str, on: &[&str], authors: Authors, others: Others) -> Trigger {
        Trigger::Comment {
            pattern: pattern.into(),
            on: strings(on),
            actions: strings(&["created"]),
            authors,
            others,
        }
    }

    fn comment(body: &str, on_pull_request: bool) -> Occasion<'_> {
        Occasion::Comment {
            action: "created",
            on_pull_request,
            body,
        }
    }

    #[test]
    fn comments_match_their_pattern_thread_and_action() {
        let p = plan(vec![comment_trigger(
            r"^/plue\s+fix\b",
            &["issue"],
            Authors::Write,
            Others::Ignore,
        )]);
        assert!(matches(&p, comment("/plue fix it", false)));
        assert!(!matches(&p, comment("/plue fix it", true)), "not on PRs");
        assert!(!matches(&p, comment("please /plue fix", false)), "anchored");
        assert!(!matches(&p, comment("/plue fixes", false)));
        let edited = Occasion::Comment {
            action: "edited",
            on_pull_request: false,
            body: "/plue fix",
        };
        assert!(!matches(&p, edited));
        // A pattern that does not compile matches nothing (validation refuses it first).
        let bad = plan(vec![comment_trigger(
            "(",
            &["issue"],
            Authors::Write,
            Others::Ignore,
        )]);
        assert!(!matches(&bad, comment("(", false)));
    }

    #[test]
    fn issues_match_actions_and_labels() {
        let p = plan(vec![Trigger::Issue {
            actions: strings(&["labeled"]),
            labels: strings(&["plue"]),
            authors: Authors::Write,
            others: Others::Ignore,
        }]);
        let labeled = |label, labels| Occasion::Issue {
            action: "labeled",
            label,
            labels,
        };
        let carried = strings(&["bug", "plue"]);
        assert!(matches(&p, labeled(Some("plue"), &carried)));
        assert!(
            !matches(&p, labeled(Some("bug"), &carried)),
            "GitHub says which label was added: not this one"
        );
        assert!(
            matches(&p, labeled(None, &carried)),
            "Gitea: the issue's labels"
        );
        assert!(!matches(&p, labeled(None, &strings(&["bug"]))));
        let opened = Occasion::Issue {
            action: "opened",
            label: None,
            labels: &carried,
        };
        assert!(!matches(&p, opened));
    }

    #[test]
    fn summons_take_the_least_authors_and_any_untrusted() {
        let p = plan(vec![
            comment_trigger("fix", &["issue"], Authors::Admin, Others::Ignore),
            comment_trigger("fix", &["issue"], Authors::Maintain, Others::Untrusted),
            comment_trigger("nope", &["issue"], Authors::Write, Others::Ignore),
            push(&["**"], &[], &[], &[]),
        ]);
        assert_eq!(
            summons(&p, comment("fix", false)),
            Some(Summons {
                authors: Authors::Maintain,
                untrusted: true
            })
        );
        assert_eq!(summons(&p, comment("other", false)), None);
        assert_eq!(summons(&p, on_push("refs/heads/main", None)), None);
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
