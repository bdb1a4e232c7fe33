//! The zygote against a child that already escaped the language layer: it runs arbitrary
//! code with the result channel's descriptor in hand (as a workflow that found a way out
//! of the interpreter's restrictions would), and tries to forge what the parent reads.
//!
//! The zygote forks, so it cannot run inside the multi-threaded test harness: the test
//! re-runs its own binary as the worker (an environment variable picks the role), sends
//! requests on its stdin and reads the result channel from a FIFO (the harness writes
//! its own text on stdout).

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::context::{EvalContext, Event};
use crate::diagnostic::Diagnostic;
use crate::protocol::{read_frame, Frame, Request, WorkerLimits};

const ROLE: &str = "PLUE_ZYGOTE_TEST_RESULTS";

/// A child whose answer is followed by a forged `Done` and a forged answer for the
/// next evaluation, and which then tries to read the next request itself.
struct Hostile;

impl Job for Hostile {
    fn warm_up(&self) {}

    fn read_request(&self) -> Result<Option<Request>, String> {
        read_frame(&mut std::io::stdin().lock()).map_err(|e| e.to_string())
    }

    fn answer(&self, request: Request, results: &mut File) -> Result<(), String> {
        let failed = |message: &str| Frame::Failed {
            diagnostic: Diagnostic::whole_file(&request.path, message),
        };
        write_frame(results, &failed(&format!("answer to {}", request.path)))
            .map_err(|e| e.to_string())?;
        let forged_done = Frame::Done {
            timed_out: false,
            signal: None,
            code: Some(0),
            retire: false,
        };
        let _ = write_frame(results, &forged_done);
        let _ = write_frame(results, &failed("forged answer"));
        let _ = results.flush();
        // Linger, so a parent fooled by the forged `Done` would send the next request
        // while this child is alive to read it.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }
}

fn request(path: &str) -> Request {
    Request {
        path: path.into(),
        source: String::new(),
        ctx: EvalContext::local(Event::Push, "main"),
        limits: WorkerLimits {
            max_steps: 10,
            max_plan_bytes: 1024,
        },
        modules: Default::default(),
    }
}

/// The worker role: serve hostile children until stdin closes.
fn serve_as_worker(results_path: &str) {
    let mut results = File::options().write(true).open(results_path).unwrap();
    let filter = EvaluationFilter::compile_for_tests();
    let outcome = serve(&mut results, &filter, Duration::from_secs(5), &Hostile);
    std::process::exit(if outcome.is_ok() { 0 } else { 1 });
}

#[test]
fn an_escaped_child_cannot_forge_frames_for_the_parent() {
    if let Ok(path) = std::env::var(ROLE) {
        serve_as_worker(&path);
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("results");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut worker = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "worker::zygote::tests::an_escaped_child_cannot_forge_frames_for_the_parent",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(ROLE, &fifo)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut results = File::open(&fifo).unwrap();
    let mut stdin = worker.stdin.take().unwrap();
    let mut next = || read_frame::<Frame>(&mut results).unwrap().expect("a frame");
    for path in ["first.plue.py", "second.plue.py", "third.plue.py"] {
        let mut frame = Vec::new();
        crate::protocol::write_frame(&mut frame, &request(path)).unwrap();
        stdin.write_all(&frame).unwrap();
        stdin.flush().unwrap();
        match next() {
            Frame::Failed { diagnostic } => {
                assert_eq!(diagnostic.message, format!("answer to {path}"))
            }
            other => panic!("expected the answer to {path}, got {other:?}"),
        }
        match next() {
            // The child exited 0 after its linger; only the zygote's own `Done` follows.
            Frame::Done {
                code, timed_out, ..
            } => {
                assert_eq!((code, timed_out), (Some(0), false), "{path}")
            }
            other => panic!("expected the zygote's Done after {path}, got {other:?}"),
        }
    }
    drop(stdin);
    let status = worker.wait().unwrap();
    assert!(status.success(), "the worker ended with {status}");
    assert!(
        read_frame::<Frame>(&mut results).unwrap().is_none(),
        "nothing after the last Done"
    );
}
