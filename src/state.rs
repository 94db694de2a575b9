//! What the daemon's tasks share: the current config snapshot (replaced whole on reload), the
//! Redis connection once it exists, the control switches, the metrics and the last scan.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

use crate::breaker::Breakers;
use crate::config::Config;
use crate::executor::Executor;
use crate::limiter::RequeueLimiter;
use crate::metrics::Metrics;
use crate::report::ScanReport;
use crate::rq::{Keys, Registry};
use crate::switchboard::{Beat, Lease, Switchboard};

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
    pub switchboard: Switchboard,
    /// The shared ceiling on requeues (automatic and bulk manual ones).
    pub limiter: Arc<RequeueLimiter>,
}

impl Snapshot {
    pub fn new(config: Arc<Config>) -> Snapshot {
        let keys = Keys::new(&config.redis.key_prefix);
        Snapshot {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            registry: Registry::new(keys.clone()),
            switchboard: Switchboard::new(keys.clone()),
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
    /// This instance's name on the switchboard, and its lease token.
    pub instance: String,
    /// This instance's lease and its view of the shared switches (see [`crate::switchboard`]).
    pub lease: Lease,
    /// When a command last succeeded (a beat), so the health check need not ping as well.
    last_contact: Mutex<Option<std::time::Instant>>,
    /// Wakes the scan loop for an immediate pass (`POST /api/v1/supervisor/scan`, a reload, a
    /// scan asked for on another instance).
    pub scan_now: Notify,
    /// Wakes the scan loop when this instance became active: it scans unless a scan already
    /// ran in the new term (see [`DaemonState::active_term`]).
    pub activated: Notify,
    pub metrics: Metrics,
    /// Circuit breakers of the retry policies (retry storms).
    pub breakers: Mutex<Breakers>,
    last_scan: Mutex<Option<LastScan>>,
    pub started_at: DateTime<Utc>,
    /// What the scans know about every failed job, for the API (see [`crate::index`]).
    pub index: crate::index::LiveIndex,
    /// The queues of the `rq:failed:*` keys the last registry SCAN found (the scans refresh it
    /// at most every few minutes), so that HTTP requests need not SCAN the keyspace.
    pub found_registries: crate::rq::FoundRegistries,
    /// The target queues' workers and lengths, read at most once a second per queue, for
    /// `hold_when` and the warnings of manual retries (issue 21).
    pub worlds: crate::hold::WorldCache,
    /// The jobs `hold_when` holds back now (the `held_jobs` gauge).
    pub held: crate::hold::HeldJobs,
}

impl DaemonState {
    /// A failed job left `queue`'s registry by another hand (RQ, a dashboard, a script),
    /// found by a reconcile or a read (`was`: its state in the index, `None` when the index did
    /// not hold it): the per-queue gauges and the held jobs follow at once instead of at the
    /// next full scan. See: issue 21, item 4.
    pub fn job_left(&self, queue: &str, job_id: &str, was: Option<crate::index::State>) {
        let Some(state) = was else { return };
        self.metrics
            .job_left_registry(queue, crate::metrics::StateGauge::of(state), None);
        if state == crate::index::State::Held {
            self.held.release(queue, job_id);
            self.held.publish(&self.metrics);
        }
    }

    pub fn new(config: Arc<Config>) -> Arc<DaemonState> {
        let instance = crate::switchboard::instance_id();
        Arc::new(DaemonState {
            snapshot: RwLock::new(Arc::new(Snapshot::new(config))),
            redis: RwLock::new(None),
            master: Mutex::new(None),
            lease: Lease::new(instance.clone()),
            instance,
            last_contact: Mutex::new(None),
            scan_now: Notify::new(),
            activated: Notify::new(),
            metrics: Metrics::new(),
            breakers: Mutex::new(Breakers::default()),
            last_scan: Mutex::new(None),
            started_at: Utc::now(),
            index: Default::default(),
            found_registries: Default::default(),
            worlds: Default::default(),
            held: Default::default(),
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

    /// Whether automatic writes are held back on every instance, as last seen (the write
    /// scripts check the switch itself in the same step as their writes).
    pub fn is_paused(&self) -> bool {
        self.lease.holds_writes()
    }

    /// Notes a pause or resume this instance just wrote to the switchboard.
    pub fn set_paused(&self, paused: bool) {
        self.lease.set_paused(paused);
        self.metrics.set_paused(paused);
    }

    /// Whether this instance does the automatic scans and writes now: it holds the lease (as of
    /// its last successful beat, and no longer than the lease lasts), or leader election is off.
    pub fn is_active(&self) -> bool {
        self.active_term().is_some()
    }

    /// The term this instance is active in (see [`crate::switchboard::Lease::held_term`];
    /// always 0 with leader election off), `None` while it stands by: a scan that ran in the
    /// current term has answered the activation that began it.
    pub fn active_term(&self) -> Option<u64> {
        let config = self.config();
        if !config.supervisor.leader_election {
            return Some(0);
        }
        self.lease.held_term(config.supervisor.lease_ttl)
    }

    /// The last beat's view of the switchboard.
    pub fn shared(&self) -> Beat {
        self.lease.last_beat()
    }

    /// Notes that Redis just answered (and sets `rq_retryd_redis_up`).
    pub fn redis_answered(&self) {
        *self.last_contact.lock().expect("contact lock") = Some(std::time::Instant::now());
        self.metrics.set_redis_up(true);
    }

    /// How long ago Redis last answered a beat.
    pub fn since_redis_answered(&self) -> Option<std::time::Duration> {
        self.last_contact
            .lock()
            .expect("contact lock")
            .map(|at| at.elapsed())
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
