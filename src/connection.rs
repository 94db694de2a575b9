//! Connecting to Redis: a connection manager that reconnects by itself, with timeouts so a hung
//! Redis cannot hang the daemon.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{redact_url, Config};

/// How long one command (or one pipeline) may take before it fails.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client for the configured Redis: plain, or TLS with the configured CA and client
/// certificate (`rediss://` without TLS files verifies against the system's roots).
pub fn client(config: &Config) -> RedisResult<redis::Client> {
    let r = &config.redis;
    if r.tls_ca_file.is_none() && r.tls_cert_file.is_none() {
        return redis::Client::open(r.url.as_str());
    }
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read a TLS file",
                format!("{}: {e}", path.display()),
            ))
        })
    };
    let root_cert = r.tls_ca_file.as_ref().map(read).transpose()?;
    let client_tls = match (&r.tls_cert_file, &r.tls_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        r.url.as_str(),
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
}

/// Connects once; fails if Redis cannot be reached now.
pub async fn connect(config: &Config) -> RedisResult<ConnectionManager> {
    let client = client(config)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client, manager_config).await
}

/// Connects, retrying with capped exponential backoff until Redis answers or `cancel` fires.
pub async fn connect_with_retry(
    config: &Config,
    cancel: &CancellationToken,
) -> Option<ConnectionManager> {
    let mut delay = Duration::from_millis(250);
    loop {
        match connect(config).await {
            Ok(con) => return Some(con),
            Err(e) => {
                warn!(redis = %redact_url(&config.redis.url), error = %e, retry_in_ms = delay.as_millis() as u64, "Redis unreachable");
            }
        }
        crate::systemd::watchdog();
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
