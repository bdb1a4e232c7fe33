//! The inputs of a manual dispatch checked against the plan's `Trigger.manual(inputs=...)`:
//! the one check behind `plue trigger`, `POST /api/repos/.../dispatch`, the local
//! `POST /api/runs` and `plue run --input`.
//!
//! Invariants: every given name is declared; every required input without a default is
//! given; a declared default fills an input not given; a value of an input with `options`
//! is one of them (defaults included); a boolean's is `true` or `false`, a number's a
//! decimal number ([`InputKind::accepts`]). All problems are reported together, in one line.
//! Pure: plain data in, plain data out.

use std::collections::BTreeMap;

use crate::plan::{InputKind, ManualInput, Plan, Trigger};

/// The declared inputs of the plan's manual trigger, if it has one.
pub fn declared(plan: &Plan) -> Option<&BTreeMap<String, ManualInput>> {
    plan.triggers.iter().find_map(|t| match t {
        Trigger::Manual { inputs } => Some(inputs),
        _ => None,
    })
}

/// The dispatch's inputs completed with defaults, or what is wrong with them.
pub fn check(
    declared: &BTreeMap<String, ManualInput>,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut problems = Vec::new();
    for name in given.keys() {
        if !declared.contains_key(name) {
            let known: Vec<&str> = declared.keys().map(String::as_str).collect();
            problems.push(format!(
                "unknown input '{name}' (declared: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    let mut complete = BTreeMap::new();
    for (name, input) in declared {
        let value = match (given.get(name), &input.default) {
            (Some(value), _) => value.clone(),
            (None, Some(default)) => default.clone(),
            (None, None) if input.required => {
                problems.push(format!("input '{name}' is required"));
                continue;
            }
            (None, None) => continue,
        };
        if !input.options.is_empty() && !input.options.contains(&value) {
            problems.push(format!(
                "input '{name}' must be one of {}, not '{value}'",
                input.options.join(", ")
            ));
        } else if !input.kind.accepts(&value) {
            problems.push(format!(
                "input '{name}' must be {}, not '{value}'",
                match input.kind {
                    InputKind::Boolean => "true or false",
                    _ => "a number",
                }
            ));
        }
        complete.insert(name.clone(), value);
    }
    if problems.is_empty() {
        Ok(complete)
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(default: Option<&str>, required: bool, options: &[&str]) -> ManualInput {
        ManualInput {
            default: default.map(String::from),
            required,
            description: None,
            options: options.iter().map(|s| s.to_string()).collect(),
            kind: InputKind::String,
        }
    }

    #[test]
    fn inputs_are_checked_and_completed() {
        let declared = BTreeMap::from([
            (
                "target".to_string(),
                input(Some("staging"), false, &["staging", "prod"]),
            ),
            ("version".to_string(), input(None, true, &[])),
            ("note".to_string(), input(None, false, &[])),
        ]);
        let given = BTreeMap::from([("version".to_string(), "1.2".to_string())]);
        assert_eq!(
            check(&declared, &given).unwrap(),
            BTreeMap::from([
                ("target".to_string(), "staging".to_string()),
                ("version".to_string(), "1.2".to_string()),
            ])
        );
        let err = check(
            &declared,
            &BTreeMap::from([
                ("target".to_string(), "moon".to_string()),
                ("tpyo".to_string(), "x".to_string()),
            ]),
        )
        .unwrap_err();
        assert!(
            err.contains("unknown input 'tpyo' (declared: note, target, version)"),
            "{err}"
        );
        assert!(err.contains("input 'version' is required"), "{err}");
        assert!(
            err.contains("input 'target' must be one of staging, prod, not 'moon'"),
            "{err}"
        );
    }

    #[test]
    fn booleans_and_numbers_take_only_their_values() {
        let typed = |kind, default: Option<&str>| ManualInput {
            kind,
            ..input(default, false, &[])
        };
        let declared = BTreeMap::from([
            (
                "dry_run".to_string(),
                typed(InputKind::Boolean, Some("true")),
            ),
            ("count".to_string(), typed(InputKind::Number, None)),
        ]);
        let given = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            check(&declared, &given(&[("count", "-1.5")])).unwrap(),
            given(&[("count", "-1.5"), ("dry_run", "true")])
        );
        let err = check(&declared, &given(&[("dry_run", "yes"), ("count", "NaN")])).unwrap_err();
        assert!(
            err.contains("input 'dry_run' must be true or false, not 'yes'"),
            "{err}"
        );
        assert!(
            err.contains("input 'count' must be a number, not 'NaN'"),
            "{err}"
        );
        for bad in ["", " 3", "1_000", "inf", "0x10"] {
            assert!(!InputKind::Number.accepts(bad), "{bad:?}");
        }
        for good in ["3", "-0.5", "2e3"] {
            assert!(InputKind::Number.accepts(good), "{good:?}");
        }
    }
}
