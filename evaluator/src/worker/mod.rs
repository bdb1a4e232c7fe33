//! The evaluator worker process: `plue __eval-worker` (or `plue-eval-worker`).
//!
//! Lifecycle: fix the address layout (`layout`); keep the original stdout as the private
//! result channel and point fd 1 at `/dev/null`; start an isolated interpreter; install the
//! host module and the bootstrap; import every allowed module; lock the process down; point
//! fd 2 at `/dev/null`; send `Ready`. From then on the process is a *zygote*
//! (`zygote`): for each request it forks a child that locks itself down further, reads
//! the request, evaluates it, answers once and exits. One evaluation, one process: nothing
//! of an evaluation (objects, finalisers, caches, budgets) can reach another.

mod caches;
mod convert;
mod guard;
mod host;
mod interpreter;
mod kinds;
pub(crate) mod layout;
mod lockdown;
mod modules;
mod safe_outputs;
mod zygote;

use std::fs::File;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyModule, PyTuple};

use crate::diagnostic::Diagnostic;
use crate::limits::human_bytes;
use crate::plan::Location;
use crate::protocol::{read_frame, write_frame, Frame, Request};

const BOOTSTRAP: &str = include_str!("sandbox.py");

/// Command-line flag carrying the memory bound in bytes.
pub const MEMORY_FLAG: &str = "--memory-bytes";
/// Command-line flag carrying the wall-clock bound of one evaluation, in milliseconds.
pub const TIMEOUT_FLAG: &str = "--timeout-ms";
/// Test-only mode: lock down, run `PROBE` with *full* Python (no language layer), report
/// what it could do, and exit. Lets the tests check layer (b) on its own.
pub const PROBE_FLAG: &str = "--probe-lockdown";
const PROBE: &str = include_str!("probe.py");

/// Entry point of a worker process. `args` are the arguments after the worker's name.
pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "plue-eval-worker: evaluates workflow files in Plue's sandbox for the engine's \
             evaluator pool, which starts it (not for direct use)\n\n\
             usage: plue-eval-worker [{MEMORY_FLAG} BYTES] [{TIMEOUT_FLAG} MS]"
        );
        return ExitCode::SUCCESS;
    }
    layout::fix_address_layout();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("plue evaluator worker: {message}");
            ExitCode::from(3)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let probe = args.first().is_some_and(|a| a == PROBE_FLAG);
    let args = if probe { &args[1..] } else { args };
    let options = parse_options(args)?;
    // The pool starts workers with an empty environment; make sure of it whoever started us,
    // before the interpreter copies it into os.environ. Still single-threaded here.
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    let mut results =
        File::from(nix::unistd::dup(io::stdout()).map_err(|e| format!("dup stdout: {e}"))?);
    nix::unistd::dup2_stdout(&devnull).map_err(|e| format!("redirect stdout: {e}"))?;

    interpreter::initialize()?;
    let bootstrap = Python::attach(|py| install(py).map_err(|e| format!("bootstrap: {e}")))?;
    let filter = lockdown::lock_down(lockdown::Lockdown {
        memory_bytes: options.memory_bytes,
    })?;
    nix::unistd::dup2_stderr(&devnull).map_err(|e| format!("redirect stderr: {e}"))?;
    drop(devnull);
    if probe {
        // The probe runs as an evaluation would: under both stages of the lock-down.
        lockdown::lock_down_evaluation(&filter, nix::unistd::getppid())?;
        let report = Python::attach(|py| -> PyResult<String> {
            let code = std::ffi::CString::new(PROBE).expect("the probe has no NUL byte");
            PyModule::from_code(py, &code, c"<probe>", c"_plue_probe")?
                .getattr("report")?
                .extract()
        })
        .map_err(|e| format!("probe: {e}"))?;
        return write_frame(&mut results, &report).map_err(|e| format!("write: {e}"));
    }

    write_frame(&mut results, &Frame::Ready).map_err(|e| format!("write: {e}"))?;
    let job = Evaluations {
        bootstrap,
        memory_text: human_bytes(options.memory_bytes),
    };
    zygote::serve(&mut results, &filter, options.timeout, &job)
}

/// A fixed, trusted workflow every child evaluates before it reads its request: it
/// touches (and so copies) the memory a typical evaluation writes to, off the request's
/// path. The same in every child, so it leaves no state that differs between them.
const WARM_UP: &str = r#"
import json
def workflow(ctx):
    names = [f"s{i}" for i in range(3)]
    steps = [Step.bash(n, "echo " + n, env={"A": "1"}, depends_on=names[:i]) for i, n in enumerate(names)]
    steps.append(Step.python("p", "print(1)", timeout=60, retries=1, runner="os=linux"))
    return Plan(name=ctx.repo + json.dumps({"a": [1]}), triggers=[Trigger.on_push(branch="main"), Trigger.on_pull_request()], env={"X": "y"}, steps=steps)
"#;

