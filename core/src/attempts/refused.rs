//! Why a claimed step's attempt fails before a runner gets it (or a debug session ends
//! before it starts): the attempt's reason, a sentence that names what was wrong and holds
//! no secret and no token.

use std::path::PathBuf;

use crate::executor::SecretsRefused;
use crate::pricing::budget::BudgetRefused;

#[derive(Debug, thiserror::Error)]
pub enum AttemptRefused {
    /// The stored dispatch document does not parse.
    #[error("unreadable dispatch document: {0}")]
    Dispatch(#[from] serde_json::Error),
    /// The step's secrets cannot be given (its environment, a missing or unopenable one).
    #[error(transparent)]
    Secrets(#[from] SecretsRefused),
    /// The step holds secrets; the runner's registration token does not allow them.
    #[error(
        "the step needs secrets ({}) but runner {runner}'s registration token does not allow secrets",
        names.join(", ")
    )]
    RunnerWithoutSecrets { names: Vec<String>, runner: i64 },
    /// As [`AttemptRefused::RunnerWithoutSecrets`], for a debug session (names no secret).
    #[error(
        "the step needs secrets but runner {runner}'s registration token does not allow secrets"
    )]
    DebugRunnerWithoutSecrets { runner: i64 },
    /// An `llm` step cannot be debugged: it has no shell.
    #[error("an llm step has no shell to debug")]
    LlmHasNoShell,
    /// The `llm` step's budget.
    #[error(transparent)]
    Budget(#[from] BudgetRefused),
    /// An `llm` step's `prompt_file` could not be read in the workflow file's repository.
    #[error(
        "prompt_file {reference} (read from the workflow file's repository {}): {error}",
        root.display()
    )]
    PromptFile {
        reference: String,
        root: PathBuf,
        /// Boxed: the error is large, the refusal rare.
        error: Box<prompts::PromptError>,
    },
    /// The forge gave no read token for a GitHub App repository's checkout.
    #[error("the forge gave no token to check out {repo}: {error}")]
    CheckoutToken {
        repo: String,
        error: plue_forge::status::PostError,
    },
}
