//! Tests of dispatch documents, including the attacker's: hostile outputs run through
//! real `bash` and `/usr/bin/python3`.
//!
//! Why one file past ~600 lines: the attacker's table of hostile values through real `bash`
//! and `python3`, and the document tests they build on.

use evaluator::plan::{Action, LlmAction};
use serde_json::json;

use super::*;

fn plan_with(command: &str) -> Plan {
    let mut plan = Plan {
        env: BTreeMap::from([("A".into(), "1".into())]),
        ..Plan::new("p", vec![Step::bash("use", command)])
    };
    plan.steps[0]
        .env
        .insert("B".into(), "{{ steps.build-it.outputs.version }}".into());
    plan
}

fn results() -> BTreeMap<&'static str, StepResult<'static>> {
    BTreeMap::from([(
        "build-it",
        StepResult {
            status: "succeeded",
            outputs: Arc::new(BTreeMap::from([("version".into(), "1.2.3 <&>".into())])),
            feedback: false,
            rounds: Default::default(),
        },
    )])
}

#[test]
fn outputs_render_as_variable_reads_in_bash_and_as_text_in_env() {
    let plan = plan_with("echo {{ steps.build-it.outputs.version }} $A");
    let dispatch = build(&plan, &plan.steps[0], 7, &results()).unwrap();
    assert_eq!(
        dispatch.action,
        StepAction::Bash {
            command: "echo \"${PLUE_OUTPUT_BUILD_IT_VERSION}\" $A".into()
        }
    );
    assert_eq!(dispatch.env["PLUE_OUTPUT_BUILD_IT_VERSION"], "1.2.3 <&>");
    assert_eq!(dispatch.env["B"], "1.2.3 <&>");
    assert_eq!(dispatch.env["A"], "1");
    assert_eq!(dispatch.env["PLUE_RUN_ID"], "7");
}

#[test]
fn a_missing_output_is_an_error_naming_it() {
    let plan = plan_with("echo {{ steps.build-it.outputs.nope }}");
    let err = build(&plan, &plan.steps[0], 1, &results())
        .unwrap_err()
        .to_string();
    assert!(err.contains("steps.build-it.outputs.nope"), "{err}");
    assert!(err.starts_with("command: "), "{err}");
}

#[test]
fn text_without_templates_is_untouched() {
    let plan = plan_with("echo '{ not a template }' && jq '.a'");
    let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
    assert_eq!(
        dispatch.action,
        StepAction::Bash {
            command: "echo '{ not a template }' && jq '.a'".into()
        }
    );
}

#[test]
fn a_broken_template_is_an_error() {
    let plan = plan_with("echo {{ steps.build-it.outputs.version");
    let err = build(&plan, &plan.steps[0], 1, &results())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("command: "), "{err}");
    assert!(err.contains("not closed"), "{err}");
}

fn llm_plan(prompt: Option<&str>, secrets: &[&str]) -> Plan {
    let action = LlmAction {
        prompt: prompt.map(str::to_owned),
        prompt_file: prompt.is_none().then(|| "prompts/review.md".to_owned()),
        inputs: BTreeMap::from([
            (
                "version".into(),
                json!("v{{ steps.build-it.outputs.version }}"),
            ),
            (
                "nested".into(),
                json!({"list": ["{{ steps.build-it.status }}", 3, true], "plain": "{ x }"}),
            ),
        ]),
        model: Some("claude-haiku-4-5".into()),
        max_turns: None,
        tools: vec!["read_file".into(), "grep".into()],
        safe_outputs: None,
        max_tokens: None,
        max_cost_usd: None,
        ..Default::default()
    };
    let mut step = Step::new("review", Action::Llm(action));
    step.secrets = secrets.iter().map(|s| s.to_string()).collect();
    Plan::new("p", vec![step])
}

#[test]
fn a_verdict_result_is_sent_as_its_schema_failing_on_reject() {
    let mut plan = llm_plan(Some("Review"), &[]);
    let Action::Llm(llm) = &mut plan.steps[0].action else {
        unreachable!("an llm plan")
    };
    llm.result = Some(evaluator::result::ResultSpec::Shorthand(
        evaluator::result::Shorthand::Verdict,
    ));
    llm.system_prompt = Some("Be strict.".into());
    let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
    let StepAction::Llm {
        result,
        system_prompt,
        ..
    } = dispatch.action
    else {
        panic!("not an llm action: {:?}", dispatch.action);
    };
    let result = result.expect("a result contract");
    assert_eq!(result.schema, evaluator::result::verdict_schema());
    assert_eq!(
        result.fail_when,
        BTreeMap::from([("verdict".to_owned(), vec![json!("reject")])])
    );
    assert_eq!(system_prompt.as_deref(), Some("Be strict."));
}