/// What each forked child does.
struct Evaluations {
    bootstrap: Py<PyModule>,
    memory_text: String,
}

impl zygote::Job for Evaluations {
    fn warm_up(&self) {
        let request = Request {
            path: "warm-up.plue.py".into(),
            source: WARM_UP.into(),
            ctx: crate::context::EvalContext::local(crate::context::Event::Push, "main"),
            limits: crate::protocol::WorkerLimits {
                max_steps: 1000,
                max_plan_bytes: 1024 * 1024,
            },
            modules: Default::default(),
        };
        let _ = Python::attach(|py| evaluate(py, &self.bootstrap, request, &self.memory_text));
    }

    fn read_request(&self) -> Result<Option<Request>, String> {
        read_frame(&mut io::stdin().lock()).map_err(|e| format!("read request: {e}"))
    }

    fn answer(&self, request: Request, results: &mut File) -> Result<(), String> {
        let frame = Python::attach(|py| evaluate(py, &self.bootstrap, request, &self.memory_text));
        write_frame(results, &frame).map_err(|e| format!("write: {e}"))
    }
}

struct Options {
    memory_bytes: u64,
    timeout: Duration,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let defaults = crate::limits::Limits::default();
    let mut options = Options {
        memory_bytes: defaults.memory_bytes,
        timeout: defaults.timeout,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag} needs a number, got '{value}'"))?;
        match flag.as_str() {
            MEMORY_FLAG => options.memory_bytes = number,
            TIMEOUT_FLAG => options.timeout = Duration::from_millis(number),
            other => {
                return Err(format!(
                "unexpected argument '{other}'; usage: [{MEMORY_FLAG} BYTES] [{TIMEOUT_FLAG} MS]"
            ))
            }
        }
    }
    Ok(options)
}

/// Builds the host module, loads the bootstrap and preloads the allowed modules.
fn install(py: Python<'_>) -> PyResult<Py<PyModule>> {
    let host = PyModule::new(py, "_plue_host")?;
    guard::register(&host)?;
    modules::register(&host)?;
    let plue = host::plue_module(py)?;
    for name in ["Plan", "Step", "Trigger", "SafeOutputs", "Cache"] {
        host.add(name, plue.getattr(name)?)?;
    }
    guard::preload(py, plue)?;
    let code = std::ffi::CString::new(BOOTSTRAP).expect("the bootstrap has no NUL byte");
    let bootstrap = PyModule::from_code(py, &code, c"<plue-sandbox>", c"_plue_sandbox")?;
    bootstrap.getattr("install")?.call1((host,))?;
    host::set_caller_location(py, bootstrap.getattr("caller_location")?);
    modules::set_bootstrap(py, &bootstrap)?;
    // Everything allocated so far lives for the worker's lifetime: keep the collector off it.
    py.import("gc")?.getattr("freeze")?.call0()?;
    Ok(bootstrap.unbind())
}

fn evaluate(
    py: Python<'_>,
    bootstrap: &Py<PyModule>,
    request: Request,
    memory_text: &str,
) -> Frame {
    convert::reset_budget(request.limits.max_plan_bytes);
    host::set_max_steps(request.limits.max_steps);
    let _ = guard::take_output();
    modules::begin(request.modules);
    let path = request.path.clone();
    let outcome = host::context(py, request.ctx)
        .and_then(|ctx| {
            bootstrap.bind(py).getattr("evaluate")?.call1((
                request.path,
                request.source,
                ctx,
                memory_text,
            ))
        })
        .and_then(|result| frame_from(&path, result.cast_into::<PyTuple>()?));
    // Whatever the file did with the exception `use` raised, a module it met and was not
    // given makes this round's answer a request for it.
    let needed = modules::take_needed();
    if !needed.is_empty() {
        return Frame::NeedModules { requests: needed };
    }
    match outcome {
        Ok(frame) => frame,
        // Only a bug of ours (or memory exhausted inside the bootstrap) lands here.
        Err(e) => Frame::Failed {
            diagnostic: Diagnostic::whole_file(path, format!("internal evaluator error: {e}")),
        },
    }
}

fn frame_from(path: &str, result: Bound<'_, PyTuple>) -> PyResult<Frame> {
    let status: String = result.get_item(0)?.extract()?;
    if status == "ok" {
        let plan = result.get_item(1)?;
        let plan = plan.cast::<host::PlanObject>()?.get();
        return Ok(Frame::Plan {
            plan: plan.plan.clone(),
            source_map: plan.source_map.clone(),
            output: guard::take_output(),
        });
    }
    let message: String = result.get_item(1)?.extract()?;
    let line: u32 = result.get_item(2)?.extract()?;
    let col: u32 = result.get_item(3)?.extract()?;
    let detail: Option<String> = result.get_item(4)?.extract()?;
    let mut diagnostic = Diagnostic::at(path, Location { line, col }, message);
    diagnostic.detail = detail;
    Ok(Frame::Failed { diagnostic })
}
