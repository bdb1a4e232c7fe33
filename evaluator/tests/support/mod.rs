//! What the evaluator's integration tests share: a pool of one real worker process.

use std::path::PathBuf;

use evaluator::{EvaluatorPool, Limits, PoolConfig, WorkerCommand};

/// A pool of one worker running the built `plue-eval-worker`, with the default limits.
pub(crate) async fn pool() -> EvaluatorPool {
    EvaluatorPool::start(PoolConfig {
        workers: 1,
        command: WorkerCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_plue-eval-worker")),
            args: vec![],
        },
        limits: Limits::default(),
    })
    .await
    .expect("pool starts")
}
