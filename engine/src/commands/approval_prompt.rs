//! `plue run`'s word on an approval step: when one starts waiting, what it asks (the
//! plan's `message`), who the plan names to decide, its deadline and the exact `plue
//! approve` commands that decide it; on a terminal (stdin a TTY) it also asks y/n and
//! decides the answer through the API, as `plue approve` does ([`super::decision::decide`]).
//!
//! Invariants:
//! - Every decision goes through the engine's API (`POST /api/runs/{id}/steps/{step}/
//!   approve|reject`), whether answered here or by `plue approve --data-dir` from another
//!   terminal: one path, one set of checks; the first decision wins and the other is told
//!   the step is no longer waiting (409).
//! - How to reach the embedded engine (its loopback address) is written only while the
//!   run has an approval step, to `<data dir>/approvals/run-<id>.json`, created `0600` in a
//!   `0700` directory inside the data directory (itself `0700`), and removed when `plue
//!   run` ends. No credential is written: the embedded engine has no users (its API, on a
//!   random loopback port, takes none), and its runners' registration token, the one
//!   secret it holds, never leaves `plue run`.
//! - Nothing is asked when stdin is not a terminal (CI, pipes): the run waits for a
//!   decision or its deadline, as before, and the commands are printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::Context;
use evaluator::plan::{Action, ApprovalAction, Plan};
use plue_store::StepRunRow;
use plue_types::status::StepStatus;
use serde::{Deserialize, Serialize};

use super::client::ApiClient;

/// How `plue approve --data-dir` reaches a `plue run`'s engine.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Published {
    url: String,
}

/// Where run `run_id`'s engine is published in `data_dir`.
fn published_path(data_dir: &Path, run_id: i64) -> PathBuf {
    data_dir
        .join("approvals")
        .join(format!("run-{run_id}.json"))
}

/// A client of the `plue run` engine running run `run_id` from `data_dir`.
pub(crate) fn local_client(data_dir: &Path, run_id: i64) -> anyhow::Result<ApiClient> {
    let path = published_path(data_dir, run_id);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "no `plue run` of run {run_id} with an approval step is running from {} \
             (for a server's run, leave out --data-dir)",
            data_dir.display()
        ),
        _ => anyhow::Error::new(e).context(format!("reading {}", path.display())),
    })?;
    let published: Published = serde_json::from_str(&text)
        .with_context(|| format!("{} is not what `plue run` writes", path.display()))?;
    ApiClient::new(&published.url, None)
}

/// The file a `plue run` published, removed when dropped.
struct PublishedFile(PathBuf);

