//! End to end: results back to the user, through the real `plue` binary.
//! - `plue run --export STEP=DIR` writes the step's final workspace into DIR after the run;
//!   a DIR that exists and is not empty, or an unknown step, is refused before anything runs;
//! - `plue artifacts RUN` lists a run's files, `--to DIR` downloads them (each step's in
//!   DIR/STEP, or one `--step`'s straight into DIR);
//! - attacks: an artifacts tar in the blob store rewritten to hold `../` or a symlink
//!   pointing out writes nothing outside `--to`.

use crate::support;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{printed, Sandbox};

const PIPELINE: &str = r#"def workflow():
    return Plan(name="results", triggers=[Trigger.manual()], steps=[
        Step.bash("build", 'mkdir -p dist && echo built > dist/app.txt && echo notes > notes.md',
                  artifacts=["dist/**"]),
        Step.bash("report", 'echo "all good" > report.txt', artifacts=["report.txt"],
                  depends_on=["build"]),
    ])
"#;

fn run(sandbox: &Sandbox, extra: &[&str]) -> Output {
    sandbox.write("w.plue.py", PIPELINE);
    sandbox
        .plue(&["run", "w.plue.py", "--runners", "1", "--event", "manual"])
        .args(extra)
        .env_remove("PLUE_DATA_DIR")
        .output()
        .expect("plue run")
}

fn plue(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox
        .plue(args)
        .env_remove("PLUE_DATA_DIR")
        .output()
        .expect("plue")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn export_writes_the_steps_final_workspace_after_the_run() {
    let sandbox = Sandbox::new("results-export");
    let output = run(&sandbox, &["--export", "build=out"]);
    assert!(output.status.success(), "{}", printed(&output));
    assert!(
        printed(&output).contains("exported build's workspace to out"),
        "{}",
        printed(&output)
    );
    assert_eq!(read(sandbox.path("out/dist/app.txt")), "built\n");
    assert_eq!(read(sandbox.path("out/notes.md")), "notes\n");
}

#[test]
fn export_refuses_a_directory_with_files_or_an_unknown_step_before_running() {
    let sandbox = Sandbox::new("results-export-refused");
    sandbox.write("taken/keep.txt", "mine\n");
    let output = run(&sandbox, &["--export", "build=taken"]);
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    assert!(
        printed(&output).contains("taken exists and is not empty"),
        "{}",
        printed(&output)
    );
    assert_eq!(read(sandbox.path("taken/keep.txt")), "mine\n");
    assert!(!sandbox.path(".plue").exists(), "nothing ran");

    let output = run(&sandbox, &["--export", "nope=out"]);
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    assert!(
        printed(&output).contains("the plan has no step 'nope'"),
        "{}",
        printed(&output)
    );
    assert!(!sandbox.path("out").exists());
}

#[test]
fn artifacts_are_listed_and_downloaded_from_a_local_data_directory() {
    let sandbox = Sandbox::new("results-artifacts");
    let output = run(&sandbox, &[]);
    assert!(output.status.success(), "{}", printed(&output));

    let listed = plue(&sandbox, &["artifacts", "1"]);
    assert!(listed.status.success(), "{}", printed(&listed));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("build") && text.contains("dist/app.txt"),
        "{text}"
    );
    assert!(text.contains("report.txt"), "{text}");

    let all = plue(&sandbox, &["artifacts", "1", "--to", "all"]);
    assert!(all.status.success(), "{}", printed(&all));
    assert_eq!(read(sandbox.path("all/build/dist/app.txt")), "built\n");
    assert_eq!(read(sandbox.path("all/report/report.txt")), "all good\n");
    assert!(
        !sandbox.path("all/build/notes.md").exists(),
        "only the artifacts"
    );

    let one = plue(
        &sandbox,
        &["artifacts", "1", "--step", "report", "--to", "one"],
    );
    assert!(one.status.success(), "{}", printed(&one));
    assert_eq!(read(sandbox.path("one/report.txt")), "all good\n");

    let again = plue(&sandbox, &["artifacts", "1", "--to", "all"]);
    assert!(!again.status.success(), "a directory with files is refused");
    assert!(
        printed(&again).contains("is not empty"),
        "{}",
        printed(&again)
    );
    let missing = plue(&sandbox, &["artifacts", "1", "--step", "nope", "--to", "x"]);
    assert!(printed(&missing).contains("step 'nope' of run 1 kept no artifacts"));
}

