//! A stand-alone evaluator worker, for the evaluator's own tests and benchmarks.
//! The `plue` binary runs the same code as `plue __eval-worker`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    evaluator::worker::main(&args)
}
