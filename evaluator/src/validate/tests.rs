//! Tests of `validate`.
//!
//! Why one file past ~600 lines: the tests of `validate`, one per rule.

use std::collections::BTreeMap;

use super::*;
use crate::plan::Step;

fn step(id: &str, deps: &[&str]) -> Step {
    Step::bash(id, "true").after(deps)
}

fn plan(steps: Vec<Step>, triggers: Vec<Trigger>) -> (Plan, SourceMap) {
    let map = SourceMap {
        plan: Location { line: 1, col: 1 },
        triggers: (0..triggers.len())
            .map(|i| Location {
                line: 2 + i as u32,
                col: 5,
            })
            .collect(),
        steps: (0..steps.len())
            .map(|i| Location {
                line: 10 + i as u32,
                col: 9,
            })
            .collect(),
    };
    (
        Plan {
            name: "p".into(),
            triggers,
            env: BTreeMap::new(),
            steps,
            concurrency: None,
            budget_usd: None,
            max_parallel: None,
            modules: Vec::new(),
        },
        map,
    )
}

fn messages(plan: &Plan, map: &SourceMap) -> Vec<String> {
    validate(plan, map, &Limits::default(), "w.plue.py")
        .iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn a_valid_plan_has_no_problems() {
    let (p, m) = plan(
        vec![
            step("test", &[]),
            step("build", &["test"]),
            step("review", &["test"]),
        ],
        vec![Trigger::Schedule {
            cron: "0 3 * * *".into(),
        }],
    );
    assert_eq!(messages(&p, &m), Vec::<String>::new());
}

#[test]
fn hand_off_names_dependencies_that_run() {
    let mut build = step("build", &[]);
    build.artifacts = vec!["dist/**".into(), "report.json".into()];
    let lint = step("lint", &[]);
    let gate = Step::new(
        "gate",
        Action::Approval(crate::plan::ApprovalAction {
            message: None,
            approvers: vec![],
            exclude_triggerer: false,
        }),
    );
    let mut ok = step("review", &["build"]);
    ok.workspace_from = Some("build".into());
    ok.needs_artifacts = vec!["build".into()];
    let mut not_a_dep = step("ship", &["lint"]);
    not_a_dep.workspace_from = Some("build".into());
    not_a_dep.needs_artifacts = vec!["lint".into(), "buidl".into()];
    let mut approval = step("after", &["gate"]);
    approval.workspace_from = Some("gate".into());
    let mut escapes = step("esc", &[]);
    escapes.artifacts = vec!["../secret".into(), "/etc/*".into(), "dist/[".into()];
    let (p, m) = plan(
        vec![build, lint, gate, ok, not_a_dep, approval, escapes],
        vec![],
    );
    assert_eq!(
            messages(&p, &m),
            [
                "w.plue.py:14:9: step 'ship': workspace_from 'build' is not one of its dependencies; add depends_on=[\"build\"]",
                "w.plue.py:14:9: step 'ship': needs_artifacts 'lint', but step 'lint' declares no artifacts=",
                "w.plue.py:14:9: step 'ship': needs_artifacts 'buidl' is not one of its dependencies",
                "w.plue.py:15:9: step 'after': workspace_from 'gate' is an approval step, which has no workspace",
                "w.plue.py:16:9: step 'esc': artifacts pattern '../secret' must be relative to the workspace (no leading '/', no '..')",
                "w.plue.py:16:9: step 'esc': artifacts pattern '/etc/*' must be relative to the workspace (no leading '/', no '..')",
                "w.plue.py:16:9: invalid artifacts pattern 'dist/[': unclosed character class; missing ']'",
            ]
        );
}

#[test]
fn duplicate_ids_name_the_first_definition() {
    let (p, m) = plan(vec![step("test", &[]), step("test", &[])], vec![]);
    assert_eq!(
        messages(&p, &m),
        vec!["w.plue.py:11:9: duplicate step id 'test' (first defined at line 10)"]
    );
}

#[test]
fn unknown_dependency_is_named_with_a_suggestion() {
    let (p, m) = plan(vec![step("test", &[]), step("build", &["tset"])], vec![]);
    assert_eq!(
        messages(&p, &m),
        vec!["w.plue.py:11:9: step 'build' depends on unknown step 'tset' (did you mean 'test'?)"]
    );
}

#[test]
fn cycles_are_printed_as_arrows() {
    let (p, m) = plan(
        vec![
            step("a", &["c"]),
            step("b", &["a"]),
            step("c", &["b"]),
            step("d", &[]),
        ],
        vec![],
    );
    let found = messages(&p, &m);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].ends_with("dependency cycle: a -> c -> b -> a"),
        "{}",
        found[0]
    );
    let (p, m) = plan(vec![step("self", &["self"])], vec![]);
    assert!(messages(&p, &m)[0].ends_with("dependency cycle: self -> self"));
}

