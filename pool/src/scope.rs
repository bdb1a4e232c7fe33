//! What a registration token lets its runners be: the labels they may announce (and so the
//! steps they may claim), whether they may receive secrets, and which names they may take.
//! Pure: the internal API looks the token up and asks these rules.
//!
//! Invariants:
//! - The reserved network labels (`runner::network::capability`) are outside any token's
//!   scope: a runner announces them for the policies it can enforce, and they only narrow
//!   what it claims.
//! - Labels are a trust boundary. A runner announces only labels its token grants (same key,
//!   same value); a claim matches only subsets of the announced labels, so a runner can
//!   never claim a step whose labels its token does not grant, whatever it announces.
//! - The shared registration token (`plue serve --runner-token`, for runners an operator
//!   starts by hand) grants no labels and does allow secrets: it runs unlabelled steps.
//!   Labelled work (a `zone=prod` step) needs a scoped token made for it, so the shared
//!   token — the one most likely to be copied around — cannot reach it.
//! - The `pool-` prefix is reserved for runners the engine's pool starts: only a one-time
//!   token minted for exactly that name registers it.
//! - Secrets go only to runners allowed them, and so does what a step that held secrets
//!   leaves in its files: a step that takes the workspace or artifacts of such a step
//!   (`workspace_from`, `needs_artifacts`, directly or through other steps) is claimed only
//!   by runners allowed secrets ([`needs_secrets_runner`]), and the blob itself is served
//!   to no other runner.
//! - Runs of pull requests from forks run strangers' code: their steps go only to runners
//!   that accept forks ([`Scope::accepts_forks`]). A runner never accepts forks its token
//!   does not allow; it may refuse forks its token allows. Scoped tokens allow them only
//!   when made with `--accept-forks`; a pool's one-time token as its class says; the shared
//!   token allows them (its runners announce no labels, so they take only unlabelled work).

use std::collections::BTreeMap;

use runner::network::capability;

pub use plue_store::needs_secrets_runner;

/// Names starting with this belong to the engine's pool.
pub const POOL_PREFIX: &str = "pool-";

/// The most labels a runner announces (or a token grants).
pub const MAX_LABELS: usize = 8;

/// A token's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The labels its runners may announce.
    pub labels: BTreeMap<String, String>,
    /// Whether its runners may be handed steps that name secrets.
    pub secrets: bool,
    /// A one-time token's runner name: the only name it registers.
    pub only_name: Option<String>,
    /// Whether its runners may claim steps of runs of pull requests from forks.
    pub forks: bool,
}

impl Scope {
    /// The shared registration token's grant: unlabelled steps, secrets allowed, forks
    /// accepted (it grants no labels, so its runners take only unlabelled work).
    pub fn shared() -> Scope {
        Scope {
            labels: BTreeMap::new(),
            secrets: true,
            only_name: None,
            forks: true,
        }
    }

    /// Whether a runner of this token, which `asked` (`None`: said nothing), accepts
    /// steps of fork runs; a refusal when it asks for forks the token does not allow.
    pub fn accepts_forks(&self, asked: Option<bool>) -> Result<bool, ForksRefused> {
        match asked {
            Some(true) if !self.forks => Err(ForksRefused),
            Some(asked) => Ok(asked),
            None => Ok(self.forks),
        }
    }

    /// Why a runner called `name` announcing `labels` may not register with this token, if
    /// it may not (the message names what is outside the scope).
    pub fn refusal(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<String> {
        match &self.only_name {
            Some(only) if only != name => {
                return Some(format!(
                    "this one-time token registers only the runner named '{only}', not '{name}'"
                ))
            }
            None if name.starts_with(POOL_PREFIX) => {
                return Some(format!(
                    "runner names starting with '{POOL_PREFIX}' are reserved for the engine's pool"
                ))
            }
            _ => {}
        }
        // The reserved network labels say what the runner can enforce: they narrow what
        // it claims, so no token grants them.
        let outside: Vec<String> = labels
            .iter()
            .filter(|(key, _)| !capability::is_reserved(key))
            .filter(|(key, value)| self.labels.get(*key) != Some(*value))
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        if outside.is_empty() {
            return None;
        }
        let granted = if self.labels.is_empty() {
            "none".to_string()
        } else {
            format_labels(&self.labels)
        };
        Some(format!(
            "label(s) {} are outside this registration token's scope (it grants: {granted}); \
             make a token for them with `plue runner-token create --labels ...`",
            outside.join(",")
        ))
    }
}

/// A runner asked for fork runs that its registration token does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this registration token does not accept runs of pull requests from forks; \
     make one that does with `plue runner-token create --accept-forks`"
)]
pub struct ForksRefused;

