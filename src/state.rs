//! What the daemon's tasks share: the current config snapshot (replaced whole on reload), the
//! Redis connection once it exists, the control switches, the metrics and the last scan.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

use crate::config::Config;
use crate::executor::Executor;
use crate::metrics::Metrics;
use crate::rq::{Keys, Registry};
use crate::supervisor::{Breakers, RequeueLimiter, ScanReport};

/// Where snapshot generations come from: one counter for the whole process, so no two
/// snapshots built in it ever share a generation (not even in tests that run several daemons).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// One consistent view of the configuration and what is derived from it.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    /// Names this snapshot among every one built in the process. What was decided under one
    /// configuration (the supervisor's remembered verdicts) is valid only while the generation
    /// is unchanged. An address (`Arc::as_ptr`) cannot serve: after a reload frees the old
    /// config, the allocator may hand its address to the next one. See: issue 11.
    pub generation: u64,
    pub registry: Registry,
    pub executor: Executor,
    /// The shared ceiling on requeues (automatic and bulk manual ones).
    pub limiter: Arc<RequeueLimiter>,
}

impl Snapshot {
    pub fn new(config: Arc<Config>) -> Snapshot {
        let keys = Keys::new(&config.redis.key_prefix);
        Snapshot {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            registry: Registry::new(keys.clone()),
            executor: Executor::new(keys),
            limiter: Arc::new(RequeueLimiter::new(
                config.supervisor.max_requeues_per_second,
            )),
            config,
        }
    }
}

/// The last completed scan, for `/api/v1/supervisor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastScan {
    pub finished_at: DateTime<Utc>,
    pub report: ScanReport,
}

/// State shared by the scan loop, the HTTP server and the signal handlers.
#[derive(Debug)]
pub struct DaemonState {
    snapshot: RwLock<Arc<Snapshot>>,
    redis: RwLock<Option<ConnectionManager>>,
    /// The master reached through Sentinel, when Sentinel is configured.
    master: Mutex<Option<(String, u16)>>,
    paused: std::sync::atomic::AtomicBool,
    /// Wakes the scan loop for an immediate pass (`POST /api/v1/supervisor/scan`).
    pub scan_now: Notify,
    pub metrics: Metrics,
    /// Circuit breakers of the retry policies (retry storms).
    pub breakers: Mutex<Breakers>,
    last_scan: Mutex<Option<LastScan>>,
    pub started_at: DateTime<Utc>,
}

impl DaemonState {
    pub fn new(config: Arc<Config>) -> Arc<DaemonState> {
        Arc::new(DaemonState {
            snapshot: RwLock::new(Arc::new(Snapshot::new(config))),
            redis: RwLock::new(None),
            master: Mutex::new(None),
            paused: std::sync::atomic::AtomicBool::new(false),
            scan_now: Notify::new(),
            metrics: Metrics::new(),
            breakers: Mutex::new(Breakers::default()),
            last_scan: Mutex::new(None),
            started_at: Utc::now(),
        })
    }

    /// The current snapshot; hold it for the duration of one operation.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.snapshot().config.clone()
    }

    /// Replaces the configuration (SIGHUP reload); the new snapshot has a new generation.
    pub fn replace_config(&self, config: Arc<Config>) {
        *self.snapshot.write().expect("snapshot lock") = Arc::new(Snapshot::new(config));
    }

    /// The Redis connection, once the first connect succeeded (it reconnects by itself after;
    /// a Sentinel failover replaces it).
    pub fn redis(&self) -> Option<ConnectionManager> {
        self.redis.read().expect("redis lock").clone()
    }

    /// Installs the connection to use from now on, and the master it reaches (Sentinel).
    pub fn set_redis(&self, con: ConnectionManager, master: Option<(String, u16)>) {
        *self.redis.write().expect("redis lock") = Some(con);
        *self.master.lock().expect("master lock") = master;
    }

    /// The master reached through Sentinel (`None` without Sentinel or before the first connect).
    pub fn master(&self) -> Option<(String, u16)> {
        self.master.lock().expect("master lock").clone()
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::Relaxed);
        self.metrics.set_paused(paused);
    }

    pub fn last_scan(&self) -> Option<LastScan> {
        self.last_scan.lock().expect("last scan lock").clone()
    }

    pub fn record_scan(&self, report: ScanReport) {
        *self.last_scan.lock().expect("last scan lock") = Some(LastScan {
            finished_at: Utc::now(),
            report,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: &str) -> Arc<Config> {
        let text = format!("[[policy]]\nname = \"{policy}\"\naction = \"ignore\"\n");
        Arc::new(crate::config::parse(&text, "test.toml").expect("valid config"))
    }

    // See: issue 11 (the decision memory recognised a config by its address, which a later
    // config can reuse).
    #[test]
    fn every_replace_config_gives_a_new_generation() {
        let state = DaemonState::new(config("a"));
        let mut seen = vec![state.snapshot().generation];
        for policy in ["b", "c", "a", "b"] {
            state.replace_config(config(policy));
            let generation = state.snapshot().generation;
            assert!(
                !seen.contains(&generation),
                "generation {generation} reused after {seen:?}"
            );
            seen.push(generation);
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }
}
