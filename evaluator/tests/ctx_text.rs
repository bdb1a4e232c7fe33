//! `ctx` text is data: a branch name, a changed file's name or a manual input that holds
//! template syntax reaches a step exactly as written, through the real worker.

mod support;
use support::{pasted_texts, pool};

use evaluator::{EvalContext, EvalError, Event};

/// A trusted workflow: it quotes every ctx string it pastes into the secret-holding step.
const WORKFLOW: &str = r#"
import shlex

def workflow(ctx):
    files = " ".join(shlex.quote(f) for f in ctx.changed_files)
    args = " ".join(shlex.quote(v) for v in ctx.inputs.values())
    return Plan("p", steps=[
        Step.bash("up", "echo x=1 >> $PLUE_OUTPUT"),
        Step.bash(
            "deploy",
            "echo " + shlex.quote(ctx.branch) + " " + files + " " + args,
            depends_on=["up"],
            secrets=["DEPLOY_KEY"],
        ),
        Step.llm("review", prompt="Review " + ctx.pr.head, depends_on=["up"]),
    ])
"#;

#[tokio::test]
async fn ctx_text_never_becomes_template_syntax() {
    // regression (issue 30): `{{ raw steps.up.outputs.x }}` in a manual input or a file
    // name was expanded in the step (an upstream output pasted as code next to the
    // step's secrets); `{{ steps.up.status }}` in a branch name failed validation.
    let pool = pool().await;
    let mut ctx = EvalContext::local(Event::PullRequest, "{{ steps.up.status }}");
    ctx.changed_files = vec![
        "{{ raw steps.up.outputs.x }}".into(),
        r"a\{{ raw steps.up.outputs.x }}".into(),
        r"b\\{{ raw steps.up.outputs.x }}".into(),
    ];
    ctx.inputs
        .insert("target".into(), "$(id) {{ raw steps.up.outputs.x }}".into());
    // Once a validation error (an unknown step), now text.
    ctx.inputs
        .insert("note".into(), "{{ steps.nope.outputs.x }}".into());
    let evaluated = pool.evaluate("w.plue.py", WORKFLOW, &ctx).await.unwrap();
    let (command, prompt) = pasted_texts(&evaluated.plan);
    assert_eq!(
        command,
        r"echo '{{ steps.up.status }}' '{{ raw steps.up.outputs.x }}' 'a\{{ raw steps.up.outputs.x }}' 'b\\{{ raw steps.up.outputs.x }}' '{{ steps.nope.outputs.x }}' '$(id) {{ raw steps.up.outputs.x }}'"
    );
    assert_eq!(prompt, "Review {{ steps.up.status }}");
}

#[tokio::test]
async fn a_ctx_reference_whose_escape_was_lost_is_refused() {
    // repr() and json.dumps() double the backslash of the escape (`\\{{` is a backslash
    // and a reference), replace() may drop it: the reference is refused, never expanded.
    let pool = pool().await;
    let mut ctx = EvalContext::local(Event::Manual, "main");
    ctx.inputs
        .insert("target".into(), "{{ raw steps.up.outputs.x }}".into());
    for paste in [
        "json.dumps(ctx.inputs['target'])",
        "ctx.inputs['target'].replace(chr(92), '/')",
        "repr(ctx.inputs['target'])",
    ] {
        let source = format!(
            "import json\n\ndef workflow(ctx):\n    return Plan(\"p\", steps=[\n        Step.bash(\"up\", \"true\"),\n        Step.bash(\"deploy\", \"echo \" + {paste}, depends_on=[\"up\"]),\n    ])\n"
        );
        match pool.evaluate("w.plue.py", &source, &ctx).await {
            Err(EvalError::Invalid(found)) => {
                let text = found[0].to_string();
                assert!(
                    text.contains(
                        "step 'deploy': command: '{{ raw steps.up.outputs.x }}' is text from ctx"
                    ),
                    "{paste}: {text}"
                );
            }
            other => panic!("{paste}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_raw_reference_assembled_from_ctx_text_is_refused() {
    // regression (issue 30): transformations that change ctx text made a live reference
    // of it, out of reach of the escape — two inputs joined ('v{' + '{ raw ... }}'), a file
    // named '{src/{ raw ... }}' with "src/" removed, backslashes dropped — and an upstream
    // output ran as code next to the step's secrets ("linting PWNED-s3c"). Only the file
    // may write a raw reference.
    let pool = pool().await;
    let mut ctx = EvalContext::local(Event::PullRequest, "main");
    ctx.changed_files = vec![
        "src/main.rs".into(),
        "{src/{ raw steps.up.outputs.x }}".into(),
    ];
    ctx.inputs.insert("prefix".into(), "v{".into());
    ctx.inputs
        .insert("name".into(), "{ raw steps.up.outputs.x }}".into());
    ctx.inputs
        .insert("file".into(), r"{{ raw steps.up.outputs.x }\}".into());
    for paste in [
        r#"" ".join(f.replace("src/", "") for f in ctx.changed_files)"#,
        r#"ctx.inputs["prefix"] + ctx.inputs["name"]"#,
        r#"ctx.inputs["file"].replace(chr(92), "")"#,
    ] {
        let source = format!(
            "def workflow(ctx):\n    return Plan(\"p\", steps=[\n        Step.bash(\"up\", \"true\"),\n        Step.bash(\"deploy\", 'echo \"' + {paste} + '\"', depends_on=[\"up\"], secrets=[\"DEPLOY_KEY\"]),\n    ])\n"
        );
        match pool.evaluate("w.plue.py", &source, &ctx).await {
            Err(EvalError::Invalid(found)) => {
                let text = found[0].to_string();
                assert!(
                    text.contains(
                        "step 'deploy': command: '{{ raw steps.up.outputs.x }}' is not written in the workflow file"
                    ),
                    "{paste}: {text}"
                );
            }
            other => panic!("{paste}: {other:?}"),
        }
    }
    // The same reference written in the file passes.
    let source = "def workflow(ctx):\n    return Plan(\"p\", steps=[\n        Step.bash(\"up\", \"true\"),\n        Step.bash(\"deploy\", 'echo {{ raw steps.up.outputs.x }}', depends_on=[\"up\"]),\n    ])\n";
    pool.evaluate("w.plue.py", source, &ctx).await.unwrap();
}