/// Why [`check_labels`] refused a set of labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// More than [`MAX_LABELS`].
    #[error("at most {MAX_LABELS} labels, got {0}")]
    TooMany(usize),
    /// A value with a control, bidi or format character.
    #[error(transparent)]
    Unclean(#[from] evaluator::text::UncleanField),
    /// A key or value outside the syntax; holds `key=value`, escaped to one line.
    #[error("invalid label '{0}'")]
    Invalid(String),
}

/// Checks label syntax: at most [`MAX_LABELS`]; keys of `A-Z a-z 0-9 . _ - /`, values
/// without `,`, `=`, control, bidi or format characters; keys at most 63 bytes, values at
/// most 63 characters (as the OpenAPI document says).
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany(labels.len()));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        let shown = || evaluator::text::escape_line(&format!("{key}={value}")).into_owned();
        // regression: only controls were refused, so a value carried U+202E (or invisible
        // characters) into the runners page and `plue runner list`.
        evaluator::text::check_clean_field(
            &format!("label '{}'", shown()),
            value,
            evaluator::text::TextKind::UserLine,
        )?;
        let value_ok = value.chars().count() <= 63 && !value.contains([',', '=']);
        if !key_ok || !value_ok {
            return Err(LabelError::Invalid(shown()));
        }
    }
    Ok(())
}

/// Checks the labels a runner announces at registration: its operator's
/// ([`check_labels`]) and reserved network labels, each one that
/// [`capability::Capability::labels`] makes.
pub fn check_announced(labels: &BTreeMap<String, String>) -> Result<(), LabelError> {
    let operators = capability::without_reserved(labels);
    check_labels(&operators)?;
    let reserved = labels.len() - operators.len();
    let known = capability::Capability::of_labels(labels).labels();
    if known.len() != reserved {
        let unknown = labels
            .iter()
            .find(|(k, v)| capability::is_reserved(k) && known.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}={v}"))
            .unwrap_or_default();
        return Err(LabelError::Invalid(
            evaluator::text::escape_line(&unknown).into_owned(),
        ));
    }
    Ok(())
}

/// The most labels a runner announces in all: its operator's and the reserved ones.
pub const MAX_ANNOUNCED: usize = MAX_LABELS + 2;