impl Drop for PublishedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes how to reach the engine, readable by this user only.
fn publish(data_dir: &Path, run_id: i64, url: &str) -> anyhow::Result<PublishedFile> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let path = published_path(data_dir, run_id);
    let dir = path.parent().expect("a file in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let text = serde_json::to_string(&Published {
        url: url.to_owned(),
    })?;
    // Written whole under another name, then renamed: a reader never sees half of it.
    let partial = dir.join(format!(".run-{run_id}.json.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    file.write_all(text.as_bytes())?;
    drop(file);
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(PublishedFile(path))
}

/// `text` as one shell word (quoted when it needs to be).
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC (in 59m 59s)` of a deadline in ms since the epoch.
fn deadline_text(deadline: i64, now: i64) -> String {
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(deadline)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{deadline} ms"));
    if deadline > now {
        format!("{at} (in {})", super::format::human_ms(deadline - now))
    } else {
        format!("{at} (passed)")
    }
}

/// What is printed when approval step `step` of run `run_id` starts waiting.
fn announcement(
    run_id: i64,
    step: &str,
    approval: &ApprovalAction,
    deadline: Option<i64>,
    data_dir: &Path,
    now: i64,
) -> String {
    let mut text = match &approval.message {
        Some(message) => format!("⏸ run {run_id}: step '{step}' waits for a decision: {message}"),
        None => format!("⏸ run {run_id}: step '{step}' waits for a decision"),
    };
    let who = if approval.approvers.is_empty() {
        "anyone who may run this".to_owned()
    } else {
        approval.approvers.join(", ")
    };
    let excluded = if approval.exclude_triggerer {
        " (not whoever started the run)"
    } else {
        ""
    };
    text.push_str(&format!("\n  approvers: {who}{excluded}"));
    if let Some(deadline) = deadline {
        text.push_str(&format!(
            "\n  deadline:  {} — undecided, the step fails",
            deadline_text(deadline, now)
        ));
    }
    let command = format!(
        "plue approve {run_id} {} --data-dir {}",
        shell_word(step),
        shell_word(&data_dir.display().to_string())
    );
    text.push_str(&format!(
        "\n  approve:   {command}\n  reject:    {command} --reject --comment 'why'"
    ));
    text
}

/// A y/n answer, `None` for anything else.
fn answer(line: &str) -> Option<bool> {
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(true),
        "n" | "no" => Some(false),
        _ => None,
    }
}

/// Announces the approval steps of one `plue run` as they start waiting, and on a terminal
/// asks for each.
pub(crate) struct Prompter {
    run_id: i64,
    /// The plan's approval steps (those `--approve` decides left out).
    approvals: BTreeMap<String, ApprovalAction>,
    announced: BTreeSet<String>,
    data_dir: PathBuf,
    /// The steps to ask about, to the thread that reads stdin (`None`: not a terminal).
    ask: Option<mpsc::Sender<String>>,
    _published: Option<PublishedFile>,
}

impl Prompter {
    /// For run `run_id` of `plan`, on the embedded engine at `url`, started from
    /// `data_dir`; the steps `--approve` decides are neither announced nor asked.
    pub(crate) fn new(
        run_id: i64,
        plan: &Plan,
        preapproved: &BTreeSet<String>,
        data_dir: &Path,
        url: &str,
    ) -> anyhow::Result<Prompter> {
        let approvals: BTreeMap<String, ApprovalAction> = plan
            .steps
            .iter()
            .filter(|s| !preapproved.contains(&s.id))
            .filter_map(|s| match &s.action {
                Action::Approval(a) => Some((s.id.clone(), a.clone())),
                _ => None,
            })
            .collect();
        let mut prompter = Prompter {
            run_id,
            announced: BTreeSet::new(),
            data_dir: data_dir.to_owned(),
            ask: None,
            _published: None,
            approvals,
        };
        if prompter.approvals.is_empty() {
            return Ok(prompter);
        }
        prompter._published = Some(publish(data_dir, run_id, url)?);
        if std::io::stdin().is_terminal() && !crate::logging::is_json() {
            let client = ApiClient::new(url, None)?;
            prompter.ask = Some(asker(run_id, client));
        }
        Ok(prompter)
    }

    /// Announces (and asks about) each approval step of `steps` that waits and was not
    /// announced yet.
    pub(crate) fn on_states(&mut self, steps: &[StepRunRow]) {
        let now = plue_store::now_ms();
        for step in steps.iter().filter(|s| s.status == StepStatus::Waiting) {
            let Some(approval) = self.approvals.get(&step.step_id) else {
                continue;
            };
            if !self.announced.insert(step.step_id.clone()) {
                continue;
            }
            say(&announcement(
                self.run_id,
                &step.step_id,
                approval,
                step.ready_at,
                &self.data_dir,
                now,
            ));
            if let Some(ask) = &self.ask {
                let _ = ask.send(step.step_id.clone());
            }
        }
    }
}

/// A thread that asks about each step it is sent, one at a time, and decides the answer
/// through the API. A thread of its own, not the runtime's: a read of stdin cannot be
/// cancelled, and `plue run` must not wait for one to end.
fn asker(run_id: i64, client: ApiClient) -> mpsc::Sender<String> {
    let (tx, rx) = mpsc::channel::<String>();
    let runtime = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for step in rx {
            let verdict = loop {
                let _ = write!(
                    std::io::stderr(),
                    "approve step '{step}' of run {run_id}? [y/n] "
                );
                let _ = std::io::stderr().flush();
                let mut line = String::new();
                match stdin.lock().read_line(&mut line) {
                    // Nobody left to answer: the printed commands still decide it.
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                match answer(&line) {
                    Some(verdict) => break verdict,
                    None => say("  answer y (approve) or n (reject)"),
                }
            };
            let decided = runtime.block_on(super::decision::decide(
                &client,
                run_id,
                &step,
                !verdict,
                "answered at plue run's terminal",
            ));
            match decided {
                Ok(d) => say(&format!(
                    "  step '{}' {} by {}",
                    d.step_id, d.decision, d.decided_by
                )),
                Err(e) => say(&format!("  not decided: {e:#}")),
            }
        }
    });
    tx
}

/// A notice on stderr, never panicking (the terminal may be gone); with `--log-format
/// json`, an event of the JSON log.
fn say(text: &str) {
    if crate::logging::is_json() {
        crate::logging::notice(text);
        return;
    }
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_says_what_who_until_when_and_how() {
        let approval = ApprovalAction {
            message: Some("Deploy to production?".into()),
            approvers: vec!["alice".into(), "@ops".into()],
            exclude_triggerer: true,
        };
        let dir = Path::new("/tmp/my data");
        let text = announcement(7, "gate", &approval, Some(3_600_000), dir, 0);
        assert!(
            text.contains("step 'gate' waits for a decision: Deploy to production?"),
            "{text}"
        );
        assert!(text.contains("approvers: alice, @ops (not whoever started the run)"));
        assert!(
            text.contains("deadline:  1970-01-01 01:00:00 UTC (in 1h"),
            "{text}"
        );
        assert!(
            text.contains("approve:   plue approve 7 gate --data-dir '/tmp/my data'\n"),
            "{text}"
        );
        assert!(text.contains("--reject --comment 'why'"));
        let nobody = ApprovalAction {
            message: None,
            approvers: Vec::new(),
            exclude_triggerer: false,
        };
        let anyone = announcement(7, "gate", &nobody, None, dir, 0);
        assert!(
            anyone.contains("approvers: anyone who may run this"),
            "{anyone}"
        );
        assert!(!anyone.contains("deadline"));
    }

    #[test]
    fn answers_and_shell_words() {
        assert_eq!(answer("y\n"), Some(true));
        assert_eq!(answer(" No "), Some(false));
        assert_eq!(answer("maybe"), None);
        assert_eq!(shell_word("gate-1"), "gate-1");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn the_published_address_is_for_its_user_only_and_goes_with_the_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = publish(dir.path(), 3, "http://127.0.0.1:1").unwrap();
        let path = published_path(dir.path(), 3);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(local_client(dir.path(), 3).is_ok());
        let missing = local_client(dir.path(), 4).err().unwrap().to_string();
        assert!(missing.contains("no `plue run` of run 4"), "{missing}");
        drop(file);
        assert!(!path.exists());
    }
}
