//! systemd integration (`Type=notify`): readiness, status lines, watchdog pings and reload
//! notifications. Every call is a no-op when not started by systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Startup is finished: config loaded, HTTP listening, Redis reached or being retried.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A one-line status shown by `systemctl status`.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Tells the watchdog the scan loop is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// A SIGHUP reload begins.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often the loop must ping: half of `WatchdogSec`, when a watchdog is configured.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