/// The stored artifacts tar of `step` in the sandbox's data directory.
fn stored_tar(sandbox: &Sandbox, step: &str) -> PathBuf {
    let dir = sandbox.path(&format!(".plue/artifacts/runs/1/{step}"));
    let mut found = Vec::new();
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("artifacts-"))
            {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

/// A tar entry header with `path` written as raw bytes (the builder refuses `..`).
fn header(path: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_cksum();
    header
}

fn hostile_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let header = header(path, *kind, data.len() as u64, *link);
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Asserts that the download `out` failed, saying it refused an archive entry.
fn assert_refused(out: &Output) {
    assert!(!out.status.success(), "{}", printed(out));
    assert!(
        printed(out).contains("refused archive entry"),
        "{}",
        printed(out)
    );
}

fn nothing_outside(sandbox: &Sandbox, names: &[&str]) {
    for name in names {
        let found = walk(sandbox.path(""))
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == *name))
            .collect::<Vec<_>>();
        assert!(found.is_empty(), "{name} written: {found:?}");
    }
    assert!(!Path::new("/tmp/plue-pwned.txt").exists());
}

fn walk(dir: PathBuf) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            all.push(path);
        }
    }
    all
}

#[test]
fn attack_a_hostile_artifacts_tar_writes_nothing_outside_the_target() {
    let sandbox = Sandbox::new("results-attack");
    let output = run(&sandbox, &[]);
    assert!(output.status.success(), "{}", printed(&output));
    let tar = stored_tar(&sandbox, "build");

    // `../` out of the step's directory, and out of --to itself.
    std::fs::write(
        &tar,
        hostile_tar(&[
            ("../escaped.txt", tar::EntryType::Regular, b"x", None),
            ("../../escaped2.txt", tar::EntryType::Regular, b"x", None),
        ]),
    )
    .unwrap();
    let out = plue(
        &sandbox,
        &["artifacts", "1", "--step", "build", "--to", "dl"],
    );
    assert_refused(&out);
    nothing_outside(&sandbox, &["escaped.txt", "escaped2.txt"]);

    // A symlink pointing out, then a file written through it; an absolute link too.
    std::fs::write(
        &tar,
        hostile_tar(&[
            ("out", tar::EntryType::Symlink, b"", Some("../..")),
            ("out/pwned.txt", tar::EntryType::Regular, b"x", None),
            ("abs", tar::EntryType::Symlink, b"", Some("/tmp")),
            ("abs/plue-pwned.txt", tar::EntryType::Regular, b"x", None),
        ]),
    )
    .unwrap();
    let out = plue(&sandbox, &["artifacts", "1", "--to", "dl2"]);
    assert_refused(&out);
    nothing_outside(&sandbox, &["pwned.txt", "plue-pwned.txt"]);
    for path in walk(sandbox.path("dl2")) {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(
            !meta.file_type().is_symlink(),
            "a link was left: {}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_and_the_record_come_from_a_server_too() {
    let sandbox = Sandbox::new("results-server");
    let file = sandbox.write("ws/w.plue.py", PIPELINE);
    let engine = sandbox.serve_one_runner("engine", "data", &[]).await;
    let http = support::client();
    let run_id = support::start_run(&http, &engine.url, &file, &sandbox.path("ws")).await;
    let run = support::wait_final(
        &http,
        &engine.url,
        run_id,
        std::time::Duration::from_secs(90),
    )
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run_id.to_string();

    let all = plue(
        &sandbox,
        &["artifacts", &run_id, "--server", &engine.url, "--to", "all"],
    );
    assert!(all.status.success(), "{}", printed(&all));
    assert_eq!(read(sandbox.path("all/build/dist/app.txt")), "built\n");
    assert_eq!(read(sandbox.path("all/report/report.txt")), "all good\n");

    let shown = plue(
        &sandbox,
        &["runs", "show", &run_id, "--json", "--server", &engine.url],
    );
    assert!(shown.status.success(), "{}", printed(&shown));
    let record: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(record["run_id"].to_string(), run_id);
    assert_eq!(record["attempt_records"].as_array().map(Vec::len), Some(2));
    assert!(record["artifacts"][0]["url"]
        .as_str()
        .is_some_and(|u| u.starts_with(&format!("/api/runs/{run_id}/steps/"))));
}
