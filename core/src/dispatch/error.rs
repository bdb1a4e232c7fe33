//! [`DispatchError`]: why a step's dispatch document could not be built. The step fails
//! with its text as the reason (users see it on the step), so each variant names what was
//! wrong and the message says where ([`DispatchError::At`] wraps an error with the text it
//! was found in: `command`, `env NAME`, `inputs.files[1]`).
//!
//! Invariant: the messages are the ones the engine gave before the errors were typed
//! (tests in `super::tests` and `engine/tests/dispatch_bomb.rs` match on them).

use evaluator::template::{ParseError, RAW_TOO};

use super::{
    MAX_OUTPUT_ENV_BYTES, MAX_PROCESS_RENDERED_BYTES, MAX_STEP_RENDERED_BYTES, OUTPUT_VAR_PREFIX,
};

/// Where bash reads a value as code, for messages ([`super::bash_values`]).
pub(super) const BASH_CONTEXTS: &str =
    "where it evaluates a value as arithmetic or a name ([[ x -gt 0 ]], ${a[x]}, declare -i, let, [[ -v x ]])";

/// Why [`super::build`] refused a step (the step's failure reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// `error`, found in the step's text `at` (`command`, `env NAME`, `inputs.x[0]`).
    #[error("{at}: {error}")]
    At {
        at: String,
        error: Box<DispatchError>,
    },
    /// A text is not a template Plue accepts.
    #[error(transparent)]
    Template(#[from] ParseError),
    /// A reference to an output with no value (no such step or output, or not finished).
    #[error("'{reference}' is not set (no such step, output, or the step has not finished)")]
    OutputNotSet { reference: String },
    /// A reference to the status of a step that has none yet.
    #[error("'{reference}' is not set (no such step, or the step has not finished)")]
    StatusNotSet { reference: String },
    /// A reference to the rounds of a step outside the reader's loop.
    #[error("'{reference}' is not set (no such step in this loop)")]
    RoundsNotSet { reference: String },
    /// A status that is not a lowercase word (only a corrupt store has one).
    #[error("'{reference}': unexpected status '{status}'")]
    UnexpectedStatus { reference: String, status: String },
    /// A reference where the code around it would read its value as code, a format or a
    /// pattern; `raw` when the `raw` form was refused too.
    #[error("'{reference}': {why}{}", if *raw { RAW_TOO } else { "" })]
    Refused {
        reference: String,
        why: &'static str,
        raw: bool,
    },
    /// One text rendered past [`super::MAX_RENDERED_BYTES`].
    #[error("the rendered text exceeds the limit of {limit} bytes")]
    TextTooLarge { limit: usize },
    /// The step's texts together rendered past the kind's budget.
    #[error(
        "the step's rendered texts exceed their limit ({} bytes for a bash or python step's \
         code and env, which start a process; {} for an llm step)",
        MAX_PROCESS_RENDERED_BYTES,
        MAX_STEP_RENDERED_BYTES
    )]
    StepTooLarge,
    /// The `PLUE_OUTPUT_*` variables a step receives are too big to start a process with.
    #[error(
        "the outputs this step receives as {}* variables take {bytes} bytes, over the limit \
         of {}; pass large data in files instead",
        OUTPUT_VAR_PREFIX,
        MAX_OUTPUT_ENV_BYTES
    )]
    OutputVarsTooLarge { bytes: usize },
    /// A referenced value bash would evaluate as arithmetic or a name.
    #[error(
        "'{reference}': the value {why}, which bash acts on {}; a reference may not read it. \
         Read \"${var}\" instead (set when '{step}' is a dependency) and check it before any \
         arithmetic",
        BASH_CONTEXTS
    )]
    BashReadsHazard {
        reference: String,
        why: &'static str,
        var: String,
        step: String,
    },
    /// A bash step with references that receives another output bash could be led to.
    #[error(
        "'{reference}': this step receives ${name}, an output that {why}, which bash acts on \
         {}, and a referenced value can lead bash to it (by its name, or '_'); such a step may \
         not use references: read \"$PLUE_OUTPUT_<STEP>_<KEY>\" variables and check them \
         before any arithmetic",
        BASH_CONTEXTS
    )]
    BashReceivesHazard {
        reference: String,
        name: String,
        why: &'static str,
    },
    /// A step kind no runner runs (an approval) was asked for a dispatch.
    #[error("step '{step}' is an approval: a person decides it, no runner runs it")]
    Approval { step: String },
}

