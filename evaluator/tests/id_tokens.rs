//! `Step.bash(..., id_tokens={"VAR": "audience"})` through the real path: a worker process
//! converts the keyword argument (its types, and which kinds take it, on the line that
//! wrote it), the parent validates each name and audience and reports it where it is
//! written; a plan without `id_tokens=` keeps its canonical JSON (and so its `plan_hash`).

mod support;
use support::{one_step, plan_of, pool};

use std::collections::BTreeMap;

use evaluator::{EvalContext, EvalError, EvaluatorPool, Event};

/// What evaluating the one step `step` reports, one problem a line (a panic when it
/// evaluates).
async fn problems(pool: &EvaluatorPool, step: &str) -> Vec<String> {
    let ctx = EvalContext::local(Event::Push, "main");
    match pool.evaluate("w.plue.py", &one_step(step), &ctx).await {
        Ok(evaluated) => panic!("{step} evaluated: {}", evaluated.canonical_json),
        Err(EvalError::Invalid(found)) => found.iter().map(|d| d.to_string()).collect(),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

#[tokio::test]
async fn id_tokens_land_in_the_plan_of_bash_and_python_steps() {
    let pool = pool().await;
    let source = r#"
def workflow(ctx):
    return Plan("p", steps=[
        Step.bash("deploy", "aws sts get-caller-identity", id_tokens={"AWS_ID_TOKEN": "sts.amazonaws.com", "VAULT_ID_TOKEN": "https://vault.example.com"}),
        Step.python("py", "print(1)", id_tokens={"AZURE_ID_TOKEN": "api://AzureADTokenExchange"}),
        Step.bash("plain", "true"),
    ])
"#;
    let plan = plan_of(&pool, source).await;
    assert_eq!(
        plan.steps[0].id_tokens,
        BTreeMap::from([
            ("AWS_ID_TOKEN".to_string(), "sts.amazonaws.com".to_string()),
            (
                "VAULT_ID_TOKEN".to_string(),
                "https://vault.example.com".to_string()
            ),
        ])
    );
    assert_eq!(
        plan.steps[1].id_tokens,
        BTreeMap::from([(
            "AZURE_ID_TOKEN".to_string(),
            "api://AzureADTokenExchange".to_string()
        )])
    );
    assert!(plan.steps[2].id_tokens.is_empty());
    let json = plan.canonical_json();
    assert!(
        json.contains(r#""id_tokens":{"AWS_ID_TOKEN":"sts.amazonaws.com","VAULT_ID_TOKEN":"https://vault.example.com"}"#),
        "{json}"
    );
    assert!(
        json.contains(r#""id_tokens":{"AZURE_ID_TOKEN":"api://AzureADTokenExchange"}"#),
        "{json}"
    );
    assert_eq!(json.matches("id_tokens").count(), 2, "{json}");
}

#[tokio::test]
async fn a_plan_without_id_tokens_keeps_its_canonical_json() {
    let pool = pool().await;
    let plain = plan_of(&pool, &one_step("Step.bash(\"b\", \"true\")")).await;
    assert_eq!(
        plain.canonical_json(),
        PLAIN_JSON,
        "the canonical JSON of a plan without id_tokens changed, and with it every plan_hash"
    );
    // An empty dict and None declare nothing, and change nothing.
    for step in [
        "Step.bash(\"b\", \"true\", id_tokens={})",
        "Step.bash(\"b\", \"true\", id_tokens=None)",
    ] {
        let plan = plan_of(&pool, &one_step(step)).await;
        assert_eq!(plan.canonical_json(), PLAIN_JSON, "{step}");
    }
}

/// The canonical JSON of `Plan("p", steps=[Step.bash("b", "true")])`, as it was before
/// `id_tokens` existed.
const PLAIN_JSON: &str = r#"{"name":"p","triggers":[],"env":{},"steps":[{"id":"b","kind":"bash","command":"true","depends_on":[],"timeout":3600,"retries":0,"backoff":1,"when":"success","env":{},"secrets":[],"runner":{}}]}"#;

#[tokio::test]
async fn a_value_of_the_wrong_type_fails_on_its_line() {
    let pool = pool().await;
    for (option, expected) in [
        (
            "[\"AWS_ID_TOKEN\"]",
            "Step.bash(): id_tokens must be a dict, got list",
        ),
        (
            "\"sts.amazonaws.com\"",
            "Step.bash(): id_tokens must be a dict, got str",
        ),
        (
            "{1: \"sts.amazonaws.com\"}",
            "Step.bash(): id_tokens key must be a str, got int",
        ),
        (
            "{\"AWS_ID_TOKEN\": 1}",
            "Step.bash(): id_tokens['AWS_ID_TOKEN'] must be a str, got int",
        ),
        (
            "{\"AWS_ID_TOKEN\": True}",
            "Step.bash(): id_tokens['AWS_ID_TOKEN'] must be a str, got bool",
        ),
        (
            "{\"AWS_ID_TOKEN\": [\"sts.amazonaws.com\"]}",
            "Step.bash(): id_tokens['AWS_ID_TOKEN'] must be a str, got list",
        ),
    ] {
        let step = format!("Step.bash(\"b\", \"true\", id_tokens={option})");
        assert_eq!(
            problems(&pool, &step).await,
            [format!("w.plue.py:2:29: TypeError: {expected}")],
            "{step}"
        );
    }
    let found = problems(
        &pool,
        "Step.python(\"p\", \"pass\", id_tokens={\"A\": None})",
    )
    .await;
    assert_eq!(
        found,
        ["w.plue.py:2:29: TypeError: Step.python(): id_tokens['A'] must be a str, got NoneType"]
    );
}

#[tokio::test]
async fn llm_and_approval_steps_take_no_id_tokens() {
    let pool = pool().await;
    let found = problems(
        &pool,
        "Step.llm(\"agent\", prompt=\"deploy\", id_tokens={\"AWS_ID_TOKEN\": \"sts.amazonaws.com\"})",
    )
    .await;
    assert!(
        found.iter().any(|p| p.contains(
            "Step.llm(): id_tokens= goes on a Step.bash or Step.python (an agent's tools must not hold a cloud identity)"
        )),
        "{found:?}"
    );
    let found = problems(
        &pool,
        "Step.approval(\"gate\", id_tokens={\"AWS_ID_TOKEN\": \"sts.amazonaws.com\"})",
    )
    .await;
    assert!(
        found.iter().any(|p| p.contains(
            "Step.approval(): id_tokens= goes on a Step.bash or Step.python (nothing runs)"
        )),
        "{found:?}"
    );
}

#[tokio::test]
async fn every_bad_name_and_audience_is_reported_at_its_step() {
    let pool = pool().await;
    let at = "w.plue.py:2:29: step 'b': ";
    let audience_rule = "; an audience is visible ASCII without spaces, such as 'sts.amazonaws.com' or 'https://vault.example.com'";
    let long_name = "A".repeat(65);
    let long_audience = "a".repeat(257);
    let nine = (0..9)
        .map(|i| format!("\"T{i}\": \"a\""))
        .collect::<Vec<_>>()
        .join(", ");
    for (tokens, options, expected) in [
        (
            "{\"aws_id_token\": \"sts.amazonaws.com\"}".to_string(),
            "",
            format!("{at}id_tokens variable 'aws_id_token' must match ^[A-Z_][A-Z0-9_]*$ (upper-case letters, digits and '_', not starting with a digit)"),
        ),
        (
            "{\"1TOKEN\": \"sts.amazonaws.com\"}".to_string(),
            "",
            format!("{at}id_tokens variable '1TOKEN' must match ^[A-Z_][A-Z0-9_]*$"),
        ),
        (
            format!("{{\"{long_name}\": \"sts.amazonaws.com\"}}"),
            "",
            "w.plue.py:2:29: id_tokens variable 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA... (65 characters)' is 65 bytes; the limit is 64".to_string(),
        ),
        (
            "{\"PLUE_TOKEN\": \"sts.amazonaws.com\"}".to_string(),
            "",
            format!("{at}id_tokens variable 'PLUE_TOKEN' starts with 'PLUE_', which the engine keeps for the variables it sets"),
        ),
        (
            "{\"ANTHROPIC_BASE_URL\": \"sts.amazonaws.com\"}".to_string(),
            "",
            format!("{at}id_tokens variable 'ANTHROPIC_BASE_URL' is reserved: the Messages API base URL comes from the engine's or runner's configuration, never from a workflow"),
        ),
        (
            "{\"DEPLOY_TOKEN\": \"sts.amazonaws.com\"}".to_string(),
            ", secrets=[\"DEPLOY_TOKEN\"]",
            format!("{at}id_tokens variable 'DEPLOY_TOKEN' is also one of the step's secrets=; name the token another variable"),
        ),
        (
            "{\"AWS_ID_TOKEN\": \"sts.amazonaws.com\"}".to_string(),
            ", env={\"AWS_ID_TOKEN\": \"x\"}",
            format!("{at}id_tokens variable 'AWS_ID_TOKEN' is also set by the step's env=; name the token another variable"),
        ),
        (
            format!("{{{nine}}}"),
            "",
            "w.plue.py:2:29: 9 id_tokens entries; the limit is 8".to_string(),
        ),
        (
            "{\"AWS_ID_TOKEN\": \"\"}".to_string(),
            "",
            format!("{at}id_tokens audience '' of AWS_ID_TOKEN is empty{audience_rule}"),
        ),
        (
            format!("{{\"AWS_ID_TOKEN\": \"{long_audience}\"}}"),
            "",
            "w.plue.py:2:29: id_tokens audience 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... (257 characters)' is 257 bytes; the limit is 256".to_string(),
        ),
        (
            "{\"AWS_ID_TOKEN\": \"sts.amazonaws.com \"}".to_string(),
            "",
            format!("{at}id_tokens audience 'sts.amazonaws.com ' of AWS_ID_TOKEN holds a space at character 18{audience_rule}"),
        ),
        (
            "{\"AWS_ID_TOKEN\": \"sts.amazon\\u00e4ws.com\"}".to_string(),
            "",
            format!("{at}id_tokens audience 'sts.amazon\u{e4}ws.com' of AWS_ID_TOKEN holds the non-ASCII character '\u{e4}' at character 11{audience_rule}"),
        ),
        (
            "{\"AWS_ID_TOKEN\": \"sts\\x1b.amazonaws.com\"}".to_string(),
            "",
            "w.plue.py:2:29: id_tokens audience 'sts\\x1b.amazonaws.com' contains the control character \\x1b".to_string(),
        ),
    ] {
        let step = format!("Step.bash(\"b\", \"true\"{options}, id_tokens={tokens})");
        let found = problems(&pool, &step).await;
        assert!(
            found.iter().any(|p| p.starts_with(&expected)),
            "{step}:\n{found:#?}\nexpected: {expected}"
        );
    }
}
