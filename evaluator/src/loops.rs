//! Review loops: `Step.bash(..., loop_to="build", max_loops=2)` on a reviewing step sends
//! its failure back to an ancestor, a bounded number of times.
//!
//! A loop has a *source* (the step with `loop_to`), a *target* (the ancestor it names) and
//! a *region*: the target, every step between them (descendants of the target that are
//! ancestors of the source) and the source. When the source fails after its retries and
//! the loop has not gone back `max_loops` times yet, the engine sets the whole region back
//! to pending as a new *iteration*; the rest of the plan never repeats. So a run's step
//! graph is a DAG plus these loop edges, each bounded.
//!
//! What validation ([`check`]) guarantees, so that the engine can always execute a loop:
//! - `loop_to` names a transitive ancestor; `max_loops` is given with it, between 1 and
//!   [`MAX_LOOPS`], and never without it; a plan has at most [`MAX_LOOPS_PER_PLAN`] loops;
//! - regions are disjoint: no step belongs to two loops (nested, overlapping or sharing
//!   a target), so each step has one iteration counter;
//! - no approval step is a source or inside a region (a decision is taken once);
//! - a step outside a region that depends on a step inside it (other than the source)
//!   also depends on the source, so it never runs on an iteration that is thrown away.
//!
//! Workspaces ([`LoopWorkspace`], `loop_workspace=`, default `previous`): a step of a
//! region starts each round after the first from its own final workspace of the round
//! before (the engine names the step itself as the attempt's `workspace_from`), unless its
//! `workspace_from` names a step of the same region, which ran again and holds the newer
//! work ([`Loops::resumes_own_workspace`]); `fresh` starts every round as round 1 did.
//!
//! Templates: a step of a region may read the *outputs* of a later step of the same region
//! (one it comes before, the source included), which otherwise would not be a dependency:
//! in iteration 1 those references render as empty text, in a later iteration as the
//! values the previous iteration stored ([`Loops::is_feedback`]).
//!
//! Pure: plain data and functions; cost linear in the plan per loop, and at most
//! [`MAX_LOOPS_PER_PLAN`] loops are walked: every `loop_to` that names a step counts,
//! valid or not, so a plan of a thousand `loop_to`s that are not ancestors costs fifty
//! walks of the graph, not a thousand.

use std::collections::{HashMap, VecDeque};

use crate::diagnostic::{Budget, Found};
use crate::plan::{Plan, SourceMap};
use crate::text::echo;

pub use crate::plan::LoopWorkspace;

/// The most times one loop may go back to its target.
pub const MAX_LOOPS: u32 = 10;

/// The most loops one plan may have (each costs a pass over the plan to validate).
pub const MAX_LOOPS_PER_PLAN: usize = 50;

/// One loop of a plan, by step index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loop {
    /// The step with `loop_to`: its failure starts the next iteration.
    pub source: usize,
    /// The ancestor that runs again first.
    pub target: usize,
    pub max_loops: u32,
    /// The target, the steps between, the source: in plan order.
    pub region: Vec<usize>,
}

/// The loops of a plan and which loop each step belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loops {
    pub loops: Vec<Loop>,
    /// For each step (by index), the index in `loops` of the loop whose region holds it.
    pub member: Vec<Option<usize>>,
    /// For each step of a region, its ancestors (a bitset over step indices); empty for
    /// the others. A path between two steps of a region never leaves it.
    ancestors: Vec<Vec<u64>>,
}

