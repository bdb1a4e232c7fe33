//! The layout's promises: layers top-down, groups for wide fan-outs, a bound on what is
//! drawn whatever the plan, and a shape that does not move when only statuses change.

use super::*;
use StepStatus::{Failed, Pending, Queued, Running, Succeeded, Waiting};

fn step<'a>(id: &'a str, status: StepStatus, deps: &'a [String]) -> Step<'a> {
    Step {
        id,
        status,
        kind: "bash",
        depends_on: deps,
    }
}

fn node<'a>(layout: &'a Layout, key: &str) -> &'a Node {
    layout
        .nodes
        .iter()
        .find(|n| n.key == key)
        .unwrap_or_else(|| panic!("no node {key}"))
}

/// `root → shard-0…(width-1) → join`, shards with the given statuses (cycled).
fn fan_out(
    width: usize,
    statuses: &[StepStatus],
) -> (Vec<String>, Vec<Vec<String>>, Vec<StepStatus>) {
    let mut ids = vec!["root".to_string()];
    let mut deps = vec![vec![]];
    let mut status = vec![Succeeded];
    for i in 0..width {
        ids.push(format!("shard-{i}"));
        deps.push(vec!["root".to_string()]);
        status.push(statuses[i % statuses.len()]);
    }
    deps.push(ids[1..].to_vec());
    ids.push("join".to_string());
    status.push(Pending);
    (ids, deps, status)
}

fn steps<'a>(ids: &'a [String], deps: &'a [Vec<String>], status: &[StepStatus]) -> Vec<Step<'a>> {
    (0..ids.len())
        .map(|i| step(&ids[i], status[i], &deps[i]))
        .collect()
}

#[test]
fn a_diamond_is_three_layers_top_down_with_four_edges() {
    let none: Vec<String> = vec![];
    let a = vec!["a".to_string()];
    let bc = vec!["b".to_string(), "c".to_string()];
    let layout = layout(&[
        step("a", Succeeded, &none),
        step("b", Running, &a),
        step("c", Queued, &a),
        step("d", Pending, &bc),
    ]);
    let y = |id: &str| node(&layout, &format!("s:{id}")).y;
    assert!(y("a") < y("b"));
    assert_eq!(y("b"), y("c"));
    assert!(y("c") < y("d"));
    assert_eq!(layout.edges.len(), 4);
    let into_b = layout.edges.iter().find(|e| e.to == "s:b").unwrap();
    assert_eq!((into_b.from.as_str(), into_b.status), ("s:a", Running));
    assert!(layout
        .nodes
        .iter()
        .all(|n| n.x + NODE_WIDTH <= layout.width && n.y + NODE_HEIGHT <= layout.height));
    assert!(layout.groups.is_empty());
}

#[test]
fn a_sixty_step_fan_out_is_three_nodes_with_counts() {
    let (ids, deps, status) = fan_out(60, &[Succeeded, Succeeded, Failed, Running]);
    let layout = layout(&steps(&ids, &deps, &status));
    assert_eq!(layout.nodes.len(), 3);
    assert_eq!(layout.edges.len(), 2);
    let group = &layout.groups[0];
    assert_eq!((group.name.as_str(), group.size), ("shard", 60));
    assert_eq!(group.status, Failed, "a failed member colours the group");
    let counts: Vec<(StepStatus, usize)> = group.counts.iter().map(|c| (c.status, c.n)).collect();
    assert_eq!(counts, [(Succeeded, 30), (Failed, 15), (Running, 15)]);
    assert_eq!(node(&layout, "g:0").label, "shard \u{2014} 60 steps");
    // Root above the group above the join, all in the first screenful.
    assert!(node(&layout, "s:root").y < node(&layout, "g:0").y);
    assert!(node(&layout, "g:0").y < node(&layout, "s:join").y);
    assert!(layout.height < 400, "{}", layout.height);
}

#[test]
fn statuses_do_not_move_anything() {
    let (ids, deps, before) = fan_out(60, &[Queued]);
    let (_, _, after) = fan_out(60, &[Succeeded, Failed]);
    let first = layout(&steps(&ids, &deps, &before));
    let second = layout(&steps(&ids, &deps, &after));
    assert_eq!(first.shape, second.shape);
    assert_ne!(first.groups[0].counts, second.groups[0].counts);
    let (ids, deps, _) = fan_out(59, &[Queued]);
    let other = layout(&steps(&ids, &deps, &before[..61]));
    assert_ne!(first.shape, other.shape, "another plan, another shape");
}

#[test]
fn barycentre_puts_children_under_their_parent() {
    // Two roots, each with two children, declared interleaved.
    let none: Vec<String> = vec![];
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let layout = layout(&[
        step("a", Queued, &none),
        step("b", Queued, &none),
        step("b1", Queued, &b),
        step("a1", Queued, &a),
        step("b2", Queued, &b),
        step("a2", Queued, &a),
    ]);
    let x = |id: &str| node(&layout, &format!("s:{id}")).x;
    assert!(x("a") < x("b"));
    assert!(
        x("a1").max(x("a2")) < x("b1").min(x("b2")),
        "{:?}",
        layout.nodes
    );
}

#[test]
fn unknown_dependencies_and_cycles_do_not_break_the_layout() {
    let ghost = vec!["ghost".to_string()];
    let to_b = vec!["b".to_string()];
    let to_a = vec!["a".to_string()];
    let layout = layout(&[
        step("a", Failed, &to_b),
        step("b", Failed, &to_a),
        step("c", Pending, &ghost),
    ]);
    assert_eq!(layout.nodes.len(), 3);
    assert_eq!(layout.edges.len(), 2, "the cycle's edges, none to 'ghost'");
}

