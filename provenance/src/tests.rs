//! A whole statement signed, opened and told; what a forger changes is refused.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::statement::*;
use crate::{open, sign, Refused, Signer};

fn statement() -> Statement {
    let diff = b"diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +1 @@\n-a\n+b\n";
    Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject: vec![commit_subject(
            "plue/run-1-fix",
            &"c".repeat(40),
            &"d".repeat(40),
        )],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.into(),
                external_parameters: ExternalParameters {
                    repository: "acme/app".into(),
                    workflow: Workflow {
                        path: ".plue/fix.plue.py".into(),
                        git_ref: "refs/heads/main".into(),
                        commit: "b".repeat(40),
                    },
                    trigger: Trigger {
                        event: "comment".into(),
                        issue: Some(7),
                        comment: Some(99),
                        summoned_by: Some("alice".into()),
                        association: Some("MEMBER".into()),
                        permission: "trusted".into(),
                        ..Trigger::default()
                    },
                    step: "fix".into(),
                    proposal: ProposalFacts {
                        id: 3,
                        run: 1,
                        kind: "pull_request".into(),
                        branch: Some("plue/run-1-fix".into()),
                        threat_check: Some(ThreatCheck {
                            verdict: "needs_approval".into(),
                            findings: vec![ThreatFinding {
                                rule: "new-dependency".into(),
                                severity: "warning".into(),
                                file: Some("Cargo.toml".into()),
                                line: Some(12),
                                reason: "adds the dependency \"rand\"".into(),
                            }],
                            review: Some(ThreatReview {
                                model: "claude-haiku-4-5".into(),
                                verdict: "pass".into(),
                                error: None,
                            }),
                        }),
                    },
                    approval: Some(Approval {
                        by: "bob".into(),
                        at: rfc3339(1_700_000_000_000),
                    }),
                },
                internal_parameters: InternalParameters {
                    model: Some("claude-sonnet-4-5".into()),
                    max_turns: Some(20),
                    tools: vec!["bash".into(), "propose_pull_request".into()],
                    network: serde_json::json!({"allow": ["pypi.org"]}),
                    budgets: Budgets {
                        max_cost_usd: Some(1.5),
                        ..Budgets::default()
                    },
                },
                resolved_dependencies: vec![ResourceDescriptor {
                    name: Some("base".into()),
                    digest: BTreeMap::from([("gitCommit".into(), "b".repeat(40))]),
                    ..ResourceDescriptor::default()
                }],
            },
            run_details: RunDetails {
                builder: Builder {
                    id: "https://plue.example".into(),
                    version: BTreeMap::new(),
                },
                metadata: Metadata {
                    invocation_id: "https://plue.example/api/runs/1/proposals/3/provenance".into(),
                    started_on: rfc3339(1_699_999_000_000),
                    finished_on: rfc3339(1_700_000_001_000),
                },
                byproducts: vec![
                    diff_byproduct(diff),
                    ResourceDescriptor::sha256("transcript", "e".repeat(64)),
                ],
            },
        },
    }
}

#[test]
fn a_signed_statement_opens_whole_and_says_its_chain() {
    let signer = Signer::from_seed(&[11; 32]);
    let envelope = sign(&statement(), &signer);
    let keys = [Signer::from_seed(&[12; 32]).public(), signer.public()];
    let (opened, key) = open(&envelope, &keys).unwrap();
    assert_eq!(opened, statement());
    assert_eq!(key.id(), signer.public().id());
    assert_eq!(
        opened.commit().unwrap(),
        ("c".repeat(40).as_str(), "d".repeat(40).as_str())
    );
    assert_eq!(opened.base().unwrap(), "b".repeat(40));
    assert!(opened.diff().unwrap().starts_with(b"diff --git"));
    let told: BTreeMap<_, _> = crate::words::chain(&opened).into_iter().collect();
    assert_eq!(told["summoned by"], "alice (MEMBER)");
    assert_eq!(told["approved by"], "bob at 2023-11-14T22:13:20.000Z");
    assert_eq!(
        told["threat check"],
        "needs_approval (new-dependency); model review claude-haiku-4-5: pass"
    );
    assert_eq!(told["model"], "claude-sonnet-4-5, max_turns 20");
    assert_eq!(told["budgets"], "max_cost_usd 1.5");
    assert!(told["transcript"].starts_with("sha256:eee"), "{told:?}");
    // The JSON carries the names the specifications give.
    let json: serde_json::Value = serde_json::from_slice(&opened.to_json()).unwrap();
    assert_eq!(json["_type"], STATEMENT_TYPE);
    let threat =
        &json["predicate"]["buildDefinition"]["externalParameters"]["proposal"]["threatCheck"];
    assert_eq!(threat["verdict"], "needs_approval");
    assert_eq!(threat["findings"][0]["rule"], "new-dependency");
    assert_eq!(
        json["predicate"]["buildDefinition"]["externalParameters"]["workflow"]["ref"],
        "refs/heads/main"
    );
    assert!(json["predicate"]["runDetails"]["metadata"]["invocationId"].is_string());
}

