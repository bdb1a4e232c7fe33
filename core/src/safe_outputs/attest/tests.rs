//! A statement made from the store: it opens with the engine's key only, names the person
//! who approved the proposal and when and the threat check that held it for them, attests
//! the text or commit given, names every resource by uri, digest or content, and is
//! recorded once, pending (a retry's new signature does not replace it).

use std::sync::Arc;

use evaluator::plan::{Plan, Step};
use plue_provenance::Signer;
use plue_store::testing::stores;
use plue_store::testing::Sql;
use plue_store::{NewRun, RunRepo};

use super::*;

/// A stored threat check: a warning, and a review that passed.
const THREAT: &str = r#"{"verdict":"needs_approval","findings":[{"rule":"new-endpoint","severity":"warning","file":"a.py","line":3,"reason":"reaches x.example.net"}],"review":{"model":"m","answer":"pass","reasons":[],"input_tokens":1,"output_tokens":1}}"#;

#[tokio::test]
async fn an_approved_proposals_statement_names_its_approver_and_is_kept_once() {
    for (store, _dir) in stores().await {
        let repo_id = plue_store::testing::create_repo(&store, "acme/app").await;
        let plan = Plan::new("fix", vec![Step::bash("publish", "true")]);
        let json = serde_json::to_string(&plan).unwrap();
        let run_id = store
            .create_run(
                &NewRun {
                    workflow_source: "acme/app",
                    workflow_path: ".plue/fix.plue.py",
                    repo: Some(RunRepo {
                        repo_id,
                        secrets_allowed: false,
                    }),
                    ..plue_store::testing::local_run(&plan, &json)
                },
                4,
            )
            .await
            .unwrap()
            .id;
        let step_run = store.step_run(run_id, "publish").await.unwrap().unwrap().id;
        let proposal: i64 = Sql::new(
            "INSERT INTO proposals (run_id, step_run_id, attempt_id, position, kind, payload, \
             state, decided_by, decided_at, created_at, threat) \
             VALUES ($1, $2, 1, 0, 'comment', '{}', 'ready', 'maintainer-mo', 1700000000000, 0, \
             $3) RETURNING id",
        )
        .bind(run_id)
        .bind(step_run)
        .bind(THREAT)
        .one_int(&store)
        .await;
        let row = store.proposal(proposal).await.unwrap().unwrap();
        let run = store.run(run_id).await.unwrap().unwrap();
        let repo = store.repo_by_id(repo_id).await.unwrap().unwrap();
        let change = Change {
            row: &row,
            run: &run,
            repo: &repo,
            step_id: "publish",
            plan: &plan,
            context: None,
        };
        let signer = Arc::new(Signer::from_seed(&[21; 32]));
        let attestor = Attestor {
            signer: signer.clone(),
            artifacts: None,
        };
        let url = "https://plue.example.com/";
        let kept = attestor
            .attest(
                &store,
                url,
                &change,
                Subject::Text("Fixed."),
                1_700_000_100_000,
            )
            .await
            .unwrap();
        let envelope: plue_provenance::Envelope = serde_json::from_str(&kept).unwrap();
        let keys = [signer.public()];
        let (statement, _) = plue_provenance::open(&envelope, &keys).unwrap();
        let external = &statement.predicate.build_definition.external_parameters;
        // The threat check that held it for the approver is signed with it.
        let threat = external.proposal.threat_check.as_ref().unwrap();
        assert_eq!(threat.verdict, "needs_approval");
        assert_eq!(threat.findings[0].rule, "new-endpoint");
        assert_eq!(threat.findings[0].severity, "warning");
        let review = threat.review.as_ref().unwrap();
        assert_eq!(
            (review.model.as_str(), review.verdict.as_str()),
            ("m", "pass")
        );
        let approval = external.approval.as_ref().unwrap();
        assert_eq!(approval.by, "maintainer-mo");
        assert_eq!(approval.at, "2023-11-14T22:13:20.000Z");
        assert_eq!(external.trigger.permission, "untrusted");
        assert_eq!(external.repository, "acme/app");
        assert_eq!(
            statement.subject[0].digest["sha256"],
            plue_provenance::statement::sha256_hex(b"Fixed.")
        );
        assert_eq!(
            statement.predicate.run_details.metadata.invocation_id,
            format!("https://plue.example.com/api/runs/{run_id}/proposals/{proposal}/provenance")
        );
        // Every resource descriptor names its resource (in-toto v1: a `uri`, `digest` or
        // `content`); the `usage` byproduct — once only a name and annotations — carries
        // its JSON and that JSON's sha256.
        let described: Vec<_> = statement.descriptors().collect();
        assert!(described.len() >= 4, "{described:?}");
        for (place, descriptor) in &described {
            assert!(
                descriptor.uri.is_some()
                    || !descriptor.digest.is_empty()
                    || descriptor.content.is_some(),
                "{place}: {descriptor:?}"
            );
        }
        let usage = statement.byproduct("usage").unwrap();
        let json = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            usage.content.as_deref().unwrap(),
        )
        .unwrap();
        assert_eq!(
            usage.digest["sha256"],
            plue_provenance::statement::sha256_hex(&json)
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
            serde_json::json!({"costUsd": null, "tokens": null})
        );
        // Recorded before the write: pending until its proposal settles.
        let recorded = store.statement(run_id, proposal).await.unwrap().unwrap();
        assert_eq!(recorded.landing(), plue_store::Landing::Pending);
        // Another key does not open it; a retry signs again but the first is kept.
        let other = [Signer::from_seed(&[22; 32]).public()];
        assert!(plue_provenance::open(&envelope, &other).is_err());
        let again = attestor
            .attest(
                &store,
                url,
                &change,
                Subject::Text("Fixed."),
                1_700_000_200_000,
            )
            .await
            .unwrap();
        assert_eq!(again, kept);
        let listed = store.signing_keys().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key_id, signer.public().id());
    }
}
