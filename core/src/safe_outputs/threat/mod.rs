//! The threat check: what each safe-output proposal *does*, judged before anything is
//! applied. The validator ([`super::validate`]) decides whether a proposal is allowed at
//! all (paths, sizes, links, the run's secrets); this module decides whether an allowed
//! one is safe to apply as it is — [`Verdict::Pass`], [`Verdict::NeedsApproval`] (it waits
//! for a writer) or [`Verdict::Refused`] (the step fails) — with the [`Finding`]s that made
//! it so. The one entry point is [`examine`]; [`super::judge`] calls it on an attempt's
//! completion, once the proposals passed the validator, when [`enabled`] says so.
//!
//! Parts: `rules/` (the static rules, pure, one file per family: paths, modes, manifests,
//! commands, network, blobs, obfuscation, secrets), `diff` (a diff read into files and
//! lines), `fold` (paths and texts as they read), `verdict` (findings, severities,
//! verdicts), `review` (the optional model review), `corpus` and `attacks` (tests: the
//! measured corpus and the attacker's tries).
//!
//! Invariants:
//! - Pure but for the review: the rules read only the proposal and the [`Scope`]; the same
//!   proposal in the same scope always comes to the same findings.
//! - A verdict only rises: a critical finding refuses, a warning needs approval, and the
//!   model review (when asked) can raise the verdict but never lower it; a review that
//!   fails or answers out of its format needs approval.
//! - On by default where it matters: `threat_check="auto"` runs it for runs caused by
//!   someone without write access ([`enabled`]); `"always"` for every run; `"off"` never.
//! - What is kept of a finding (its reason and file) passes the run's wall before it is
//!   stored or shown ([`redacted`]): a finding never quotes a secret of the run.

mod diff;
mod fold;
pub mod review;
mod rules;
mod verdict;

#[cfg(test)]
mod attacks;
#[cfg(test)]
mod corpus;

use evaluator::safe_outputs::{SafeOutputs, ThreatCheck};
use plue_outbound::Checker;
use plue_types::protocol::Proposal;

pub use review::Reviewer;
pub use verdict::{Assessment, Finding, ReviewOutcome, Severity, Verdict};

/// What the rules judge a proposal in: the run's wall (its secrets) and the hosts the
/// proposal may reach without a writer's look (the forge's and `allow_links`).
pub struct Scope<'a> {
    pub wall: Option<&'a Checker>,
    pub hosts: Vec<String>,
}

impl Scope<'_> {
    /// Whether `host` is one of the scope's hosts or below one.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.iter().any(|allowed| {
            let allowed = allowed.trim_end_matches('.').to_ascii_lowercase();
            !allowed.is_empty() && rules_within(&host, &allowed)
        }) || self.wall.is_some_and(|w| w.allows_host(&host))
    }
}

fn rules_within(host: &str, domain: &str) -> bool {
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// The facts of a run [`enabled`] decides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTrust {
    /// The run holds its secrets: every causer met the workflow's `authors=` rule.
    pub secrets_allowed: bool,
    /// The run acts on the words of someone who cannot write to the repository (a summons
    /// on an outsider's issue: `caches::causer::words_of`).
    pub outsiders_words: bool,
}

/// Whether the threat check runs for a step declaring `outputs` in a run of `trust`.
pub fn enabled(outputs: &SafeOutputs, trust: RunTrust) -> bool {
    match outputs.threat_check {
        ThreatCheck::Off => false,
        ThreatCheck::Always => true,
        ThreatCheck::Auto => !trust.secrets_allowed || trust.outsiders_words,
    }
}

/// The assessment of each of `proposals` (in order): the static rules in `scope`, then the
/// model review of each the rules did not refuse, when a `reviewer` is given.
pub async fn examine(
    proposals: &[Proposal],
    scope: &Scope<'_>,
    reviewer: Option<&Reviewer>,
) -> Vec<Assessment> {
    let mut assessments = Vec::with_capacity(proposals.len());
    for proposal in proposals {
        let findings = rules::scan(proposal, scope);
        let mut assessment = Assessment::of(findings);
        // A review cannot lower a refusal: none is asked for a refused proposal.
        if let Some(reviewer) = reviewer.filter(|_| assessment.verdict != Verdict::Refused) {
            let outcome = reviewer.review(proposal, &assessment.findings).await;
            assessment = assessment.with_review(outcome);
        }
        assessments.push(assessment);
    }
    assessments
}

