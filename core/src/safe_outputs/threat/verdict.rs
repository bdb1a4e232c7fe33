//! What the threat check says of one proposal: its [`Finding`]s, each with a
//! [`Severity`], and the [`Verdict`] they come to ([`Assessment`]), as stored with the
//! proposal (`proposals.threat`, JSON), signed in its provenance statement and shown.
//!
//! Invariants: the verdict is the most severe of the findings' (a critical finding refuses,
//! a warning needs a writer's approval, none passes) and of the model review's when one ran;
//! nothing lowers it — a review that passes a proposal the rules flagged leaves it flagged,
//! and a review that failed or answered out of its format needs approval, never passes
//! ([`ReviewOutcome::verdict`]; the review itself is `super::review`'s).

use serde::{Deserialize, Serialize};

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a writer's look before it lands: the proposal waits for an approval.
    Warning,
    /// What no agent change should hold: the proposal is refused and its step fails.
    Critical,
}

/// What the threat check decided for one proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing found: applied as it would be without the check.
    Pass,
    /// Waits for a writer's approval (`waiting`), whatever the step's `approve_outputs`.
    NeedsApproval,
    /// Refused: with the attempt's other proposals, and the step fails.
    Refused,
}

impl Verdict {
    /// The verdict of a finding of `severity`.
    pub fn of(severity: Severity) -> Verdict {
        match severity {
            Severity::Warning => Verdict::NeedsApproval,
            Severity::Critical => Verdict::Refused,
        }
    }

    /// The word people read (`pass`, `needs approval`, `refused`).
    pub fn words(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NeedsApproval => "needs a writer's approval",
            Verdict::Refused => "refused",
        }
    }

    /// The JSON and the store's word (`pass`, `needs_approval`, `refused`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NeedsApproval => "needs_approval",
            Verdict::Refused => "refused",
        }
    }
}

/// One thing a rule found: which rule, how bad, where (the file and its new line, when in
/// a pull request's diff; `what` names the text otherwise) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's id (`pipe-to-shell`, `ci-config`, ...; the book's threat-check page
    /// lists them).
    pub rule: String,
    pub severity: Severity,
    /// The file of a pull request's diff, as its diff names it (the new side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line in the file's new content (from 1), or in the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// What was found, for people (quotes at most a short piece of the change).
    pub reason: String,
}

impl Finding {
    /// `rule` at `severity`, in `file` at `line`, because `reason`.
    pub fn new(
        rule: &str,
        severity: Severity,
        file: Option<&str>,
        line: Option<u32>,
        reason: impl Into<String>,
    ) -> Finding {
        Finding {
            rule: rule.to_owned(),
            severity,
            file: file.map(str::to_owned),
            line,
            reason: reason.into(),
        }
    }

    /// One line for people: `rule (file:line): reason`.
    pub fn summary(&self) -> String {
        let place = match (&self.file, self.line) {
            (Some(file), Some(line)) => format!(" ({file}:{line})"),
            (Some(file), None) => format!(" ({file})"),
            (None, Some(line)) => format!(" (line {line})"),
            (None, None) => String::new(),
        };
        format!("{}{place}: {}", self.rule, self.reason)
    }
}

/// The threat check of one proposal: the findings of the rules, the model review's answer
/// when one was asked, and the verdict of both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewOutcome>,
}

impl Assessment {
    /// The assessment of `findings` alone.
    pub fn of(findings: Vec<Finding>) -> Assessment {
        let verdict = findings
            .iter()
            .map(|f| Verdict::of(f.severity))
            .max()
            .unwrap_or(Verdict::Pass);
        Assessment {
            verdict,
            findings,
            review: None,
        }
    }

    /// This assessment with the model review's `outcome`: its verdict raises this one's,
    /// never lowers it.
    pub fn with_review(mut self, outcome: ReviewOutcome) -> Assessment {
        self.verdict = self.verdict.max(outcome.verdict());
        self.review = Some(outcome);
        self
    }

    /// Why it was not passed, for a refusal or an end answer: the findings of the verdict's
    /// severity (at most `max`), then the review's reasons.
    pub fn reasons(&self, max: usize) -> Vec<String> {
        let wanted = match self.verdict {
            Verdict::Refused => Some(Severity::Critical),
            Verdict::NeedsApproval => Some(Severity::Warning),
            Verdict::Pass => None,
        };
        let mut reasons: Vec<String> = self
            .findings
            .iter()
            .filter(|f| Some(f.severity) == wanted)
            .map(Finding::summary)
            .collect();
        if let Some(review) = &self.review {
            if review.verdict() == self.verdict && self.verdict != Verdict::Pass {
                reasons.push(review.summary());
            }
        }
        reasons.truncate(max);
        reasons
    }
}

/// What the review said of one proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewOutcome {
    /// The model asked.
    pub model: String,
    /// The model's verdict, when it answered in its format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Verdict>,
    /// The model's reasons (at most `MAX_REASONS`, each at most 300 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Why the review does not count as an answer (the call failed, the answer was out of
    /// format or cut, the proposal was too large to send whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

/// Most reasons kept of an answer.
pub(crate) const MAX_REASONS: usize = 8;

impl ReviewOutcome {
    /// The verdict it stands for: the model's answer, or `needs_approval` when there is
    /// none that counts.
    pub fn verdict(&self) -> Verdict {
        match (&self.error, self.answer) {
            (None, Some(answer)) => answer,
            _ => Verdict::NeedsApproval,
        }
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        match (&self.error, self.answer) {
            (Some(error), _) => format!("model review ({}): {error}", self.model),
            (None, Some(answer)) => {
                let why = if self.reasons.is_empty() {
                    String::new()
                } else {
                    format!(": {}", self.reasons.join("; "))
                };
                format!(
                    "model review ({}) says {}{why}",
                    self.model,
                    answer.as_str()
                )
            }
            (None, None) => format!("model review ({}): no answer", self.model),
        }
    }

    /// A review that did not answer, for `error`.
    pub fn failed(model: &str, error: impl Into<String>) -> ReviewOutcome {
        ReviewOutcome {
            model: model.to_owned(),
            answer: None,
            reasons: Vec::new(),
            error: Some(error.into()),
            input_tokens: 0,
            output_tokens: 0,
        }
    }
}
