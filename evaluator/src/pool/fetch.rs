//! A module the worker asked for, between two rounds of an evaluation: the request
//! checked (it is the worker's, so untrusted), then the ref resolved or the module's
//! source fetched, within the evaluation's deadline and the bounds of [`crate::modules`].

use crate::diagnostic::Diagnostic;
use crate::limits::human_bytes;
use crate::modules::lock::LockEntry;
use crate::modules::{
    check_commit, check_request, spelling, ModuleRequest, ModuleSource, Modules, ModulesIn,
    FETCH_TIMEOUT, MAX_MODULES, MAX_MODULE_BYTES,
};

use super::{broke_protocol, invalid, EvalError};

/// What the parent learnt for one request: a ref's commit, or a module's source.
pub(super) enum Fetched {
    Pin(LockEntry),
    Source(ModuleSource),
}

/// Checks one of the worker's requests (untrusted) and fetches what it asks.
pub(super) async fn fetch_one(
    path: &str,
    request: &ModuleRequest,
    modules: Modules<'_>,
    given: &ModulesIn,
    deadline: tokio::time::Instant,
) -> Result<Fetched, EvalError> {
    let refuse = |message: String| invalid(Diagnostic::whole_file(path, message));
    check_request(request, modules.resolve_refs).map_err(refuse)?;
    let spelled = spelling(
        &request.repository,
        &request.path,
        request.commit.as_deref(),
        request.git_ref.as_deref(),
    );
    let Some(fetcher) = modules.fetcher else {
        return Err(refuse(format!(
            "{spelled}: this evaluation cannot fetch modules of other repositories"
        )));
    };
    let locked = |git_ref: &str| {
        given.lock.iter().find(|e| {
            e.repository == request.repository && e.path == request.path && e.git_ref == git_ref
        })
    };
    let late = |what: &str| {
        refuse(format!(
            "{spelled}: {what} took longer than {FETCH_TIMEOUT:?}"
        ))
    };
    let Some(commit) = &request.commit else {
        let git_ref = request
            .git_ref
            .as_deref()
            .expect("checked: a ref to resolve");
        if locked(git_ref).is_some() {
            return Err(broke_protocol(path));
        }
        let commit =
            tokio::time::timeout_at(deadline, fetcher.resolve(&request.repository, git_ref))
                .await
                .map_err(|_| late("resolving the ref"))?
                .map_err(|e| refuse(format!("{spelled}: cannot resolve the ref: {e}")))?;
        check_commit(&commit).map_err(refuse)?;
        return Ok(Fetched::Pin(LockEntry {
            repository: request.repository.clone(),
            path: request.path.clone(),
            git_ref: git_ref.to_string(),
            commit,
        }));
    };
    if let Some(git_ref) = &request.git_ref {
        if locked(git_ref).is_none_or(|e| &e.commit != commit) {
            return Err(broke_protocol(path));
        }
    }
    let known = given.sources.iter().any(|m| {
        m.repository == request.repository && m.path == request.path && &m.commit == commit
    });
    if known {
        return Err(broke_protocol(path));
    }
    if given.sources.len() >= MAX_MODULES {
        return Err(refuse(format!(
            "{spelled}: a workflow may use at most {MAX_MODULES} modules"
        )));
    }
    let source = tokio::time::timeout_at(
        deadline,
        fetcher.fetch(&request.repository, &request.path, commit, MAX_MODULE_BYTES),
    )
    .await
    .map_err(|_| late("fetching the module"))?
    .map_err(|e| refuse(format!("{spelled}: cannot fetch the module: {e}")))?;
    if source.len() > MAX_MODULE_BYTES {
        return Err(refuse(format!(
            "{spelled}: the module is {} bytes; the limit is {}",
            source.len(),
            human_bytes(MAX_MODULE_BYTES as u64)
        )));
    }
    Ok(Fetched::Source(ModuleSource {
        repository: request.repository.clone(),
        path: request.path.clone(),
        commit: commit.clone(),
        source,
    }))
}