impl Loops {
    /// The loops of `plan`. Meant for validated plans; on others, steps with an unknown or
    /// missing `loop_to`/`max_loops` are left out and a step in several regions keeps the
    /// first.
    pub fn of(plan: &Plan) -> Loops {
        let n = plan.steps.len();
        let mut loops = Loops {
            loops: Vec::new(),
            member: vec![None; n],
            ancestors: vec![Vec::new(); n],
        };
        if !plan.steps.iter().any(|s| s.loop_to.is_some()) {
            return loops;
        }
        let graph = Graph::new(plan);
        for (source, step) in plan.steps.iter().enumerate() {
            let (Some(target), Some(max_loops)) = (&step.loop_to, step.max_loops) else {
                continue;
            };
            let Some(&target) = graph.index.get(target.as_str()) else {
                continue;
            };
            if loops.loops.len() == MAX_LOOPS_PER_PLAN {
                break;
            }
            let region = graph.region(target, source);
            let number = loops.loops.len();
            for &i in &region {
                loops.member[i].get_or_insert(number);
            }
            graph.region_ancestors(&region, &mut loops.ancestors);
            loops.loops.push(Loop {
                source,
                target,
                max_loops,
                region,
            });
        }
        loops
    }

    /// Whether plan step `reader` reads step `read` as *feedback*: both in one loop's
    /// region and `read` after `reader` (the reader is its ancestor), so `read` has not run
    /// yet in the reader's iteration and what it shows is the previous iteration's.
    pub fn is_feedback(&self, reader: usize, read: usize) -> bool {
        reader != read
            && self.member.get(reader).copied().flatten().is_some()
            && self.member.get(reader) == self.member.get(read)
            && self.ancestors[read]
                .get(reader / 64)
                .is_some_and(|word| word & (1 << (reader % 64)) != 0)
    }

    /// Whether plan step `step` starts its rounds after the first from its own previous
    /// round's final workspace: it is in a loop's region, its `loop_workspace` is not
    /// `fresh`, and its `workspace_from` (if any) names no step of the same region.
    pub fn resumes_own_workspace(&self, plan: &Plan, step: usize) -> bool {
        let Some(member) = self.member.get(step).copied().flatten() else {
            return false;
        };
        let Some(of) = plan.steps.get(step) else {
            return false;
        };
        if of.loop_workspace == Some(LoopWorkspace::Fresh) {
            return false;
        }
        let region = &self.loops[member].region;
        !of.workspace_from
            .as_deref()
            .is_some_and(|from| region.iter().any(|&i| plan.steps[i].id == from))
    }

    /// Whether steps `a` and `b` (indices; equal ones too) are in one loop's region.
    pub fn same_loop(&self, a: usize, b: usize) -> bool {
        let of = |i: usize| self.member.get(i).copied().flatten();
        of(a).is_some() && of(a) == of(b)
    }

    /// The loop step `step` belongs to, if any.
    pub fn loop_of(&self, step: usize) -> Option<&Loop> {
        self.member
            .get(step)
            .copied()
            .flatten()
            .map(|l| &self.loops[l])
    }
}

/// Dependency edges both ways, by index (the first definition of a duplicated id wins).
struct Graph<'a> {
    index: HashMap<&'a str, usize>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
}