#[test]
fn long_ids_are_cut_for_the_label_only() {
    let none: Vec<String> = vec![];
    let id = "a".repeat(100);
    let layout = layout(&[step(&id, Queued, &none)]);
    assert_eq!(layout.nodes[0].id, id);
    assert_eq!(layout.nodes[0].label.chars().count(), LABEL_CHARS);
}

#[test]
fn approvals_are_marked_in_nodes_and_groups() {
    let none: Vec<String> = vec![];
    let mut gate = step("gate", Waiting, &none);
    gate.kind = "approval";
    let layout = layout(&[gate, step("other", Queued, &none)]);
    assert!(node(&layout, "s:gate").approval);
    assert!(!node(&layout, "s:other").approval);
}

#[test]
fn group_names_are_the_shared_prefix() {
    assert_eq!(common_name(&["shard-0", "shard-1", "shard-10"]), "shard");
    assert_eq!(common_name(&["test_a", "test_b"]), "test");
    assert_eq!(common_name(&["a", "b"]), "steps");
    assert_eq!(common_name(&["été-1", "été-2", "étage"]), "ét");
    assert_eq!(common_name(&["7", "8"]), "steps");
    assert_eq!(common_name(&["shard-10", "shard-11", "shard-19"]), "shard");
    assert_eq!(common_name(&["test-3-0", "test-3-1"]), "test-3");
}

/// A 1,000-step plan of every awkward shape is drawn with a bounded number of elements.
#[test]
fn a_thousand_steps_draw_a_bounded_number_of_nodes_and_edges() {
    let n = 1000;
    let ids: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let shapes: Vec<(&str, Vec<Vec<String>>)> = vec![
        (
            "chain",
            (0..n)
                .map(|i| {
                    if i == 0 {
                        vec![]
                    } else {
                        vec![ids[i - 1].clone()]
                    }
                })
                .collect(),
        ),
        (
            "binary tree",
            (0..n)
                .map(|i| {
                    if i == 0 {
                        vec![]
                    } else {
                        vec![ids[(i - 1) / 2].clone()]
                    }
                })
                .collect(),
        ),
        ("flat", (0..n).map(|_| vec![]).collect()),
        (
            // Each step needs the three before it: many long edges.
            "dense",
            (0..n)
                .map(|i| (i.saturating_sub(3)..i).map(|d| ids[d].clone()).collect())
                .collect(),
        ),
        (
            // Every step needs a pseudo-random handful of earlier ones.
            "random",
            (0..n)
                .map(|i| {
                    (0..4)
                        .filter(|_| i > 0)
                        .map(|k| ids[(i * 7919 + k * 104_729) % i].clone())
                        .collect()
                })
                .collect(),
        ),
    ];
    for (name, deps) in &shapes {
        let placed: Vec<Step<'_>> = (0..n).map(|i| step(&ids[i], Queued, &deps[i])).collect();
        let started = std::time::Instant::now();
        let layout = layout(&placed);
        let took = started.elapsed();
        assert!(
            layout.nodes.len() <= collapse::MAX_UNITS,
            "{name}: {} nodes",
            layout.nodes.len()
        );
        assert!(
            layout.edges.len() <= MAX_EDGES,
            "{name}: {} edges",
            layout.edges.len()
        );
        let listed: usize = layout.nodes.iter().filter(|n| n.group.is_none()).count()
            + layout.groups.iter().map(|g| g.size).sum::<usize>();
        assert_eq!(listed, n, "{name}: every step drawn or listed once");
        // Loose enough for a debug build on a loaded machine; a layout that grows out of
        // hand with the steps is far above it.
        assert!(took < std::time::Duration::from_secs(2), "{name}: {took:?}");
    }
}

/// The attacker writes the workflow: step ids full of markup, in a node of their own and
/// in a group's list (and its name, their common prefix). The template escapes them all;
/// nothing of them becomes an element or an attribute.
#[test]
fn hostile_step_ids_are_text_in_the_drawing() {
    let hostile = "\"><img src=x onerror=alert(1)></text><script>alert(2)</script>";
    let ids: Vec<String> = std::iter::once(hostile.to_string())
        .chain((0..13).map(|i| format!("{hostile}-{i}")))
        .collect();
    let root = vec![ids[0].clone()];
    let none: Vec<String> = vec![];
    let placed: Vec<Step<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| step(id, Queued, if i == 0 { &none } else { &root }))
        .collect();
    let layout = layout(&placed);
    assert_eq!(layout.groups.len(), 1, "the 13 siblings are a group");
    let html = crate::web::render::page(
        "run_dag.html",
        &serde_json::json!({"run": {"id": 7}, "dag": layout}),
    )
    .expect("the DAG renders");
    for planted in ["<img", "<script"] {
        assert!(!html.contains(planted), "{planted} got through:\n{html}");
    }
    assert!(html.contains("&lt;img src=x"), "{html}");
    // The quote that would close an attribute is escaped in it.
    assert!(html.contains("data-step=\"&quot;&gt;&lt;img"), "{html}");
    // Every copy (attributes, titles, labels, list rows) is the escaped one.
    let copies = html.matches("alert(2)").count();
    assert!(copies > 13, "{copies}");
    assert_eq!(
        html.matches("&lt;script&gt;alert(2)").count(),
        copies,
        "{html}"
    );
}

#[test]
fn every_status_is_counted_and_may_colour_a_group() {
    for status in StepStatus::ALL {
        assert!(STATUS_ORDER.contains(status), "{status} is never counted");
        assert!(
            GROUP_STATUS.contains(status),
            "{status} never colours a group"
        );
    }
}
