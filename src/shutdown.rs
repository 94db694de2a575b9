//! Turns SIGINT and SIGTERM into one cancellation token that every loop selects on.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Returns a token cancelled at the first SIGINT or SIGTERM. A second signal is not special:
/// the loops finish the batch in flight and return promptly anyway.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let name = wait_for_signal().await;
        info!(signal = name, "shutting down after the batch in flight");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