impl<'a> Graph<'a> {
    fn new(plan: &'a Plan) -> Graph<'a> {
        let index: HashMap<&str, usize> = plan
            .steps
            .iter()
            .enumerate()
            .rev()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let deps: Vec<Vec<usize>> = plan
            .steps
            .iter()
            .map(|s| {
                s.depends_on
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
            .collect();
        let mut dependents = vec![Vec::new(); plan.steps.len()];
        for (i, d) in deps.iter().enumerate() {
            for &dep in d {
                dependents[dep].push(i);
            }
        }
        Graph {
            index,
            deps,
            dependents,
        }
    }

    /// Every step reachable from `start` along `edges` (`start` excluded unless on a cycle).
    fn reach(edges: &[Vec<usize>], start: usize) -> Vec<bool> {
        let mut seen = vec![false; edges.len()];
        let mut queue = VecDeque::from([start]);
        while let Some(i) = queue.pop_front() {
            for &next in &edges[i] {
                if !seen[next] {
                    seen[next] = true;
                    queue.push_back(next);
                }
            }
        }
        seen
    }

    fn ancestors(&self, step: usize) -> Vec<bool> {
        Graph::reach(&self.deps, step)
    }

    fn descendants(&self, step: usize) -> Vec<bool> {
        Graph::reach(&self.dependents, step)
    }

    /// Sets `ancestors[m]` for every step `m` of `region` (a bitset over step indices),
    /// in the region's topological order: one union per edge inside it.
    fn region_ancestors(&self, region: &[usize], ancestors: &mut [Vec<u64>]) {
        let words = self.deps.len().div_ceil(64);
        let inside = |i: usize| region.binary_search(&i).is_ok();
        let mut waiting: Vec<usize> = region
            .iter()
            .map(|&m| self.deps[m].iter().filter(|&&d| inside(d)).count())
            .collect();
        let position = |i: usize| region.binary_search(&i).expect("inside the region");
        let mut ready: Vec<usize> = region
            .iter()
            .zip(&waiting)
            .filter(|(_, &w)| w == 0)
            .map(|(&m, _)| m)
            .collect();
        while let Some(m) = ready.pop() {
            let mut set = vec![0u64; words];
            for &d in self.deps[m].iter().filter(|&&d| inside(d)) {
                set[d / 64] |= 1 << (d % 64);
                for (a, b) in set.iter_mut().zip(&ancestors[d]) {
                    *a |= b;
                }
            }
            ancestors[m] = set;
            for &next in self.dependents[m].iter().filter(|&&x| inside(x)) {
                let p = position(next);
                waiting[p] -= 1;
                if waiting[p] == 0 {
                    ready.push(next);
                }
            }
        }
    }

    /// The target, the steps between it and the source, the source; in plan order.
    fn region(&self, target: usize, source: usize) -> Vec<usize> {
        let up = self.ancestors(source);
        let down = self.descendants(target);
        (0..self.deps.len())
            .filter(|&i| i == target || i == source || (up[i] && down[i]))
            .collect()
    }
}

/// Every problem with the plan's loops, each at the step that causes it, into `found`.
/// Suggestions come out of the plan's `budget`; past its deadline this stops (the caller
/// reports it).
pub fn check(plan: &Plan, map: &SourceMap, budget: &mut Budget, found: &mut Found) {
    for (i, step) in plan.steps.iter().enumerate() {
        if step.continue_on_error && step.loop_to.is_some() {
            found.add(
                map.step(i),
                format!(
                    "step '{}': continue_on_error=True tolerates the failure that loop_to \
                     needs to go back; use one or the other",
                    echo(&step.id)
                ),
            );
        }
    }
    if plan.steps.iter().any(|s| s.loop_workspace.is_some()) {
        let loops = Loops::of(plan);
        for (i, step) in plan.steps.iter().enumerate() {
            if step.loop_workspace.is_some() && loops.member[i].is_none() {
                found.add(
                    map.step(i),
                    format!(
                        "step '{}': loop_workspace= applies to the steps of a review loop (the \
                         loop_to target, the steps between, the step with loop_to)",
                        echo(&step.id)
                    ),
                );
            }
        }
    }
    if !plan
        .steps
        .iter()
        .any(|s| s.loop_to.is_some() || s.max_loops.is_some())
    {
        return;
    }
    let mut add = |step: usize, message: String| {
        found.add(map.step(step), message);
    };
    let graph = Graph::new(plan);
    let ids = || plan.steps.iter().map(|s| s.id.as_str());
    let mut valid = Vec::new();
    // `loop_to`s that name a step, valid or not: each costs a walk of the graph.
    let mut walked = 0;
    for (i, step) in plan.steps.iter().enumerate() {
        if budget.expired() {
            return;
        }
        let id = echo(&step.id);
        let target = match (&step.loop_to, step.max_loops) {
            (None, None) => continue,
            (None, Some(_)) => {
                add(i, format!("step '{id}': max_loops= needs loop_to= (the ancestor to go back to when the step fails)"));
                continue;
            }
            (Some(target), max_loops) => {
                match max_loops {
                    None => add(i, format!("step '{id}': loop_to='{}' needs max_loops= (how many times to go back, 1 to {MAX_LOOPS})", echo(target))),
                    Some(n) if n == 0 || n > MAX_LOOPS => add(i, format!("step '{id}': max_loops must be between 1 and {MAX_LOOPS}, got {n}")),
                    Some(_) => {}
                }
                target
            }
        };
        if !step.action.step_kind().runs_on_runner() {
            // Reported with the approval's other refused options (validate.rs).
            continue;
        }
        let Some(&t) = graph.index.get(target.as_str()) else {
            let hint = budget.did_you_mean(target, ids());
            add(
                i,
                format!(
                    "step '{id}': loop_to names unknown step '{}'{hint}",
                    echo(target)
                ),
            );
            continue;
        };
        if t == i {
            add(
                i,
                format!("step '{id}': loop_to must name a step it depends on, not the step itself"),
            );
            continue;
        }
        if walked == MAX_LOOPS_PER_PLAN {
            add(
                i,
                format!("the plan has more than {MAX_LOOPS_PER_PLAN} loops; the limit is {MAX_LOOPS_PER_PLAN}"),
            );
            break;
        }
        walked += 1;
        let ancestors = graph.ancestors(i);
        if ancestors[i] {
            // On a dependency cycle, which is reported on its own.
            continue;
        }
        if !ancestors[t] {
            add(i, format!("step '{id}': loop_to='{}' is not a step it depends on (directly or through other steps); a loop goes back to an ancestor", echo(target)));
            continue;
        }
        let max_loops = step.max_loops.unwrap_or(1);
        valid.push(Loop {
            source: i,
            target: t,
            max_loops,
            region: graph.region(t, i),
        });
    }
    // Disjoint regions, no approvals inside, nothing outside depending on an iteration
    // that may be thrown away.
    let mut owner: Vec<Option<usize>> = vec![None; plan.steps.len()];
    let mut overlapping = false;
    for (number, l) in valid.iter().enumerate() {
        if budget.expired() {
            return;
        }
        let source = echo(&plan.steps[l.source].id);
        let target = echo(&plan.steps[l.target].id);
        for &member in &l.region {
            if let Some(other) = owner[member] {
                let o = &valid[other];
                add(l.source, format!(
                    "step '{source}': the loop back to '{target}' shares step '{}' with the loop of step '{}' (back to '{}'); loops may not nest or overlap",
                    echo(&plan.steps[member].id),
                    echo(&plan.steps[o.source].id),
                    echo(&plan.steps[o.target].id),
                ));
                overlapping = true;
                break;
            }
            if !plan.steps[member].action.step_kind().runs_on_runner() {
                add(l.source, format!(
                    "step '{source}': the loop back to '{target}' contains approval step '{}'; a decision is taken once, so approvals cannot be inside a loop",
                    echo(&plan.steps[member].id),
                ));
            }
        }
        for &member in &l.region {
            owner[member].get_or_insert(number);
        }
    }
    if overlapping {
        // What depends on what inside overlapping loops says nothing useful until they
        // are apart.
        return;
    }
    for l in &valid {
        if budget.expired() {
            return;
        }
        let source = echo(&plan.steps[l.source].id);
        let target = echo(&plan.steps[l.target].id);
        let after_source = graph.descendants(l.source);
        for &member in l.region.iter().filter(|&&m| m != l.source) {
            for &dependent in &graph.dependents[member] {
                let inside = owner[dependent] == owner[member];
                if !inside && !after_source[dependent] {
                    add(dependent, format!(
                        "step '{}' depends on '{}', which repeats in the loop of step '{source}' (back to '{target}'), but not on '{source}': it would see only the first iteration; add '{source}' to its depends_on",
                        echo(&plan.steps[dependent].id),
                        echo(&plan.steps[member].id),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