/// `k=v,k2=v2` in key order.
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_runner_announces_only_granted_labels() {
        let dev = Scope {
            labels: labels(&[("zone", "dev"), ("os", "linux")]),
            secrets: false,
            only_name: None,
            forks: false,
        };
        assert_eq!(dev.refusal("r", &labels(&[])), None);
        assert_eq!(dev.refusal("r", &labels(&[("zone", "dev")])), None);
        assert_eq!(
            dev.refusal("r", &labels(&[("zone", "dev"), ("os", "linux")])),
            None
        );
        let refused = dev
            .refusal("r", &labels(&[("zone", "prod")]))
            .expect("zone=prod is outside");
        assert!(refused.contains("zone=prod"), "{refused}");
        assert!(refused.contains("os=linux,zone=dev"), "{refused}");
        assert!(dev
            .refusal("r", &labels(&[("os", "linux"), ("gpu", "a100")]))
            .is_some());
    }

    #[test]
    fn network_labels_are_the_runners_to_announce_and_only_the_known_ones() {
        let shared = Scope::shared();
        let every = capability::Capability::EVERY.labels();
        assert_eq!(
            shared.refusal("laptop", &every),
            None,
            "no token grants them"
        );
        assert!(check_announced(&every).is_ok());
        let mut operators = labels(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
        operators.extend(labels(&[("e", "5"), ("f", "6"), ("g", "7"), ("h", "8")]));
        operators.extend(every.clone());
        assert!(
            check_announced(&operators).is_ok(),
            "eight and the reserved ones"
        );
        assert!(check_labels(&operators).is_err());
        for bad in [
            labels(&[(capability::NONE, "no")]),
            labels(&[("plue.network/everything", "yes")]),
        ] {
            let err = check_announced(&bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid label 'plue.network/"), "{err}");
        }
        // Still refused: an operator's label outside the grant, beside the reserved ones.
        let mut zone = every;
        zone.insert("zone".into(), "prod".into());
        assert!(shared.refusal("laptop", &zone).is_some());
    }

    #[test]
    fn the_shared_token_grants_no_labels() {
        let shared = Scope::shared();
        assert_eq!(shared.refusal("laptop", &labels(&[])), None);
        let refused = shared
            .refusal("laptop", &labels(&[("zone", "prod")]))
            .expect("refused");
        assert!(refused.contains("grants: none"), "{refused}");
    }

    // The attack (issue 29): a runner of a `zone=prod` token, made without
    // `--accept-forks`, asks to take forks' steps.
    #[test]
    fn a_runner_never_accepts_forks_its_token_does_not_allow() {
        let prod = Scope {
            labels: labels(&[("zone", "prod")]),
            secrets: true,
            only_name: None,
            forks: false,
        };
        let refused = prod.accepts_forks(Some(true)).unwrap_err().to_string();
        assert!(refused.contains("--accept-forks"), "{refused}");
        assert_eq!(prod.accepts_forks(None), Ok(false));
        assert_eq!(prod.accepts_forks(Some(false)), Ok(false));
        let open = Scope {
            forks: true,
            ..prod
        };
        assert_eq!(open.accepts_forks(None), Ok(true));
        assert_eq!(
            open.accepts_forks(Some(false)),
            Ok(false),
            "a runner may refuse"
        );
        assert_eq!(Scope::shared().accepts_forks(None), Ok(true));
        assert_eq!(Scope::shared().accepts_forks(Some(false)), Ok(false));
    }

    #[test]
    fn pool_names_need_the_token_minted_for_them() {
        assert!(Scope::shared()
            .refusal("pool-abc123-1", &labels(&[]))
            .is_some());
        let once = Scope {
            only_name: Some("pool-abc123-1".into()),
            ..Scope::shared()
        };
        assert_eq!(once.refusal("pool-abc123-1", &labels(&[])), None);
        assert!(once.refusal("pool-abc123-2", &labels(&[])).is_some());
        assert!(once.refusal("laptop", &labels(&[])).is_some());
    }

    // The attack (issue 30): a label value that reorders or hides what the runners page and
    // `plue runner list` show, through a runner token or a runner's own registration.
    #[test]
    fn label_values_are_clean_one_line_text_and_refusals_escape_them() {
        for value in [
            "\u{202e}gpu",
            "a\u{2029}b",
            "x\u{200b}",
            "x\u{e0041}",
            "x\u{feff}",
        ] {
            let refused = check_labels(&labels(&[("zone", value)]))
                .unwrap_err()
                .to_string();
            assert!(refused.contains("at character"), "{value:?}: {refused}");
            assert!(
                refused.chars().all(|c| !c.is_control() && c.is_ascii()),
                "escaped: {refused}"
            );
        }
        let refused = check_labels(&labels(&[("bad key\x1b", "v")])).unwrap_err();
        assert!(matches!(refused, LabelError::Invalid(_)), "{refused}");
        let refused = refused.to_string();
        assert!(refused.contains("\\x1b"), "{refused}");
        assert!(check_labels(&labels(&[("zone", "eu-west-1 é")])).is_ok());
    }
}
