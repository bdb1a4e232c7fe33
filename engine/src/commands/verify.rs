//! `plue verify`: checks a provenance statement offline — its DSSE signature with the keys
//! given, and, with `--repo`, that a commit of a clone is exactly what it attests (the
//! commit and its tree, its one parent the recorded base, and its tree the recorded diff
//! applied to that base, recomputed with git in a temporary index) — then prints the chain
//! from the trigger to the change.
//!
//! A statement is signed before its change is written, so the signature alone cannot say
//! the change landed; the engine serves a statement only once the forge accepted its write
//! (`api::provenance`). With `--server`, the statement is fetched from the engine (by the
//! commit's trailer) or, given as a file, asked of it; one whose change did not land is
//! refused with the engine's reason. Without `--server` that is not checked, and the output
//! says so.
//!
//! Invariants: nothing of the statement is believed before its signature verifies with a
//! key the user gave (a key the statement names is never fetched); every failure exits 1
//! with the reason (the engine's words with control characters escaped); the clone is only
//! read (the recomputed tree's objects go to its object store, which `git gc` prunes; no
//! ref, index or work-tree file changes); the only network access is to `--server`: the
//! statement, or whether it serves the one given.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};
use base64::Engine as _;
use plue_provenance::{Envelope, PublicKey, Statement};

use super::client::ApiClient;
use crate::cli::VerifyArgs;

/// The trailer Plue writes in a pull request's commit message.
const TRAILER: &str = "Plue-Provenance";

pub(crate) async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    match verify(&args).await {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("verification failed: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn verify(args: &VerifyArgs) -> anyhow::Result<Vec<String>> {
    let keys = read_keys(&args.keys)?;
    let commit = match &args.repo {
        Some(repo) => Some(resolve(repo, args.commit.as_deref().unwrap_or("HEAD"))?),
        None if args.commit.is_some() => bail!("a COMMIT is checked in a clone: give --repo DIR"),
        None => None,
    };
    let envelope = match (&args.statement, &args.server, &commit) {
        (Some(file), _, _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            serde_json::from_str::<Envelope>(&text)
                .with_context(|| format!("{} is not a DSSE envelope", file.display()))?
        }
        (None, Some(server), Some((repo, sha))) => fetch(repo, sha, server, args).await?,
        _ => bail!("give --statement FILE, or --repo DIR [COMMIT] with --server URL"),
    };
    let (statement, key) = plue_provenance::open(&envelope, &keys)?;
    let mut lines = vec![format!("signature: good, by key {}", key.id())];
    lines.push(match (&args.statement, &args.server) {
        (Some(_), Some(server)) => {
            check_served(&envelope, &statement, server, args).await?;
            format!("landed: {server} serves this statement (the forge accepted the change)")
        }
        (None, Some(server)) => {
            format!("landed: {server} served this statement (the forge accepted the change)")
        }
        (_, None) => "landed: not checked (give --server URL: the engine serves a statement \
                      only once the forge accepted its change)"
            .to_owned(),
    });
    match &commit {
        Some((repo, sha)) => {
            check_commit(repo, sha, &statement)?;
            lines.push(format!(
                "commit: {sha} is exactly the proposal's diff applied to its parent {}",
                statement.base()?
            ));
        }
        None => match statement.commit() {
            Ok((sha, _)) => lines.push(format!(
                "commit: {sha} not checked (give --repo DIR to check it)"
            )),
            Err(_) => {
                let subject = statement.subject.first();
                let digest = subject
                    .and_then(|s| s.digest.get("sha256"))
                    .map(String::as_str)
                    .unwrap_or("?");
                lines.push(format!(
                    "subject: a {} whose text has sha256 {digest}",
                    subject.and_then(|s| s.name.as_deref()).unwrap_or("text")
                ));
            }
        },
    }
    for (label, value) in plue_provenance::words::chain(&statement) {
        lines.push(format!("{label}: {value}"));
    }
    Ok(lines)
}

/// Every key of every `--key` file: a PEM key, 64 hex digits, or the JSON list
/// `GET /api/provenance/keys` serves.
fn read_keys(files: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the key {}", file.display()))?;
        match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
            Ok(listed) => {
                for entry in listed {
                    let hex = entry["public"].as_str().unwrap_or_default();
                    keys.push(
                        PublicKey::parse(hex)
                            .with_context(|| format!("a key of {}", file.display()))?,
                    );
                }
            }
            Err(_) => keys.push(
                PublicKey::parse(&text).with_context(|| format!("the key {}", file.display()))?,
            ),
        }
    }
    if keys.is_empty() {
        bail!(
            "no key given: --key FILE (the engine's public key, or GET /api/provenance/keys saved)"
        );
    }
    Ok(keys)
}

