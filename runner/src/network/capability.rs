//! Which network policies a runner can enforce, as the reserved labels claims route by.
//!
//! A step whose policy is `none` or an allow-list asks, besides its own `runner=` labels,
//! for the label of that policy ([`required`]); a runner announces the labels of what it
//! can enforce ([`Capability::labels`]), found by the runner itself ([`Capability::probe`])
//! and, for the engine's pool classes, worked out from their configuration. Claims match
//! labels as subsets, so a runner that cannot enforce a step's policy never claims it, with
//! no change to how claims are made.
//!
//! Invariants:
//! - `open` asks for no label: every runner serves it (the host's or the pod's network).
//! - The keys start with [`PREFIX`], reserved: an operator's labels (a class's, a runner's
//!   `--labels`) may not use it, and a registration token's scope does not govern them —
//!   they narrow what a runner claims, never widen it.
//! - A runner that announces a capability still enforces the policy itself and fails
//!   closed when it cannot ([`super::confine`]): the label routes, it does not confine.

use std::collections::BTreeMap;

use plue_types::protocol::NetworkPolicy;

/// The prefix of the reserved label keys.
pub const PREFIX: &str = "plue.network/";
/// The label of runners that enforce `network="none"`.
pub const NONE: &str = "plue.network/none";
/// The label of runners that enforce allow-lists.
pub const ALLOW: &str = "plue.network/allow";
/// The one value of the reserved labels.
pub const YES: &str = "yes";

/// Whether `key` is a reserved label key.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(PREFIX)
}

/// The label a step with `policy` asks for, besides its own (`None` for `open`).
pub fn required(policy: &NetworkPolicy) -> Option<(&'static str, &'static str)> {
    match policy {
        NetworkPolicy::Open => None,
        NetworkPolicy::None => Some((NONE, YES)),
        NetworkPolicy::Allow(_) => Some((ALLOW, YES)),
    }
}

/// What a runner (or every runner of a class) can enforce besides `open`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capability {
    pub none: bool,
    pub allow: bool,
}

impl Capability {
    /// A runner that gives each step a network namespace of its own: every policy.
    pub const EVERY: Capability = Capability {
        none: true,
        allow: true,
    };

    /// The reserved labels a runner with this capability announces.
    pub fn labels(self) -> BTreeMap<String, String> {
        [(self.none, NONE), (self.allow, ALLOW)]
            .into_iter()
            .filter(|(can, _)| *can)
            .map(|(_, key)| (key.to_string(), YES.to_string()))
            .collect()
    }

    /// What a runner announcing `labels` can enforce.
    pub fn of_labels(labels: &BTreeMap<String, String>) -> Capability {
        let has = |key: &str| labels.get(key).map(String::as_str) == Some(YES);
        Capability {
            none: has(NONE),
            allow: has(ALLOW),
        }
    }

    /// Whether it enforces `policy`.
    pub fn enforces(self, policy: &NetworkPolicy) -> bool {
        match policy {
            NetworkPolicy::Open => true,
            NetworkPolicy::None => self.none,
            NetworkPolicy::Allow(_) => self.allow,
        }
    }

    /// The policies it enforces, for people: `open, none, allow-list`.
    pub fn describe(self) -> String {
        let mut out = vec!["open"];
        if self.none {
            out.push("none");
        }
        if self.allow {
            out.push("allow-list");
        }
        out.join(", ")
    }

    /// What this process's runner can enforce: every policy where it can make a network
    /// namespace (root, or `CAP_SYS_ADMIN`); only `none` where its pod's NetworkPolicy
    /// confines it (`--network-confined-by-pod`) and it cannot; else only `open`.
    pub fn probe(confined_by_pod: bool) -> Capability {
        match super::namespace::create(false) {
            Ok(_) => Capability::EVERY,
            Err(e) => {
                tracing::debug!("no network namespace for steps: {e}");
                Capability {
                    none: confined_by_pod,
                    allow: false,
                }
            }
        }
    }
}

/// `labels` with the reserved keys left out (what an operator gave).
pub fn without_reserved(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !is_reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Why a step asking for `labels` finds no runner, when the reason is its network policy:
/// the policy it asks for, in words (`None` when it asks for no reserved label).
pub fn asked_policy(labels: &BTreeMap<String, String>) -> Option<&'static str> {
    let asked = Capability::of_labels(labels);
    match (asked.none, asked.allow) {
        (_, true) => Some("an allow-list (network=[...])"),
        (true, false) => Some("network=\"none\""),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_asks_for_the_label_of_its_policy_and_open_for_none() {
        assert_eq!(required(&NetworkPolicy::Open), None);
        assert_eq!(required(&NetworkPolicy::None), Some((NONE, YES)));
        assert_eq!(
            required(&NetworkPolicy::Allow(vec!["pypi.org".into()])),
            Some((ALLOW, YES))
        );
        for key in [NONE, ALLOW] {
            assert!(is_reserved(key));
        }
        assert!(!is_reserved("plue.networks"));
    }

    #[test]
    fn a_runner_serves_a_step_exactly_when_it_enforces_its_policy() {
        let policies = [
            NetworkPolicy::Open,
            NetworkPolicy::None,
            NetworkPolicy::Allow(vec!["pypi.org".into()]),
        ];
        for capability in [
            Capability::default(),
            Capability {
                none: true,
                allow: false,
            },
            Capability::EVERY,
        ] {
            let offered = capability.labels();
            assert_eq!(Capability::of_labels(&offered), capability);
            for policy in &policies {
                // Claims match subsets: the step's labels must all be the runner's.
                let asked: BTreeMap<String, String> = required(policy)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into_iter()
                    .collect();
                let claimable = asked.iter().all(|(k, v)| offered.get(k) == Some(v));
                assert_eq!(
                    claimable,
                    capability.enforces(policy),
                    "{capability:?} {policy:?}"
                );
            }
        }
        assert_eq!(Capability::EVERY.describe(), "open, none, allow-list");
        assert_eq!(Capability::default().describe(), "open");
    }

    #[test]
    fn reserved_labels_are_told_apart_from_an_operators() {
        let mut labels = Capability::EVERY.labels();
        labels.insert("zone".into(), "ci".into());
        assert_eq!(
            without_reserved(&labels),
            BTreeMap::from([("zone".to_string(), "ci".to_string())])
        );
        assert_eq!(asked_policy(&labels), Some("an allow-list (network=[...])"));
        assert_eq!(asked_policy(&without_reserved(&labels)), None);
    }
}