#[test]
fn llm_steps_render_prompt_and_inputs_and_pass_the_rest_through() {
    let plan = llm_plan(Some("Review {{ steps.build-it.outputs.version }}"), &[]);
    let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
    let StepAction::Llm {
        prompt,
        prompt_file,
        inputs,
        model,
        max_turns,
        tools,
        result,
        system_prompt,
        ..
    } = dispatch.action
    else {
        panic!("not an llm action: {:?}", dispatch.action);
    };
    assert_eq!((result, system_prompt), (None, None));
    assert_eq!(prompt.as_deref(), Some("Review 1.2.3 <&>"));
    assert_eq!(prompt_file, None);
    assert_eq!(inputs["version"], json!("v1.2.3 <&>"));
    assert_eq!(
        inputs["nested"],
        json!({"list": ["succeeded", 3, true], "plain": "{ x }"})
    );
    assert_eq!(model.as_deref(), Some("claude-haiku-4-5"));
    assert_eq!(max_turns, None);
    assert_eq!(tools, ["read_file", "grep"]);
}

#[test]
fn llm_steps_get_the_api_key_secret_once() {
    let plan = llm_plan(None, &["OTHER"]);
    let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
    assert_eq!(dispatch.secrets, ["OTHER", LLM_KEY_SECRET]);
    let StepAction::Llm { prompt_file, .. } = &dispatch.action else {
        panic!("not an llm action");
    };
    assert_eq!(prompt_file.as_deref(), Some("prompts/review.md"));
    let plan = llm_plan(None, &[LLM_KEY_SECRET]);
    let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
    assert_eq!(dispatch.secrets, [LLM_KEY_SECRET]);
    // Other kinds of steps do not get it.
    let plan = plan_with("true");
    let dispatch = build(&plan, &plan.steps[0], 1, &results()).unwrap();
    assert!(dispatch.secrets.is_empty());
}

#[test]
fn a_missing_output_in_llm_inputs_names_where_it_is() {
    let mut plan = llm_plan(None, &[]);
    let Action::Llm(llm) = &mut plan.steps[0].action else {
        unreachable!()
    };
    llm.inputs.insert(
        "files".into(),
        json!(["a", "{{ steps.build-it.outputs.nope }}"]),
    );
    let err = build(&plan, &plan.steps[0], 1, &results())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("inputs.files[1]: "), "{err}");
    assert!(err.contains("steps.build-it.outputs.nope"), "{err}");
}

// --- Playing the attacker: an upstream output that tries to become code. ---

/// Replaced by a file that must never be created.
const MARKER: &str = "MARKER_PATH";

/// Values an attacker who controls an output would try.
const HOSTILE: &[&str] = &[
    "$(touch MARKER_PATH)",
    "`touch MARKER_PATH`",
    "x'; touch MARKER_PATH; echo '",
    "x\"; touch MARKER_PATH; echo \"",
    "line one\ntouch MARKER_PATH\n",
    "back\\slash \\' \\\" \\n \\",
    "''' \"\"\" \\N{BULLET} {x} {0.__class__} %s ${IFS} * ~ !! -n",
    "unicode é 日本 🙂 \u{202e}rtl \t tab \u{7f}",
    "__import__('os').system('touch MARKER_PATH')",
    "\"\"\"); __import__('os').system('touch MARKER_PATH'); print(\"\"\"",
    "ENDOFTEXT\ntouch MARKER_PATH\nENDOFTEXT",
    "",
    // Bash runs a subscript's expansions where it evaluates a value as arithmetic.
    "a[$(touch MARKER_PATH)]",
    "x[`touch MARKER_PATH`]",
    // ... and assigns variables: the next command would be ./0/<command>.
    "PATH=0",
    "{0.__init__.__globals__[os].environ[SECRET]} {x.__class__}",
];

fn hostile_results(value: &str) -> BTreeMap<&'static str, StepResult<'static>> {
    BTreeMap::from([(
        "up",
        StepResult {
            status: "succeeded",
            outputs: Arc::new(BTreeMap::from([("x".into(), value.into())])),
            feedback: false,
            rounds: Default::default(),
        },
    )])
}