// The forger re-signs nothing: any edit of the payload breaks the signature; an edit a
// forger could sign (with their own key) is refused for the key.
#[test]
fn an_edited_payload_or_a_foreign_key_is_refused() {
    let signer = Signer::from_seed(&[13; 32]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut envelope = sign(&statement(), &signer);
    let mut json: serde_json::Value =
        serde_json::from_slice(&b64.decode(&envelope.payload).unwrap()).unwrap();
    json["predicate"]["buildDefinition"]["externalParameters"]["approval"]["by"] = "mallory".into();
    envelope.payload = b64.encode(serde_json::to_vec(&json).unwrap());
    assert!(matches!(
        open(&envelope, &[signer.public()]),
        Err(Refused::Envelope(_))
    ));
    let forged = sign(&statement(), &Signer::from_seed(&[14; 32]));
    assert!(matches!(
        open(&forged, &[signer.public()]),
        Err(Refused::Envelope(_))
    ));
}

// A statement whose diff was swapped but whose digest was not (or the other way round)
// says so instead of handing a verifier a diff nobody signed for.
#[test]
fn a_diff_that_does_not_match_its_digest_is_refused() {
    let mut swapped = statement();
    swapped.predicate.run_details.byproducts[0].content =
        Some(base64::engine::general_purpose::STANDARD.encode(b"diff --git a/x b/x\n"));
    assert_eq!(swapped.diff(), Err(StatementError::DiffDigest));
    let mut other_type = statement();
    other_type.predicate.build_definition.build_type = "https://example.com/other".into();
    assert!(matches!(
        Statement::parse(&other_type.to_json()),
        Err(StatementError::Type {
            field: "buildType",
            ..
        })
    ));
    let mut text = statement();
    text.subject = vec![text_subject("comment", "hello")];
    assert!(matches!(text.commit(), Err(StatementError::NotACommit(_))));
    assert_eq!(
        text.subject[0].digest["sha256"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
}

// What an attacker found: the `usage` byproduct was a descriptor with only `name` and
// `annotations`, which in-toto v1 forbids (a descriptor MUST have a `uri`, `digest` or
// `content`). Now it carries its JSON as `content` with its sha256, and a descriptor that
// names nothing is refused by name.
#[test]
fn every_descriptor_names_its_resource_and_usage_carries_its_json() {
    let usage = serde_json::json!({"costUsd": 0.0123, "tokens": {"input": 10, "output": 2}});
    let mut made = statement();
    made.predicate
        .run_details
        .byproducts
        .push(usage_byproduct(&usage));
    assert_eq!(made.check_descriptors(), Ok(()));
    assert_eq!(made.descriptors().count(), 5);
    let found = made.byproduct("usage").unwrap();
    let json = base64::engine::general_purpose::STANDARD
        .decode(found.content.as_deref().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
        usage
    );
    assert_eq!(found.digest["sha256"], sha256_hex(&json));
    assert_eq!(found.media_type.as_deref(), Some("application/json"));
    let told: BTreeMap<_, _> = crate::words::chain(&made).into_iter().collect();
    assert_eq!(told["cost"], "$0.0123");
    // The old shape: a name and annotations, nothing else.
    let mut old = statement();
    old.predicate
        .run_details
        .byproducts
        .push(ResourceDescriptor {
            name: Some("usage".into()),
            annotations: Some(usage),
            ..ResourceDescriptor::default()
        });
    assert_eq!(
        old.check_descriptors(),
        Err(StatementError::Descriptor {
            place: "byproducts",
            name: "usage".into()
        })
    );
    let mut empty_uri = statement();
    empty_uri.subject[0].digest.clear();
    empty_uri.subject[0].uri = Some(String::new());
    assert!(matches!(
        empty_uri.check_descriptors(),
        Err(StatementError::Descriptor {
            place: "subject",
            ..
        })
    ));
}
