//! Tests of `id_tokens`: one per rule of [`check`], and which kinds take tokens.

use std::collections::BTreeMap;

use super::*;

/// A bash step declaring `tokens` (variable, audience).
fn declaring(tokens: &[(&str, &str)]) -> Step {
    let mut step = Step::bash("deploy", "true");
    step.id_tokens = tokens
        .iter()
        .map(|(name, audience)| (name.to_string(), audience.to_string()))
        .collect::<BTreeMap<_, _>>();
    step
}

/// The one problem of a step declaring the single token `name` for `audience`.
fn problem(name: &str, audience: &str) -> String {
    let found = check(&declaring(&[(name, audience)]));
    assert_eq!(found.len(), 1, "{name}={audience}: {found:?}");
    found.into_iter().next().unwrap()
}

#[test]
fn audiences_as_clouds_and_vault_write_them_are_accepted() {
    let step = declaring(&[
        ("AWS_ID_TOKEN", "sts.amazonaws.com"),
        ("VAULT_ID_TOKEN", "https://vault.example.com"),
        ("AZURE_ID_TOKEN", "api://AzureADTokenExchange"),
        (
            "_GCP2",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
        ),
    ]);
    assert_eq!(check(&step), Vec::<String>::new());
}

#[test]
fn a_variable_is_an_upper_case_shell_name() {
    for name in [
        "aws_token",
        "1TOKEN",
        "AWS-TOKEN",
        "AWS TOKEN",
        "Token",
        "",
        "TOKEN\u{e9}",
    ] {
        let found = problem(name, "sts.amazonaws.com");
        assert!(
            found.contains("must match ^[A-Z_][A-Z0-9_]*$"),
            "{name}: {found}"
        );
    }
    assert_eq!(
        problem("aws_token", "sts.amazonaws.com"),
        "id_tokens variable 'aws_token' must match ^[A-Z_][A-Z0-9_]*$ (upper-case letters, \
         digits and '_', not starting with a digit)"
    );
}

#[test]
fn the_engine_s_variables_are_not_a_token_s() {
    assert_eq!(
        problem("PLUE_OUTPUT_A_B", "sts.amazonaws.com"),
        "id_tokens variable 'PLUE_OUTPUT_A_B' starts with 'PLUE_', which the engine keeps for \
         the variables it sets"
    );
    // `PLUE` alone, or the prefix further in, is any other name.
    assert!(check(&declaring(&[("PLUE", "a"), ("MY_PLUE_TOKEN", "a")])).is_empty());
}

#[test]
fn a_variable_the_engine_reserves_for_steps_is_refused_as_env_is() {
    let found = problem("ANTHROPIC_BASE_URL", "sts.amazonaws.com");
    assert!(
        found.starts_with("id_tokens variable 'ANTHROPIC_BASE_URL' is reserved: "),
        "{found}"
    );
    // The reason is the one `env=` gives: one check, two options.
    assert!(
        found.ends_with(crate::plan::reserved_env("ANTHROPIC_BASE_URL").unwrap()),
        "{found}"
    );
}

#[test]
fn a_variable_has_one_source() {
    let mut step = declaring(&[("DEPLOY_TOKEN", "a"), ("REGION", "b"), ("OK", "c")]);
    step.secrets = vec!["DEPLOY_TOKEN".into()];
    step.env.insert("REGION".into(), "eu".into());
    assert_eq!(
        check(&step),
        [
            "id_tokens variable 'DEPLOY_TOKEN' is also one of the step's secrets=; name the \
             token another variable",
            "id_tokens variable 'REGION' is also set by the step's env=; name the token another \
             variable",
        ]
    );
}

#[test]
fn an_audience_is_visible_ascii() {
    let rule = "; an audience is visible ASCII without spaces, such as 'sts.amazonaws.com' or \
                'https://vault.example.com'";
    for (audience, what) in [
        ("", "is empty"),
        ("sts amazonaws.com", "holds a space at character 4"),
        (" sts.amazonaws.com", "holds a space at character 1"),
        (
            "sts.amazonaws.com\t",
            "holds the control character \\t at character 18",
        ),
        (
            "a\u{7f}",
            "holds the control character \\u{7f} at character 2",
        ),
        (
            "st\u{e9}.example",
            "holds the non-ASCII character '\u{e9}' at character 3",
        ),
        (
            "\u{202e}moc.elgoog",
            "holds the non-ASCII character '\\u{202e}' at character 1",
        ),
    ] {
        let found = problem("TOKEN", audience);
        assert!(
            found.contains(&format!(" of TOKEN {what}{rule}")),
            "{audience:?}: {found}"
        );
    }
    // Every visible ASCII character is allowed.
    let visible: String = (0x21u8..=0x7e).map(char::from).collect();
    assert!(check(&declaring(&[("TOKEN", &visible)])).is_empty());
}

#[test]
fn only_bash_and_python_steps_take_tokens() {
    assert_eq!(refusal(StepKind::Bash), None);
    assert_eq!(refusal(StepKind::Python), None);
    assert_eq!(
        refusal(StepKind::Llm),
        Some("an agent's tools must not hold a cloud identity")
    );
    assert_eq!(refusal(StepKind::Approval), Some("nothing runs"));
    assert_eq!(kinds_taking("Step.", "or"), "Step.bash or Step.python");
}
