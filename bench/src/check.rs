//! `plue-bench check`: `plue check` of a directory of 200 workflow files (copies of the
//! examples), median of 7 runs including the pool start-up, against one `python3` process
//! per file.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::stats::{ms, percentile, real_python};
use crate::Env;

pub(crate) fn run(env: &Env) -> Result<()> {
    let (root, plue) = (env.root.as_path(), env.plue.as_path());
    let dir = tempfile::tempdir()?;
    let examples: Vec<PathBuf> = [
        "ci",
        "triggers/push",
        "triggers/pull_request",
        "triggers/schedule",
        "triggers/manual",
        "steps/bash",
        "steps/python",
        "templates/bug-fix",
    ]
    .iter()
    .map(|name| root.join(format!("examples/{name}.plue.py")))
    .collect();
    let mut files = Vec::new();
    for i in 0..200 {
        let path = dir.path().join(format!("w{i:03}.plue.py"));
        std::fs::copy(&examples[i % examples.len()], &path)?;
        files.push(path);
    }
    let mut runs = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let output = Command::new(plue).arg("check").arg(dir.path()).output()?;
        if !output.status.success() {
            bail!(
                "plue check failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        runs.push(started.elapsed());
    }
    let plue_median = percentile(&mut runs, 0.5);
    let per_file = |program: &str| -> Result<Duration> {
        let started = Instant::now();
        for file in &files {
            let status = Command::new(program)
                .arg(root.join("bench/baseline_eval.py"))
                .arg(file)
                .stdout(std::process::Stdio::null())
                .status()?;
            if !status.success() {
                bail!("baseline failed on {}", file.display());
            }
        }
        Ok(started.elapsed())
    };
    let shim = per_file("python3")?;
    let real = real_python()?;
    let direct = per_file(&real)?;
    println!("## check: 200 workflow files\n");
    println!("| path | time | ratio |\n|---|---|---|");
    println!(
        "| `plue check` (median of 7, incl. pool start) | {} | 1× |",
        ms(plue_median)
    );
    println!(
        "| one `python3` (PATH, pyenv shim) per file | {} | {:.1}× slower |",
        ms(shim),
        shim.as_secs_f64() / plue_median.as_secs_f64()
    );
    println!(
        "| one `{real}` per file | {} | {:.1}× slower |",
        ms(direct),
        direct.as_secs_f64() / plue_median.as_secs_f64()
    );
    println!();
    Ok(())
}
