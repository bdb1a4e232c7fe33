//! `plue-bench-bombs`: what one hostile plan costs the engine — validation bombs (issue 30).
//!
//! Each bomb is a plan as large as a worker may return (1 MiB of JSON, 1,000 steps) built
//! to maximise the work of one check; when the parent's first scan (`evaluator::bounds`)
//! refuses it, it is measured again at the largest size that passes every bound: "did you
//! mean" suggestions for `needs_artifacts`/`workspace_from`, unknown `loop_to`, unknown
//! `depends_on` and template references, hand-off look-ups, loop regions over a dense
//! graph, a deep chain with a cycle. For each bomb the engine's path after a worker
//! answers — decode the plan JSON, validate it, hash it — runs in a fresh child process
//! (`--one FILE`), which reports its thread's CPU time and its peak RSS;
//! the parent prints the medians of [`RUNS`] children as a Markdown table.
//!
//! `cargo build --release -p bench-bombs`, then `target/release/plue-bench-bombs`.

use std::process::Command;

use anyhow::{bail, Context, Result};
use evaluator::plan::{Action, Location, Plan, SourceMap, Step};
use evaluator::Limits;
use nix::time::{clock_gettime, ClockId};

/// Children per bomb; the table shows their medians.
const RUNS: usize = 7;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--one") {
        let file = args.get(2).context("--one FILE")?;
        return one(file);
    }
    let only = args.get(1).cloned();
    let dir = std::env::temp_dir().join(format!("plue-bombs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "_load average at start: {}_\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| bomb | plan JSON | CPU median (min-max) | peak RSS (process) | diagnostics | first line |");
    println!("|---|---|---|---|---|---|");
    for (name, build) in BOMBS {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let (plan, map) = largest(*build, false)?;
        measure(name, &plan, &map, &dir)?;
        let limits = Limits::default();
        let json_len = plan.canonical_json().len();
        if !evaluator::bounds::check(&plan, json_len, &map, &limits, "bomb").is_empty() {
            let (plan, map) = largest(*build, true)?;
            measure(&format!("{name} (within every bound)"), &plan, &map, &dir)?;
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The engine's path for one answer, measured: decode, validate, hash. Prints
/// `cpu_us \t peak_rss_kib \t diagnostics \t first diagnostic` (the peak RSS is the whole
/// process's: the program, its libraries, the file read, the plan and validation).
fn one(file: &str) -> Result<()> {
    let json = std::fs::read_to_string(file)?;
    let before = thread_cpu_us()?;
    let (plan, map): (Plan, SourceMap) = serde_json::from_str(&json)?;
    let found = evaluator::validate::validate(&plan, &map, &Limits::default(), "bomb.plue.py");
    let hash = plan.hash();
    let cpu = thread_cpu_us()? - before;
    let rss = peak_rss_kib()?;
    std::hint::black_box(hash);
    let first = found.first().map(|d| d.to_string()).unwrap_or_default();
    print!("{cpu}\t{rss}\t{}\t{first}", found.len());
    Ok(())
}

/// This process's peak RSS (`VmHWM`, of its own address space: `getrusage`'s
/// `ru_maxrss` keeps the parent's across `execve`).
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    Ok(line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// This thread's CPU time (user and system), to the microsecond: `getrusage` counts in
/// scheduler ticks, too coarse for a few milliseconds.
fn thread_cpu_us() -> Result<u64> {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    Ok(t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
}

type Build = fn(usize) -> Plan;

/// Each bomb is built at the largest size that stays within every bound.
const BOMBS: &[(&str, Build)] = &[
    ("hand-off-suggestions", hand_off_suggestions),
    ("hand-off-lookups", hand_off_lookups),
    ("loop-to-suggestions", loop_to_suggestions),
    ("depends-on-suggestions", depends_on_suggestions),
    ("template-suggestions", template_suggestions),
    ("loops-dense-graph", loops_dense_graph),
    ("template-dense-graph", template_dense_graph),
    ("deep-chain-cycle", deep_chain_cycle),
    ("plan-env-references", plan_env_references),
    ("glob-compiles", glob_compiles),
    ("cron-parses", cron_parses),
];

/// The largest `build(size)` (sizes tried from 1,000 down) that a worker may return (at
/// most 1 MiB of plan JSON and 1,000 steps) and, with `every_bound`, that also passes the
/// parent's first scan.
fn largest(build: Build, every_bound: bool) -> Result<(Plan, SourceMap)> {
    let limits = Limits::default();
    for size in (1..=1000).rev() {
        let plan = build(size);
        let map = source_map(&plan);
        let json = plan.canonical_json();
        if json.len() > limits.max_plan_bytes || plan.steps.len() > limits.max_steps {
            continue;
        }
        if !every_bound
            || evaluator::bounds::check(&plan, json.len(), &map, &limits, "bomb").is_empty()
        {
            return Ok((plan, map));
        }
    }
    bail!("no size of this bomb fits the bounds")
}

/// Runs [`RUNS`] children on `plan` and prints its row.
fn measure(name: &str, plan: &Plan, map: &SourceMap, dir: &std::path::Path) -> Result<()> {
    let json = serde_json::to_string(&(plan, map))?;
    let file = dir.join("bomb.json");
    std::fs::write(&file, &json)?;
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    let mut report = String::new();
    for _ in 0..RUNS {
        let out = Command::new(std::env::current_exe()?)
            .arg("--one")
            .arg(&file)
            .output()?;
        if !out.status.success() {
            bail!("{name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8(out.stdout)?;
        let mut fields = text.splitn(4, '\t');
        cpu.push(fields.next().context("cpu")?.parse::<u64>()?);
        rss.push(fields.next().context("rss")?.parse::<u64>()?);
        report = fields.collect::<Vec<_>>().join("\t");
    }
    let (count, first) = report.split_once('\t').unwrap_or(("?", ""));
    cpu.sort_unstable();
    rss.sort_unstable();
    println!(
        "| {name} | {} KiB | {:.1} ms ({:.1}-{:.1}) | {:.1} MiB | {count} | `{}` |",
        plan.canonical_json().len() / 1024,
        cpu[RUNS / 2] as f64 / 1000.0,
        cpu[0] as f64 / 1000.0,
        cpu[RUNS - 1] as f64 / 1000.0,
        rss[RUNS / 2] as f64 / 1024.0,
        first
            .trim()
            .chars()
            .take(90)
            .collect::<String>()
            .replace('|', "\\|"),
    );
    Ok(())
}

fn source_map(plan: &Plan) -> SourceMap {
    SourceMap {
        plan: Location { line: 1, col: 1 },
        triggers: (0..plan.triggers.len())
            .map(|i| Location {
                line: 2 + i as u32,
                col: 5,
            })
            .collect(),
        steps: (0..plan.steps.len())
            .map(|i| Location {
                line: 10 + i as u32,
                col: 5,
            })
            .collect(),
    }
}

fn plan(steps: Vec<Step>) -> Plan {
    Plan {
        name: "bomb".into(),
        triggers: vec![],
        env: Default::default(),
        steps,
        concurrency: None,
        budget_usd: None,
        max_parallel: None,
        modules: Vec::new(),
    }
}

fn bash(id: String, command: String) -> Step {
    Step::new(id, Action::Bash { command })
}

/// A 64-byte name: `prefix`, then `x`s, then `n` in 4 digits. Two such names with one
/// prefix differ in their last digits only: near misses, the edit distance's worst case.
fn long(prefix: &str, n: usize) -> String {
    format!("{prefix:x<60}{n:04}")
}

/// 14 steps, each with `size` long (unknown) dependencies and 100 `needs_artifacts` plus a
/// `workspace_from` that are near misses of them: one suggestion per bad name, each over
/// every dependency.
fn hand_off_suggestions(size: usize) -> Plan {
    let steps = (0..14)
        .map(|i| {
            let mut s = bash(format!("s{i}"), "true".into());
            s.depends_on = (0..size).map(|j| long("d", j)).collect();
            s.needs_artifacts = (0..100).map(|j| long("n", j)).collect();
            s.workspace_from = Some(long("w", 0));
            s
        })
        .collect();
    plan(steps)
}

/// `size` steps, each depending on the 100 before it and naming them all in
/// `needs_artifacts`: each name is looked up (a dependency? a step? its artifacts?).
fn hand_off_lookups(size: usize) -> Plan {
    let steps = (0..size)
        .map(|i| {
            let mut s = bash(format!("s{i}"), "true".into());
            s.depends_on = (i.saturating_sub(100)..i)
                .map(|j| format!("s{j}"))
                .collect();
            s.needs_artifacts = s.depends_on.clone();
            s
        })
        .collect();
    plan(steps)
}

/// `size` steps with long ids, each with a `loop_to` naming an unknown near miss of them.
fn loop_to_suggestions(size: usize) -> Plan {
    let steps = (0..size)
        .map(|i| {
            let mut s = bash(long("s", i), "true".into());
            s.loop_to = Some(long("t", i));
            s.max_loops = Some(1);
            s
        })
        .collect();
    plan(steps)
}

/// `size` steps with long ids, each depending on 20 unknown near misses of them.
fn depends_on_suggestions(size: usize) -> Plan {
    let steps = (0..size)
        .map(|i| {
            let mut s = bash(long("s", i), "true".into());
            s.depends_on = (0..20).map(|j| long("t", i * 20 + j)).collect();
            s
        })
        .collect();
    plan(steps)
}

/// `size` steps with long ids, each command reading an unknown near miss of them.
fn template_suggestions(size: usize) -> Plan {
    let steps = (0..size)
        .map(|i| {
            bash(
                long("s", i),
                format!("echo \"{{{{ steps.{}.outputs.x }}}}\"", long("t", i)),
            )
        })
        .collect();
    plan(steps)
}

/// `size` steps, each depending on the 100 before it, each with a `loop_to` naming a later
/// step (not an ancestor): every loop's ancestors are walked over the whole graph.
fn loops_dense_graph(size: usize) -> Plan {
    let steps = (0..size)
        .map(|i| {
            let mut s = bash(format!("s{i}"), "true".into());
            s.depends_on = (i.saturating_sub(100)..i)
                .map(|j| format!("s{j}"))
                .collect();
            s.loop_to = Some(format!("s{}", (i + 1) % size));
            s.max_loops = Some(1);
            s
        })
        .collect();
    plan(steps)
}

/// A chain of `size` steps (each on the previous and, through templates, reading it) whose
/// first step depends on the last: one cycle through every step.
fn deep_chain_cycle(size: usize) -> Plan {
    let steps = (0..size)
        .map(|i| {
            let prev = format!("s{}", (i + size - 1) % size);
            let mut s = bash(
                format!("s{i}"),
                format!("echo \"{{{{ steps.{prev}.outputs.x }}}}\""),
            );
            s.depends_on = vec![prev];
            s
        })
        .collect();
    plan(steps)
}

/// `size` steps, each depending on the 40 before it and reading each of them in its
/// command: every reference is checked against the reader's transitive dependencies.
fn template_dense_graph(size: usize) -> Plan {
    let steps = (0..size)
        .map(|i| {
            let deps: Vec<String> = (i.saturating_sub(40)..i).map(|j| format!("s{j}")).collect();
            let command = deps
                .iter()
                .map(|d| format!("echo \"{{{{ steps.{d}.outputs.x }}}}\"\n"))
                .collect::<String>();
            let mut s = bash(format!("s{i}"), command);
            s.depends_on = deps;
            s
        })
        .collect();
    plan(steps)
}

/// `size` steps on one cycle (so none has an ancestor set) and 100 plan env values, each
/// full of the shortest references to them: every reference is checked for every step that reads it.
fn plan_env_references(size: usize) -> Plan {
    let steps: Vec<Step> = (0..size)
        .map(|i| {
            let mut s = bash(format!("s{i}"), "true".into());
            s.depends_on = vec![format!("s{}", (i + 1) % size)];
            s
        })
        .collect();
    let mut plan = plan(steps);
    let per_value = 9 * 1024 * size / 1000;
    for v in 0..100 {
        let mut value = String::new();
        let mut r = 0;
        while value.len() < per_value {
            value.push_str(&format!("{{{{steps.s{}.status}}}}", (r * 7 + v) % size));
            r += 1;
        }
        plan.env.insert(format!("E{v}"), value);
    }
    plan
}

/// Two steps declaring `size / 10` `artifacts=` globs each and a push trigger with as
/// many branch and tag globs, each ~500 bytes of the constructs that grow a compiled regex
/// most (negated classes, `?`, alternations): validation compiles every one.
fn glob_compiles(size: usize) -> Plan {
    let piece = ["[!a]?", "{a,b,c}*", "[!/]", "?*?"];
    let glob = |i: usize| {
        let mut g = String::new();
        while g.len() + 8 <= 512 {
            g.push_str(piece[(g.len() + i) % piece.len()]);
        }
        g
    };
    let n = size / 10;
    let mut plan = plan(
        (0..2)
            .map(|s| {
                let mut step = bash(format!("s{s}"), "true".into());
                step.artifacts = (0..n).map(|i| glob(s * n + i)).collect();
                step
            })
            .collect(),
    );
    plan.triggers = vec![evaluator::plan::Trigger::Push {
        branches: (0..n).map(glob).collect(),
        tags: (n..2 * n).map(glob).collect(),
        paths: vec![],
        paths_ignore: vec![],
    }];
    plan
}

/// `size / 10` schedule triggers, each a cron expression of ~1 KiB of ranges and steps.
fn cron_parses(size: usize) -> Plan {
    let mut minutes = String::from("0-59/1");
    while minutes.len() + 12 < 1000 {
        minutes.push_str(",0-59/1,1-58");
    }
    let mut plan = plan(vec![bash("s".into(), "true".into())]);
    plan.triggers = (0..size / 10)
        .map(|_| evaluator::plan::Trigger::Schedule {
            cron: format!("{minutes} * * * *"),
        })
        .collect();
    plan
}