#[test]
fn a_long_chain_is_not_a_cycle_and_does_not_overflow() {
    let steps = (0..1000)
        .map(|i| {
            let mut s = step(&format!("s{i}"), &[]);
            if i > 0 {
                s.depends_on = vec![format!("s{}", i - 1)];
            }
            s
        })
        .collect();
    let (p, m) = plan(steps, vec![]);
    assert!(messages(&p, &m).is_empty());
}

#[test]
fn bad_cron_is_echoed() {
    let (p, m) = plan(
        vec![],
        vec![
            Trigger::Schedule {
                cron: "61 * * * *".into(),
            },
            Trigger::Schedule {
                cron: "* * *".into(),
            },
        ],
    );
    let found = messages(&p, &m);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("w.plue.py:2:5: invalid cron expression '61 * * * *'"),
        "{}",
        found[0]
    );
    assert!(
        found[1].contains("invalid cron expression '* * *': expected 5 fields"),
        "{}",
        found[1]
    );
    assert!(check_cron("*/15 9-17 * * MON-FRI").is_ok());
    assert!(
        check_cron("0 0 * * * *").is_err(),
        "six fields are not cron here"
    );
}

#[test]
fn bad_globs_and_actions() {
    let push = Trigger::Push {
        branches: vec!["release/[".into()],
        tags: vec![],
        paths: vec![],
        paths_ignore: vec![],
    };
    let pr = Trigger::PullRequest {
        branches: vec!["main".into()],
        actions: vec!["opend".into()],
        paths: vec![],
        paths_ignore: vec![],
    };
    let (p, m) = plan(vec![], vec![push, pr]);
    let found = messages(&p, &m);
    assert!(
        found[0].contains("invalid branch pattern 'release/['"),
        "{found:?}"
    );
    assert!(
        found[1].contains("unknown pull request action 'opend' (did you mean 'opened'?)"),
        "{found:?}"
    );
}

#[test]
fn size_is_checked_first_then_the_step_count() {
    let steps = (0..3)
        .map(|i| step(&format!("s{i}"), &["nowhere"]))
        .collect();
    let (p, m) = plan(steps, vec![]);
    let found = |limits: Limits| -> Vec<String> {
        validate(&p, &m, &limits, "w")
            .iter()
            .map(|d| d.message.clone())
            .collect()
    };
    let too_big = found(Limits {
        max_steps: 2,
        max_plan_bytes: 100,
        ..Limits::default()
    });
    assert_eq!(too_big.len(), 1, "nothing else is looked at: {too_big:?}");
    assert!(
        too_big[0].starts_with("the plan's JSON is")
            && too_big[0].ends_with("the limit is 100 bytes"),
        "{too_big:?}"
    );
    let too_many = found(Limits {
        max_steps: 2,
        ..Limits::default()
    });
    assert_eq!(too_many, vec!["the plan has 3 steps; the limit is 2"]);
}

#[test]
fn diagnostics_are_capped_with_a_count_of_the_rest() {
    let steps = (0..200)
        .map(|i| step(&format!("s{i}"), &["nowhere"]))
        .collect();
    let (p, m) = plan(steps, vec![]);
    let found = messages(&p, &m);
    assert_eq!(found.len(), MAX_DIAGNOSTICS);
    assert_eq!(
        found[MAX_DIAGNOSTICS - 1],
        "w.plue.py: and 151 more problems"
    );
}

#[test]
fn a_workflow_cannot_choose_where_the_api_key_goes() {
    let mut s = step("review", &[]);
    s.env
        .insert("ANTHROPIC_BASE_URL".into(), "https://evil.example".into());
    let (mut p, m) = plan(vec![s], vec![]);
    p.env
        .insert("anthropic_base_url".into(), "https://evil.example".into());
    let found = messages(&p, &m);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.iter().all(|f| f.contains("never from a workflow")),
        "{found:?}"
    );
    assert!(
        found[1].contains("step 'review' sets 'ANTHROPIC_BASE_URL'"),
        "{found:?}"
    );
}

