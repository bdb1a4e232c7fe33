//! The statement: an in-toto v1 Statement whose predicate is SLSA Provenance v1, with
//! Plue's own build type ([`BUILD_TYPE`]): what an applied change is (the subject) and
//! everything that made it (the predicate).
//!
//! The layout Plue writes (the docs' provenance page describes it for readers):
//! - `subject`: one entry. A pull request's commit: `digest {gitCommit, gitTree}`; a
//!   comment, label set or issue: `digest {sha256}` of the exact text written
//!   ([`text_subject`]).
//! - `buildDefinition.externalParameters` ([`ExternalParameters`]): what people and the
//!   forge chose — the repository, the workflow file and its commit, the trigger and who
//!   summoned the run, the step, the proposal (with the engine's threat check of it when
//!   it ran: `proposal.threatCheck`, [`ThreatCheck`]), who approved it.
//! - `buildDefinition.internalParameters` ([`InternalParameters`]): what the engine set —
//!   the model and its settings, the tools offered, the network policy, the budgets.
//! - `buildDefinition.resolvedDependencies`: `base` (the commit the change applies to),
//!   `workflow` (the file's sha256), `system-prompt` and `prompt` (sha256 of the texts the
//!   model was given).
//! - `runDetails.byproducts`: `transcript` (sha256 of the stored transcript blob), `diff`
//!   (the proposal's diff itself, base64 in `content`, and its sha256), `usage` (the cost
//!   spent and the tokens: their JSON, base64 in `content`, its sha256, and the same values
//!   in `annotations` for readers; [`usage_byproduct`]).
//!
//! Invariants: the types read back what they write (a statement is parsed with the same
//! types it was built with); unknown fields are kept out of nothing — they are ignored when
//! read, so a later engine's additions do not break an older verifier; the accessors a
//! verifier uses ([`Statement::commit`], [`Statement::base`], [`Statement::diff`]) check
//! what they return against the digests beside it; every resource descriptor a statement
//! holds names its resource by `uri`, `digest` or `content`, as in-toto v1 requires
//! ([`Statement::check_descriptors`], which the engine runs before it signs).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// in-toto's statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA Provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// Plue's build type: "an agent's proposal, checked and applied by a Plue engine".
pub const BUILD_TYPE: &str = "https://plue.dev/provenance/agent-change/v1";

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An in-toto v1 statement with a SLSA provenance predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

/// in-toto's ResourceDescriptor: every field optional, but at least one of `uri`, `digest`
/// and `content` must be set ([`ResourceDescriptor::names_its_resource`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    /// The resource itself, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

impl ResourceDescriptor {
    /// Whether it says what its resource is — by `uri`, `digest` or `content`, one of which
    /// in-toto v1 requires (`name` and `annotations` alone identify nothing).
    pub fn names_its_resource(&self) -> bool {
        self.uri.as_deref().is_some_and(|u| !u.is_empty())
            || !self.digest.is_empty()
            || self.content.as_deref().is_some_and(|c| !c.is_empty())
    }

    /// `name` with `digest {sha256: <hex>}`.
    pub fn sha256(name: &str, hex: String) -> ResourceDescriptor {
        ResourceDescriptor {
            name: Some(name.to_owned()),
            digest: BTreeMap::from([("sha256".to_owned(), hex)]),
            ..ResourceDescriptor::default()
        }
    }
}

/// SLSA Provenance v1's predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: ExternalParameters,
    pub internal_parameters: InternalParameters,
    #[serde(default)]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: Metadata,
    #[serde(default)]
    pub byproducts: Vec<ResourceDescriptor>,
}

/// The engine that applied the change: its public URL, and its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Builder {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The proposal's URL on the engine (`<engine>/api/runs/<run>/proposals/<id>/provenance`).
    pub invocation_id: String,
    /// When the run started (RFC 3339).
    pub started_on: String,
    /// When the change was applied (RFC 3339).
    pub finished_on: String,
}

/// What people and the forge chose.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExternalParameters {
    /// `owner/name` on the forge.
    pub repository: String,
    pub workflow: Workflow,
    pub trigger: Trigger,
    /// The `llm` step that proposed the change.
    pub step: String,
    pub proposal: ProposalFacts,
    /// The person who approved the proposal, when one had to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// The workflow file the run came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Workflow {
    pub path: String,
    /// The ref the run ran on (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit the file was read at (the run's base).
    pub commit: String,
}

