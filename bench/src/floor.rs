//! `plue-bench floor`: the least a bash step can cost on this host while it keeps the
//! isolation a runner gives every step — what no change to the engine, the store or the
//! runner protocol can go below.
//!
//! Each step is `bash --noprofile --norc -eo pipefail -c true` started through the
//! runner's own path, [`runner::process::run`]: its own session, cgroup and private mount
//! namespace, the attempt's step user (a claimed uid when this process is root, as a root
//! runner's steps get), its pipes read and its processes swept at the end. Nothing else is
//! done: no engine, no store, no HTTP, no workspace tree (each step runs in one shared,
//! empty directory). Baselines in the same process: the same command line spawned with
//! `std::process::Command` (what the shell loop of `steps` measures). Beside them, a
//! `python` step on the same path, `python3 -u -c pass` forked from the runner's warm
//! zygote (started before the rounds, as a runner's is after its first `python` step):
//! what a warm `python` step costs above a `bash` one.
//!
//! `plue-bench floor` prints a table; `plue-bench floor --steps N --parallel P --quiet`
//! runs N such steps, P at a time, and prints nothing: `bench/peers/peers.py` times that
//! as a cold process beside `plue run`, Luigi and the shell loop (its "floor" column).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runner::mask::Masker;
use runner::process::{self, Ending, ProcessSpec};
use runner::step_user::{StepUser, StepUsers};

use crate::stats::{ms, percentile};

/// Steps per measured round, and rounds (the median round is reported).
const STEPS: usize = 200;
const ROUNDS: usize = 5;

/// What `floor` was asked for on its command line.
struct Args {
    steps: usize,
    parallel: usize,
    quiet: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut parsed = Args {
        steps: STEPS,
        parallel: 1,
        quiet: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize> {
            let value = args
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            match value.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{name} needs a positive number, not '{value}'"),
            }
        };
        match arg.as_str() {
            "--steps" => parsed.steps = number("--steps")?,
            "--parallel" => parsed.parallel = number("--parallel")?,
            "--quiet" => parsed.quiet = true,
            other => bail!("floor: unknown argument '{other}' (--steps N, --parallel P, --quiet)"),
        }
    }
    Ok(parsed)
}

pub(crate) async fn run(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let bash = which_bash()?;
    let dir = tempfile::Builder::new()
        .prefix("plue-bench-floor-")
        .tempdir()?;
    // Step users must reach the directory they run in (a tempdir is 0700).
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let users = StepUsers::default_for_this_process();
    if args.quiet {
        return isolated(
            &Step::bash(bash),
            dir.path(),
            users,
            args.steps,
            args.parallel,
        )
        .await
        .map(drop);
    }
    println!("## floor: one bash step through the runner's own process path, nothing else\n");
    println!(
        "{} steps per round, {ROUNDS} rounds alternated, median round; {}.\n",
        args.steps,
        match users {
            StepUsers::Same => "steps as this process's user (not root here)",
            StepUsers::Range { .. } => "each step as a claimed step user (root here)",
        }
    );
    let python = Step::python(users)?;
    // The zygote starts at the first python step; the rounds measure warm ones.
    isolated(&python, dir.path(), users, 1, 1).await?;
    let bash = Step::bash(bash);
    let mut spawn = Vec::new();
    let mut same_user = Vec::new();
    let mut step_user = Vec::new();
    let mut python_step = Vec::new();
    for _ in 0..ROUNDS {
        spawn.push(plain(&bash.program, dir.path(), args.steps)?);
        same_user.push(isolated(&bash, dir.path(), StepUsers::Same, args.steps, 1).await?);
        step_user.push(isolated(&bash, dir.path(), users, args.steps, 1).await?);
        python_step.push(isolated(&python, dir.path(), users, args.steps, 1).await?);
    }
    let per_step = |rounds: &mut Vec<Duration>| percentile(rounds, 0.5) / args.steps as u32;
    let base = per_step(&mut spawn);
    println!("| path | per step | vs the bare spawn |");
    println!("|---|---:|---:|");
    for (name, rounds) in [
        (
            "`std::process::Command` spawn and wait (the shell loop's cost)",
            &mut spawn,
        ),
        (
            "`runner::process::run`, the runner's own user",
            &mut same_user,
        ),
        (
            "`runner::process::run`, a step user where root",
            &mut step_user,
        ),
        (
            "the same, `python3 -u -c pass` from the warm zygote",
            &mut python_step,
        ),
    ] {
        let each = per_step(rounds);
        println!(
            "| {name} | {} | {:.2}x |",
            ms(each),
            each.as_secs_f64() / base.as_secs_f64()
        );
    }
    let above = per_step(&mut python_step).as_secs_f64() - per_step(&mut step_user).as_secs_f64();
    println!(
        "\nA warm `python` step above a `bash` step: {:.2} ms.\n",
        above * 1e3
    );
    Ok(())
}