// regression: a branch glob of a million '?' passed validation and panicked in matching.
#[test]
fn globs_are_compiled_as_matching_compiles_them() {
    let push = Trigger::Push {
        branches: vec!["?".repeat(500)],
        tags: vec![],
        paths: vec![],
        paths_ignore: vec![],
    };
    let (p, m) = plan(vec![], vec![push]);
    for problem in messages(&p, &m) {
        assert!(problem.contains("invalid branch pattern"), "{problem}");
    }
    let huge = Trigger::Push {
        branches: vec!["?".repeat(1_000_000)],
        tags: vec![],
        paths: vec![],
        paths_ignore: vec![],
    };
    let (p, m) = plan(vec![], vec![huge]);
    let found = messages(&p, &m);
    assert!(found.len() <= 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|f| f.contains("is 1000000 bytes; the limit is 512")),
        "{found:?}"
    );
}

#[test]
fn approval_steps_refuse_options_that_need_a_runner() {
    let mut s = step("ship", &[]);
    s.action = Action::Approval(crate::plan::ApprovalAction {
        message: Some("deploy?".into()),
        approvers: vec!["alice".into()],
        exclude_triggerer: true,
    });
    let (p, m) = plan(vec![s.clone()], vec![]);
    assert!(messages(&p, &m).is_empty(), "{:?}", messages(&p, &m));
    s.retries = 2;
    s.secrets = vec!["TOKEN".into()];
    let (p, m) = plan(vec![s], vec![]);
    let found = messages(&p, &m);
    assert!(
        found.iter().any(|f| f.contains("takes no retries=")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|f| f.contains("takes no secrets=")),
        "{found:?}"
    );
}

#[test]
fn memory_addresses_are_refused() {
    let mut s = step("a", &[]);
    s.action = Action::Bash {
        command: "echo <function f at 0x7f3a2b1c0d90>".into(),
    };
    let (p, m) = plan(vec![s], vec![]);
    assert!(messages(&p, &m)[0].contains("memory address ('at 0x7f3a2b1c0d90')"));
}

#[test]
fn llm_steps_need_exactly_one_prompt_and_known_tools() {
    let mut s = step("r", &[]);
    s.action = Action::Llm(crate::plan::LlmAction {
        prompt: None,
        prompt_file: None,
        inputs: BTreeMap::new(),
        model: None,
        max_turns: None,
        tools: vec!["bsh".into()],
        safe_outputs: None,
        max_tokens: None,
        max_cost_usd: None,
        ..Default::default()
    });
    let (p, m) = plan(vec![s], vec![]);
    let found = messages(&p, &m);
    assert!(
        found[0].contains("needs prompt= or prompt_file="),
        "{found:?}"
    );
    assert!(
        found[1].contains("unknown tool 'bsh' (did you mean 'bash'?)"),
        "{found:?}"
    );
}

#[test]
fn concurrency_groups_name_known_ctx_fields_only() {
    let (mut p, m) = plan(vec![step("deploy", &[])], vec![]);
    p.concurrency = Some(crate::plan::Concurrency {
        group: "deploy-{branch}-{pr}".into(),
        cancel_in_progress: true,
    });
    assert!(messages(&p, &m).is_empty(), "{:?}", messages(&p, &m));
    p.concurrency = Some(crate::plan::Concurrency {
        group: "deploy-{brnch}".into(),
        cancel_in_progress: false,
    });
    let found = messages(&p, &m);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
            found[0].starts_with("w.plue.py:1:1: concurrency group 'deploy-{brnch}': unknown placeholder '{brnch}' (did you mean 'branch'?)"),
            "{found:?}"
        );
    p.concurrency = Some(crate::plan::Concurrency {
        group: " ".into(),
        cancel_in_progress: false,
    });
    assert_eq!(
        messages(&p, &m),
        vec!["w.plue.py:1:1: the concurrency group must not be empty"]
    );
    p.concurrency = Some(crate::plan::Concurrency {
        group: "x".repeat(300),
        cancel_in_progress: false,
    });
    assert!(messages(&p, &m)[0].contains("the limit is 256"));
}

