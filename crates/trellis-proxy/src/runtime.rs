//! Process plumbing shared by both commands: the tokio runtime with a chosen worker count, and
//! the shutdown signals.

use crate::{Error, Result};
use std::future::Future;

/// Runs `future` to completion on a fresh runtime with `workers` threads (the machine's core
/// count when `None`; one worker means a current-thread runtime on the calling thread). When called from inside another runtime (a binary whose
/// `main` is already async) the new runtime gets its own thread, since runtimes cannot nest.
pub fn block_on<F, T>(workers: Option<usize>, future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let run = move || {
        // One worker: a current-thread runtime on this thread does the same work without the
        // multi-threaded scheduler's cross-thread bookkeeping on every task wake-up.
        let mut builder = match workers {
            Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all();
        if let Some(n) = workers
            && n > 1
        {
            builder.worker_threads(n);
        }
        let runtime = builder.build().map_err(Error::Runtime)?;
        runtime.block_on(future)
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(run)
            .join()
            .unwrap_or_else(|_| Err(Error::config("proxy runtime panicked")))
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints where a listener is, on stdout (tests and scripts parse these lines).
pub fn announce(what: &str, addr: std::net::SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what} listening on http://{addr}");
    let _ = out.flush();
}