fn code_step(action: Action) -> Plan {
    Plan::new("p", vec![Step::new("down", action).after(&["up"])])
}

fn llm_with(inputs: BTreeMap<String, Value>) -> Action {
    Action::Llm(LlmAction {
        prompt: Some("p".into()),
        prompt_file: None,
        inputs,
        model: None,
        max_turns: None,
        tools: vec![],
        safe_outputs: None,
        max_tokens: None,
        max_cost_usd: None,
        ..Default::default()
    })
}

/// Runs the dispatched action as the runner does, with only the dispatch's env.
fn run(dispatch: &Dispatch) -> String {
    let (program, args) = match &dispatch.action {
        StepAction::Bash { command } => (
            "bash",
            vec![
                "--noprofile",
                "--norc",
                "-eo",
                "pipefail",
                "-c",
                command.as_str(),
            ],
        ),
        StepAction::Python { script, .. } => ("/usr/bin/python3", vec!["-c", script.as_str()]),
        StepAction::Llm { .. } => unreachable!("not a process"),
    };
    let out = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .env("PYTHONIOENCODING", "utf-8")
        .env("SECRET", "a-secret-no-output-may-read")
        .envs(&dispatch.env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} failed: {}\n{:?}",
        String::from_utf8_lossy(&out.stderr),
        dispatch.action
    );
    String::from_utf8(out.stdout).unwrap()
}

fn with_marker(value: &str, marker: &std::path::Path) -> String {
    value.replace(MARKER, marker.to_str().unwrap())
}

/// The quoting contexts of bash a reference may stand in, each printing `<value>`.
const BASH_CONTEXTS: &str = r#"printf '<%s>' {{ steps.up.outputs.x }}
printf '<%s>' "{{ steps.up.outputs.x }}"
printf '<%s>' "pre {{ steps.up.outputs.x }} post"
printf '<%s>' "$(printf '%s' {{ steps.up.outputs.x }})"
printf '<%s>' "${UNSET:-{{ steps.up.outputs.x }}}"
cat <<ENDOFTEXT
<{{ steps.up.outputs.x }}>
$(printf '[%s]' {{ steps.up.outputs.x }})
ENDOFTEXT
# a comment {{ steps.up.outputs.x }}
printf '<%s>' {{ steps.up.status }} '{{ steps.up.status }}'
"#;

fn bash_expected(value: &str) -> String {
    [
        value.to_string(),
        value.to_string(),
        format!("pre {value} post"),
        // $(...) drops trailing newlines.
        value.trim_end_matches('\n').to_string(),
        value.to_string(),
    ]
    .iter()
    .map(|v| format!("<{v}>"))
    .chain([
        // In a here-document's `$(...)` the value is one word again.
        format!("<{value}>\n[{value}]\n"),
        "<succeeded><succeeded>".to_string(),
    ])
    .collect()
}

#[test]
fn hostile_output_stays_text_in_bash() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let plan = code_step(Action::Bash {
        command: BASH_CONTEXTS.into(),
    });
    for value in HOSTILE {
        let value = with_marker(value, &marker);
        let built = build(&plan, &plan.steps[0], 1, &hostile_results(&value));
        if bash::evaluation_hazard(&value).is_some() {
            let err = built.unwrap_err().to_string();
            assert!(err.contains("which bash acts on"), "{err}");
            continue;
        }
        let dispatch = built.unwrap();
        let StepAction::Bash { command } = &dispatch.action else {
            unreachable!()
        };
        assert!(value.is_empty() || !command.contains(&value), "{command}");
        assert_eq!(run(&dispatch), bash_expected(&value), "value {value:?}");
        assert!(!marker.exists(), "{value:?} ran code");
    }
}

/// The contexts of Python a reference may stand in, each writing `<value>`.
const PYTHON_CONTEXTS: &str = r#"import sys
w = lambda s: sys.stdout.write('<' + s + '>')
w({{ steps.up.outputs.x }})
w('pre ' + {{ steps.up.outputs.x }} + ' post')
w(f'{1 + 1} { {{ steps.up.outputs.x }} }')
w(f"{ {{ steps.up.outputs.x }} }")
w({{ steps.up.outputs.x }} * 2)
# a comment {{ steps.up.outputs.x }}
w({{ steps.up.status }} + '{{ steps.up.status }}')
w('Hello ' + {{ steps.up.outputs.x }} + ', from {0.__class__.__name__}'.format(w))
"#;