/// What started the run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Trigger {
    /// `push`, `pull_request`, `issue`, `comment`, `schedule`, `dispatch`, ...
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<u64>,
    /// The forge login (or Plue user) who summoned or started the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summoned_by: Option<String>,
    /// Their association with the repository, as the forge's payload said it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association: Option<String>,
    /// `trusted` (their permission met the workflow's `authors=` rule: the run held its
    /// secrets) or `untrusted` (run like a fork's: no secrets, writes only once approved).
    pub permission: String,
}

/// The proposal that was applied.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProposalFacts {
    pub id: i64,
    pub run: i64,
    /// `pull_request`, `comment`, `labels` or `issue`.
    pub kind: String,
    /// The pull request's branch, for a pull request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The engine's threat check of the proposal before it was applied, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threat_check: Option<ThreatCheck>,
}

/// The threat check of a proposal: its verdict (`pass`, `needs_approval`, `refused`; a
/// statement records only an applied change, so never `refused`), the rules' findings and
/// the model review's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ThreatCheck {
    pub verdict: String,
    pub findings: Vec<ThreatFinding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<ThreatReview>,
}

/// One finding of the threat check's rules.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ThreatFinding {
    /// The rule's id (`ci-config`, `new-dependency`, ...).
    pub rule: String,
    /// `warning` or `critical`.
    pub severity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    pub reason: String,
}

/// The model review of a proposal.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ThreatReview {
    pub model: String,
    /// The verdict the review counted as (`needs_approval` when it failed).
    pub verdict: String,
    /// Why the review did not count as an answer, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A person's approval.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Approval {
    pub by: String,
    /// RFC 3339.
    pub at: String,
}

/// What the engine set for the step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InternalParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// The tools the model was offered (as named in the first request).
    pub tools: Vec<String>,
    /// The step's network policy (the plan's `network=`; `null`: the runner's default).
    pub network: serde_json::Value,
    pub budgets: Budgets,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Budgets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// The run's `Plan(budget_usd=)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_budget_usd: Option<f64>,
}

/// The subject of a text change: `name` (the kind) and the sha256 of `text`, the exact
/// text written (a comment's or issue's body without trailing whitespace and Plue's hidden
/// marker, which follows it after a blank line; labels one per line, each ending in `\n`).
pub fn text_subject(kind: &str, text: &str) -> ResourceDescriptor {
    ResourceDescriptor::sha256(kind, sha256_hex(text.as_bytes()))
}

/// The subject of a commit: `name` (the branch), `{gitCommit, gitTree}`.
pub fn commit_subject(name: &str, commit: &str, tree: &str) -> ResourceDescriptor {
    ResourceDescriptor {
        name: Some(name.to_owned()),
        digest: BTreeMap::from([
            ("gitCommit".to_owned(), commit.to_owned()),
            ("gitTree".to_owned(), tree.to_owned()),
        ]),
        ..ResourceDescriptor::default()
    }
}

/// The `diff` byproduct: the diff applied, whole, and its sha256.
pub fn diff_byproduct(diff: &[u8]) -> ResourceDescriptor {
    ResourceDescriptor {
        content: Some(base64::engine::general_purpose::STANDARD.encode(diff)),
        media_type: Some("text/x-diff".into()),
        ..ResourceDescriptor::sha256("diff", sha256_hex(diff))
    }
}

/// The `usage` byproduct: `usage` (the cost and the tokens spent, JSON) as the resource
/// itself — its compact JSON, base64 in `content`, and that JSON's sha256 — with the same
/// values in `annotations`, where readers (and [`crate::words`]) look them up.
pub fn usage_byproduct(usage: &serde_json::Value) -> ResourceDescriptor {
    let json = serde_json::to_vec(usage).expect("a JSON value always serialises");
    ResourceDescriptor {
        content: Some(base64::engine::general_purpose::STANDARD.encode(&json)),
        media_type: Some("application/json".into()),
        annotations: Some(usage.clone()),
        ..ResourceDescriptor::sha256("usage", sha256_hex(&json))
    }
}

