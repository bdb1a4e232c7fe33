//! Tests of the template grammar, rendering bounds and validation.

use std::collections::BTreeMap;

use super::*;
use crate::plan::{Action, LlmAction, Plan, SourceMap, Step};

fn r(step: &str, key: &str) -> Reference {
    Reference {
        step: step.into(),
        field: Field::Output(key.into()),
        raw: false,
    }
}

#[test]
fn text_without_braces_is_one_literal() {
    let t = Template::parse("echo '{ x }' && jq '.a' }} $x").unwrap();
    assert_eq!(
        t.segments,
        [Segment::Text("echo '{ x }' && jq '.a' }} $x".into())]
    );
    assert_eq!(Template::parse("").unwrap().segments, []);
}

#[test]
fn references_with_and_without_spaces_and_raw() {
    let t = Template::parse(
        "a{{steps.b-1.outputs.v}}c{{  raw steps.x.status\t}}{{ steps._y.outputs.K-2 }}",
    )
    .unwrap();
    assert_eq!(
        t.segments,
        [
            Segment::Text("a".into()),
            Segment::Ref(r("b-1", "v")),
            Segment::Text("c".into()),
            Segment::Ref(Reference {
                step: "x".into(),
                field: Field::Status,
                raw: true
            }),
            Segment::Ref(r("_y", "K-2")),
        ]
    );
    assert_eq!(
        t.references().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "{{ steps.b-1.outputs.v }}",
            "{{ raw steps.x.status }}",
            "{{ steps._y.outputs.K-2 }}"
        ]
    );
}

#[test]
fn backslash_escapes_braces() {
    let t = Template::parse(r"a \{{ steps.x.status }} b \\{{ steps.x.status }}").unwrap();
    let (text, at) = t.literal_text();
    assert_eq!(text, "a {{ steps.x.status }} b \\\0");
    assert_eq!(at, [text.len() - 1]);
    assert_eq!(
        Template::parse(r"\{{").unwrap().segments,
        [Segment::Text("{{".into())]
    );
}

#[test]
fn handlebars_constructs_are_refused_with_their_name() {
    for (text, says) in [
        ("{{#each @root.steps}}{{/each}}", "'@root'"),
        ("{{#each steps}}x{{/each}}", "block helpers"),
        ("{{#if steps.a.status}}x{{/if}}", "block helpers"),
        ("{{> partial}}", "partials"),
        ("{{! note }}", "comments"),
        ("{{{ steps.a.status }}}", "triple braces"),
        ("{{~ steps.a.status }}", "whitespace control"),
        ("{{ }}", "empty"),
        ("{{ steps.a }}", "not a reference"),
        ("{{ steps.a.outputs }}", "not a reference"),
        ("{{ steps.a.outputs.x.y }}", "not a reference"),
        ("{{ steps.a.outputs.9x }}", "not an output name"),
        ("{{ steps.a b.status }}", "not a step id"),
        ("{{ json steps.a.status }}", "not a reference"),
        ("{{ steps.a.status", "not closed"),
        ("{{.State}}", "not a reference"),
    ] {
        let err = Template::parse(text).unwrap_err();
        assert!(err.message.contains(says), "{text}: {}", err.message);
        assert_eq!(err.offset, 0, "{text}");
        assert!(!err.message.contains('\n'));
    }
    let err = Template::parse("ok {{ steps.a.status }}\n{{#each x}}").unwrap_err();
    assert_eq!(err.offset, 24);
    assert!(err.message.contains("\\{{"), "{}", err.message);
}

#[test]
fn messages_echo_user_text_escaped_and_short() {
    let err = Template::parse(&format!("{{{{ \x1b[2J\n{} }}}}", "x".repeat(500))).unwrap_err();
    assert!(
        !err.message.contains('\x1b') && !err.message.contains('\n'),
        "{}",
        err.message
    );
    assert!(err.message.len() < 400, "{}", err.message);
}