#[test]
fn a_plan_without_concurrency_keeps_its_canonical_json() {
    let (mut p, _) = plan(vec![step("a", &[])], vec![]);
    assert!(!p.canonical_json().contains("concurrency"));
    p.concurrency = Some(crate::plan::Concurrency {
        group: "g".into(),
        cancel_in_progress: true,
    });
    assert!(p
        .canonical_json()
        .ends_with(r#","concurrency":{"group":"g","cancel_in_progress":true}}"#));
}

/// A 64-byte name: `prefix`, `x`s, then `n` in 4 digits (near misses of each other).
fn long(prefix: &str, n: usize) -> String {
    format!("{prefix:x<60}{n:04}")
}

/// What validating `plan` spent, with no deadline.
fn spent(plan: &Plan, map: &SourceMap) -> (Vec<Diagnostic>, crate::diagnostic::Work) {
    let mut budget = Budget::unlimited_time();
    let found = validate_within(plan, map, &Limits::default(), "w", &mut budget);
    (found, budget.spent)
}

fn assert_within_the_plan_budget(work: crate::diagnostic::Work) {
    use crate::diagnostic::{MAX_CELLS, MAX_COMPARISONS, MAX_SUGGESTIONS};
    assert!(work.suggestions <= MAX_SUGGESTIONS, "{work:?}");
    assert!(work.comparisons <= MAX_COMPARISONS, "{work:?}");
    assert!(work.cells <= MAX_CELLS, "{work:?}");
}

/// 14 steps, each with 1,000 long dependencies and 100 `needs_artifacts` plus a
/// `workspace_from` that are near misses of them: 1 MB, within every bound.
fn hand_off_bomb() -> (Plan, SourceMap) {
    let steps = (0..14)
        .map(|i| {
            let mut s = step(&format!("s{i}"), &[]);
            s.depends_on = (0..1000).map(|j| long("d", j)).collect();
            s.needs_artifacts = (0..100).map(|j| long("n", j)).collect();
            s.workspace_from = Some(long("w", 0));
            s
        })
        .collect();
    plan(steps, vec![])
}

// regression: the suggestions for bad `needs_artifacts`/`workspace_from` names ran once
// per name over every dependency (10.7 s of CPU for this 1 MB plan).
#[test]
fn hand_off_suggestions_share_the_plan_budget() {
    let (p, m) = hand_off_bomb();
    assert!(p.canonical_json().len() <= Limits::default().max_plan_bytes);
    let (found, work) = spent(&p, &m);
    assert_within_the_plan_budget(work);
    assert_eq!(found.len(), MAX_DIAGNOSTICS);
    assert!(
        found[0].message.contains("(did you mean 'dxxx"),
        "the first names still get a hint: {found:?}"
    );
}

// regression: an unknown `loop_to` got a suggestion over every step id, for every step.
#[test]
fn loop_to_suggestions_share_the_plan_budget() {
    let steps = (0..1000)
        .map(|i| {
            let mut s = step(&long("s", i), &[]);
            s.loop_to = Some(long("t", i));
            s.max_loops = Some(1);
            s
        })
        .collect();
    let (p, m) = plan(steps, vec![]);
    let (found, work) = spent(&p, &m);
    assert_within_the_plan_budget(work);
    assert!(
        found[0].message.contains("loop_to names unknown step"),
        "{found:?}"
    );
}

// Unknown dependencies and template references draw on the same budget as the rest.
#[test]
fn dependency_and_template_suggestions_share_the_plan_budget() {
    let steps = (0..500)
        .map(|i| {
            let mut s = step(&long("s", i), &[]);
            s.depends_on = (0..20).map(|j| long("t", i * 20 + j)).collect();
            s.action = Action::Bash {
                command: format!("echo \"{{{{ steps.{}.outputs.x }}}}\"", long("u", i)),
            };
            s
        })
        .collect();
    let (p, m) = plan(steps, vec![]);
    assert!(p.canonical_json().len() <= Limits::default().max_plan_bytes);
    let (found, work) = spent(&p, &m);
    assert_within_the_plan_budget(work);
    assert_eq!(found.len(), MAX_DIAGNOSTICS, "{found:?}");
}

#[test]
fn a_passed_deadline_stops_validation_with_one_clean_line() {
    let (p, m) = hand_off_bomb();
    let mut budget = Budget::until(std::time::Instant::now(), std::time::Duration::from_secs(2));
    let found = validate_within(&p, &m, &Limits::default(), "w.plue.py", &mut budget);
    assert_eq!(
        found.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        vec!["w.plue.py: validating the plan took longer than 2s and was stopped"]
    );
    assert_eq!(budget.spent, crate::diagnostic::Work::default());
}

// regression: each hand-off name was searched for in every step (steps x names x steps).
#[test]
fn hand_off_names_are_looked_up_not_searched() {
    let steps: Vec<Step> = (0..200usize)
        .map(|i| {
            let deps: Vec<String> = (i.saturating_sub(100)..i)
                .map(|j| format!("s{j}"))
                .collect();
            let mut s = step(&format!("s{i}"), &[]);
            s.needs_artifacts = deps.clone();
            s.depends_on = deps;
            s.artifacts = vec![format!("out{i}")];
            s
        })
        .collect();
    let (mut p, m) = plan(steps, vec![]);
    // At most 200 artifacts patterns in a plan: most steps declare none.
    for s in p.steps.iter_mut().skip(100) {
        s.artifacts.clear();
    }
    let found = messages(&p, &m);
    assert_eq!(found.len(), MAX_DIAGNOSTICS, "{found:?}");
    assert!(
        found[0].ends_with("but step 's100' declares no artifacts="),
        "{found:?}"
    );
}

#[test]
fn environment_names_follow_the_engines_rule() {
    for good in ["prod", "Prod-1", "eu.west_2", "9", &"a".repeat(64)] {
        assert!(is_environment_name(good), "{good}");
    }
    for bad in [
        "",
        "-prod",
        ".prod",
        "prod env",
        "prod/eu",
        "prød",
        &"a".repeat(65),
    ] {
        assert!(!is_environment_name(bad), "{bad}");
    }
    let mut deploy = step("deploy", &[]);
    deploy.environment = Some("prod".into());
    let (p, m) = plan(vec![deploy.clone()], vec![]);
    assert_eq!(messages(&p, &m), Vec::<String>::new());
    deploy.environment = Some("-prod".into());
    let (p, m) = plan(vec![deploy], vec![]);
    assert_eq!(
        messages(&p, &m),
        ["w.plue.py:10:9: step 'deploy': invalid environment name '-prod': use 1 to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"]
    );
}

#[test]
fn an_approval_step_takes_no_environment() {
    let mut gate = Step::new(
        "gate",
        Action::Approval(crate::plan::ApprovalAction {
            message: None,
            approvers: Vec::new(),
            exclude_triggerer: false,
        }),
    );
    gate.environment = Some("prod".into());
    let (p, m) = plan(vec![gate], vec![]);
    assert_eq!(
        messages(&p, &m),
        ["w.plue.py:10:9: approval step 'gate' takes no environment= (nothing runs)"]
    );
}

#[test]
fn a_plan_without_environments_keeps_its_hash() {
    let (p, _) = plan(vec![step("build", &[])], vec![]);
    assert!(!p.canonical_json().contains("environment"));
    let mut with = p.clone();
    with.steps[0].environment = Some("prod".into());
    assert!(with
        .canonical_json()
        .contains(r#""runner":{},"environment":"prod"}"#));
    assert_ne!(with.hash(), p.hash());
}

/// `step` declaring the tokens `tokens` (variable, audience).
fn with_id_tokens(mut step: Step, tokens: &[(&str, &str)]) -> Step {
    step.id_tokens = tokens
        .iter()
        .map(|(name, audience)| (name.to_string(), audience.to_string()))
        .collect();
    step
}

#[test]
fn id_tokens_are_checked_at_their_step() {
    let good = with_id_tokens(
        step("deploy", &[]),
        &[("AWS_ID_TOKEN", "sts.amazonaws.com")],
    );
    let (p, m) = plan(vec![good], vec![]);
    assert_eq!(messages(&p, &m), Vec::<String>::new());

    let mut bad = with_id_tokens(
        step("deploy", &[]),
        &[("aws", "sts.amazonaws.com"), ("TOKEN", "a b"), ("KEY", "x")],
    );
    bad.secrets = vec!["KEY".into()];
    let (p, m) = plan(vec![step("build", &[]), bad], vec![]);
    assert_eq!(
        messages(&p, &m),
        [
            "w.plue.py:11:9: step 'deploy': id_tokens variable 'KEY' is also one of the step's secrets=; name the token another variable",
            "w.plue.py:11:9: step 'deploy': id_tokens audience 'a b' of TOKEN holds a space at character 2; an audience is visible ASCII without spaces, such as 'sts.amazonaws.com' or 'https://vault.example.com'",
            "w.plue.py:11:9: step 'deploy': id_tokens variable 'aws' must match ^[A-Z_][A-Z0-9_]*$ (upper-case letters, digits and '_', not starting with a digit)",
        ]
    );
}

// The worker refuses these on the line that wrote them; a plan from a worker that did not
// is refused the same way.
#[test]
fn only_bash_and_python_steps_take_id_tokens() {
    let mut agent = with_id_tokens(step("agent", &[]), &[("AWS_ID_TOKEN", "sts.amazonaws.com")]);
    agent.action = Action::Llm(crate::plan::LlmAction {
        prompt: Some("deploy".into()),
        ..Default::default()
    });
    let mut gate = with_id_tokens(step("gate", &[]), &[("AWS_ID_TOKEN", "sts.amazonaws.com")]);
    gate.action = Action::Approval(crate::plan::ApprovalAction {
        message: None,
        approvers: Vec::new(),
        exclude_triggerer: false,
    });
    let mut python = with_id_tokens(step("py", &[]), &[("AWS_ID_TOKEN", "sts.amazonaws.com")]);
    python.action = Action::Python {
        script: "pass".into(),
        fresh_interpreter: false,
    };
    let (p, m) = plan(vec![agent, gate, python], vec![]);
    assert_eq!(
        messages(&p, &m),
        [
            "w.plue.py:10:9: llm step 'agent' takes no id_tokens= (an agent's tools must not hold a cloud identity; only bash and python steps do)",
            "w.plue.py:11:9: approval step 'gate' takes no id_tokens= (nothing runs)",
        ]
    );
}

#[test]
fn id_tokens_are_counted_and_their_lengths_bounded_first() {
    let many: Vec<(String, String)> = (0..9).map(|i| (format!("T{i}"), "a".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
    let (p, m) = plan(vec![with_id_tokens(step("d", &[]), &many)], vec![]);
    assert_eq!(
        messages(&p, &m),
        ["w.plue.py:10:9: 9 id_tokens entries; the limit is 8"]
    );
    let eight = &many[..8];
    let (p, m) = plan(vec![with_id_tokens(step("d", &[]), eight)], vec![]);
    assert_eq!(messages(&p, &m), Vec::<String>::new());

    let long_name = "A".repeat(65);
    let (p, m) = plan(
        vec![with_id_tokens(step("d", &[]), &[(&long_name, "a")])],
        vec![],
    );
    let found = messages(&p, &m);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("w.plue.py:10:9: id_tokens variable 'AAAA")
            && found[0].ends_with("is 65 bytes; the limit is 64"),
        "{found:?}"
    );
    let (p, m) = plan(
        vec![with_id_tokens(step("d", &[]), &[(&long_name[..64], "a")])],
        vec![],
    );
    assert_eq!(messages(&p, &m), Vec::<String>::new());

    let long_audience = format!("https://{}", "a".repeat(249));
    let (p, m) = plan(
        vec![with_id_tokens(step("d", &[]), &[("T", &long_audience)])],
        vec![],
    );
    let found = messages(&p, &m);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("w.plue.py:10:9: id_tokens audience 'https://aaa")
            && found[0].ends_with("is 257 bytes; the limit is 256"),
        "{found:?}"
    );
    let (p, m) = plan(
        vec![with_id_tokens(
            step("d", &[]),
            &[("T", &long_audience[..256])],
        )],
        vec![],
    );
    assert_eq!(messages(&p, &m), Vec::<String>::new());
}

#[test]
fn a_plan_without_id_tokens_keeps_its_hash() {
    let (p, _) = plan(vec![step("build", &[])], vec![]);
    assert!(!p.canonical_json().contains("id_tokens"));
    let mut with = p.clone();
    with.steps[0].id_tokens = BTreeMap::from([("AWS_ID_TOKEN".into(), "sts.amazonaws.com".into())]);
    assert!(with
        .canonical_json()
        .contains(r#""id_tokens":{"AWS_ID_TOKEN":"sts.amazonaws.com"}"#));
    assert_ne!(with.hash(), p.hash());
}