/// RFC 3339 (UTC, milliseconds) of `ms` since the epoch.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Why a statement does not say what a verifier needs.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("the payload is not an in-toto statement: {0}")]
    Json(String),
    #[error("the statement's {field} is {found:?}, not {expected:?}")]
    Type {
        field: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("the statement has no commit subject (it attests a {0})")]
    NotACommit(String),
    #[error("the statement records no base commit")]
    NoBase,
    #[error("the statement's diff is missing or not base64")]
    NoDiff,
    #[error("the statement's diff does not match its recorded sha256")]
    DiffDigest,
    /// A resource descriptor with none of `uri`, `digest`, `content`.
    #[error("the statement's {place} {name:?} has no uri, digest or content")]
    Descriptor { place: &'static str, name: String },
}

impl Statement {
    /// Parses `payload` and checks the three type fields.
    pub fn parse(payload: &[u8]) -> Result<Statement, StatementError> {
        let statement: Statement =
            serde_json::from_slice(payload).map_err(|e| StatementError::Json(e.to_string()))?;
        let checks = [
            ("_type", &statement.statement_type, STATEMENT_TYPE),
            ("predicateType", &statement.predicate_type, PREDICATE_TYPE),
            (
                "buildType",
                &statement.predicate.build_definition.build_type,
                BUILD_TYPE,
            ),
        ];
        for (field, found, expected) in checks {
            if found != expected {
                return Err(StatementError::Type {
                    field,
                    found: found.clone(),
                    expected,
                });
            }
        }
        Ok(statement)
    }

    /// Every resource descriptor, with where it stands (`subject`, `resolvedDependencies`,
    /// `byproducts`).
    pub fn descriptors(&self) -> impl Iterator<Item = (&'static str, &ResourceDescriptor)> {
        let dependencies = &self.predicate.build_definition.resolved_dependencies;
        let byproducts = &self.predicate.run_details.byproducts;
        (self.subject.iter().map(|d| ("subject", d)))
            .chain(dependencies.iter().map(|d| ("resolvedDependencies", d)))
            .chain(byproducts.iter().map(|d| ("byproducts", d)))
    }

    /// That every resource descriptor names its resource (`uri`, `digest` or `content`), as
    /// in-toto v1 requires; the first that does not, otherwise.
    pub fn check_descriptors(&self) -> Result<(), StatementError> {
        match self.descriptors().find(|(_, d)| !d.names_its_resource()) {
            None => Ok(()),
            Some((place, d)) => Err(StatementError::Descriptor {
                place,
                name: d.name.clone().unwrap_or_default(),
            }),
        }
    }

    /// The payload: compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a statement always serialises")
    }

    /// The attested commit and its tree.
    pub fn commit(&self) -> Result<(&str, &str), StatementError> {
        let subject = self.subject.first();
        let digest = |key: &str| subject.and_then(|s| s.digest.get(key)).map(String::as_str);
        match (digest("gitCommit"), digest("gitTree")) {
            (Some(commit), Some(tree)) => Ok((commit, tree)),
            _ => Err(StatementError::NotACommit(
                self.predicate
                    .build_definition
                    .external_parameters
                    .proposal
                    .kind
                    .clone(),
            )),
        }
    }

    /// The commit the change was applied to.
    pub fn base(&self) -> Result<&str, StatementError> {
        self.dependency("base")
            .and_then(|d| d.digest.get("gitCommit"))
            .map(String::as_str)
            .ok_or(StatementError::NoBase)
    }

    /// The diff applied, checked against its recorded sha256.
    pub fn diff(&self) -> Result<Vec<u8>, StatementError> {
        let found = self
            .predicate
            .run_details
            .byproducts
            .iter()
            .find(|b| b.name.as_deref() == Some("diff"))
            .ok_or(StatementError::NoDiff)?;
        let diff = found
            .content
            .as_deref()
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .ok_or(StatementError::NoDiff)?;
        if found.digest.get("sha256") != Some(&sha256_hex(&diff)) {
            return Err(StatementError::DiffDigest);
        }
        Ok(diff)
    }

    /// The resolved dependency `name`.
    pub fn dependency(&self, name: &str) -> Option<&ResourceDescriptor> {
        self.predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .find(|d| d.name.as_deref() == Some(name))
    }

    /// The byproduct `name`.
    pub fn byproduct(&self, name: &str) -> Option<&ResourceDescriptor> {
        self.predicate
            .run_details
            .byproducts
            .iter()
            .find(|d| d.name.as_deref() == Some(name))
    }
}