/// The statement the commit's `Plue-Provenance:` trailer names, fetched from `server` (the
/// trailer's URL must be under it: the commit's message is not trusted to pick a host).
async fn fetch(
    repo: &Path,
    sha: &str,
    server: &str,
    args: &VerifyArgs,
) -> anyhow::Result<Envelope> {
    let message = git(repo, &["log", "-1", "--format=%B", sha], None)?;
    let (url, path) = trailer_path(&message, server).with_context(|| format!("commit {sha}"))?;
    let client = ApiClient::new(server, args.token.clone())?;
    served(&client, &path)
        .await
        .with_context(|| format!("fetching {url}"))
}

/// That `server` serves `envelope` as the statement of the proposal it attests — which it
/// does only once the forge accepted the change; the engine's reason otherwise.
async fn check_served(
    envelope: &Envelope,
    statement: &Statement,
    server: &str,
    args: &VerifyArgs,
) -> anyhow::Result<()> {
    let proposal = &statement
        .predicate
        .build_definition
        .external_parameters
        .proposal;
    let path = format!(
        "/api/runs/{}/proposals/{}/provenance",
        proposal.run, proposal.id
    );
    let client = ApiClient::new(server, args.token.clone())?;
    let url = client.url(&path);
    let found = served(&client, &path)
        .await
        .with_context(|| format!("asking {url}"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = |e: &Envelope| b64.decode(&e.payload).ok();
    if payload(&found).is_none() || payload(&found) != payload(envelope) {
        bail!(
            "{url} serves another statement for proposal {} of run {}: this one is not the \
             engine's record of the change",
            proposal.id,
            proposal.run
        );
    }
    Ok(())
}

/// The envelope the engine serves at `path`; a statement whose change did not land (the
/// engine answers 409: pending, or failed with the reason) is an error saying so.
async fn served(client: &ApiClient, path: &str) -> anyhow::Result<Envelope> {
    let response = client
        .authorized(client.http().get(client.url(path)))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", client.url("")))?;
    if response.status() == reqwest::StatusCode::CONFLICT {
        let said = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(printable))
            .unwrap_or_else(|| "its statement is not served".into());
        bail!("the engine does not vouch for this change: {said}");
    }
    super::client::decode(response, client.has_token()).await
}

/// `text` with the characters a terminal would act on (controls) escaped.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The URL of `message`'s last `Plue-Provenance:` trailer and its path on `server`; an
/// error when there is none or it names another host (or port, or a path outside `/api/`).
fn trailer_path(message: &str, server: &str) -> anyhow::Result<(String, String)> {
    let prefix = format!("{TRAILER}: ");
    let Some(url) = message.lines().rev().find_map(|l| l.strip_prefix(&prefix)) else {
        bail!("no {TRAILER} trailer: give --statement FILE");
    };
    let url = url.trim();
    // Plain segments only: a URL resolves `..` and `.` (also as `%2e`) and `\` as `/`, so
    // `/api/../../elsewhere` would leave `/api/` (for an engine under a path, another
    // application of its host, sent the user's token).
    let plain = |path: &str| {
        path.split('/').skip(1).all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    match url.strip_prefix(server.trim_end_matches('/')) {
        Some(path) if path.starts_with("/api/") && plain(path) => {
            Ok((url.to_owned(), path.to_owned()))
        }
        _ => bail!("the {TRAILER} trailer names {url}, which is not on --server {server}"),
    }
}

/// `commit` of `repo` as a full id.
fn resolve(repo: &Path, commit: &str) -> anyhow::Result<(PathBuf, String)> {
    let sha = git(
        repo,
        &["rev-parse", "--verify", &format!("{commit}^{{commit}}")],
        None,
    )
    .with_context(|| format!("{commit} is not a commit of {}", repo.display()))?;
    Ok((repo.to_path_buf(), sha.trim().to_owned()))
}

/// That `sha` of `repo` is what `statement` attests.
fn check_commit(repo: &Path, sha: &str, statement: &Statement) -> anyhow::Result<()> {
    let (attested, tree) = statement.commit()?;
    if attested != sha {
        bail!("the statement attests commit {attested}, not {sha}");
    }
    let actual_tree = git(repo, &["rev-parse", &format!("{sha}^{{tree}}")], None)?;
    let actual_tree = actual_tree.trim();
    if actual_tree != tree {
        bail!("commit {sha} has tree {actual_tree}, the statement records {tree}");
    }
    let base = statement.base()?;
    let parents = git(repo, &["rev-list", "--parents", "-n", "1", sha], None)?;
    let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
    if parents != [base] {
        bail!(
            "commit {sha} has parent(s) {}, the statement's base is {base}",
            parents.join(", ")
        );
    }
    let diff = statement.diff()?;
    let recomputed = tree_of(repo, base, &diff)?;
    if recomputed != actual_tree {
        bail!(
            "commit {sha}'s tree {actual_tree} is not the statement's diff applied to {base} \
             (that gives {recomputed})"
        );
    }
    Ok(())
}

/// The tree of `diff` applied to `base`, built in a temporary index.
fn tree_of(repo: &Path, base: &str, diff: &[u8]) -> anyhow::Result<String> {
    let dir = tempfile::tempdir().context("a temporary directory for the index")?;
    let index = dir.path().join("index");
    let env = [("GIT_INDEX_FILE", index.as_os_str())];
    git_env(repo, &["read-tree", base], None, &env)?;
    if !diff.is_empty() {
        git_env(
            repo,
            &["apply", "--cached", "--binary", "--whitespace=nowarn", "-"],
            Some(diff),
            &env,
        )
        .context("the statement's diff does not apply to its base")?;
    }
    Ok(git_env(repo, &["write-tree"], None, &env)?
        .trim()
        .to_owned())
}

fn git(repo: &Path, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<String> {
    git_env(repo, args, stdin, &[])
}

fn git_env(
    repo: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<String> {
    use std::io::Write;
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting git {}", args.join(" ")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).context("writing to git")?;
    }
    let out = child.wait_with_output().context("waiting for git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The engine's reason quotes the forge (and, through it, whoever wrote the refusal):
    // printed to a terminal, a control character is shown, never obeyed.
    #[test]
    fn the_engines_words_are_printed_with_controls_escaped() {
        assert_eq!(
            printable("refused: \u{1b}[2Jprotected\nbranch ✓"),
            "refused: \\u{1b}[2Jprotected\\nbranch ✓"
        );
    }

    // The commit's message is the forge's (anyone who can push can write it): its trailer
    // may only point below the engine the user named.
    #[test]
    fn a_trailer_is_followed_only_onto_the_server_given() {
        let server = "https://plue.example.com";
        let message = |url: &str| format!("Fix it\n\n{TRAILER}: {url}\n");
        let good = format!("{server}/api/runs/1/proposals/2/provenance");
        assert_eq!(
            trailer_path(&message(&good), server).unwrap(),
            (good.clone(), "/api/runs/1/proposals/2/provenance".into())
        );
        assert_eq!(
            trailer_path(&message(&good), "https://plue.example.com/")
                .unwrap()
                .1,
            "/api/runs/1/proposals/2/provenance"
        );
        for evil in [
            "https://evil.example/api/runs/1/proposals/2/provenance",
            "https://plue.example.com.evil.example/api/x",
            "https://plue.example.com:8443/api/x",
            "https://plue.example.com@evil.example/api/x",
            "https://plue.example.com/../x",
        ] {
            assert!(trailer_path(&message(evil), server).is_err(), "{evil}");
        }
        // An engine under a path: a trailer that leaves `/api/` once the URL is resolved
        // (dot segments, encoded or not, a backslash, a query) is not followed either.
        let under = "https://host.example/plue";
        assert!(trailer_path(
            &message("https://host.example/plue/api/runs/1/proposals/2/provenance"),
            under
        )
        .is_ok());
        for evil in [
            "https://host.example/plue/api/../../other/steal",
            "https://host.example/plue/api/%2e%2e/%2E%2E/other/steal",
            "https://host.example/plue/api/./../../other",
            "https://host.example/plue/api/..\\..\\other",
            "https://host.example/plue/api//evil.example/x",
            "https://host.example/plue/api/runs/1?next=/other",
            "https://host.example/plue/api/runs/1#x",
        ] {
            assert!(trailer_path(&message(evil), under).is_err(), "{evil}");
        }
        // What the client would have fetched for the first: another application's path.
        let resolved =
            reqwest::Url::parse("https://host.example/plue/api/%2e%2e/%2E%2E/other").unwrap();
        assert_eq!(resolved.path(), "/other");
        assert!(trailer_path("Fix it\n", server).is_err());
    }
}
