//! A run's DAG laid out for an SVG drawing: a step's column is the length of the longest
//! dependency chain before it, its row follows its dependencies' rows (barycentre, one
//! pass), and every `depends_on` of the plan is an edge. Pure: steps in, boxes and paths
//! out; the template draws them (and escapes every id).
//!
//! Invariants: every step gets exactly one box; an edge is drawn only between two steps of
//! the plan; a cycle (which validation refuses anyway) cannot loop the layout — its steps
//! are placed in the first column.

use std::collections::HashMap;

use serde::Serialize;

pub(super) const NODE_WIDTH: i64 = 180;
pub(super) const NODE_HEIGHT: i64 = 36;
const GAP_X: i64 = 60;
const GAP_Y: i64 = 14;
const PAD: i64 = 8;
/// Labels longer than this are cut (the full id is the box's tooltip).
const LABEL_CHARS: usize = 22;

/// A step to place: its id, state and the steps it depends on.
#[derive(Debug, Clone)]
pub(super) struct Step<'a> {
    pub(super) id: &'a str,
    pub(super) status: &'a str,
    pub(super) depends_on: &'a [String],
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Node {
    pub(super) id: String,
    pub(super) label: String,
    pub(super) status: String,
    pub(super) x: i64,
    pub(super) y: i64,
    /// The label's baseline (x + a margin, vertical centre).
    pub(super) text_x: i64,
    pub(super) text_y: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Edge {
    pub(super) from: String,
    pub(super) to: String,
    /// SVG path data (a cubic curve from the right of `from` to the left of `to`).
    pub(super) path: String,
    /// The state of `to`, so an edge into a running step can be drawn as such.
    pub(super) status: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Layout {
    pub(super) width: i64,
    pub(super) height: i64,
    pub(super) node_width: i64,
    pub(super) node_height: i64,
    pub(super) nodes: Vec<Node>,
    pub(super) edges: Vec<Edge>,
}

pub(super) fn layout(steps: &[Step<'_>]) -> Layout {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let deps: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let columns = columns(&deps);
    let column_count = columns.iter().max().map_or(0, |c| c + 1);

    // Rows: the first column in plan order, later ones by the mean row of their
    // dependencies (ties keep plan order).
    let mut row = vec![0f64; steps.len()];
    let mut by_column: Vec<Vec<usize>> = vec![Vec::new(); column_count];
    for (i, &column) in columns.iter().enumerate() {
        by_column[column].push(i);
    }
    for (column, members) in by_column.iter_mut().enumerate() {
        let key = |i: usize| -> f64 {
            let placed: Vec<f64> = deps[i]
                .iter()
                .filter(|&&d| columns[d] < column)
                .map(|&d| row[d])
                .collect();
            if placed.is_empty() {
                i as f64
            } else {
                placed.iter().sum::<f64>() / placed.len() as f64
            }
        };
        let keys: HashMap<usize, f64> = members.iter().map(|&i| (i, key(i))).collect();
        members.sort_by(|a, b| keys[a].total_cmp(&keys[b]).then(a.cmp(b)));
        for (r, &i) in members.iter().enumerate() {
            row[i] = r as f64;
        }
    }
    let rows = by_column.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let step_y = NODE_HEIGHT + GAP_Y;
    let mut position = vec![(0i64, 0i64); steps.len()];
    for (column, members) in by_column.iter().enumerate() {
        // Shorter columns are centred against the tallest.
        let offset = (rows - members.len() as i64) * step_y / 2;
        for (r, &i) in members.iter().enumerate() {
            position[i] = (
                PAD + column as i64 * (NODE_WIDTH + GAP_X),
                PAD + offset + r as i64 * step_y,
            );
        }
    }
    let nodes = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (x, y) = position[i];
            Node {
                id: s.id.to_string(),
                label: label(s.id),
                status: s.status.to_string(),
                x,
                y,
                text_x: x + 12,
                text_y: y + NODE_HEIGHT / 2 + 5,
            }
        })
        .collect();
    let mut edges = Vec::new();
    for (to, from_list) in deps.iter().enumerate() {
        for &from in from_list {
            let (x1, y1) = (
                position[from].0 + NODE_WIDTH,
                position[from].1 + NODE_HEIGHT / 2,
            );
            let (x2, y2) = (position[to].0, position[to].1 + NODE_HEIGHT / 2);
            let mid = (x1 + x2) / 2;
            edges.push(Edge {
                from: steps[from].id.to_string(),
                to: steps[to].id.to_string(),
                path: format!("M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}"),
                status: steps[to].status.to_string(),
            });
        }
    }
    Layout {
        width: PAD * 2 + column_count as i64 * (NODE_WIDTH + GAP_X)
            - GAP_X.min(column_count as i64 * GAP_X),
        height: PAD * 2 + rows * step_y - GAP_Y.min(rows * GAP_Y),
        node_width: NODE_WIDTH,
        node_height: NODE_HEIGHT,
        nodes,
        edges,
    }
}

/// Each step's column: 0 without dependencies, else one more than its deepest dependency.
/// Steps on a cycle never become ready in Kahn's order and stay in column 0.
fn columns(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, list) in deps.iter().enumerate() {
        for &d in list {
            dependants[d].push(i);
        }
    }
    let mut column = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &next in &dependants[i] {
            column[next] = column[next].max(column[i] + 1);
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(next);
            }
        }
    }
    column
}

