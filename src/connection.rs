//! Connecting to Redis: a connection manager that reconnects by itself, with timeouts so a hung
//! Redis cannot hang the daemon.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{redact_url, Config};

/// How long one command (or one pipeline) may take before it fails.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client for the configured Redis: plain, or TLS with the configured CA and client
/// certificate (`rediss://` without TLS files verifies against the system's roots).
pub fn client(config: &Config) -> RedisResult<redis::Client> {
    client_for(config, &config.redis.url)
}

/// The client for `url` with the configured TLS files.
fn client_for(config: &Config, url: &str) -> RedisResult<redis::Client> {
    let r = &config.redis;
    if r.tls_ca_file.is_none() && r.tls_cert_file.is_none() {
        return redis::Client::open(url);
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
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
}

/// The client for the current master (`master` from [`sentinel_master`]), or for the configured
/// URL without Sentinel.
pub fn client_for_master(
    config: &Config,
    master: Option<&(String, u16)>,
) -> RedisResult<redis::Client> {
    match master {
        Some((host, port)) => client_for(config, &url_for(config, host, *port)?),
        None => client(config),
    }
}

/// The current master's `host:port` according to the first sentinel that answers.
pub async fn sentinel_master(config: &Config) -> RedisResult<Option<(String, u16)>> {
    let Some(sentinel) = &config.redis.sentinel else {
        return Ok(None);
    };
    let mut last_error = None;
    for address in &sentinel.addresses {
        let asked = async {
            let client = redis::Client::open(format!("redis://{address}/"))?;
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&sentinel.master_name)
                .query_async::<Option<(String, u16)>>(&mut con)
                .await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, asked).await {
            Ok(Ok(Some(master))) => return Ok(Some(master)),
            Ok(Ok(None)) => {
                last_error = Some(format!(
                    "sentinel {address} does not know master {:?}",
                    sentinel.master_name
                ))
            }
            Ok(Err(e)) => last_error = Some(format!("sentinel {address}: {e}")),
            Err(_) => last_error = Some(format!("sentinel {address}: timed out")),
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "no sentinel answered",
        last_error.unwrap_or_default(),
    )))
}

/// The configured URL pointed at `host:port` (scheme, credentials and db kept).
fn url_for(config: &Config, host: &str, port: u16) -> RedisResult<String> {
    let invalid = |what: &str| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot build the master's URL",
            what.to_string(),
        ))
    };
    let mut url = url::Url::parse(&config.redis.url).map_err(|e| invalid(&e.to_string()))?;
    url.set_host(Some(host))
        .map_err(|e| invalid(&e.to_string()))?;
    url.set_port(Some(port))
        .map_err(|_| invalid("cannot set the port"))?;
    Ok(url.to_string())
}

/// Connects once (to the current master when Sentinel is configured); fails if Redis cannot
/// be reached now.
pub async fn connect(config: &Config) -> RedisResult<ConnectionManager> {
    Ok(connect_tracking(config).await?.0)
}

/// Like [`connect`], and says which master it reached (`None` without Sentinel).
pub async fn connect_tracking(
    config: &Config,
) -> RedisResult<(ConnectionManager, Option<(String, u16)>)> {
    let master = sentinel_master(config).await?;
    let client = client_for_master(config, master.as_ref())?;
    Ok((manage(client).await?, master))
}

async fn manage(client: redis::Client) -> RedisResult<ConnectionManager> {
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
) -> Option<(ConnectionManager, Option<(String, u16)>)> {
    let mut delay = Duration::from_millis(250);
    loop {
        match connect_tracking(config).await {
            Ok(connected) => return Some(connected),
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
