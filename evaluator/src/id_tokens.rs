//! OpenID Connect tokens of a step: `id_tokens={"AWS_ID_TOKEN": "sts.amazonaws.com"}` on
//! `Step.bash` and `Step.python`, each key the environment variable the step gets a token
//! in, each value the token's audience. The rules a declaration is checked against.
//!
//! Invariants:
//! - A plan holds only the variables' names and the audiences. The engine signs each
//!   token when the step is claimed, masks it like a secret, and decides whether the run
//!   may have it at all (a run it does not trust, such as a fork's pull request, gets
//!   none); nothing here is a credential.
//! - Which kinds take tokens is [`refusal`]'s one `match`: a `bash` or `python` step may,
//!   an `llm` step may not (its agent's tools must not hold a cloud identity), nor an
//!   approval (nothing runs). The worker refuses the option on its line; validation
//!   refuses it again in a plan a worker returns.
//! - The count and lengths are [`crate::bounds`]' (at most [`MAX_ID_TOKENS`], names of at
//!   most [`crate::bounds::MAX_NAME_LEN`] bytes, audiences of at most [`MAX_AUDIENCE_LEN`]),
//!   checked before anything else looks at the plan; [`check`] is the rest, run by
//!   validation on every step that declares tokens. It echoes user text only through
//!   [`crate::text::echo`].
//! - A step a used module builds declares none: its token would carry the calling
//!   repository's identity (`call_function` in `worker/sandbox.py`, beside the module's
//!   secrets).

use crate::plan::{Step, StepKind};
use crate::text::echo;

/// The most tokens one step may ask for.
pub const MAX_ID_TOKENS: usize = 8;
/// The longest audience, in bytes (an audience is ASCII).
pub const MAX_AUDIENCE_LEN: usize = 256;
/// The prefix of the variables the engine sets for steps itself (`PLUE_OUTPUT_*`, ...).
pub const ENGINE_PREFIX: &str = "PLUE_";

/// Why a step of `kind` takes no `id_tokens=`, or `None` when it may take them.
pub fn refusal(kind: StepKind) -> Option<&'static str> {
    match kind {
        StepKind::Bash | StepKind::Python => None,
        StepKind::Llm => Some("an agent's tools must not hold a cloud identity"),
        StepKind::Approval => Some("nothing runs"),
    }
}

/// The kinds that take `id_tokens=`, for messages: `"Step.bash or Step.python"` with
/// `prefix` "Step." and `conjunction` "or".
pub fn kinds_taking(prefix: &str, conjunction: &str) -> String {
    StepKind::listed(|kind| refusal(kind).is_none(), prefix, conjunction)
}

/// Every problem of `step`'s `id_tokens` (besides the count and lengths, which are
/// [`crate::bounds`]'), each one line naming the variable. Empty when the step may have
/// them; the step's kind is [`refusal`]'s.
pub fn check(step: &Step) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, audience) in &step.id_tokens {
        if let Some(problem) = variable_problem(name, step) {
            problems.push(format!("id_tokens variable '{}' {problem}", echo(name)));
        }
        if let Some(problem) = audience_problem(audience) {
            problems.push(format!(
                "id_tokens audience '{}' of {} {problem}; an audience is visible ASCII \
                 without spaces, such as 'sts.amazonaws.com' or 'https://vault.example.com'",
                echo(audience),
                echo(name)
            ));
        }
    }
    problems
}

/// Why `name` cannot be the variable of one of `step`'s tokens, if it cannot.
fn variable_problem(name: &str, step: &Step) -> Option<String> {
    let shaped = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !shaped {
        return Some(
            "must match ^[A-Z_][A-Z0-9_]*$ (upper-case letters, digits and '_', not starting \
             with a digit)"
                .into(),
        );
    }
    if name.starts_with(ENGINE_PREFIX) {
        return Some(format!(
            "starts with '{ENGINE_PREFIX}', which the engine keeps for the variables it sets"
        ));
    }
    if let Some(why) = crate::plan::reserved_env(name) {
        return Some(format!("is reserved: {why}"));
    }
    if step.secrets.iter().any(|secret| secret == name) {
        return Some("is also one of the step's secrets=; name the token another variable".into());
    }
    if step.env.contains_key(name) {
        return Some("is also set by the step's env=; name the token another variable".into());
    }
    None
}

/// Why `audience` is no audience, if it is not: it must hold something, and only visible
/// ASCII (0x21 to 0x7e).
fn audience_problem(audience: &str) -> Option<String> {
    if audience.is_empty() {
        return Some("is empty".into());
    }
    let (at, found) = audience
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_graphic())?;
    let what = match found {
        ' ' => "a space".to_string(),
        c if c.is_ascii() => format!("the control character {}", c.escape_debug()),
        c => format!("the non-ASCII character '{}'", c.escape_debug()),
    };
    Some(format!("holds {what} at character {}", at + 1))
}

#[cfg(test)]
mod tests;