fn label(id: &str) -> String {
    if id.chars().count() <= LABEL_CHARS {
        id.to_string()
    } else {
        let mut cut: String = id.chars().take(LABEL_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step<'a>(id: &'a str, status: &'a str, deps: &'a [String]) -> Step<'a> {
        Step {
            id,
            status,
            depends_on: deps,
        }
    }

    #[test]
    fn a_diamond_has_three_columns_and_four_edges() {
        let none: Vec<String> = vec![];
        let a = vec!["a".to_string()];
        let bc = vec!["b".to_string(), "c".to_string()];
        let layout = layout(&[
            step("a", "succeeded", &none),
            step("b", "running", &a),
            step("c", "queued", &a),
            step("d", "pending", &bc),
        ]);
        let x = |id: &str| layout.nodes.iter().find(|n| n.id == id).unwrap().x;
        assert!(x("a") < x("b"));
        assert_eq!(x("b"), x("c"));
        assert!(x("c") < x("d"));
        assert_eq!(layout.edges.len(), 4);
        let into_b = layout.edges.iter().find(|e| e.to == "b").unwrap();
        assert_eq!(
            (into_b.from.as_str(), into_b.status.as_str()),
            ("a", "running")
        );
        assert!(layout
            .nodes
            .iter()
            .all(|n| n.x + NODE_WIDTH <= layout.width && n.y + NODE_HEIGHT <= layout.height));
    }

    #[test]
    fn unknown_dependencies_and_cycles_do_not_break_the_layout() {
        let ghost = vec!["ghost".to_string()];
        let to_b = vec!["b".to_string()];
        let to_a = vec!["a".to_string()];
        let layout = layout(&[
            step("a", "failed", &to_b),
            step("b", "failed", &to_a),
            step("c", "pending", &ghost),
        ]);
        assert_eq!(layout.nodes.len(), 3);
        assert_eq!(layout.edges.len(), 2, "the cycle's edges, none to 'ghost'");
    }

    #[test]
    fn long_ids_are_cut_for_the_label_only() {
        let none: Vec<String> = vec![];
        let id = "a".repeat(100);
        let layout = layout(&[step(&id, "queued", &none)]);
        assert_eq!(layout.nodes[0].id, id);
        assert_eq!(layout.nodes[0].label.chars().count(), LABEL_CHARS);
    }

    #[test]
    fn five_hundred_steps_lay_out_quickly() {
        let ids: Vec<String> = (0..500).map(|i| format!("s{i}")).collect();
        let deps: Vec<Vec<String>> = (0..500)
            .map(|i| {
                if i == 0 {
                    vec![]
                } else {
                    vec![ids[(i - 1) / 2].clone()]
                }
            })
            .collect();
        let steps: Vec<Step<'_>> = (0..500)
            .map(|i| step(&ids[i], "queued", &deps[i]))
            .collect();
        let started = std::time::Instant::now();
        let layout = layout(&steps);
        assert_eq!(layout.edges.len(), 499);
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
    }
}
