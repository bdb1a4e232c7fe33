//! Tests of `loops`.

use std::collections::BTreeMap;

use super::*;
use crate::plan::{Action, Location, Step};

fn step(id: &str, deps: &[&str]) -> Step {
    Step::bash(id, "true").after(deps)
}

fn looping(id: &str, deps: &[&str], to: &str, max: u32) -> Step {
    let mut s = step(id, deps);
    s.loop_to = Some(to.into());
    s.max_loops = Some(max);
    s
}

fn plan(steps: Vec<Step>) -> (Plan, SourceMap) {
    let map = SourceMap {
        plan: Location { line: 1, col: 1 },
        triggers: vec![],
        steps: (0..steps.len())
            .map(|i| Location {
                line: 10 + i as u32,
                col: 9,
            })
            .collect(),
    };
    let plan = Plan {
        name: "p".into(),
        triggers: vec![],
        env: BTreeMap::new(),
        steps,
        concurrency: None,
        budget_usd: None,
        max_parallel: None,
        modules: Vec::new(),
    };
    (plan, map)
}

fn messages(steps: Vec<Step>) -> Vec<String> {
    let (p, m) = plan(steps);
    crate::validate::validate(&p, &m, &crate::Limits::default(), "w.plue.py")
        .iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn the_region_is_the_target_the_steps_between_and_the_source() {
    let (p, _) = plan(vec![
        step("setup", &[]),
        step("build", &["setup"]),
        step("lint", &["build"]),
        step("unit", &["build"]),
        step("docs", &["setup"]),
        looping("review", &["lint", "unit", "docs"], "build", 2),
        step("deploy", &["review"]),
    ]);
    let loops = Loops::of(&p);
    assert_eq!(
        loops.loops,
        [Loop {
            source: 5,
            target: 1,
            max_loops: 2,
            region: vec![1, 2, 3, 5],
        }]
    );
    assert_eq!(
        loops.member,
        [None, Some(0), Some(0), Some(0), None, Some(0), None]
    );
    assert!(loops.is_feedback(1, 5) && loops.is_feedback(2, 5) && loops.is_feedback(1, 3));
    assert!(!loops.is_feedback(1, 1) && !loops.is_feedback(0, 5) && !loops.is_feedback(6, 5));
    assert!(
        !loops.is_feedback(5, 1) && !loops.is_feedback(2, 3),
        "an earlier step, or one on another branch, is not feedback"
    );
    let (p, m) = plan(p.steps.clone());
    let mut found = Found::new("w");
    check(&p, &m, &mut Budget::unlimited_time(), &mut found);
    assert!(found.finish().is_empty());
    assert!(Loops::of(&plan(vec![step("a", &[])]).0).loops.is_empty());
}

#[test]
fn max_loops_goes_with_loop_to_and_is_bounded() {
    let mut without_max = step("review", &["build"]);
    without_max.loop_to = Some("build".into());
    assert_eq!(
            messages(vec![step("build", &[]), without_max]),
            ["w.plue.py:11:9: step 'review': loop_to='build' needs max_loops= (how many times to go back, 1 to 10)"]
        );
    let mut without_target = step("review", &["build"]);
    without_target.max_loops = Some(2);
    assert_eq!(
            messages(vec![step("build", &[]), without_target]),
            ["w.plue.py:11:9: step 'review': max_loops= needs loop_to= (the ancestor to go back to when the step fails)"]
        );
    for bad in [0, 11] {
        assert_eq!(
            messages(vec![
                step("build", &[]),
                looping("review", &["build"], "build", bad)
            ]),
            [format!(
                "w.plue.py:11:9: step 'review': max_loops must be between 1 and 10, got {bad}"
            )]
        );
    }
    assert!(messages(vec![
        step("build", &[]),
        looping("review", &["build"], "build", 10)
    ])
    .is_empty());
}

#[test]
fn the_target_must_be_a_known_ancestor() {
    assert_eq!(
            messages(vec![step("build", &[]), looping("review", &["build"], "biuld", 2)]),
            ["w.plue.py:11:9: step 'review': loop_to names unknown step 'biuld' (did you mean 'build'?)"]
        );
    assert_eq!(
            messages(vec![step("build", &[]), looping("review", &["build"], "review", 2)]),
            ["w.plue.py:11:9: step 'review': loop_to must name a step it depends on, not the step itself"]
        );
    assert_eq!(
            messages(vec![
                step("build", &[]),
                step("lint", &[]),
                looping("review", &["build"], "lint", 2),
            ]),
            ["w.plue.py:12:9: step 'review': loop_to='lint' is not a step it depends on (directly or through other steps); a loop goes back to an ancestor"]
        );
    // A transitive ancestor is enough.
    assert!(messages(vec![
        step("build", &[]),
        step("test", &["build"]),
        looping("review", &["test"], "build", 1),
    ])
    .is_empty());
}

#[test]
fn loops_may_not_nest_or_overlap() {
    let found = messages(vec![
        step("build", &[]),
        step("test", &["build"]),
        looping("review", &["test"], "build", 2),
        looping("audit", &["review"], "test", 2),
    ]);
    assert_eq!(found, ["w.plue.py:13:9: step 'audit': the loop back to 'test' shares step 'test' with the loop of step 'review' (back to 'build'); loops may not nest or overlap"]);
    let found = messages(vec![
        step("build", &[]),
        looping("review", &["build"], "build", 2),
        looping("audit", &["build"], "build", 2),
    ]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("step 'audit': the loop back to 'build' shares step 'build'"),
        "{found:?}"
    );
    // One after the other is fine.
    assert!(messages(vec![
        step("build", &[]),
        looping("review", &["build"], "build", 2),
        step("package", &["review"]),
        looping("audit", &["package"], "package", 3),
    ])
    .is_empty());
}

#[test]
fn steps_outside_a_loop_may_not_read_a_discarded_iteration() {
    assert_eq!(
            messages(vec![
                step("build", &[]),
                looping("review", &["build"], "build", 2),
                step("lint", &["build"]),
                step("deploy", &["build", "review"]),
            ]),
            ["w.plue.py:12:9: step 'lint' depends on 'build', which repeats in the loop of step 'review' (back to 'build'), but not on 'review': it would see only the first iteration; add 'review' to its depends_on"]
        );
}

#[test]
fn approvals_cannot_loop() {
    let mut ok = step("ok", &["build"]);
    ok.action = Action::Approval(crate::plan::ApprovalAction {
        message: None,
        approvers: vec![],
        exclude_triggerer: false,
    });
    let found = messages(vec![
        step("build", &[]),
        ok.clone(),
        looping("review", &["ok"], "build", 2),
    ]);
    assert_eq!(found, ["w.plue.py:12:9: step 'review': the loop back to 'build' contains approval step 'ok'; a decision is taken once, so approvals cannot be inside a loop"]);
    ok.loop_to = Some("build".into());
    ok.max_loops = Some(1);
    let found = messages(vec![step("build", &[]), ok]);
    assert_eq!(
        found,
        ["w.plue.py:11:9: approval step 'ok' takes no loop_to= (nothing runs)"]
    );
}

#[test]
fn a_loop_may_read_the_outputs_of_its_later_steps() {
    let mut build = step("build", &[]);
    build.action = Action::Bash {
        command: "echo \"{{ steps.review.outputs.feedback }} {{ steps.test.outputs.log }}\"".into(),
    };
    let mut test = step("test", &["build"]);
    test.action = Action::Bash {
        command: "echo {{ steps.review.outputs.feedback }}".into(),
    };
    let review = looping("review", &["test"], "build", 2);
    assert!(messages(vec![build.clone(), test.clone(), review.clone()]).is_empty());
    // Without the loop, they are references to steps that are not dependencies.
    let mut plain = review.clone();
    plain.loop_to = None;
    plain.max_loops = None;
    let found = messages(vec![build.clone(), test.clone(), plain]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("which is not a dependency"), "{found:?}");
    // Only outputs: the previous iteration's statuses are not kept.
    build.action = Action::Bash {
        command: "echo {{ steps.review.status }}".into(),
    };
    assert_eq!(
            messages(vec![build, test.clone(), review.clone()]),
            ["w.plue.py:10:9: step 'build': command: '{{ steps.review.status }}' reads the status of step 'review', a later step of the same loop: only its outputs can be read (the previous iteration's, empty in the first)"]
        );
    // A later step of the loop may not read an earlier one it does not depend on, and
    // a step outside the loop gets nothing from it.
    let mut outside = step("notify", &[]);
    outside.action = Action::Bash {
        command: "echo {{ steps.review.outputs.feedback }}".into(),
    };
    let found = messages(vec![step("build", &[]), test, review, outside]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("step 'notify'") && found[0].contains("not a dependency"),
        "{found:?}"
    );
}

#[test]
fn a_plan_without_loops_keeps_its_canonical_json_and_hash() {
    let (p, _) = plan(vec![step("build", &[]), step("review", &["build"])]);
    let json = p.canonical_json();
    assert!(!json.contains("loop"), "{json}");
    // The hash of this plan before loops existed.
    let before = r#"{"name":"p","triggers":[],"env":{},"steps":[{"id":"build","kind":"bash","command":"true","depends_on":[],"timeout":3600,"retries":0,"backoff":1,"when":"success","env":{},"secrets":[],"runner":{}},{"id":"review","kind":"bash","command":"true","depends_on":["build"],"timeout":3600,"retries":0,"backoff":1,"when":"success","env":{},"secrets":[],"runner":{}}]}"#;
    assert_eq!(json, before);
    assert_eq!(p.hash(), crate::plan::hash_canonical(before));
    let (p, _) = plan(vec![
        step("build", &[]),
        looping("review", &["build"], "build", 2),
    ]);
    assert!(p
        .canonical_json()
        .contains(r#""runner":{},"loop_to":"build","max_loops":2}"#));
    let back: Plan = serde_json::from_str(&p.canonical_json()).unwrap();
    assert_eq!(back, p);
}

// regression: only valid loops counted toward the limit, so a thousand `loop_to`s naming
// a step that is not an ancestor cost a thousand walks of the graph.
#[test]
fn every_loop_to_naming_a_step_counts_toward_the_walks() {
    let steps: Vec<Step> = (0..60)
        .map(|i| {
            let before = format!("s{}", i.max(1) - 1);
            let mut s = looping(&format!("s{i}"), &[], &format!("s{}", (i + 1) % 60), 1);
            if i > 0 {
                s.depends_on = vec![before];
            }
            s
        })
        .collect();
    let (p, m) = plan(steps);
    let mut found = Found::new("w");
    check(&p, &m, &mut Budget::unlimited_time(), &mut found);
    // Fifty walks, each a problem, then the limit; the last ten are never walked.
    assert_eq!(found.total(), MAX_LOOPS_PER_PLAN + 1);
    let shown = found.finish();
    assert!(
        shown[0].message.contains("is not a step it depends on"),
        "{shown:?}"
    );
    assert_eq!(shown.last().unwrap().message, "and 2 more problems");
}
