//! The thread a fake HTTP server ([`crate::claude`], [`crate::forge`]) serves from: its
//! own single-threaded runtime, so the fake works under any test (with or without a
//! runtime of its own), and a graceful stop when dropped.
//!
//! Invariant: dropping a [`ServerThread`] never hangs a test. Graceful shutdown waits for
//! open connections, and a client that still holds one (a killed runner's pool) must not
//! keep the test waiting, so the thread is joined only if it ends within a short wait.

use std::time::Duration;

/// How long a drop waits for the server's thread to end.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// A server running on a thread of its own; stops when dropped.
pub(crate) struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Serves `app` on `listener` (non-blocking already) from a thread named `name`, with a
    /// runtime of its own (`what` names the server when that runtime cannot be built).
    /// Errors when the thread cannot start.
    pub(crate) fn spawn(
        name: &str,
        what: &str,
        listener: std::net::TcpListener,
        app: axum::Router,
    ) -> std::io::Result<ServerThread> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime_for = format!("a runtime for the {what}");
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect(&runtime_for);
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
            })?;
        Ok(ServerThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}