fn python_expected(value: &str) -> String {
    [
        value.to_string(),
        format!("pre {value} post"),
        format!("2 {value}"),
        value.to_string(),
        format!("{value}{value}"),
        "succeededsucceeded".to_string(),
        format!("Hello {value}, from function"),
    ]
    .iter()
    .map(|v| format!("<{v}>"))
    .collect()
}

#[test]
fn hostile_output_stays_text_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let plan = code_step(Action::Python {
        script: PYTHON_CONTEXTS.into(),
        fresh_interpreter: false,
    });
    for value in HOSTILE {
        let value = with_marker(value, &marker);
        let dispatch = build(&plan, &plan.steps[0], 1, &hostile_results(&value)).unwrap();
        assert_eq!(run(&dispatch), python_expected(&value), "value {value:?}");
        assert!(!marker.exists(), "{value:?} ran code");
    }
}

#[test]
fn hostile_output_is_plain_text_in_env_prompts_and_inputs() {
    let value = "$(touch x)\n{{ steps.up.status }}";
    let mut plan = code_step(llm_with(BTreeMap::from([(
        "i".into(),
        json!(["{{ steps.up.outputs.x }}"]),
    )])));
    plan.steps[0]
        .env
        .insert("E".into(), "{{ steps.up.outputs.x }}".into());
    let dispatch = build(&plan, &plan.steps[0], 1, &hostile_results(value)).unwrap();
    assert_eq!(dispatch.env["E"], value);
    let StepAction::Llm { inputs, .. } = &dispatch.action else {
        unreachable!()
    };
    // A value is never read as a template again.
    assert_eq!(inputs["i"], json!([value]));
}

#[test]
fn the_raw_form_pastes_the_value_as_code() {
    // Documented as unsafe: the author asked for the value to be code.
    let plan = code_step(Action::Bash {
        command: "{{ raw steps.up.outputs.x }}".into(),
    });
    let dispatch = build(&plan, &plan.steps[0], 1, &hostile_results("echo pasted")).unwrap();
    assert_eq!(run(&dispatch), "pasted\n");
    let plan = code_step(Action::Python {
        script: "print({{ raw steps.up.outputs.x }})".into(),
        fresh_interpreter: false,
    });
    let dispatch = build(&plan, &plan.steps[0], 1, &hostile_results("6 * 7")).unwrap();
    assert_eq!(run(&dispatch), "42\n");
}

#[test]
fn dependencies_outputs_reach_code_steps_as_variables() {
    let mut plan = code_step(Action::Bash {
        command: r#"printf '%s|' "$PLUE_OUTPUT_UP_X" "$PLUE_OUTPUT_UP_MY_KEY" "${PLUE_OUTPUT_FAR_Z-unset}" {{ steps.up.outputs.x }}"#.into(),
    });
    // An env entry cannot make a reference read something else.
    plan.steps[0]
        .env
        .insert("PLUE_OUTPUT_UP_X".into(), "shadowed".into());
    let mut results = hostile_results("$(touch nothing)");
    let up = results.get_mut("up").unwrap();
    Arc::make_mut(&mut up.outputs).insert("my-key".into(), "v2".into());
    results.insert(
        "far",
        StepResult {
            status: "succeeded",
            outputs: Arc::new(BTreeMap::from([("z".into(), "not a dependency".into())])),
            feedback: false,
            rounds: Default::default(),
        },
    );
    let dispatch = build(&plan, &plan.steps[0], 1, &results).unwrap();
    assert_eq!(
        run(&dispatch),
        "$(touch nothing)|v2|unset|$(touch nothing)|"
    );
    // llm steps start no process of their own: no output variables.
    let plan = code_step(llm_with(BTreeMap::new()));
    let dispatch = build(&plan, &plan.steps[0], 1, &results).unwrap();
    assert!(!dispatch
        .env
        .keys()
        .any(|k| k.starts_with(OUTPUT_VAR_PREFIX)));
}