/// One step's program and arguments.
struct Step {
    program: PathBuf,
    args: Vec<String>,
}

impl Step {
    fn bash(program: PathBuf) -> Step {
        Step {
            program,
            args: crate::bash_step::args("true"),
        }
    }

    /// A `python` step as a runner runs it: the interpreter a runner with `users` picks,
    /// `-u -c SCRIPT` (the zygote's eligible form).
    fn python(users: StepUsers) -> Result<Step> {
        Ok(Step {
            program: runner::agent::python_for_steps(users != StepUsers::Same)?,
            args: ["-u", "-c", "pass"].map(String::from).to_vec(),
        })
    }
}

/// `bash` as a runner resolves it for a step user.
fn which_bash() -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    runner::program_path::resolve("bash", &path, true).context("no bash on PATH")
}

/// `steps` plain spawns of the step's command line, one after another.
fn plain(bash: &Path, dir: &Path, steps: usize) -> Result<Duration> {
    let start = Instant::now();
    for _ in 0..steps {
        let status = std::process::Command::new(bash)
            .args(crate::bash_step::args("true"))
            .current_dir(dir)
            .status()?;
        if !status.success() {
            bail!("bash -c true failed: {status}");
        }
    }
    Ok(start.elapsed())
}

/// `steps` steps through [`runner::process::run`], `parallel` at a time.
async fn isolated(
    step: &Step,
    dir: &Path,
    users: StepUsers,
    steps: usize,
    parallel: usize,
) -> Result<Duration> {
    let start = Instant::now();
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..parallel {
        let share = steps / parallel + usize::from(lane < steps % parallel);
        let (program, args, dir) = (step.program.clone(), step.args.clone(), dir.to_owned());
        lanes.spawn(async move {
            for _ in 0..share {
                // Held until the step's processes are gone, as a runner holds it.
                let claim = tokio::task::spawn_blocking(move || users.claim()).await??;
                one_step(&program, &args, &dir, claim.as_ref().map(|c| c.user())).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(lane) = lanes.join_next().await {
        lane??;
    }
    Ok(start.elapsed())
}

async fn one_step(
    program: &Path,
    args: &[String],
    dir: &Path,
    user: Option<StepUser>,
) -> Result<()> {
    let env = BTreeMap::from([
        (
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        ),
        ("HOME".to_string(), dir.display().to_string()),
    ]);
    let spec = ProcessSpec {
        program: program.to_owned(),
        args: args.to_vec(),
        cwd: dir.to_owned(),
        env,
        user,
        timeout: Duration::from_secs(60),
        masker: Masker::new(Vec::<String>::new()),
        fresh_interpreter: false,
        network: None,
    };
    let (lines, mut received) = tokio::sync::mpsc::channel(64);
    let drain = tokio::spawn(async move { while received.recv().await.is_some() {} });
    let ended = process::run(spec, lines, tokio_util::sync::CancellationToken::new()).await?;
    drain.await?;
    if ended.ending != Ending::Exited(0) {
        bail!("the step ended with {:?}", ended.ending);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_default_and_parse() {
        let parsed = parse(&[]).unwrap();
        assert_eq!(
            (parsed.steps, parsed.parallel, parsed.quiet),
            (STEPS, 1, false)
        );
        let parsed = parse(&args(&["--steps", "502", "--parallel", "2", "--quiet"])).unwrap();
        assert_eq!(
            (parsed.steps, parsed.parallel, parsed.quiet),
            (502, 2, true)
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        for (bad, says) in [
            (&["--steps", "0"][..], "positive number, not '0'"),
            (&["--parallel", "two"][..], "positive number, not 'two'"),
            (&["--steps"][..], "--steps needs a number"),
            (&["--fast"][..], "unknown argument '--fast'"),
        ] {
            let err = parse(&args(bad)).err().expect("refused").to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