#[test]
fn rendering_is_bounded() {
    let t = Template::parse("a{{ steps.x.outputs.v }}{{ steps.x.outputs.v }}b").unwrap();
    let out = t
        .render(100, |i, _| Ok::<_, String>(format!("<{i}>")))
        .unwrap();
    assert_eq!(out, "a<0><1>b");
    let err = t
        .render(100, |_, _| Ok::<_, String>("x".repeat(60)))
        .unwrap_err();
    assert_eq!(err, RenderError::TooLarge { limit: 100 });
    assert!(err.to_string().contains("100 bytes"));
    let err = t
        .render(100, |_, r| Err(format!("no {}", r.step)))
        .unwrap_err();
    assert_eq!(err.to_string(), "no x");
}

#[test]
fn nested_each_bomb_is_refused_fast() {
    // regression (issue 10): eight nested #each over @root.steps cost 15 s and 760 MB.
    let mut bomb = String::new();
    for _ in 0..8 {
        bomb.push_str("{{#each @root.steps}}");
    }
    bomb.push('x');
    for _ in 0..8 {
        bomb.push_str("{{/each}}");
    }
    let started = std::time::Instant::now();
    assert!(Template::parse(&bomb).is_err());
    let huge = "{{ steps.a.status }}".repeat(50_000);
    assert_eq!(Template::parse(&huge).unwrap().references().count(), 50_000);
    // The bomb cost 15 s when it was rendered; now parsing refuses it. The bound, loose
    // enough for a debug build on a loaded machine, holds both parses out of the seconds.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

fn bash_step(id: &str, command: &str, deps: &[&str]) -> Step {
    Step::bash(id, command).after(deps)
}

fn messages(plan: &Plan) -> Vec<String> {
    let map = SourceMap {
        plan: crate::plan::Location { line: 1, col: 1 },
        triggers: vec![],
        steps: (0..plan.steps.len() as u32)
            .map(|i| crate::plan::Location {
                line: 10 + i,
                col: 5,
            })
            .collect(),
    };
    check(
        plan,
        &map,
        "w.plue.py",
        &mut crate::diagnostic::Budget::unlimited_time(),
    )
    .iter()
    .map(ToString::to_string)
    .collect()
}

fn plan(steps: Vec<Step>) -> Plan {
    Plan::new("p", steps)
}

#[test]
fn validation_accepts_references_to_ancestors() {
    let p = plan(vec![
        bash_step("a", "true", &[]),
        bash_step("b", "echo {{ steps.a.outputs.x }}", &["a"]),
        bash_step(
            "c",
            "echo \"{{ steps.a.outputs.x }}\" '{{ steps.b.status }}'",
            &["b"],
        ),
    ]);
    assert_eq!(messages(&p), Vec::<String>::new());
}

#[test]
fn outputs_inside_literals_are_refused_at_validation() {
    // regression (RT-6): a reference inside a Python literal became part of it, so
    // `"Hello {{ ref }}".format(obj)` made the output a format string that read secrets.
    let python = |id: &str, script: &str| {
        Step::new(
            id,
            Action::Python {
                script: script.into(),
                fresh_interpreter: false,
            },
        )
        .after(&["a"])
    };
    let literals = [
        r#"print('{{ steps.a.outputs.x }}')"#,
        r#"print("Hello {{ steps.a.outputs.x }}".format(1))"#,
        r#"print('''{{ steps.a.outputs.x }}''')"#,
        "print(\"\"\"a\n{{ steps.a.outputs.x }}\"\"\")",
        r#"print(f'x {{ steps.a.outputs.x }}')"#,
        r#"print(r'{{ steps.a.outputs.x }}')"#,
        r#"print(rb'{{ steps.a.outputs.x }}')"#,
        r#"print(u'{{ steps.a.outputs.x }}')"#,
        r#"print(f'''{x} {{ steps.a.outputs.x }}''')"#,
    ];
    let mut steps = vec![bash_step("a", "true", &[])];
    for (i, script) in literals.iter().enumerate() {
        steps.push(python(&format!("p{i}"), script));
    }
    // And bash single quotes, where bash itself expands nothing; the raw form too.
    for (i, command) in [
        "bash -c 'echo {{ steps.a.outputs.x }}'",
        "trap $'echo {{ steps.a.outputs.x }}' EXIT",
        "echo '{{ raw steps.a.outputs.x }}'",
    ]
    .iter()
    .enumerate()
    {
        steps.push(bash_step(&format!("b{i}"), command, &["a"]));
    }
    let got = messages(&plan(steps));
    assert_eq!(got.len(), literals.len() + 3, "{got:#?}");
    assert!(
        got[literals.len() + 2].contains("'raw' is refused"),
        "{got:#?}"
    );
    for message in &got[..literals.len()] {
        assert!(
            message.contains("inside a string literal") || message.contains("bytes literal"),
            "{message}"
        );
    }
    for message in &got[literals.len()..] {
        assert!(message.contains("inside single quotes"), "{message}");
    }
    for message in &got {
        assert!(!message.contains('\n'), "{message}");
    }
    // What the messages suggest passes, and so do statuses inside literals and outputs in
    // f-string replacement fields, comments, double quotes and here-documents.
    let fine = plan(vec![
        bash_step("a", "true", &[]),
        python(
            "p",
            "import os\nprint(\"Hello \" + {{ steps.a.outputs.x }})\n\
             print(f'{ {{ steps.a.outputs.x }} } {os.environ[\"PLUE_OUTPUT_A_X\"]}')\n\
             print('{{ steps.a.status }}')  # {{ steps.a.outputs.x }}",
        ),
        bash_step(
            "b",
            "echo \"text {{ steps.a.outputs.x }}\" '{{ steps.a.status }}'\ncat <<EOF\n{{ steps.a.outputs.x }}\nEOF",
            &["a"],
        ),
        bash_step("c", "{{ raw steps.a.outputs.x }} \"{{ raw steps.a.outputs.x }}\"", &["a"]),
    ]);
    assert_eq!(messages(&fine), Vec::<String>::new());
}

#[test]
fn validation_names_the_step_and_the_problem() {
    let mut llm = LlmAction {
        prompt: Some("review {{ steps.a.outputs.x }}".into()),
        prompt_file: None,
        inputs: BTreeMap::from([(
            "files".into(),
            serde_json::json!(["ok", "{{ steps.nope.status }}"]),
        )]),
        model: None,
        max_turns: None,
        tools: vec![],
        safe_outputs: None,
        max_tokens: None,
        max_cost_usd: None,
        ..Default::default()
    };
    let mut review = Step::new("review", Action::Llm(llm.clone())).after(&["a"]);
    review
        .env
        .insert("E".into(), "{{#each @root.steps}}{{/each}}".into());
    llm.prompt = Some("{{ steps.review.status }}".into());
    let mut p = plan(vec![
        bash_step("a", "true", &[]),
        review,
        bash_step("b", "echo {{ steps.a.outputs.x }}", &[]),
        bash_step("c", "echo {{ steps.c.outputs.x }}", &["a"]),
        bash_step("d", "echo $(( {{ steps.a.outputs.n }} + 1 ))", &["a"]),
        Step::new(
            "e",
            Action::Python {
                script: "print(b'{{ steps.a.outputs.x }}')".into(),
                fresh_interpreter: false,
            },
        )
        .after(&["a"]),
        bash_step("f", "echo {{ steps.bulid.status }}", &["a"]),
        bash_step("g", "echo $(( {{ raw steps.a.outputs.n }} + 1 ))", &["a"]),
    ]);
    p.steps.insert(1, Step::bash("build", "true"));
    let got = messages(&p);
    let expected = [
        "w.plue.py:12:5: step 'review': inputs.files[1]: '{{ steps.nope.status }}' names unknown step 'nope'",
        "w.plue.py:12:5: step 'review': env E: '{{#each @root.steps}}': '@root'",
        "w.plue.py:13:5: step 'b': command: '{{ steps.a.outputs.x }}' reads step 'a', which is not a dependency; add depends_on=[\"a\"] to step 'b'",
        "w.plue.py:14:5: step 'c': command: '{{ steps.c.outputs.x }}' reads step 'c', which is not a dependency; a step cannot read its own result",
        "w.plue.py:15:5: step 'd': command: '{{ steps.a.outputs.n }}': a reference inside arithmetic",
        "w.plue.py:16:5: step 'e': script: '{{ steps.a.outputs.x }}': a reference inside a bytes literal",
        "w.plue.py:17:5: step 'f': command: '{{ steps.bulid.status }}' names unknown step 'bulid' (did you mean 'build'?)",
        "w.plue.py:18:5: step 'g': command: '{{ raw steps.a.outputs.n }}': a reference inside arithmetic",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (got, expected) in got.iter().zip(expected) {
        assert!(
            got.starts_with(expected),
            "{got}\n  does not start with\n{expected}"
        );
    }
}

#[test]
fn plan_env_references_reach_every_step_and_are_refused() {
    let mut p = plan(vec![
        bash_step("a", "true", &[]),
        bash_step("b", "true", &["a"]),
    ]);
    p.env.insert("V".into(), "{{ steps.a.outputs.x }}".into());
    let got = messages(&p);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("w.plue.py:1:1: the plan: env V: '{{ steps.a.outputs.x }}' reads step 'a', which is not a dependency (the plan's env reaches every step, 'a' too)"), "{}", got[0]);
}

#[test]
fn diagnostics_are_capped() {
    let steps = (0..200)
        .map(|i| bash_step(&format!("s{i}"), "{{ x }}", &[]))
        .collect();
    let got = messages(&plan(steps));
    assert_eq!(got.len(), check::MAX_DIAGNOSTICS + 1);
    assert!(got.last().unwrap().contains("and more template problems"));
}

#[test]
fn a_cycle_does_not_hang_the_ancestor_check() {
    let p = plan(vec![
        bash_step("a", "echo {{ steps.b.status }}", &["b"]),
        bash_step("b", "echo {{ steps.a.status }}", &["a"]),
    ]);
    assert_eq!(messages(&p), Vec::<String>::new());
}

#[test]
fn a_long_chain_checks_in_linear_time() {
    let n = 1000;
    let steps: Vec<Step> = (0..n)
        .map(|i| {
            let deps: Vec<String> = if i == 0 {
                vec![]
            } else {
                vec![format!("s{}", i - 1)]
            };
            let mut s = bash_step(&format!("s{i}"), "echo {{ steps.s0.status }}", &[]);
            s.depends_on = deps;
            if i == 0 {
                s.action = Action::Bash {
                    command: "true".into(),
                };
            }
            s
        })
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(messages(&plan(steps)), Vec::<String>::new());
    // Each of the 1,000 steps refers to the chain's first. The bound, loose enough for a
    // debug build on a loaded machine, catches a check far out of proportion to the chain
    // (one that walks every path of it); a quadratic one stays under it.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn backslash_runs_before_braces_pair_up() {
    let literal = |text: &str| Template::parse(text).unwrap().literal_text().0;
    // Unchanged: one backslash escapes, two are a backslash and a reference.
    assert_eq!(literal(r"\{{"), "{{");
    assert_eq!(literal(r"\\{{ steps.a.status }}"), "\\\0");
    // Each pair is one backslash; an odd one left makes the braces literal.
    assert_eq!(literal(r"\\\{{"), r"\{{");
    assert_eq!(literal(r"a\\\\{{ steps.a.status }}"), "a\\\\\0");
    assert_eq!(literal(r"a\\\\\{{ x"), r"a\\{{ x");
    // Backslashes elsewhere are text.
    assert_eq!(literal(r"a\\b\ {{ steps.a.status }}"), "a\\\\b\\ \0");
}

#[test]
fn escaped_text_renders_as_itself() {
    // regression (issue 30): a manual input or file name holding template syntax was read
    // as a template once a trusted workflow pasted it into a command.
    for text in [
        "",
        "plain",
        "{{ raw steps.a.outputs.x }}",
        "'{{ raw steps.a.outputs.x }}'",
        r"\{{ raw steps.a.outputs.x }}",
        r"\\{{ raw steps.a.outputs.x }}",
        r"a\\\{{ steps.a.status }}b\",
        "{{{ steps.a.status }}}",
        "{{{{",
        "}}{{#each @root.steps}}{{/each}}",
        "x{{",
        "{{ steps.a.outputs.x }} and {{ raw steps.b.status }} \\",
    ] {
        let escaped = escape(text);
        let template = Template::parse(&escaped).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(template.references().count(), 0, "{text} -> {escaped}");
        assert_eq!(template.literal_text().0, text, "{text} -> {escaped}");
        assert_eq!(
            template
                .render(1 << 20, |_, _| -> Result<String, String> { unreachable!() })
                .unwrap(),
            text
        );
    }
    assert!(matches!(escape("no braces"), std::borrow::Cow::Borrowed(_)));
}

#[test]
fn outputs_as_format_strings_are_refused_at_validation() {
    // regression (issue 30): `{{ ref }}.format(obj)` passed `plue check`; an upstream
    // `{0.__init__.__globals__[os].environ[TOKEN]:.1}` printed every prefix of a secret.
    let python = |id: &str, script: &str| {
        Step::new(
            id,
            Action::Python {
                script: script.into(),
                fresh_interpreter: false,
            },
        )
        .after(&["a"])
    };
    let refused = [
        python("p0", "print({{ steps.a.outputs.x }}.format(obj))"),
        python("p1", "print(str.format({{ steps.a.outputs.x }}, obj))"),
        python("p2", "print({{ raw steps.a.outputs.x }}.format_map(m))"),
        python("p3", "print({{ steps.a.outputs.x }} % os.environ)"),
        bash_step("b0", "printf \"{{ steps.a.outputs.x }}\\n\" x", &["a"]),
    ];
    let mut steps = vec![bash_step("a", "true", &[])];
    steps.extend(refused.iter().cloned());
    let got = messages(&plan(steps));
    assert_eq!(got.len(), refused.len(), "{got:#?}");
    for message in &got {
        assert!(message.contains("must not be"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
    assert!(got[2].contains("'raw' is refused"), "{}", got[2]);
    // As values they pass.
    let fine = plan(vec![
        bash_step("a", "true", &[]),
        python(
            "p",
            "print('{}'.format({{ steps.a.outputs.x }}), '%s' % ({{ steps.a.outputs.x }},))",
        ),
        bash_step("b", "printf '%s\\n' {{ steps.a.outputs.x }}", &["a"]),
    ]);
    assert_eq!(messages(&fine), Vec::<String>::new());
}

#[test]
fn reference_texts_are_found_as_written_in_linear_time() {
    assert_eq!(
        reference_texts(
            r"a\{{ raw steps.x.outputs.y }} {{steps.x.status}} {{ nope }} {{{ steps.x.status }}"
        ),
        [
            "{{ raw steps.x.outputs.y }}",
            "{{steps.x.status}}",
            "{{ steps.x.status }}"
        ]
    );
    let started = std::time::Instant::now();
    assert!(reference_texts(&"{".repeat(1 << 20)).is_empty());
    assert!(reference_texts(&"{{ steps.a.status ".repeat(50_000)).is_empty());
    assert!(started.elapsed() < std::time::Duration::from_millis(3000));
}