#[test]
fn colliding_variable_names_are_left_out_and_references_still_read_their_value() {
    let mut plan = code_step(Action::Bash {
        command: r#"printf '%s|' {{ steps.a-b.outputs.c }} {{ steps.a.outputs.b_c }} "${PLUE_OUTPUT_A_B_C-unset}""#.into(),
    });
    plan.steps[0].depends_on = vec!["a-b".into(), "a".into()];
    let results = BTreeMap::from([
        (
            "a-b",
            StepResult {
                status: "succeeded",
                outputs: Arc::new(BTreeMap::from([("c".into(), "from a-b".into())])),
                feedback: false,
                rounds: Default::default(),
            },
        ),
        (
            "a",
            StepResult {
                status: "succeeded",
                outputs: Arc::new(BTreeMap::from([("b_c".into(), "from a".into())])),
                feedback: false,
                rounds: Default::default(),
            },
        ),
    ]);
    let dispatch = build(&plan, &plan.steps[0], 1, &results).unwrap();
    assert!(!dispatch.env.contains_key("PLUE_OUTPUT_A_B_C"));
    assert_eq!(run(&dispatch), "from a-b|from a|unset|");
    assert_eq!(
        output_var("build-it", "my-Key"),
        "PLUE_OUTPUT_BUILD_IT_MY_KEY"
    );
    assert_eq!(output_var("é", "k"), "PLUE_OUTPUT___K");
}

