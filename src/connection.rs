//! Connecting to Redis: a connection manager that reconnects by itself, with timeouts so a hung
//! Redis cannot hang the daemon; and the check that the server is new enough for the commands
//! rq-retryd sends. [`follow_sentinel`] and [`watch_redis`] keep the connection current while
//! the daemon runs.

mod upkeep;

pub use upkeep::{follow_sentinel, watch_redis};

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
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
/// Whether `e` means Redis cannot be reached (I/O, a dropped or refused connection, a
/// timeout), as opposed to Redis answering with an error: what `rq_retryd_redis_up` reports.
pub fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

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

/// A server version as `INFO server` reports it in `redis_version` (Valkey reports the Redis
/// version it is compatible with there too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RedisVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for RedisVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The oldest server rq-retryd works with: the scripts and the registry reads use ZMSCORE and
/// ZRANGE's BYSCORE/REV options, which came in Redis 6.2.
pub const MIN_REDIS_VERSION: RedisVersion = RedisVersion {
    major: 6,
    minor: 2,
    patch: 0,
};

/// The first server whose scripts can ask whether their user may run a command
/// (`redis.acl_check_cmd`): only from there on do the write scripts refuse an ACL gap before
/// their first write.
pub const ACL_CHECK_VERSION: RedisVersion = RedisVersion {
    major: 7,
    minor: 0,
    patch: 0,
};

/// `MAJOR.MINOR[.PATCH]`, each part read up to its first non-digit (so `7.2.4-rc1` is 7.2.4);
/// `None` for anything else.
pub fn parse_redis_version(text: &str) -> Option<RedisVersion> {
    let mut parts = text.trim().split('.');
    let mut number = |required: bool| -> Option<u32> {
        match parts.next() {
            Some(part) => {
                let digits =
                    part.len() - part.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                part[..digits].parse().ok()
            }
            None if required => None,
            None => Some(0),
        }
    };
    Some(RedisVersion {
        major: number(true)?,
        minor: number(true)?,
        patch: number(false)?,
    })
}

/// What the server's `INFO server` text says about using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerVersion {
    Supported(RedisVersion),
    TooOld(RedisVersion),
    /// No `redis_version` line, or one that does not read as a version: the server is used
    /// (a compatible server may report oddly), with a warning.
    Unknown(String),
}

/// Reads `redis_version` from an `INFO server` reply and compares it with
/// [`MIN_REDIS_VERSION`]. Pure, so every answer a server may give is unit-tested.
pub fn judge_server_version(info: &str) -> ServerVersion {
    let Some(value) = info
        .lines()
        .find_map(|line| line.trim_end().strip_prefix("redis_version:"))
    else {
        return ServerVersion::Unknown("INFO server has no redis_version".to_string());
    };
    match parse_redis_version(value) {
        Some(v) if v >= MIN_REDIS_VERSION => ServerVersion::Supported(v),
        Some(v) => ServerVersion::TooOld(v),
        None => ServerVersion::Unknown(format!("redis_version {value:?} is not a version")),
    }
}

/// The server is older than [`MIN_REDIS_VERSION`]: the message to print before exiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Redis at {url} is version {found}; rq-retryd needs Redis {MIN_REDIS_VERSION} or newer (its scripts use ZMSCORE, new in 6.2)")]
pub struct UnsupportedRedis {
    pub url: String,
    pub found: RedisVersion,
}

/// Asks the server its version once, right after connecting, so that a too old one is refused
/// with a clear message instead of failing later on every script call. A server that does
/// not say (INFO refused by an ACL, an unreadable version) is used with a warning.
pub async fn require_supported_server<C: ConnectionLike + Send>(
    con: &mut C,
    config: &Config,
) -> Result<(), UnsupportedRedis> {
    let info = redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(con)
        .await;
    let verdict = match info {
        Ok(info) => judge_server_version(&info),
        Err(e) => ServerVersion::Unknown(format!("INFO server failed: {e}")),
    };
    match verdict {
        ServerVersion::Supported(found) if found < ACL_CHECK_VERSION => {
            warn!(redis = %redact_url(&config.redis.url), version = %found, "Redis before 7.0 cannot tell a script whether its user may run a command: an ACL that denies a command the write scripts need (RPUSH, HSET, ...) can leave a job half-written; give rq-retryd's user every command it uses, or upgrade to Redis 7");
            Ok(())
        }
        ServerVersion::Supported(_) => Ok(()),
        ServerVersion::TooOld(found) => Err(UnsupportedRedis {
            url: redact_url(&config.redis.url),
            found,
        }),
        ServerVersion::Unknown(why) => {
            warn!(redis = %redact_url(&config.redis.url), why, needed = %MIN_REDIS_VERSION, "cannot tell the Redis version; going on as if it were new enough");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> RedisVersion {
        RedisVersion {
            major,
            minor,
            patch,
        }
    }

    fn info(version: &str) -> String {
        format!("# Server\r\nredis_version:{version}\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n")
    }

    // See: issue 11 (ZMSCORE needs Redis 6.2; an older server was only noticed script by script).
    #[test]
    fn servers_older_than_6_2_are_refused_and_newer_ones_taken() {
        let cases = [
            ("6.0.16", ServerVersion::TooOld(v(6, 0, 16))),
            ("5.0.14", ServerVersion::TooOld(v(5, 0, 14))),
            ("6.1.99", ServerVersion::TooOld(v(6, 1, 99))),
            ("6.2.0", ServerVersion::Supported(v(6, 2, 0))),
            ("6.2", ServerVersion::Supported(v(6, 2, 0))),
            ("7.0.15", ServerVersion::Supported(v(7, 0, 15))),
            ("7.2.4-rc1", ServerVersion::Supported(v(7, 2, 4))),
            ("255.255.255", ServerVersion::Supported(v(255, 255, 255))),
            ("10.0.0", ServerVersion::Supported(v(10, 0, 0))),
        ];
        for (version, expected) in cases {
            assert_eq!(judge_server_version(&info(version)), expected, "{version}");
        }
    }

    #[test]
    fn garbage_is_an_unknown_version_not_a_panic() {
        for version in [
            "",
            "abc",
            "6",
            "x.2.0",
            "6.x",
            ".",
            "99999999999.0.0",
            "-6.2.0",
            "\u{e9}.1",
        ] {
            assert!(
                matches!(
                    judge_server_version(&info(version)),
                    ServerVersion::Unknown(_)
                ),
                "{version:?}"
            );
        }
        for text in [
            "",
            "# Server\r\n",
            "redis_mode:standalone",
            "\u{0}\u{1}binary",
        ] {
            assert!(
                matches!(judge_server_version(text), ServerVersion::Unknown(_)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_refusal_names_the_version_found_and_the_one_needed() {
        let message = UnsupportedRedis {
            url: "redis://127.0.0.1:6379/0".to_string(),
            found: v(6, 0, 16),
        }
        .to_string();
        assert!(message.contains("6.0.16"), "{message}");
        assert!(message.contains("6.2.0 or newer"), "{message}");
    }
}
