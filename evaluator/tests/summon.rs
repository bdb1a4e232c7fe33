//! `Trigger.on_issue` / `Trigger.on_comment` and `ctx.issue` / `ctx.comment` through the
//! real worker: options become plan data, closed sets are refused with a suggestion where
//! they are written, and issue and comment text is data that never becomes a reference.

mod support;
use support::{pasted_texts, pool, problems_of};

use evaluator::context::{Comment, Issue};
use evaluator::plan::{Authors, Others, Trigger};
use evaluator::{EvalContext, Event};

fn source(triggers: &str) -> String {
    format!(
        "def workflow(ctx):\n    return Plan(\"p\", triggers=[{triggers}], steps=[Step.bash(\"a\", \"true\")])\n"
    )
}

async fn problems(triggers: &str) -> Vec<String> {
    problems_of(&source(triggers), triggers).await
}

#[tokio::test]
async fn issue_and_comment_triggers_become_plan_data_with_safe_defaults() {
    let ctx = EvalContext::local(Event::Push, "main");
    let plan = pool()
        .await
        .evaluate(
            "w.plue.py",
            &source(
                "Trigger.on_issue(), Trigger.on_comment(pattern=r'^/plue\\s+fix\\b'), \
                 Trigger.on_issue(actions=['labeled'], labels=['bug'], authors='admin', others='untrusted')",
            ),
            &ctx,
        )
        .await
        .unwrap()
        .plan;
    assert_eq!(
        plan.triggers,
        vec![
            Trigger::Issue {
                actions: vec!["opened".into()],
                labels: vec![],
                authors: Authors::Write,
                others: Others::Ignore,
            },
            Trigger::Comment {
                pattern: r"^/plue\s+fix\b".into(),
                on: vec!["issue".into(), "pull_request".into()],
                actions: vec!["created".into()],
                authors: Authors::Write,
                others: Others::Ignore,
            },
            Trigger::Issue {
                actions: vec!["labeled".into()],
                labels: vec!["bug".into()],
                authors: Authors::Admin,
                others: Others::Untrusted,
            },
        ]
    );
}

#[tokio::test]
async fn closed_sets_and_bad_patterns_are_refused_with_a_suggestion() {
    let found = problems("Trigger.on_comment(pattern='x', authors='writer')").await;
    assert!(
        found[0].contains(
            "authors='writer' (did you mean 'write'?): expected one of write, maintain, admin"
        ),
        "{found:?}"
    );
    let found = problems("Trigger.on_comment(pattern='x', others='trusted')").await;
    assert!(
        found[0].contains("(did you mean 'untrusted'?)"),
        "{found:?}"
    );
    let found =
        problems("Trigger.on_comment(pattern='(x', on=['pull_requests'], actions=['create'])")
            .await;
    let all = found.join("\n");
    assert!(all.contains("invalid comment pattern '(x'"), "{all}");
    assert!(
        all.contains("unknown comment target 'pull_requests' (did you mean 'pull_request'?)"),
        "{all}"
    );
    assert!(
        all.contains("unknown comment action 'create' (did you mean 'created'?)"),
        "{all}"
    );
    let found = problems("Trigger.on_issue(actions=['label'])").await;
    assert!(
        found[0].contains("unknown issue action 'label' (did you mean 'labeled'?)"),
        "{found:?}"
    );
    let found = problems("Trigger.on_comment()").await;
    assert!(found[0].contains("pattern= is required"), "{found:?}");
    // A pattern whose compiled program would be huge is refused at validation, before any
    // comment is matched against it.
    let found = problems("Trigger.on_comment(pattern=r'\\w{1000}\\w{1000}\\w{1000}')").await;
    assert!(found[0].contains("size limit"), "{found:?}");
}

/// A workflow that pastes issue and comment text into a prompt and a command.
const PASTES: &str = r#"
import shlex

def workflow(ctx):
    return Plan("p", triggers=[Trigger.on_comment(pattern="fix")], steps=[
        Step.bash("up", "echo x=1 >> $PLUE_OUTPUT"),
        Step.bash("echo", "echo " + shlex.quote(ctx.comment.body) + " " + shlex.quote(ctx.issue.title), depends_on=["up"]),
        Step.llm("fix", prompt="Fix: " + ctx.issue.body + " asked by " + ctx.comment.author, depends_on=["up"]),
    ])
"#;

#[tokio::test]
async fn issue_and_comment_text_never_becomes_template_syntax() {
    let mut ctx = EvalContext::local(Event::Comment, "main");
    ctx.pr = None;
    ctx.issue = Some(Issue {
        number: 7,
        title: "{{ raw steps.up.outputs.x }}".into(),
        body: "{% raw %}{{ steps.up.outputs.x }}{% endraw %} $(rm -rf /)".into(),
        labels: vec!["{{ steps.up.status }}".into()],
        author: "octocat".into(),
        url: "https://github.com/o/r/issues/7".into(),
    });
    // (Bidi controls are not pasted here: a plan's commands refuse them, whoever wrote
    // them. Steps read such text from PLUE_COMMENT_BODY, byte for byte.)
    ctx.comment = Some(Comment {
        id: 1,
        body: "/plue fix {{ steps.up.outputs.x }}".into(),
        author: "octocat".into(),
        association: "NONE".into(),
    });
    let evaluated = pool()
        .await
        .evaluate("w.plue.py", PASTES, &ctx)
        .await
        .unwrap();
    let (command, prompt) = pasted_texts(&evaluated.plan);
    assert_eq!(
        command,
        "echo '/plue fix {{ steps.up.outputs.x }}' '{{ raw steps.up.outputs.x }}'"
    );
    assert_eq!(
        prompt,
        "Fix: {% raw %}{{ steps.up.outputs.x }}{% endraw %} $(rm -rf /) asked by octocat"
    );
}
