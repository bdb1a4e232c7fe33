//! The template checks of a plan cost memory in proportion to its templates, not to the
//! paths of its strings: a 242-byte workflow nesting 30 levels of 1 KB keys around a list
//! of empty strings made `plue check` abort at 3 GB (every string's path was formatted and
//! kept). Measured with a counting allocator (bytes this thread asked for), so the bound
//! is deterministic.

mod support;

use evaluator::diagnostic::Budget;
use evaluator::plan::SourceMap;
use support::bomb::bomb;

#[global_allocator]
static COUNTING: testkit::counting::Counting = testkit::counting::Counting;

fn map() -> SourceMap {
    SourceMap {
        steps: vec![Default::default(); 2],
        ..SourceMap::default()
    }
}

#[test]
fn deep_llm_inputs_cost_no_path_per_string() {
    // regression (issue 30): 20,000 strings under 30 KB of keys allocated 600 MB here.
    // Now: nothing for a string without `{{`, a parse (a few hundred bytes, freed at once)
    // for one with a reference; never its path.
    let n = 20_000;
    for (leaf, bound) in [("", 1 << 20), ("{{ steps.a.status }}", 1024 * n as u64)] {
        let plan = bomb(30, n, leaf);
        let map = map();
        let mut found = Vec::new();
        let bytes = testkit::counting::allocated_by(|| {
            found = evaluator::template::check(&plan, &map, "w", &mut Budget::unlimited_time());
            found.extend(evaluator::template::unwritten_raw(&plan, &map, "w", "x"));
        });
        assert!(found.is_empty(), "{found:?}");
        assert!(bytes < bound, "{leaf:?}: {bytes} bytes allocated");
    }
}

#[test]
fn a_problem_deep_in_an_input_still_names_its_path() {
    let plan = bomb(2, 3, "{{ steps.nope.status }}");
    let found = evaluator::template::check(&plan, &map(), "w", &mut Budget::unlimited_time());
    let key = |i: usize| format!("k{i}{}", "A".repeat(1018));
    let expected = format!("step 'l': inputs.k.{}.{}[0]: ", key(1), key(0));
    assert!(
        found[0].message.starts_with(&expected),
        "{}",
        found[0].message
    );
    assert_eq!(found.len(), 3);
}
