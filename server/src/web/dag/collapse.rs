//! Which steps are drawn on their own and which are drawn together as one group node.
//!
//! Three rules, each applied only when the one before leaves the drawing too big:
//! 1. **Fan-outs**: layer by layer from the top, the steps of a layer that need the same
//!    drawn nodes (their dependencies mapped to what is drawn for them) form one group when
//!    there are more than [`FAN_OUT`] of them — `root → shard-0…59 → join` is three nodes,
//!    and `shard-i → check-i` lanes collapse into two groups, the second needing the first.
//! 2. **Wide layers**: a layer still wider than [`MAX_LAYER_WIDTH`] nodes becomes one group.
//! 3. **Deep plans**: when more than [`MAX_UNITS`] nodes remain (a 1,000-step chain), runs
//!    of consecutive layers become one group each, so at most [`MAX_UNITS`] are drawn.
//!
//! Invariants: every step is in exactly one unit; a unit's members share one layer (rules
//! 1 and 2) or a band of consecutive layers (rule 3); the result depends only on the plan's
//! shape (ids, order, dependencies), never on statuses, so a live refresh of a run keeps
//! the same units; at most [`MAX_UNITS`] units whatever the plan.

use std::collections::BTreeMap;

/// More siblings than this (with the same needs) are drawn as one group.
pub(super) const FAN_OUT: usize = 12;
/// A layer with more nodes than this after rule 1 is drawn as one group.
pub(super) const MAX_LAYER_WIDTH: usize = 16;
/// The most nodes a drawing has, whatever the plan.
pub(super) const MAX_UNITS: usize = 120;

/// What is drawn as one node: one step, or a group of them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Unit {
    /// Step indices, in plan order.
    pub(super) members: Vec<usize>,
    /// The unit's layer (rows from the top).
    pub(super) layer: usize,
    /// Drawn as a group (even one member left alone by rule 3 is not).
    pub(super) group: bool,
}

/// The units of a plan whose step `i` needs `deps[i]` and sits on layer `layers[i]`;
/// units are in the plan order of their first member.
pub(super) fn units(deps: &[Vec<usize>], layers: &[usize]) -> Vec<Unit> {
    let n = deps.len();
    let layer_count = layers.iter().max().map_or(0, |l| l + 1);
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
    for (i, &layer) in layers.iter().enumerate() {
        by_layer[layer].push(i);
    }
    let mut unit_of = vec![usize::MAX; n];
    let mut units: Vec<Unit> = Vec::new();
    for (layer, members) in by_layer.iter().enumerate() {
        // Rule 1: bucket the layer by what its steps need, as drawn.
        let mut buckets: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
        for &i in members {
            let mut needs: Vec<usize> = deps[i].iter().map(|&d| unit_of[d]).collect();
            needs.sort_unstable();
            needs.dedup();
            buckets.entry(needs).or_default().push(i);
        }
        let mut layer_units: Vec<Unit> = Vec::new();
        for (_, steps) in buckets {
            if steps.len() > FAN_OUT {
                layer_units.push(Unit {
                    members: steps,
                    layer,
                    group: true,
                });
            } else {
                layer_units.extend(steps.into_iter().map(|i| Unit {
                    members: vec![i],
                    layer,
                    group: false,
                }));
            }
        }
        // Rule 2.
        if layer_units.len() > MAX_LAYER_WIDTH {
            let mut all: Vec<usize> = layer_units.into_iter().flat_map(|u| u.members).collect();
            all.sort_unstable();
            layer_units = vec![Unit {
                members: all,
                layer,
                group: true,
            }];
        }
        for unit in layer_units {
            for &i in &unit.members {
                unit_of[i] = units.len();
            }
            units.push(unit);
        }
    }
    if units.len() > MAX_UNITS {
        units = bands(units, layer_count);
    }
    units.sort_by_key(|u| u.members[0]);
    units
}

/// Rule 3: consecutive layers merged into bands, each band one unit (a band of a single
/// step stays a step), at most [`MAX_UNITS`] bands.
fn bands(units: Vec<Unit>, layer_count: usize) -> Vec<Unit> {
    let per_band = layer_count.div_ceil(MAX_UNITS).max(1);
    let mut merged: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for unit in units {
        merged
            .entry(unit.layer / per_band)
            .or_default()
            .extend(unit.members);
    }
    merged
        .into_iter()
        .map(|(band, mut members)| {
            members.sort_unstable();
            Unit {
                group: members.len() > 1,
                members,
                layer: band,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers by longest path, for tests (the layout computes them the same way).
    fn layers(deps: &[Vec<usize>]) -> Vec<usize> {
        let mut layer = vec![0; deps.len()];
        for i in 0..deps.len() {
            layer[i] = deps[i].iter().map(|&d| layer[d] + 1).max().unwrap_or(0);
        }
        layer
    }

    #[test]
    fn a_sixty_step_fan_out_is_one_group_between_root_and_join() {
        let mut deps = vec![vec![]];
        deps.extend((0..60).map(|_| vec![0]));
        deps.push((1..=60).collect());
        let units = units(&deps, &layers(&deps));
        assert_eq!(units.len(), 3);
        assert_eq!(units[1].members.len(), 60);
        assert!(units[1].group && !units[0].group && !units[2].group);
    }

    #[test]
    fn twelve_siblings_stay_steps_thirteen_become_a_group() {
        for (width, expected) in [(12, 13), (13, 2)] {
            let mut deps = vec![vec![]];
            deps.extend((0..width).map(|_| vec![0]));
            assert_eq!(units(&deps, &layers(&deps)).len(), expected, "{width}");
        }
    }

    #[test]
    fn parallel_lanes_collapse_into_one_group_per_stage() {
        // root → shard-i → check-i (i < 40) → join
        let mut deps = vec![vec![]];
        deps.extend((0..40).map(|_| vec![0]));
        deps.extend((1..=40).map(|s| vec![s]));
        deps.push((41..=80).collect());
        let units = units(&deps, &layers(&deps));
        assert_eq!(units.len(), 4, "{units:?}");
        assert_eq!(units[2].members, (41..=80).collect::<Vec<_>>());
    }

    #[test]
    fn a_wide_layer_of_distinct_needs_is_one_group() {
        // 8 roots, then 28 steps each needing a distinct pair of them.
        let mut deps: Vec<Vec<usize>> = (0..8).map(|_| vec![]).collect();
        for a in 0..8 {
            for b in a + 1..8 {
                deps.push(vec![a, b]);
            }
        }
        let units = units(&deps, &layers(&deps));
        assert_eq!(units.len(), 9);
        assert_eq!(units[8].members.len(), 28);
    }

    #[test]
    fn a_thousand_step_chain_is_banded_under_the_bound() {
        let deps: Vec<Vec<usize>> = (0..1000)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let units = units(&deps, &layers(&deps));
        assert!(units.len() <= MAX_UNITS, "{}", units.len());
        let mut seen: Vec<usize> = units.iter().flat_map(|u| u.members.clone()).collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..1000).collect::<Vec<_>>(),
            "every step exactly once"
        );
    }
}