impl DispatchError {
    /// This error, said to be in the step's text `at`.
    pub fn at(self, at: impl Into<String>) -> DispatchError {
        DispatchError::At {
            at: at.into(),
            error: Box::new(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DispatchError;

    /// The messages are the ones the engine gave as `String`s before the errors were
    /// typed, word for word (users read them as step failure reasons).
    #[test]
    fn each_message_reads_as_it_did_as_text() {
        let reference = "{{ steps.up.outputs.n }}".to_string();
        let cases = [
            (
                DispatchError::OutputNotSet {
                    reference: reference.clone(),
                }
                .at("command"),
                "command: '{{ steps.up.outputs.n }}' is not set (no such step, output, or the step has not finished)",
            ),
            (
                DispatchError::StatusNotSet {
                    reference: "{{ steps.up.status }}".into(),
                },
                "'{{ steps.up.status }}' is not set (no such step, or the step has not finished)",
            ),
            (
                DispatchError::RoundsNotSet {
                    reference: "{{ steps.up.rounds }}".into(),
                },
                "'{{ steps.up.rounds }}' is not set (no such step in this loop)",
            ),
            (
                DispatchError::UnexpectedStatus {
                    reference: "{{ steps.up.status }}".into(),
                    status: "Weird".into(),
                },
                "'{{ steps.up.status }}': unexpected status 'Weird'",
            ),
            (
                DispatchError::Refused {
                    reference: reference.clone(),
                    why: "inside single quotes",
                    raw: false,
                },
                "'{{ steps.up.outputs.n }}': inside single quotes",
            ),
            (
                DispatchError::TextTooLarge { limit: 10 },
                "the rendered text exceeds the limit of 10 bytes",
            ),
            (
                DispatchError::StepTooLarge,
                "the step's rendered texts exceed their limit (1048576 bytes for a bash or python step's code and env, which start a process; 4194304 for an llm step)",
            ),
            (
                DispatchError::OutputVarsTooLarge { bytes: 7 },
                "the outputs this step receives as PLUE_OUTPUT_* variables take 7 bytes, over the limit of 1048576; pass large data in files instead",
            ),
            (
                DispatchError::BashReadsHazard {
                    reference: reference.clone(),
                    why: "holds '['",
                    var: "PLUE_OUTPUT_UP_N".into(),
                    step: "up".into(),
                }
                .at("command"),
                "command: '{{ steps.up.outputs.n }}': the value holds '[', which bash acts on where it evaluates a value as arithmetic or a name ([[ x -gt 0 ]], ${a[x]}, declare -i, let, [[ -v x ]]); a reference may not read it. Read \"$PLUE_OUTPUT_UP_N\" instead (set when 'up' is a dependency) and check it before any arithmetic",
            ),
            (
                DispatchError::BashReceivesHazard {
                    reference,
                    name: "AUTHOR".into(),
                    why: "holds '['",
                }
                .at("command"),
                "command: '{{ steps.up.outputs.n }}': this step receives $AUTHOR, an output that holds '[', which bash acts on where it evaluates a value as arithmetic or a name ([[ x -gt 0 ]], ${a[x]}, declare -i, let, [[ -v x ]]), and a referenced value can lead bash to it (by its name, or '_'); such a step may not use references: read \"$PLUE_OUTPUT_<STEP>_<KEY>\" variables and check them before any arithmetic",
            ),
            (
                DispatchError::Approval { step: "gate".into() },
                "step 'gate' is an approval: a person decides it, no runner runs it",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
        let raw = DispatchError::Refused {
            reference: "{{ raw steps.up.outputs.n }}".into(),
            why: "inside single quotes",
            raw: true,
        }
        .to_string();
        assert_eq!(
            raw,
            format!(
                "'{{{{ raw steps.up.outputs.n }}}}': inside single quotes{}",
                evaluator::template::RAW_TOO
            )
        );
    }
}
