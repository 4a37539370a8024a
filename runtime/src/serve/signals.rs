//! What starts a graceful shutdown: SIGINT and SIGTERM, or a future of the
//! caller's.

use tokio_stream::Stream;

use super::serve_error;
use crate::Error;

/// A signal stream for [`Server::serve_on`](super::Server::serve_on) that yields once, when
/// `shutdown` completes: for embedding a server under your own trigger.
pub fn shutdown_on(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = ()> + Send + Unpin + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(()).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// SIGINT and SIGTERM as a stream: the first starts the graceful shutdown;
/// on the second the process exits at once.
pub(super) fn os_signals() -> Result<impl Stream<Item = ()> + Send + Unpin + 'static, Error> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| serve_error("signals", e))?;
    tokio::spawn(async move {
        for count in 1.. {
            #[cfg(unix)]
            let received = tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                r = term.recv() => r.is_some(),
            };
            #[cfg(not(unix))]
            let received = tokio::signal::ctrl_c().await.is_ok();
            if !received {
                return;
            }
            if count > 1 {
                tracing::warn!("second signal: exiting at once");
                std::process::exit(130);
            }
            tracing::info!("signal received: shutting down gracefully");
            let _ = tx.send(()).await;
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}
