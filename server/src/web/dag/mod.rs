//! A run's DAG laid out for an SVG drawing, top-down: a step's layer (row) is the length of
//! the longest dependency chain before it ([`layers`]), wide fan-outs are drawn as one group
//! node ([`collapse`]), the nodes of a layer are ordered by the mean position of what they
//! need and what needs them (barycentre sweeps), and every dependency between two drawn
//! nodes is one edge. Pure: steps in, boxes and paths out; `templates/run_dag.html` draws
//! them (and escapes every id), `assets/dag.js` adds zoom, pan, fit and group expansion.
//!
//! Invariants:
//! - Every step is drawn in exactly one node (its own, or a group listing it); an edge is
//!   drawn only between two nodes of the plan's steps; a cycle (which validation refuses
//!   anyway) cannot loop the layout — its steps sit in the first layer.
//! - The drawing is bounded whatever the plan: at most [`collapse::MAX_UNITS`] nodes and
//!   [`MAX_EDGES`] edges (a 1,000-step plan draws a few hundred SVG elements).
//! - The layout depends only on the plan's shape, never on statuses: [`Layout::shape`] is
//!   the same on every refresh of a run, so the page updates its nodes in place.

mod collapse;

use std::collections::{BTreeSet, HashMap};

use plue_types::status::StepStatus;
use serde::Serialize;

pub(super) const NODE_WIDTH: i64 = 200;
pub(super) const NODE_HEIGHT: i64 = 44;
const GAP_X: i64 = 24;
const GAP_Y: i64 = 44;
const PAD: i64 = 8;
/// Most edges drawn; past it, edges that skip layers are left out first.
pub(super) const MAX_EDGES: usize = 600;
/// Labels longer than this are cut (the full id is the node's tooltip).
const LABEL_CHARS: usize = 25;
/// The order statuses are counted in a group's summary (every status: a test holds it).
const STATUS_ORDER: [StepStatus; 9] = [
    StepStatus::Succeeded,
    StepStatus::Failed,
    StepStatus::Running,
    StepStatus::Claimed,
    StepStatus::Waiting,
    StepStatus::Queued,
    StepStatus::Pending,
    StepStatus::Skipped,
    StepStatus::Cancelled,
];
/// Which status colours a group: the first of these any member has (every status).
const GROUP_STATUS: [StepStatus; 9] = [
    StepStatus::Failed,
    StepStatus::Running,
    StepStatus::Claimed,
    StepStatus::Waiting,
    StepStatus::Queued,
    StepStatus::Pending,
    StepStatus::Cancelled,
    StepStatus::Succeeded,
    StepStatus::Skipped,
];

/// A step to place: its id, state, kind and the steps it depends on.
#[derive(Debug, Clone)]
pub(super) struct Step<'a> {
    pub(super) id: &'a str,
    pub(super) status: StepStatus,
    /// The plan's kind (`bash`, `llm`, `approval`, …); an approval links to its panel.
    pub(super) kind: &'a str,
    pub(super) depends_on: &'a [String],
}

/// One drawn node: a step, or a group of steps (`group` is then its index in
/// [`Layout::groups`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Node {
    /// Stable across refreshes of one run: `s:<step id>` or `g:<group index>`.
    pub(super) key: String,
    /// The step's id (a group's: empty).
    pub(super) id: String,
    pub(super) group: Option<usize>,
    pub(super) label: String,
    pub(super) status: StepStatus,
    /// The step is an approval (its node links to the run page's approval panel).
    pub(super) approval: bool,
    /// Top-left corner.
    pub(super) x: i64,
    pub(super) y: i64,
}