/// The findings of the static rules alone (what [`examine`] starts from).
pub fn scan(proposal: &Proposal, scope: &Scope<'_>) -> Vec<Finding> {
    rules::scan(proposal, scope)
}

/// `assessment` as it may be kept and shown: every finding's reason and file, and the
/// review's reasons and error, through the run's `wall` (without one, withheld).
pub fn redacted(assessment: &Assessment, wall: Option<&Checker>) -> Assessment {
    let clean = |text: &str| match wall {
        Some(wall) => wall.redact(text).into_string(),
        None => plue_outbound::WITHHELD.to_owned(),
    };
    let mut kept = assessment.clone();
    for finding in &mut kept.findings {
        finding.reason = clean(&finding.reason);
        finding.file = finding.file.as_deref().map(clean);
    }
    if let Some(review) = &mut kept.review {
        review.reasons = review.reasons.iter().map(|r| clean(r)).collect();
        review.error = review.error.as_deref().map(clean);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_checks_the_runs_of_people_without_write_access() {
        let outputs = |check| SafeOutputs {
            pull_request: true,
            threat_check: check,
            ..SafeOutputs::default()
        };
        let writer = RunTrust {
            secrets_allowed: true,
            outsiders_words: false,
        };
        let fork = RunTrust {
            secrets_allowed: false,
            outsiders_words: false,
        };
        let relayed = RunTrust {
            secrets_allowed: true,
            outsiders_words: true,
        };
        assert!(!enabled(&outputs(ThreatCheck::Auto), writer));
        assert!(enabled(&outputs(ThreatCheck::Auto), fork));
        assert!(enabled(&outputs(ThreatCheck::Auto), relayed));
        for trust in [writer, fork, relayed] {
            assert!(enabled(&outputs(ThreatCheck::Always), trust));
            assert!(!enabled(&outputs(ThreatCheck::Off), trust));
        }
    }

    #[test]
    fn a_review_raises_the_verdict_and_never_lowers_it() {
        let flagged = Assessment::of(vec![Finding::new(
            "ci-config",
            Severity::Warning,
            Some(".gitlab-ci.yml"),
            None,
            "x",
        )]);
        let said = |answer| ReviewOutcome {
            model: "m".into(),
            answer: Some(answer),
            reasons: vec!["r".into()],
            error: None,
            input_tokens: 0,
            output_tokens: 0,
        };
        assert_eq!(
            flagged.clone().with_review(said(Verdict::Pass)).verdict,
            Verdict::NeedsApproval
        );
        assert_eq!(
            flagged.clone().with_review(said(Verdict::Refused)).verdict,
            Verdict::Refused
        );
        let failed = ReviewOutcome {
            error: Some("the call failed".into()),
            ..said(Verdict::Pass)
        };
        assert_eq!(
            Assessment::of(Vec::new()).with_review(failed).verdict,
            Verdict::NeedsApproval
        );
    }

    #[test]
    fn what_is_kept_passes_the_runs_wall() {
        let wall = corpus::wall();
        let secret = corpus::RUN_SECRET;
        let assessment = Assessment::of(vec![Finding::new(
            "new-endpoint",
            Severity::Warning,
            Some(&format!("notes/{secret}.txt")),
            Some(1),
            format!("reaches https://evil.example/?k={secret}"),
        )]);
        let kept = serde_json::to_string(&redacted(&assessment, Some(&wall))).unwrap();
        assert!(!kept.contains(secret), "{kept}");
        let withheld = serde_json::to_string(&redacted(&assessment, None)).unwrap();
        assert!(!withheld.contains(secret), "{withheld}");
    }
}