#[test]
fn outputs_inside_literals_fail_the_step() {
    // regression (RT-6): `"Hello {{ ref }}".format(obj)` made the output a format string
    // that read `{0.__init__.__globals__[os].environ[SECRET]}`. Validation refuses it; so
    // does dispatch, for a plan that skipped validation.
    let value = "{0.__init__.__globals__[os].environ[SECRET]}";
    for script in [
        r#"print("Hello {{ steps.up.outputs.x }}, {0}".format(1))"#,
        r#"print(f'{1} {{ steps.up.outputs.x }}')"#,
        r#"print(r'''{{ steps.up.outputs.x }}''')"#,
    ] {
        let plan = code_step(Action::Python {
            script: script.into(),
            fresh_interpreter: false,
        });
        let err = build(&plan, &plan.steps[0], 1, &hostile_results(value))
            .unwrap_err()
            .to_string();
        assert!(err.contains("inside a string literal"), "{script}: {err}");
    }
    for command in [
        "bash -c 'echo {{ steps.up.outputs.x }}'",
        "trap $'echo {{ steps.up.outputs.x }}' EXIT",
    ] {
        let plan = code_step(Action::Bash {
            command: command.into(),
        });
        let err = build(&plan, &plan.steps[0], 1, &hostile_results("$(id)"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("inside single quotes"), "{command}: {err}");
    }
}

#[test]
fn the_raw_form_fails_the_step_wherever_the_plain_form_does() {
    // regression (issue 30): `{{ raw ... }}` was pasted inside single quotes, literals and
    // arithmetic, where the plain form is refused.
    for command in [
        "bash -c 'echo {{ raw steps.up.outputs.x }}'",
        "trap $'{{ raw steps.up.outputs.x }}' EXIT",
        "echo $(( {{ raw steps.up.outputs.x }} + 1 ))",
        "cat <<'EOF'\n{{ raw steps.up.status }}\nEOF",
    ] {
        let plan = code_step(Action::Bash {
            command: command.into(),
        });
        let err = build(&plan, &plan.steps[0], 1, &hostile_results("$(id)"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'raw' is refused"), "{command}: {err}");
    }
    for script in [
        r#"print("{{ raw steps.up.outputs.x }}".format(1))"#,
        r#"print(b'{{ raw steps.up.status }}')"#,
    ] {
        let plan = code_step(Action::Python {
            script: script.into(),
            fresh_interpreter: false,
        });
        let err = build(&plan, &plan.steps[0], 1, &hostile_results("{0}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'raw' is refused"), "{script}: {err}");
    }
}

#[test]
fn an_output_as_a_format_string_fails_the_step() {
    // regression (issue 30): `{{ ref }}.format(obj)` passed validation and dispatch; the
    // output below printed the secret's first character (and `:.2`, `:.3`... the next
    // prefixes, which the masker, matching whole values, let through).
    let value = "{0.__init__.__globals__[os].environ[SECRET]:.1}";
    for script in [
        "import os
class C: pass
print({{ steps.up.outputs.x }}.format(C()))",
        "import os
class C: pass
print(str.format({{ steps.up.outputs.x }}, C()))",
        "import os, string
class C: pass
print(string.Formatter().vformat({{ steps.up.outputs.x }}, (C(),), {}))",
        "import os
class C: pass
print(({{ steps.up.outputs.x }} + '').format_map({'0': C()}))",
        "import os, string
print(string.Template({{ steps.up.outputs.x }}).substitute(os.environ))",
        "import os
print({{ steps.up.outputs.x }} % os.environ)",
        "import os
class C: pass
print({{ raw steps.up.outputs.x }}.format(C()))",
    ] {
        let plan = code_step(Action::Python {
            script: script.into(),
            fresh_interpreter: false,
        });
        let err = build(&plan, &plan.steps[0], 1, &hostile_results(value))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not be"), "{script}: {err}");
    }
    for command in [
        "printf {{ steps.up.outputs.x }}",
        "printf -v x -- \"{{ steps.up.outputs.x }}\"",
    ] {
        let plan = code_step(Action::Bash {
            command: command.into(),
        });
        let err = build(&plan, &plan.steps[0], 1, &hostile_results("%s"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("printf's format"), "{command}: {err}");
    }
    // As a value it is text, and prints as such.
    let plan = code_step(Action::Python {
        script:
            "print('<{}>'.format({{ steps.up.outputs.x }}), '<%s>' % ({{ steps.up.outputs.x }},))"
                .into(),
        fresh_interpreter: false,
    });
    let dispatch = build(&plan, &plan.steps[0], 1, &hostile_results(value)).unwrap();
    assert_eq!(run(&dispatch), format!("<{value}> <{value}>\n"));
    let plan = code_step(Action::Bash {
        command: "printf '<%s>' {{ steps.up.outputs.x }}".into(),
    });
    let dispatch = build(&plan, &plan.steps[0], 1, &hostile_results("%s %q")).unwrap();
    assert_eq!(run(&dispatch), "<%s %q>");
}

#[test]
fn an_output_in_another_program_s_code_fails_the_step() {
    // Double quotes keep a value text for bash, but `bash -c "..."` hands that text to
    // another shell as code: the output `$(touch marker)` ran there.
    for command in [
        "bash -c \"echo {{ steps.up.outputs.x }}\"",
        "eval \"echo {{ steps.up.outputs.x }}\"",
        "trap \"echo {{ steps.up.outputs.x }}\" EXIT",
        "python3 -c \"print('{{ steps.up.outputs.x }}')\"",
    ] {
        let plan = code_step(Action::Bash {
            command: command.into(),
        });
        let err = build(&plan, &plan.steps[0], 1, &hostile_results("$(id)"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("part of code another program parses"),
            "{command}: {err}"
        );
    }
    // As an argument of that program it stays text.
    let plan = code_step(Action::Bash {
        command: "bash -c 'printf \"<%s>\" \"$1\"' _ {{ steps.up.outputs.x }}".into(),
    });
    let dispatch = build(&plan, &plan.steps[0], 1, &hostile_results("$(id) `id`")).unwrap();
    assert_eq!(run(&dispatch), "<$(id) `id`>");
}

/// Contexts where bash evaluates a value as arithmetic or as a variable name, none of which
/// the lexer sees (RT-2).
const ARITHMETIC: &[&str] = &[
    "if [[ {{ steps.up.outputs.x }} -gt 0 ]]; then :; fi",
    "a=(x y); echo \"${a[{{ steps.up.outputs.x }}]}\"",
    "s=hello; echo \"${s:{{ steps.up.outputs.x }}}\"",
    "declare -i k={{ steps.up.outputs.x }}",
    "let \"k = {{ steps.up.outputs.x }} + 1\"",
    "[[ -v {{ steps.up.outputs.x }} ]] || true",
    "printf -v {{ steps.up.outputs.x }} %s x || true",
    "cat <<EOF\n$(( {{ steps.up.outputs.x }} + 1 ))\nEOF",
    "(\\\n( {{ steps.up.outputs.x }} + 1 )) || true",
];

#[test]
fn outputs_bash_would_run_as_arithmetic_fail_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    for command in ARITHMETIC {
        let plan = code_step(Action::Bash {
            command: command.to_string(),
        });
        for hostile in [
            "a[$(touch MARKER_PATH)]",
            "a[`touch MARKER_PATH`]",
            "PATH=0",
            "0 || (HOME=0)",
        ] {
            let value = with_marker(hostile, &marker);
            let err = build(&plan, &plan.steps[0], 1, &hostile_results(&value))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("command: '{{ steps.up.outputs.x }}': the value ")
                    && err.contains("which bash acts on"),
                "{command}: {err}"
            );
            assert!(err.contains("\"$PLUE_OUTPUT_UP_X\""), "{err}");
        }
        // The value names another output whose value would run (`_`: bash's copy of the
        // last argument, here the other output): refused too.
        for name in ["1 + PLUE_OUTPUT_UP_Y", "_"] {
            let mut results = hostile_results(name);
            let up = results.get_mut("up").unwrap();
            let value = with_marker("a[$(touch MARKER_PATH)]", &marker);
            Arc::make_mut(&mut up.outputs).insert("y".into(), value);
            let plan = code_step(Action::Bash {
                command: format!("echo \"$PLUE_OUTPUT_UP_Y\" >/dev/null\n{command}"),
            });
            let err = build(&plan, &plan.steps[0], 1, &results)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("receives $PLUE_OUTPUT_UP_Y"),
                "{command}: {err}"
            );
        }
        // An ordinary value, even with brackets or a lowercase assignment, runs.
        for fine in ["1", "a[1]", "k=v"] {
            let dispatch = build(&plan, &plan.steps[0], 1, &hostile_results(fine)).unwrap();
            run(&dispatch);
        }
    }
    assert!(!marker.exists());
}

#[test]
fn hostile_output_in_arithmetic_fails_the_step() {
    // bash evaluates `a[$(cmd)]` inside $(( )): no quoting makes that safe.
    let plan = code_step(Action::Bash {
        command: "echo $(( {{ steps.up.outputs.x }} + 1 ))".into(),
    });
    let err = build(&plan, &plan.steps[0], 1, &hostile_results("a[$(id)]"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("command: ") && err.contains("arithmetic"),
        "{err}"
    );
}

#[test]
fn each_bomb_fails_the_step_in_milliseconds() {
    // regression (issue 10): eight nested #each over @root.steps cost 15 s and 760 MB.
    let bomb = format!(
        "{}x{}",
        "{{#each @root.steps}}".repeat(8),
        "{{/each}}".repeat(8)
    );
    let plan = code_step(Action::Bash { command: bomb });
    let started = std::time::Instant::now();
    let err = build(&plan, &plan.steps[0], 1, &hostile_results("v"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'@root'"), "{err}");
    // 15 s before the fix; loose enough for a debug build on a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[test]
fn rendering_past_its_bounds_fails_the_step() {
    let big = "x".repeat(64 * 1024);
    // One text: 17 pasted copies of 64 KiB are over 1 MiB.
    let plan = code_step(Action::Bash {
        command: "{{ raw steps.up.outputs.x }}".repeat(17),
    });
    let err = build(&plan, &plan.steps[0], 1, &hostile_results(&big))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("exceeds the limit of {MAX_RENDERED_BYTES} bytes")),
        "{err}"
    );
    // The whole step: five inputs of 15 copies each are over 4 MiB.
    let inputs = (0..5)
        .map(|i| {
            let text = "{{ steps.up.outputs.x }}".repeat(15);
            (format!("i{i}"), Value::String(text))
        })
        .collect();
    let plan = code_step(llm_with(inputs));
    let err = build(&plan, &plan.steps[0], 1, &hostile_results(&big))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the step's rendered texts exceed"), "{err}");
    // A bash step's env: 20 values of 64 KiB are over the 1 MiB a process may start with
    // (the dispatch-time bomb: many such steps would each cost the engine their size).
    let mut plan = code_step(Action::Bash {
        command: "true".into(),
    });
    for i in 0..20 {
        plan.steps[0]
            .env
            .insert(format!("V{i}"), "{{ steps.up.outputs.x }}".into());
    }
    let err = build(&plan, &plan.steps[0], 1, &hostile_results(&big))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the step's rendered texts exceed"), "{err}");
    assert!(
        err.contains(&MAX_PROCESS_RENDERED_BYTES.to_string()),
        "{err}"
    );
    // Output variables: 20 outputs of 64 KiB are over 1 MiB of environment.
    let plan = code_step(Action::Bash {
        command: "true".into(),
    });
    let mut results = hostile_results("");
    let up = results.get_mut("up").unwrap();
    for i in 0..20 {
        Arc::make_mut(&mut up.outputs).insert(format!("k{i}"), big.clone());
    }
    let err = build(&plan, &plan.steps[0], 1, &results)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PLUE_OUTPUT_* variables take"), "{err}");
}

#[test]
fn a_step_reads_its_dependencies_and_what_its_templates_name() {
    let mut plan = Plan {
        env: BTreeMap::from([("ALL".into(), "{{ steps.a.status }}".into())]),
        ..Plan::new(
            "p",
            vec![
                Step::bash("a", "true"),
                Step::bash("b", "true"),
                Step::bash("c", "true"),
                Step::new(
                    "d",
                    Action::Python {
                        script: "print({{ steps.b.outputs.x }}) # {{ steps.nope.status }}".into(),
                        fresh_interpreter: false,
                    },
                )
                .after(&["c"]),
                Step::new(
                    "e",
                    llm_with(BTreeMap::from([(
                        "i".into(),
                        json!({"deep": ["{{ steps.c.outputs.y }}"]}),
                    )])),
                ),
            ],
        )
    };
    plan.steps[4]
        .env
        .insert("E".into(), "{{ steps.d.outputs.z }} {{ broken".into());
    plan.steps[1]
        .env
        .insert("F".into(), "{{ steps.c.outputs.z }}".into());
    assert_eq!(
        reads(&plan),
        [vec![0], vec![0, 2], vec![0], vec![0, 1, 2], vec![0, 2]]
    );
}

#[test]
fn summoned_text_is_plain_env_cut_only_where_a_process_could_not_start() {
    let mut ctx = evaluator::EvalContext::local(evaluator::Event::Comment, "main");
    let hostile = "{{ steps.x.outputs.y }} $(rm -rf /) \u{202e}{% raw %}";
    ctx.comment.as_mut().unwrap().body = hostile.into();
    let issue = ctx.issue.as_mut().unwrap();
    issue.body = "é".repeat(MAX_SUMMONED_VALUE_BYTES); // two bytes each
    issue.title = "a\0b".into();
    let env = summoned_env(&ctx);
    assert_eq!(env["PLUE_COMMENT_BODY"], hostile);
    assert_eq!(env["PLUE_ISSUE_TITLE"], "a\u{fffd}b");
    assert_eq!(env["PLUE_ISSUE_NUMBER"], "1");
    assert_eq!(env["PLUE_ISSUE_BODY"].len(), MAX_SUMMONED_VALUE_BYTES);
    assert_eq!(env["PLUE_SUMMON_TRUNCATED"], "PLUE_ISSUE_BODY");
    assert!(summoned_env(&evaluator::EvalContext::local(
        evaluator::Event::Push,
        "main"
    ))
    .is_empty());
}

#[test]
fn a_steps_caches_travel_in_its_dispatch_and_reach_the_runner_with_the_partition() {
    let cache = evaluator::caches::Cache {
        name: "rust".into(),
        paths: vec!["target".into(), "~/.cargo/registry".into()],
        key: vec!["Cargo.lock".into()],
        restore_prefixes: vec!["rust-".into()],
    };
    let mut plan = Plan::new("p", vec![Step::bash("build", "true")]);
    plan.steps[0].caches = vec![cache];
    let dispatch = build(&plan, &plan.steps[0], 1, &BTreeMap::new()).unwrap();
    let json = serde_json::to_value(&dispatch).unwrap();
    assert_eq!(
        json["caches"],
        json!([{"name": "rust", "paths": ["target", "~/.cargo/registry"], "key": ["Cargo.lock"], "restore_prefixes": ["rust-"]}])
    );
    let back: Dispatch = serde_json::from_value(json).unwrap();
    let specs = back.cache_specs("fork:eve/plue", 64 << 20);
    assert_eq!(specs.len(), 1);
    assert_eq!(
        specs[0].max_bytes,
        64 << 20,
        "the engine's bound reaches the runner"
    );
    assert_eq!(specs[0].name, "rust");
    assert_eq!(specs[0].key_files, ["Cargo.lock"]);
    assert_eq!(specs[0].restore_prefixes, ["rust-"]);
    assert_eq!(specs[0].partition, "fork:eve/plue");
    // A step without caches has none in its document (older documents read the same).
    let plain = Plan::new("p", vec![Step::bash("build", "true")]);
    let dispatch = build(&plain, &plain.steps[0], 1, &BTreeMap::new()).unwrap();
    assert!(!serde_json::to_string(&dispatch).unwrap().contains("caches"));
}
