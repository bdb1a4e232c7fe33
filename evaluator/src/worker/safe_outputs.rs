//! The `SafeOutputs(...)` host type of the `plue` module, and how `Step.llm` reads its
//! `safe_outputs=` and `approve_outputs=` options.
//!
//! Like `Step` and `Trigger`: a frozen Rust class whose constructor converts its arguments
//! into plan data at once (a bad argument fails on the line that passed it), compares by
//! value and refuses to be hashed. The declaration's rules beyond types (bounds, globs,
//! labels, the branch prefix) are checked with the whole plan
//! ([`crate::safe_outputs::check`]).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::{self, Options};
use crate::safe_outputs::{SafeOutputs, ThreatCheck};

/// `SafeOutputs(pull_request=False, comments=0, labels=[], issues=0, paths_allow=["**"],
/// paths_deny=[], max_files=50, max_diff_bytes=262144, branch_prefix="plue/",
/// allow_links=[], threat_check="auto", threat_review_model=None,
/// threat_review_max_tokens=1024)`: what an `llm` step may propose to the forge — never
/// write itself. The engine checks every proposal (changed paths, sizes, labels, links,
/// mentions, the run's secrets) and applies it with the repository's credentials. The
/// workflow files (`.plue/**`, `.github/**`, `.gitea/**`, `.forgejo/**`, `**/*.plue.py`)
/// and the files that change how git or the forge treats the tree (`.gitmodules`,
/// `.gitattributes`, `.lfsconfig`, `.mailmap`, `.git-blame-ignore-revs` in any directory;
/// `CODEOWNERS`, `docs/CODEOWNERS`, `.gitlab/CODEOWNERS`) are always denied, in any letter
/// case.
///
/// The threat check looks at what each proposal *does* before it is applied: CI, hook,
/// build and install files, new dependencies and registries, executable bits, downloads
/// piped into a shell, decoded payloads, reverse shells, new network endpoints,
/// obfuscation and secrets. Its verdict per proposal is `pass`, `needs_approval` (the
/// proposal waits for a writer's approval) or `refused` (the step fails).
/// `threat_check="auto"` (the default) runs it for runs caused by someone without write
/// access (a run treated like a fork's, or one acting on an outsider's issue);
/// `"always"` for every run; `"off"` never. `threat_review_model="claude-..."` also asks
/// that model (the run's `ANTHROPIC_API_KEY`, no tools, a fixed system prompt) to review
/// each proposal within `threat_review_max_tokens` output tokens; a review that fails or
/// answers out of format needs approval, and a review never lowers the rules' verdict.
#[pyclass(module = "plue", name = "SafeOutputs", frozen, immutable_type)]
pub(crate) struct SafeOutputsObject {
    pub(crate) outputs: SafeOutputs,
}

#[pymethods]
impl SafeOutputsObject {
    #[new]
    #[pyo3(signature = (**options))]
    fn new(options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        const F: &str = "SafeOutputs()";
        let mut options = Options::new(F, options, &[]);
        let mut outputs = SafeOutputs::default();
        if let Some(v) = options.take("pull_request")? {
            outputs.pull_request = boolean(&v, "pull_request")?;
        }
        if let Some(v) = options.take("comments")? {
            outputs.comments = convert::count(&v, "SafeOutputs(): comments")?;
        }
        if let Some(v) = options.take("labels")? {
            outputs.labels = convert::string_list(&v, "SafeOutputs(): labels")?;
        }
        if let Some(v) = options.take("issues")? {
            outputs.issues = convert::count(&v, "SafeOutputs(): issues")?;
        }
        if let Some(v) = options.take("paths_allow")? {
            outputs.paths_allow = convert::string_list(&v, "SafeOutputs(): paths_allow")?;
        }
        if let Some(v) = options.take("paths_deny")? {
            outputs.paths_deny = convert::string_list(&v, "SafeOutputs(): paths_deny")?;
        }
        if let Some(v) = options.take("max_files")? {
            outputs.max_files = convert::count(&v, "SafeOutputs(): max_files")?;
        }
        if let Some(v) = options.take("max_diff_bytes")? {
            outputs.max_diff_bytes = convert::count(&v, "SafeOutputs(): max_diff_bytes")?.into();
        }
        if let Some(v) = options.take("branch_prefix")? {
            outputs.branch_prefix = convert::string(&v, "SafeOutputs(): branch_prefix")?;
        }
        if let Some(v) = options.take("allow_links")? {
            outputs.allow_links = convert::string_list(&v, "SafeOutputs(): allow_links")?;
        }
        if let Some(v) = options.take("threat_check")? {
            let word = convert::string(&v, "SafeOutputs(): threat_check")?;
            outputs.threat_check = ThreatCheck::parse(&word).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "SafeOutputs(): threat_check must be \"auto\", \"always\" or \"off\", not {word:?}"
                ))
            })?;
        }
        if let Some(v) = options.take("threat_review_model")? {
            if !v.is_none() {
                outputs.threat_review_model =
                    Some(convert::string(&v, "SafeOutputs(): threat_review_model")?);
            }
        }
        if let Some(v) = options.take("threat_review_max_tokens")? {
            outputs.threat_review_max_tokens = Some(convert::count(
                &v,
                "SafeOutputs(): threat_review_max_tokens",
            )?);
        }
        options.finish()?;
        Ok(SafeOutputsObject { outputs })
    }

    /// Equal when the data is equal, never by identity.
    fn __eq__(&self, other: &Bound<'_, Self>) -> bool {
        self.outputs == other.get().outputs
    }

    /// Unhashable: a hash by identity would make `set()` order depend on addresses.
    fn __hash__(&self) -> PyResult<isize> {
        Err(PyTypeError::new_err("unhashable type: 'SafeOutputs'"))
    }
}

fn boolean(value: &Bound<'_, PyAny>, option: &str) -> PyResult<bool> {
    value
        .extract::<bool>()
        .map_err(|_| PyTypeError::new_err(format!("SafeOutputs(): {option} must be True or False")))
}

/// `Step.llm(safe_outputs=SafeOutputs(...), approve_outputs=False)`: the declaration with
/// `approve` set, or `None` when the step proposes nothing. `approve_outputs` without
/// `safe_outputs` is an error (there would be nothing to approve).
pub(crate) fn from_options(options: &mut Options<'_>) -> PyResult<Option<Box<SafeOutputs>>> {
    let declared = options.take("safe_outputs")?;
    let approve = options.take("approve_outputs")?;
    let approve = match approve {
        None => None,
        Some(v) => Some(v.extract::<bool>().map_err(|_| {
            PyTypeError::new_err("Step.llm(): approve_outputs must be True or False")
        })?),
    };
    let Some(declared) = declared else {
        return match approve {
            Some(true) => Err(PyTypeError::new_err(
                "Step.llm(): approve_outputs=True needs safe_outputs=SafeOutputs(...)",
            )),
            _ => Ok(None),
        };
    };
    let object = declared
        .cast::<SafeOutputsObject>()
        .map_err(|_| PyTypeError::new_err("Step.llm(): safe_outputs must be a SafeOutputs(...)"))?;
    let mut outputs = object.get().outputs.clone();
    outputs.approve = approve.unwrap_or(false);
    Ok(Some(Box::new(outputs)))
}
