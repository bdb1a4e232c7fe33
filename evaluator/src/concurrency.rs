//! Concurrency group names: `Plan(concurrency="deploy-{branch}")`.
//!
//! A group name is a template over a closed set of `ctx` fields ([`PLACEHOLDERS`]),
//! written `{field}`; `{{` and `}}` stand for literal braces. The template is part of the
//! plan (so the plan stays a function of file and `ctx` alone, and its hash does not depend
//! on the event's values); the engine resolves it when it creates a run ([`resolve`]).
//! Pure: no IO, and [`parse`] is linear in the template.

use crate::context::EvalContext;
use crate::diagnostic::did_you_mean;

/// The fields a group template may name, in the order the docs list them.
pub const PLACEHOLDERS: [&str; 7] = ["workflow", "repo", "event", "ref", "branch", "sha", "pr"];

/// One piece of a parsed group template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text copied as is (an escaped `{{` or `}}` is one brace here).
    Text(&'a str),
    /// One of [`PLACEHOLDERS`].
    Field(&'static str),
}

/// A group template [`parse`] refused; the message has no location (the caller knows
/// where the template was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("concurrency group '{template}': {problem}")]
pub struct BadGroup {
    pub template: String,
    pub problem: GroupProblem,
}

/// What is wrong with a group template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupProblem {
    #[error("unmatched '}}' (write '}}}}' for a literal brace)")]
    UnmatchedClose,
    #[error("unclosed '{{' (write '{{{{' for a literal brace)")]
    UnclosedOpen,
    /// `{name}` is not one of [`PLACEHOLDERS`].
    #[error(
        "unknown placeholder '{{{name}}}'{}; expected one of {}",
        did_you_mean(name, PLACEHOLDERS),
        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
    )]
    UnknownPlaceholder { name: String },
}

/// Parses a group template.
pub fn parse(template: &str) -> Result<Vec<Piece<'_>>, BadGroup> {
    let bad = |problem: GroupProblem| {
        Err(BadGroup {
            template: template.to_owned(),
            problem,
        })
    };
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let Some(at) = rest.find(['{', '}']) else {
            pieces.push(Piece::Text(rest));
            break;
        };
        if at > 0 {
            pieces.push(Piece::Text(&rest[..at]));
        }
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            pieces.push(Piece::Text("{"));
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            pieces.push(Piece::Text("}"));
            rest = after;
        } else if tail.starts_with('}') {
            return bad(GroupProblem::UnmatchedClose);
        } else {
            let Some(end) = tail.find('}') else {
                return bad(GroupProblem::UnclosedOpen);
            };
            let name = &tail[1..end];
            let Some(field) = PLACEHOLDERS.iter().find(|p| **p == name) else {
                return bad(GroupProblem::UnknownPlaceholder {
                    name: name.to_owned(),
                });
            };
            pieces.push(Piece::Field(field));
            rest = &tail[end + 1..];
        }
    }
    Ok(pieces)
}

/// The group name of a run of the workflow `workflow` (its plan's name) for `ctx`. A field
/// the event does not have (`{branch}` of a tag push, `{pr}` of a push) is empty. A
/// template that does not parse (never the case for a validated plan) is used as is.
pub fn resolve(template: &str, workflow: &str, ctx: &EvalContext) -> String {
    let Ok(pieces) = parse(template) else {
        return template.to_string();
    };
    let mut name = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => name.push_str(text),
            Piece::Field(field) => match field {
                "workflow" => name.push_str(workflow),
                "repo" => name.push_str(&ctx.repo),
                "event" => name.push_str(ctx.event.as_str()),
                "ref" => name.push_str(&ctx.git_ref),
                "branch" => name.push_str(ctx.branch.as_deref().unwrap_or("")),
                "sha" => name.push_str(&ctx.sha),
                "pr" => {
                    if let Some(pr) = &ctx.pr {
                        name.push_str(&pr.number.to_string());
                    }
                }
                _ => unreachable!("parse returns only names of PLACEHOLDERS"),
            },
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Event, PullRequest};

    #[test]
    fn fields_and_escapes_parse() {
        assert_eq!(
            parse("deploy-{branch}").unwrap(),
            vec![Piece::Text("deploy-"), Piece::Field("branch")]
        );
        assert_eq!(
            parse("{{x}}{sha}").unwrap(),
            vec![
                Piece::Text("{"),
                Piece::Text("x"),
                Piece::Text("}"),
                Piece::Field("sha")
            ]
        );
        assert_eq!(parse("plain").unwrap(), vec![Piece::Text("plain")]);
        for field in PLACEHOLDERS {
            assert_eq!(
                parse(&format!("{{{field}}}")).unwrap(),
                vec![Piece::Field(field)]
            );
        }
    }

    #[test]
    fn unknown_and_unbalanced_placeholders_are_refused() {
        let unknown = parse("deploy-{brnch}").unwrap_err();
        assert_eq!(
            unknown.problem,
            GroupProblem::UnknownPlaceholder {
                name: "brnch".into()
            }
        );
        let unknown = unknown.to_string();
        assert!(
            unknown.contains("unknown placeholder '{brnch}' (did you mean 'branch'?)"),
            "{unknown}"
        );
        assert!(
            unknown.contains("expected one of {workflow}, {repo}"),
            "{unknown}"
        );
        assert!(parse("{}")
            .unwrap_err()
            .to_string()
            .contains("unknown placeholder '{}'"));
        assert!(parse("{ctx.branch}").is_err());
        assert_eq!(
            parse("a{branch").unwrap_err().to_string(),
            "concurrency group 'a{branch': unclosed '{' (write '{{' for a literal brace)"
        );
        assert_eq!(
            parse("a}b").unwrap_err().to_string(),
            "concurrency group 'a}b': unmatched '}' (write '}}' for a literal brace)"
        );
    }

    #[test]
    fn resolution_reads_ctx() {
        let mut ctx = EvalContext::local(Event::Push, "main");
        ctx.repo = "acme/app".into();
        assert_eq!(
            resolve("{workflow}/{repo}/{event}/{ref}/{branch}/{pr}", "CI", &ctx),
            "CI/acme/app/push/refs/heads/main/main/"
        );
        ctx.pr = Some(PullRequest {
            number: 42,
            base: "main".into(),
            head: "feature".into(),
            action: "opened".into(),
        });
        ctx.branch = None;
        assert_eq!(resolve("pr-{pr}-{branch}{{}}", "CI", &ctx), "pr-42-{}");
        assert_eq!(resolve("{sha}", "CI", &ctx), "0".repeat(40));
    }
}
