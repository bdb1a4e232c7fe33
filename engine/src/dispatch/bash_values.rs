//! Values a reference in a `bash` command may not read: those bash would run as a command
//! where it evaluates a value rather than expanding it.
//!
//! A reference becomes `"${V}"`, so bash never parses the value as command text. But bash
//! evaluates a variable's *value* as an arithmetic expression in many contexts — `$(( ))`,
//! `[[ x -gt 0 ]]`, `${a[x]}`, `${s:x}`, `declare -i`, `let`, a continued `((` — and as a
//! variable name in others — `[[ -v x ]]`, `printf -v x` — and an array subscript there
//! is expanded: `a[$(cmd)]` runs `cmd`. No lexer sees every such context (a here-document
//! body, a line continuation, a builtin's option), so the rule is on the value:
//!
//! - a value holding `[` together with `$` or a backtick ([`bash::runs_as_code`]) is
//!   refused for a reference;
//! - so is a value naming, as a word, a variable of the step's environment whose value is
//!   refused (arithmetic evaluates a name it meets recursively: `n=B`, `B='a[$(cmd)]'`),
//!   followed through any chain of names.
//!
//! A refused reference fails the step before it starts, with a reason naming the output
//! and the variable that still carries it: the script may read `"$PLUE_OUTPUT_..."` itself,
//! at its own risk. Values without `[`, or with `[` but no `$` or backtick (JSON lists,
//! `a[1]`), pass. Variables the script sets itself are out of reach of this rule; they are
//! the script's own code. Cost: linear in the bytes of the environment.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use evaluator::template::{bash, echo};

use super::output_var;

/// Where bash reads a value as code, for messages.
const CONTEXTS: &str =
    "where it evaluates a value as arithmetic or a variable name ([[ x -gt 0 ]], ${a[x]}, ${s:x}, declare -i, let, [[ -v x ]], printf -v x)";

/// Checks the variable each non-raw output reference of a bash command reads.
/// `references` maps (step, key) to that variable; `env` is the step's whole environment.
pub(super) fn check(
    what: &str,
    env: &BTreeMap<String, String>,
    references: &BTreeMap<(String, String), String>,
) -> Result<(), String> {
    if references.is_empty() {
        return Ok(());
    }
    let refused = refused_names(env);
    if refused.is_empty() {
        return Ok(());
    }
    for ((step, key), var) in references {
        let Some(via) = refused.get(var.as_str()) else {
            continue;
        };
        let reference = format!("{{{{ steps.{step}.outputs.{key} }}}}");
        let why = match via {
            None => format!(
                "the value holds '[' with '$' or '`', which bash runs as a command {CONTEXTS}"
            ),
            Some(name) => format!(
                "the value names variable {}, which leads to a value holding '[' with '$' or '`', which bash runs as a command {CONTEXTS}",
                echo(name)
            ),
        };
        let name = output_var(step, key);
        return Err(format!(
            "{what}: '{}': {why}; a reference may not read it. Read \"${}\" (set for every output of a direct dependency) instead, after checking it, at the script's own risk",
            echo(&reference),
            echo(&name)
        ));
    }
    Ok(())
}

/// Every variable of `env` whose value is refused, with the variable its value names that
/// leads to a refused value (`None`: the value itself is refused).
fn refused_names(env: &BTreeMap<String, String>) -> BTreeMap<&str, Option<&str>> {
    let mut refused: BTreeMap<&str, Option<&str>> = env
        .iter()
        .filter(|(_, value)| bash::runs_as_code(value))
        .map(|(name, _)| (name.as_str(), None))
        .collect();
    if refused.is_empty() {
        return refused;
    }
    // name → the variables whose values name it, as a word.
    let mut named_by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in env {
        for word in words(value) {
            if word != name && env.contains_key(word) {
                named_by.entry(word).or_default().insert(name.as_str());
            }
        }
    }
    let mut queue: VecDeque<&str> = refused.keys().copied().collect();
    while let Some(bad) = queue.pop_front() {
        for &namer in named_by.get(bad).into_iter().flatten() {
            if !refused.contains_key(namer) {
                refused.insert(namer, Some(bad));
                queue.push_back(namer);
            }
        }
    }
    refused
}

/// The maximal runs of `[A-Za-z0-9_]` in `text` that are variable names.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| bash::is_var_name(w))
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

    #[test]
    fn a_value_with_a_subscript_and_an_expansion_is_refused() {
        let e = env(&[("PLUE_OUTPUT_UP_N", "a[$(id)]")]);
        let err = check("command", &e, &refs(&[("up", "n", "PLUE_OUTPUT_UP_N")])).unwrap_err();
        assert!(
            err.starts_with("command: '{{ steps.up.outputs.n }}': the value holds '['"),
            "{err}"
        );
        assert!(err.contains("\"$PLUE_OUTPUT_UP_N\""), "{err}");
        assert!(!err.contains("$(id)") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn a_value_naming_a_refused_variable_is_refused_through_any_chain() {
        let e = env(&[
            ("PLUE_OUTPUT_UP_N", "1 + C"),
            ("C", "B*2"),
            ("B", "x[`id`]"),
            ("PLUE_OUTPUT_UP_OK", "42 and B_2 and PLUE"),
        ]);
        let err = check("command", &e, &refs(&[("up", "n", "PLUE_OUTPUT_UP_N")])).unwrap_err();
        assert!(err.contains("names variable C, which leads to"), "{err}");
        check("command", &e, &refs(&[("up", "ok", "PLUE_OUTPUT_UP_OK")])).unwrap();
    }

    #[test]
    fn ordinary_values_pass() {
        let e = env(&[
            ("PLUE_OUTPUT_UP_JSON", "{\"list\": [1, 2], \"price\": 5}"),
            ("PLUE_OUTPUT_UP_MONEY", "$5 and `code`"),
            ("OTHER", "a[$(id)]"),
        ]);
        // The refused variable is not read by any reference, nor named by one.
        check(
            "command",
            &e,
            &refs(&[
                ("up", "json", "PLUE_OUTPUT_UP_JSON"),
                ("up", "money", "PLUE_OUTPUT_UP_MONEY"),
            ]),
        )
        .unwrap();
        // Nothing referenced: nothing checked (the script reads its variables itself).
        check("command", &e, &BTreeMap::new()).unwrap();
    }
}