/// Steps drawn as one node; the page lists them when the node is opened.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Group {
    pub(super) index: usize,
    /// The members' common id prefix (`shard` for `shard-0…59`), else `steps`.
    pub(super) name: String,
    pub(super) size: usize,
    /// The status that colours the node (failed before running before … succeeded).
    pub(super) status: StepStatus,
    /// How many members have each status, in [`STATUS_ORDER`], zeros left out.
    pub(super) counts: Vec<Count>,
    pub(super) members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Count {
    pub(super) status: StepStatus,
    pub(super) n: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Member {
    pub(super) id: String,
    pub(super) status: StepStatus,
    pub(super) approval: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Edge {
    /// Node keys.
    pub(super) from: String,
    pub(super) to: String,
    /// SVG path data (a cubic curve from the bottom of `from` to the top of `to`).
    pub(super) path: String,
    /// The state of `to`, so an edge into a running step can be drawn as such.
    pub(super) status: StepStatus,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Layout {
    pub(super) width: i64,
    pub(super) height: i64,
    pub(super) node_width: i64,
    pub(super) node_height: i64,
    /// Steps in the plan (drawn nodes may be fewer).
    pub(super) steps: usize,
    pub(super) nodes: Vec<Node>,
    pub(super) edges: Vec<Edge>,
    /// Dependencies not drawn because of [`MAX_EDGES`].
    pub(super) hidden_edges: usize,
    pub(super) groups: Vec<Group>,
    /// A digest of the node keys, positions, edges and group members: equal on two
    /// refreshes exactly when only statuses changed (the page then updates its nodes in
    /// place).
    pub(super) shape: String,
}

/// The layout of a run whose step rows are `steps` and whose plan (if it evaluated) is
/// `plan`: dependencies and kinds come from the plan, statuses from the rows.
pub(super) fn of_run(
    steps: &[plue_store::StepRunRow],
    plan: Option<&evaluator::plan::Plan>,
) -> Layout {
    let planned: HashMap<&str, &evaluator::plan::Step> = plan
        .map(|p| p.steps.iter().map(|s| (s.id.as_str(), s)).collect())
        .unwrap_or_default();
    let placed: Vec<Step<'_>> = steps
        .iter()
        .map(|s| {
            let step = planned.get(s.step_id.as_str());
            Step {
                id: &s.step_id,
                status: s.status,
                kind: step.map_or("", |p| p.action.kind()),
                depends_on: step.map_or(&[], |p| p.depends_on.as_slice()),
            }
        })
        .collect();
    layout(&placed)
}

pub(super) fn layout(steps: &[Step<'_>]) -> Layout {
    let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let deps: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| {
            let mut found: Vec<usize> = s
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect();
            found.sort_unstable();
            found.dedup();
            found
        })
        .collect();
    let layers = layers(&deps);
    let units = collapse::units(&deps, &layers);
    let mut unit_of = vec![0usize; steps.len()];
    for (u, unit) in units.iter().enumerate() {
        for &i in &unit.members {
            unit_of[i] = u;
        }
    }
    // Unit-level edges (deduplicated, none inside a unit), nearest layers first.
    let mut links: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (i, list) in deps.iter().enumerate() {
        for &d in list {
            if unit_of[d] != unit_of[i] {
                links.insert((unit_of[d], unit_of[i]));
            }
        }
    }
    let mut links: Vec<(usize, usize)> = links.into_iter().collect();
    let total_links = links.len();
    if links.len() > MAX_EDGES {
        links.sort_by_key(|&(a, b)| (units[b].layer.abs_diff(units[a].layer), a, b));
        links.truncate(MAX_EDGES);
        links.sort_unstable();
    }
    let unit_layers: Vec<usize> = units.iter().map(|u| u.layer).collect();
    let rows = order(&unit_layers, &links);

    let widest = rows.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let step_x = NODE_WIDTH + GAP_X;
    let step_y = NODE_HEIGHT + GAP_Y;
    let mut position = vec![(0i64, 0i64); units.len()];
    for (layer, row) in rows.iter().enumerate() {
        // Narrower layers are centred under the widest.
        let offset = (widest - row.len() as i64) * step_x / 2;
        for (slot, &u) in row.iter().enumerate() {
            position[u] = (
                PAD + offset + slot as i64 * step_x,
                PAD + layer as i64 * step_y,
            );
        }
    }

    let mut groups = Vec::new();
    let mut nodes = Vec::with_capacity(units.len());
    for (u, unit) in units.iter().enumerate() {
        let (x, y) = position[u];
        if unit.group {
            let group = group(groups.len(), &unit.members, steps);
            nodes.push(Node {
                key: format!("g:{}", group.index),
                id: String::new(),
                group: Some(group.index),
                label: cut(&format!("{} \u{2014} {} steps", group.name, group.size)),
                status: group.status,
                approval: false,
                x,
                y,
            });
            groups.push(group);
        } else {
            let step = &steps[unit.members[0]];
            nodes.push(Node {
                key: format!("s:{}", step.id),
                id: step.id.to_string(),
                group: None,
                label: cut(step.id),
                status: step.status,
                approval: step.kind == "approval",
                x,
                y,
            });
        }
    }
    let edges: Vec<Edge> = links
        .iter()
        .map(|&(from, to)| {
            let (x1, y1) = (
                position[from].0 + NODE_WIDTH / 2,
                position[from].1 + NODE_HEIGHT,
            );
            let (x2, y2) = (position[to].0 + NODE_WIDTH / 2, position[to].1);
            let mid = (y1 + y2) / 2;
            Edge {
                from: nodes[from].key.clone(),
                to: nodes[to].key.clone(),
                path: format!("M{x1} {y1} C{x1} {mid} {x2} {mid} {x2} {y2}"),
                status: nodes[to].status,
            }
        })
        .collect();
    let layer_count = rows.len() as i64;
    let shape = shape(&nodes, &edges, &groups);
    Layout {
        width: PAD * 2 + (widest * step_x - GAP_X).max(0),
        height: PAD * 2 + (layer_count * step_y - GAP_Y).max(0),
        node_width: NODE_WIDTH,
        node_height: NODE_HEIGHT,
        steps: steps.len(),
        hidden_edges: total_links - edges.len(),
        nodes,
        edges,
        groups,
        shape,
    }
}

/// Each step's layer: 0 without dependencies, else one more than its deepest dependency.
/// Steps on a cycle never become ready in Kahn's order and stay in layer 0.
fn layers(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, list) in deps.iter().enumerate() {
        for &d in list {
            dependants[d].push(i);
        }
    }
    let mut layer = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &next in &dependants[i] {
            layer[next] = layer[next].max(layer[i] + 1);
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(next);
            }
        }
    }
    layer
}

