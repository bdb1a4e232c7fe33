//! The evaluator worker process: `plue __eval-worker` (or `plue-eval-worker`).
//!
//! Lifecycle: keep the original stdout as the private result channel and point fd 1 at
//! `/dev/null`; start an isolated interpreter; install the host module and the bootstrap;
//! import every allowed module; lock the process down; point fd 2 at `/dev/null`; send
//! `Ready`; then answer requests from stdin until it closes. A request whose evaluation may
//! have damaged the interpreter (memory, recursion) is answered with `retire`, and the
//! worker exits so the pool starts a fresh one.

mod convert;
mod guard;
mod host;
mod interpreter;
mod lockdown;

use std::fs::File;
use std::io::{self, BufReader};
use std::process::ExitCode;

use pyo3::prelude::*;
use pyo3::types::{PyModule, PyTuple};

use crate::diagnostic::Diagnostic;
use crate::limits::human_bytes;
use crate::plan::Location;
use crate::protocol::{read_frame, write_frame, Frame, Request};

const BOOTSTRAP: &str = include_str!("sandbox.py");

/// Command-line flag carrying the memory bound in bytes.
pub const MEMORY_FLAG: &str = "--memory-bytes";
/// Test-only mode: lock down, run [`PROBE`] with *full* Python (no language layer), report
/// what it could do, and exit. Lets the tests check layer (b) on its own.
pub const PROBE_FLAG: &str = "--probe-lockdown";
const PROBE: &str = include_str!("probe.py");

/// Entry point of a worker process. `args` are the arguments after the worker's name.
pub fn main(args: &[String]) -> ExitCode {
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
    let memory_bytes = parse_memory(args)?;
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
    lockdown::lock_down(lockdown::Lockdown { memory_bytes })?;
    nix::unistd::dup2_stderr(&devnull).map_err(|e| format!("redirect stderr: {e}"))?;
    drop(devnull);
    if probe {
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
    let mut requests = BufReader::new(io::stdin().lock());
    let memory_text = human_bytes(memory_bytes);
    loop {
        let request: Request = match read_frame(&mut requests) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("read request: {e}")),
        };
        let mut frame = Python::attach(|py| evaluate(py, &bootstrap, request, &memory_text));
        let tired = lockdown::cpu_used_seconds() >= lockdown::CPU_RETIRE_SECS;
        let retire = match &mut frame {
            Frame::Plan { retire, .. } | Frame::Failed { retire, .. } => {
                *retire |= tired;
                *retire
            }
            Frame::Ready => false,
        };
        write_frame(&mut results, &frame).map_err(|e| format!("write: {e}"))?;
        if retire {
            return Ok(());
        }
    }
}

fn parse_memory(args: &[String]) -> Result<u64, String> {
    match args {
        [] => Ok(crate::limits::Limits::default().memory_bytes),
        [flag, value] if flag == MEMORY_FLAG => value
            .parse()
            .map_err(|_| format!("{MEMORY_FLAG} needs a number of bytes, got '{value}'")),
        other => Err(format!(
            "unexpected arguments {other:?}; usage: {MEMORY_FLAG} BYTES"
        )),
    }
}

/// Builds the host module, loads the bootstrap and preloads the allowed modules.
fn install(py: Python<'_>) -> PyResult<Py<PyModule>> {
    let host = PyModule::new(py, "_plue_host")?;
    guard::register(&host)?;
    let plue = host::plue_module(py)?;
    for name in ["Plan", "Step", "Trigger"] {
        host.add(name, plue.getattr(name)?)?;
    }
    guard::preload(py, plue)?;
    let code = std::ffi::CString::new(BOOTSTRAP).expect("the bootstrap has no NUL byte");
    let bootstrap = PyModule::from_code(py, &code, c"<plue-sandbox>", c"_plue_sandbox")?;
    bootstrap.getattr("install")?.call1((host,))?;
    host::set_caller_location(py, bootstrap.getattr("caller_location")?);
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
    match outcome {
        Ok(frame) => frame,
        // Only a bug of ours (or memory exhausted inside the bootstrap) lands here.
        Err(e) => Frame::Failed {
            diagnostic: Diagnostic::whole_file(path, format!("internal evaluator error: {e}")),
            retire: true,
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
            retire: false,
        });
    }
    let message: String = result.get_item(1)?.extract()?;
    let line: u32 = result.get_item(2)?.extract()?;
    let col: u32 = result.get_item(3)?.extract()?;
    let detail: Option<String> = result.get_item(4)?.extract()?;
    let retire: bool = result.get_item(5)?.extract()?;
    let mut diagnostic = Diagnostic::at(path, Location { line, col }, message);
    diagnostic.detail = detail;
    Ok(Frame::Failed { diagnostic, retire })
}
