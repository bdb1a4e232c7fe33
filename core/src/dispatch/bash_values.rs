//! Values a `bash` step that uses output references may not receive: those bash would do
//! more with than compute a number where it evaluates a value rather than expanding it.
//!
//! A reference becomes `"${V}"`, so bash never parses the value as command text. But bash
//! evaluates a variable's *value* as an arithmetic expression in many contexts — `$(( ))`,
//! `[[ x -gt 0 ]]`, `${a[x]}`, `${s:x}`, `declare -i`, `let`, a continued `((` — and as a
//! variable name in others — `[[ -v x ]]`, `printf -v x` — and there an array subscript
//! is expanded (`a[$(cmd)]` runs `cmd`) and an assignment happens (`PATH=0` makes the
//! next command `./0/<command>`). No lexer sees every such context (a here-document body,
//! a line continuation, a builtin's option), so the rule is on the values
//! ([`bash::evaluation_hazard`]):
//!
//! - a referenced value that is a hazard is refused;
//! - so is every other output the step receives (its `PLUE_OUTPUT_*` variables, env values
//!   rendered from outputs), as long as the command uses a reference: arithmetic evaluates
//!   a name it meets, recursively, so a harmless referenced value (`n=B`, or `n=_`, bash's
//!   copy of the previous command's last argument) can lead bash to any of them.
//!
//! A refused step fails before it starts, with a reason naming the output and the variable.
//! A step without references receives every value: its script reads `"$PLUE_OUTPUT_..."`
//! itself, at its own risk. Values like `[1, 2]`, `a[3]`, `$5` or `version=1.2` pass. Out
//! of reach: a referenced value naming a variable the script itself filled with hostile
//! text, and an output used as a variable name to assign (`printf -v {{ ref }}`): both are
//! the script's own doing. Cost: linear in the bytes of the environment.

use std::collections::{BTreeMap, BTreeSet};

use evaluator::template::{bash, echo};

use super::{output_var, DispatchError};

/// Checks the values of a bash step whose non-raw output references read the variables in
/// `references` ((step, key) → variable). `env` is the step's whole environment;
/// `from_outputs` names its variables whose values come from outputs. The error says it
/// is in the text `what`.
pub(super) fn check(
    what: &str,
    env: &BTreeMap<String, String>,
    references: &BTreeMap<(String, String), String>,
    from_outputs: &BTreeSet<String>,
) -> Result<(), DispatchError> {
    let Some(((step, key), _)) = references.iter().next() else {
        return Ok(());
    };
    let hazard = |name: &str| env.get(name).and_then(|v| bash::evaluation_hazard(v));
    for ((step, key), var) in references {
        if let Some(why) = hazard(var) {
            return Err(DispatchError::BashReadsHazard {
                reference: echo(&reference(step, key)),
                why,
                var: echo(&output_var(step, key)),
                step: echo(step),
            }
            .at(what));
        }
    }
    let other = from_outputs
        .iter()
        .find_map(|name| hazard(name).map(|why| (name, why)));
    if let Some((name, why)) = other {
        return Err(DispatchError::BashReceivesHazard {
            reference: echo(&reference(step, key)),
            name: echo(name),
            why,
        }
        .at(what));
    }
    Ok(())
}

fn reference(step: &str, key: &str) -> String {
    format!("{{{{ steps.{step}.outputs.{key} }}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refs(pairs: &[(&str, &str, &str)]) -> BTreeMap<(String, String), String> {
        pairs
            .iter()
            .map(|(s, k, v)| ((s.to_string(), k.to_string()), v.to_string()))
            .collect()
    }

    fn all(env: &BTreeMap<String, String>) -> BTreeSet<String> {
        env.keys().cloned().collect()
    }

    #[test]
    fn a_referenced_value_with_a_subscript_and_an_expansion_is_refused() {
        let e = env(&[("PLUE_OUTPUT_UP_N", "a[$(id)]")]);
        let err = check(
            "command",
            &e,
            &refs(&[("up", "n", "PLUE_OUTPUT_UP_N")]),
            &all(&e),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("command: '{{ steps.up.outputs.n }}': the value holds '['"),
            "{err}"
        );
        assert!(err.contains("\"$PLUE_OUTPUT_UP_N\""), "{err}");
        assert!(!err.contains("$(id)") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn any_output_bash_could_run_is_refused_beside_a_reference() {
        // `n=_` names bash's copy of the last argument, which may be any output.
        let e = env(&[
            ("PLUE_OUTPUT_UP_N", "_"),
            ("PLUE_OUTPUT_UP_M", "x[`id`]"),
            ("AUTHOR", "a[$i]"),
        ]);
        let references = refs(&[("up", "n", "PLUE_OUTPUT_UP_N")]);
        let err = check("command", &e, &references, &all(&e))
            .unwrap_err()
            .to_string();
        assert!(err.contains("receives $AUTHOR"), "{err}");
        // An author's own value (not from an output) is not the attacker's.
        let outputs = BTreeSet::from(["PLUE_OUTPUT_UP_N".to_string(), "PLUE_OUTPUT_UP_M".into()]);
        let err = check("command", &e, &references, &outputs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("receives $PLUE_OUTPUT_UP_M"), "{err}");
        // Without references the script reads its variables itself.
        check("command", &e, &BTreeMap::new(), &all(&e)).unwrap();
    }

    #[test]
    fn ordinary_values_pass() {
        let e = env(&[
            ("PLUE_OUTPUT_UP_JSON", "{\"list\": [1, 2], \"price\": 5}"),
            ("PLUE_OUTPUT_UP_MONEY", "$5 and `code`"),
        ]);
        let references = refs(&[
            ("up", "json", "PLUE_OUTPUT_UP_JSON"),
            ("up", "money", "PLUE_OUTPUT_UP_MONEY"),
        ]);
        check("command", &e, &references, &all(&e)).unwrap();
    }
}