/// The units of each layer, left to right: plan order first, then barycentre sweeps
/// (down by what a unit needs, up by what needs it, down again), ties kept in plan order.
fn order(layers: &[usize], links: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let count = layers.iter().max().map_or(0, |l| l + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (u, &layer) in layers.iter().enumerate() {
        rows[layer].push(u);
    }
    let mut needs: Vec<Vec<usize>> = vec![Vec::new(); layers.len()];
    let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); layers.len()];
    for &(from, to) in links {
        needs[to].push(from);
        needed_by[from].push(to);
    }
    let mut place = vec![0f64; layers.len()];
    for row in &rows {
        centre(row, &mut place);
    }
    let sweep = |rows: &mut Vec<Vec<usize>>,
                 place: &mut Vec<f64>,
                 by: &[Vec<usize>],
                 layer_order: Vec<usize>| {
        for layer in layer_order {
            let key: HashMap<usize, f64> = rows[layer]
                .iter()
                .map(|&u| {
                    let known = &by[u];
                    let value = if known.is_empty() {
                        place[u]
                    } else {
                        known.iter().map(|&v| place[v]).sum::<f64>() / known.len() as f64
                    };
                    (u, value)
                })
                .collect();
            rows[layer].sort_by(|a, b| key[a].total_cmp(&key[b]).then(a.cmp(b)));
            centre(&rows[layer], place);
        }
    };
    sweep(&mut rows, &mut place, &needs, (1..count).collect());
    sweep(
        &mut rows,
        &mut place,
        &needed_by,
        (0..count.saturating_sub(1)).rev().collect(),
    );
    sweep(&mut rows, &mut place, &needs, (1..count).collect());
    rows
}

/// Sets the place of each unit of `row` to its slot, centred: layers of different widths
/// line up on their middles.
fn centre(row: &[usize], place: &mut [f64]) {
    let middle = (row.len() as f64 - 1.0) / 2.0;
    for (slot, &u) in row.iter().enumerate() {
        place[u] = slot as f64 - middle;
    }
}

fn group(index: usize, members: &[usize], steps: &[Step<'_>]) -> Group {
    let mut counts: HashMap<StepStatus, usize> = HashMap::new();
    for &i in members {
        *counts.entry(steps[i].status).or_default() += 1;
    }
    let status = GROUP_STATUS
        .into_iter()
        .find(|s| counts.contains_key(s))
        .unwrap_or(StepStatus::Pending);
    let listed: Vec<Count> = STATUS_ORDER
        .into_iter()
        .filter_map(|status| counts.get(&status).map(|&n| Count { status, n }))
        .collect();
    let ids: Vec<&str> = members.iter().map(|&i| steps[i].id).collect();
    Group {
        index,
        name: common_name(&ids),
        size: members.len(),
        status,
        counts: listed,
        members: members
            .iter()
            .map(|&i| Member {
                id: steps[i].id.to_string(),
                status: steps[i].status,
                approval: steps[i].kind == "approval",
            })
            .collect(),
    }
}

/// The members' longest common prefix without trailing separators, nor a number it ends
/// inside of (`shard-0`…`shard-59` → `shard`, `test-3-0`…`test-3-99` → `test-3`), or
/// `steps` when they share nothing.
fn common_name(ids: &[&str]) -> String {
    let Some(first) = ids.first() else {
        return "steps".to_string();
    };
    let mut prefix: &str = first;
    for id in &ids[1..] {
        let shared: usize = prefix
            .chars()
            .zip(id.chars())
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a.len_utf8())
            .sum();
        prefix = &prefix[..shared];
    }
    // A prefix ending inside a number (`shard-1` of `shard-10…19`) loses the number.
    let inside_number = prefix.ends_with(|c: char| c.is_ascii_digit())
        && ids
            .iter()
            .any(|id| id[prefix.len()..].starts_with(|c: char| c.is_ascii_digit()));
    let name = if inside_number {
        prefix.trim_end_matches(|c: char| c.is_ascii_digit())
    } else {
        prefix
    };
    let name = name.trim_end_matches(['-', '_', '.', ':', '/', ' ', '[', '(']);
    if name.is_empty() {
        "steps".to_string()
    } else {
        name.to_string()
    }
}

/// FNV-1a over the node keys, positions, edge ends and group members: a cheap, stable
/// digest.
fn shape(nodes: &[Node], edges: &[Edge], groups: &[Group]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |text: &str| {
        for byte in text.bytes().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for node in nodes {
        eat(&node.key);
        eat(&format!("{} {}", node.x, node.y));
    }
    for edge in edges {
        eat(&edge.from);
        eat(&edge.to);
    }
    for member in groups.iter().flat_map(|g| &g.members) {
        eat(&member.id);
    }
    format!("{hash:016x}")
}

fn cut(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(LABEL_CHARS - 1).collect();
        cut.push('\u{2026}');
        cut
    }
}

#[cfg(test)]
mod tests;
