//! The metric registry: every family registered once here, with typed handles for the rest of
//! the code. Names and labels are the public contract (`rq_retryd_*`, see the interface doc).
//! Label cardinality is bounded: no job ids; at most [`MAX_QUEUE_LABELS`] distinct queue names,
//! the rest fold into `queue="overflow"`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use crate::skip::SkipReason;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Distinct queue label values before further queues fold into `overflow`.
pub const MAX_QUEUE_LABELS: usize = 500;

/// The `reason` labels of `auth_failures_total`, shown at 0 from the start.
pub const AUTH_FAILURE_REASONS: [&str; 3] = ["missing", "invalid", "limited"];

/// Per-queue figures from one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueGauges {
    pub failed: u64,
    pub waiting: u64,
    pub exhausted: u64,
    pub oldest_failed_age_seconds: u64,
    /// Failed jobs RQ marks stopped (issue 21).
    pub stopped: u64,
    /// Failed jobs whose last run succeeded (issue 21).
    pub succeeded: u64,
    pub queued: u64,
}

/// The per-queue gauges that count failed jobs by where they stand (besides `failed_jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateGauge {
    Waiting,
    Exhausted,
    Stopped,
    Succeeded,
}

impl StateGauge {
    /// The gauge a job in the index's `state` is counted in, if any.
    pub fn of(state: crate::index::State) -> Option<StateGauge> {
        use crate::index::State;
        match state {
            State::Waiting => Some(StateGauge::Waiting),
            State::Exhausted => Some(StateGauge::Exhausted),
            State::Stopped => Some(StateGauge::Stopped),
            State::Succeeded => Some(StateGauge::Succeeded),
            _ => None,
        }
    }
}

/// Who caused an action, as the metrics' `trigger` label says it: the supervisor's policies or
/// a person through the API (`manual`, the word the config reserves for operators' actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Auto,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Auto => "auto",
            Trigger::Manual => crate::config::MANUAL,
        }
    }
}

/// All of rq-retryd's metrics.
pub struct Metrics {
    registry: Registry,
    queue: QueueFamilies,
    actions: ActionFamilies,
    scan: ScanFamilies,
    state: StateFamilies,
    /// The reasons `skipped_jobs` has had, so a reason gone from a scan reads 0, not stale.
    skip_reasons: Mutex<HashSet<SkipReason>>,
    auth_failures: IntCounterVec,
    known_queues: Mutex<HashSet<String>>,
    gauge_queues: Mutex<HashSet<String>>,
    reconciles: IntCounterVec,
    failures_seen: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers families on the one registry and hands back their handles; a name registered
/// twice is a programming error, so registration panics rather than returning it.
struct Families<'r>(&'r Registry);

impl Families<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("register once");
        metric
    }

    fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }
}

/// The per-queue gauges a full scan sets (`queue` label).
struct QueueFamilies {
    failed_jobs: IntGaugeVec,
    waiting_jobs: IntGaugeVec,
    exhausted_jobs: IntGaugeVec,
    stopped_jobs: IntGaugeVec,
    succeeded_jobs: IntGaugeVec,
    oldest_failed_age: IntGaugeVec,
    queued_jobs: IntGaugeVec,
}

impl QueueFamilies {
    fn register(f: &Families) -> QueueFamilies {
        let per_queue = |name: &str, help: &str| f.int_gauge_vec(name, help, &["queue"]);
        QueueFamilies {
            failed_jobs: per_queue(
                "failed_jobs",
                "Jobs in the failed registry, per queue (at the last scan).",
            ),
            waiting_jobs: per_queue(
                "waiting_jobs",
                "Failed jobs waiting for their backoff to end, per queue.",
            ),
            exhausted_jobs: per_queue(
                "exhausted_jobs",
                "Failed jobs whose max_attempts is used up, per queue.",
            ),
            stopped_jobs: per_queue(
                "stopped_jobs",
                "Failed jobs RQ marks stopped (an operator stopped them), never retried automatically, per queue.",
            ),
            succeeded_jobs: per_queue(
                "succeeded_jobs",
                "Failed jobs whose last run succeeded (RQ's results), never retried automatically, per queue.",
            ),
            oldest_failed_age: per_queue(
                "oldest_failed_job_age_seconds",
                "Age of the oldest failure in the failed registry, per queue.",
            ),
            queued_jobs: per_queue("queued_jobs", "Jobs waiting in the queue list, per queue."),
        }
    }
}

/// What the policies and the operators did to failed jobs: the writes, what was left alone
/// and what was held back.
struct ActionFamilies {
    requeued: IntCounterVec,
    purged: IntCounterVec,
    failed_again: IntCounterVec,
    skipped: IntCounterVec,
    skipped_jobs: IntGaugeVec,
    held_jobs: IntGaugeVec,
}

impl ActionFamilies {
    fn register(f: &Families) -> ActionFamilies {
        ActionFamilies {
            requeued: f.int_counter_vec(
                "requeued_total",
                "Jobs requeued, by queue, policy and trigger (auto|manual).",
                &["queue", "policy", "trigger"],
            ),
            purged: f.int_counter_vec(
                "purged_total",
                "Jobs purged, by queue, policy and trigger (auto|manual).",
                &["queue", "policy", "trigger"],
            ),
            failed_again: f.int_counter_vec(
                "retries_failed_again_total",
                "Automatic retries that failed again (seen as the next attempt or as exhaustion), by queue and policy.",
                &["queue", "policy"],
            ),
            skipped: f.int_counter_vec(
                "skipped_total",
                "Failed jobs that became skipped without an action, by reason: each failure counted once per reason, not once per scan (rq_retryd_skipped_jobs is how many are skipped now).",
                &["reason"],
            ),
            skipped_jobs: f.int_gauge_vec(
                "skipped_jobs",
                "Failed jobs skipped without an action at the last full scan, by reason.",
                &["reason"],
            ),
            held_jobs: f.int_gauge_vec(
                "held_jobs",
                "Failed jobs whose due requeue a retry policy's hold_when holds back, per queue (of the failed registry) and reason (no_workers, queue_longer_than).",
                &["queue", "reason"],
            ),
        }
    }
}

/// The scan loop's own health: passes, failures, duration, and when the last one ended.
struct ScanFamilies {
    scans: IntCounter,
    scan_errors: IntCounter,
    scan_duration: Histogram,
    last_scan: Gauge,
}

impl ScanFamilies {
    fn register(f: &Families) -> ScanFamilies {
        let buckets = vec![
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
        ];
        let duration = HistogramOpts::new("scan_duration_seconds", "Duration of a full scan pass.");
        ScanFamilies {
            scans: f.int_counter("scans_total", "Completed scan passes."),
            scan_errors: f.int_counter(
                "scan_errors_total",
                "Scan passes that failed (e.g. Redis unreachable).",
            ),
            scan_duration: f
                .add(Histogram::with_opts(duration.buckets(buckets)).expect("valid metric")),
            last_scan: f.add(
                Gauge::new(
                    "last_scan_timestamp_seconds",
                    "Unix time of the last completed scan.",
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// Where this instance stands: Redis reachable, paused, the lease held, open breakers.
struct StateFamilies {
    redis_up: IntGauge,
    paused: IntGauge,
    leader: IntGauge,
    circuit_open: IntGaugeVec,
}

impl StateFamilies {
    fn register(f: &Families) -> StateFamilies {
        StateFamilies {
            redis_up: f.int_gauge(
                "redis_up",
                "1 when the last Redis command succeeded, else 0.",
            ),
            paused: f.int_gauge(
                "paused",
                "1 while automatic actions are paused (on every instance sharing this Redis).",
            ),
            leader: f.int_gauge(
                "leader",
                "1 on the instance that holds the lease and does the automatic scans and writes, 0 on standbys.",
            ),
            circuit_open: f.int_gauge_vec(
                "circuit_open",
                "1 while a retry policy's circuit breaker holds its requeues back.",
                &["policy"],
            ),
        }
    }
}

/// `auth_failures_total`, with every reason at 0 from the start so that a rate alert sees a
/// series before the first refusal.
fn register_auth_failures(f: &Families) -> IntCounterVec {
    let auth_failures = f.int_counter_vec(
        "auth_failures_total",
        "API requests refused for their token, by reason: missing, invalid, or limited (the client address is over its budget of failures and got 429).",
        &["reason"],
    );
    for reason in AUTH_FAILURE_REASONS {
        auth_failures.with_label_values(&[reason]).inc_by(0);
    }
    auth_failures
}

/// `reconciles_total`, both triggers at 0 from the start. See: issue 21, item 4.
fn register_reconciles(f: &Families) -> IntCounterVec {
    let reconciles = f.int_counter_vec(
        "reconciles_total",
        "Looks at one failed registry for jobs others removed (requeued or deleted by RQ, a dashboard, a script), by trigger: notification (a keyspace notification of a removal) or size_check (the registry's count changed against the index's).",
        &["trigger"],
    );
    for trigger in ["notification", "size_check"] {
        reconciles.with_label_values(&[trigger]).inc_by(0);
    }
    reconciles
}

/// `failures_seen_total{queue}`: the record of new failures that "failure rate rising" alerts
/// on. A counter of what this instance saw arrive, rather than a gauge of what the failed
/// registries hold now, because a registry shrinks whenever jobs are retried: its size (and the
/// index's timeline) cannot tell a storm being retried away from a quiet queue. See: issue 22,
/// item 2.
fn register_failures_seen(f: &Families) -> IntCounterVec {
    f.int_counter_vec(
        "failures_seen_total",
        "New failures this instance saw arrive in a failed registry (a job not indexed before, or one that failed again), per queue; the failures already there when it started are not counted.",
        &["queue"],
    )
}

/// `build_info`, set once: nothing changes it while the process lives.
fn register_build_info(f: &Families) {
    f.int_gauge_vec(
        "build_info",
        "Build information (crate version, git commit); always 1.",
        &["version", "commit"],
    )
    // The commit is set by build.rs ("unknown" outside git).
    .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("RQ_RETRYD_GIT_COMMIT")])
    .set(1);
}

impl Metrics {
    /// A registry with every family registered once, in groups by what they describe.
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("rq_retryd".to_string()), None).expect("valid prefix");
        let f = Families(&registry);
        let queue = QueueFamilies::register(&f);
        let actions = ActionFamilies::register(&f);
        let scan = ScanFamilies::register(&f);
        let state = StateFamilies::register(&f);
        let auth_failures = register_auth_failures(&f);
        let reconciles = register_reconciles(&f);
        let failures_seen = register_failures_seen(&f);
        register_build_info(&f);
        Metrics {
            registry,
            queue,
            actions,
            scan,
            state,
            skip_reasons: Mutex::new(HashSet::new()),
            auth_failures,
            known_queues: Mutex::new(HashSet::new()),
            gauge_queues: Mutex::new(HashSet::new()),
            reconciles,
            failures_seen,
        }
    }

    /// The queue label to use: the name itself while fewer than [`MAX_QUEUE_LABELS`] are known.
    /// Borrowed: it is asked for once per job indexed (`failure_seen`).
    fn queue_label<'q>(&self, queue: &'q str) -> &'q str {
        let mut known = self.known_queues.lock().expect("metrics lock");
        if known.contains(queue) {
            return queue;
        }
        if known.len() < MAX_QUEUE_LABELS {
            known.insert(queue.to_string());
            return queue;
        }
        "overflow"
    }

    pub fn requeued(&self, queue: &str, policy: &str, trigger: Trigger) {
        self.actions
            .requeued
            .with_label_values(&[self.queue_label(queue), policy, trigger.as_str()])
            .inc();
    }

    pub fn purged(&self, queue: &str, policy: &str, trigger: Trigger) {
        self.actions
            .purged
            .with_label_values(&[self.queue_label(queue), policy, trigger.as_str()])
            .inc();
    }

    /// An automatic retry of this job failed again (the success-rate alert and circuit breaker).
    pub fn retry_failed_again(&self, queue: &str, policy: &str) {
        self.actions
            .failed_again
            .with_label_values(&[self.queue_label(queue), policy])
            .inc();
    }

    /// `n` jobs became skipped for `reason` (events, not sightings: see `ScanReport`).
    pub fn skipped(&self, reason: SkipReason, n: u64) {
        self.actions
            .skipped
            .with_label_values(&[reason.label()])
            .inc_by(n);
    }

    /// Sets `skipped_jobs{reason}` from a completed full scan's counts; reasons seen before and
    /// absent now read 0.
    pub fn set_skipped_jobs(&self, by_reason: &BTreeMap<SkipReason, u64>) {
        let mut reasons = self.skip_reasons.lock().expect("metrics lock");
        for reason in reasons.iter().filter(|r| !by_reason.contains_key(*r)) {
            self.actions
                .skipped_jobs
                .with_label_values(&[reason.label()])
                .set(0);
        }
        for (reason, n) in by_reason {
            self.actions
                .skipped_jobs
                .with_label_values(&[reason.label()])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
            reasons.insert(*reason);
        }
    }

    /// Records a completed scan: duration, time, and the per-queue gauges (stale queues removed).
    /// One job left `queue`'s failed registry through an operator's action (requeued onto
    /// `requeued_to`, or deleted); it was counted in the per-queue gauge `counted_in` there
    /// (none for the other states). The per-queue gauges follow at once instead of at the
    /// next scan. Only gauges a scan has set move.
    pub fn job_left_registry(
        &self,
        queue: &str,
        counted_in: Option<StateGauge>,
        requeued_to: Option<&str>,
    ) {
        let current = self.gauge_queues.lock().expect("metrics lock");
        let dec = |gauge: &IntGaugeVec, label: &str| {
            if current.contains(label) {
                let g = gauge.with_label_values(&[label]);
                if g.get() > 0 {
                    g.dec();
                }
            }
        };
        let label = self.queue_label(queue);
        dec(&self.queue.failed_jobs, label);
        if let Some(gauge) = counted_in {
            dec(
                match gauge {
                    StateGauge::Waiting => &self.queue.waiting_jobs,
                    StateGauge::Exhausted => &self.queue.exhausted_jobs,
                    StateGauge::Stopped => &self.queue.stopped_jobs,
                    StateGauge::Succeeded => &self.queue.succeeded_jobs,
                },
                label,
            );
        }
        if let Some(origin) = requeued_to {
            let label = self.queue_label(origin);
            if current.contains(label) {
                self.queue.queued_jobs.with_label_values(&[label]).inc();
            }
        }
    }

    pub fn scan_finished(
        &self,
        duration_seconds: f64,
        at_unix: f64,
        queues: &BTreeMap<String, QueueGauges>,
    ) {
        self.scan.scans.inc();
        self.scan.scan_duration.observe(duration_seconds);
        self.scan.last_scan.set(at_unix);
        let mut folded: BTreeMap<String, QueueGauges> = BTreeMap::new();
        for (queue, g) in queues {
            let entry = folded
                .entry(self.queue_label(queue).to_string())
                .or_default();
            entry.failed += g.failed;
            entry.waiting += g.waiting;
            entry.exhausted += g.exhausted;
            entry.stopped += g.stopped;
            entry.succeeded += g.succeeded;
            entry.queued += g.queued;
            entry.oldest_failed_age_seconds = entry
                .oldest_failed_age_seconds
                .max(g.oldest_failed_age_seconds);
        }
        let mut current = self.gauge_queues.lock().expect("metrics lock");
        for stale in current.iter().filter(|q| !folded.contains_key(*q)) {
            self.remove_queue_gauges(stale);
        }
        for (queue, g) in &folded {
            let label = [queue.as_str()];
            self.queue
                .failed_jobs
                .with_label_values(&label)
                .set(g.failed as i64);
            self.queue
                .waiting_jobs
                .with_label_values(&label)
                .set(g.waiting as i64);
            self.queue
                .exhausted_jobs
                .with_label_values(&label)
                .set(g.exhausted as i64);
            self.queue
                .stopped_jobs
                .with_label_values(&label)
                .set(g.stopped as i64);
            self.queue
                .succeeded_jobs
                .with_label_values(&label)
                .set(g.succeeded as i64);
            self.queue
                .oldest_failed_age
                .with_label_values(&label)
                .set(g.oldest_failed_age_seconds as i64);
            self.queue
                .queued_jobs
                .with_label_values(&label)
                .set(g.queued as i64);
        }
        *current = folded.into_keys().collect();
    }

    /// Drops what this instance's scans reported (per-queue gauges, `skipped_jobs`) when it
    /// stops being the active instance: the active one reports them now, and a standby's stale
    /// values would make sums and alerts count the same jobs twice.
    pub fn forget_scan_gauges(&self) {
        let mut current = self.gauge_queues.lock().expect("metrics lock");
        for queue in current.drain() {
            self.remove_queue_gauges(&queue);
        }
        drop(current);
        self.set_skipped_jobs(&BTreeMap::new());
    }

    /// Removes one queue's per-queue gauges.
    fn remove_queue_gauges(&self, queue: &str) {
        for vec in [
            &self.queue.failed_jobs,
            &self.queue.waiting_jobs,
            &self.queue.exhausted_jobs,
            &self.queue.stopped_jobs,
            &self.queue.succeeded_jobs,
            &self.queue.oldest_failed_age,
            &self.queue.queued_jobs,
        ] {
            let _ = vec.remove_label_values(&[queue]);
        }
    }

    pub fn scan_failed(&self) {
        self.scan.scan_errors.inc();
    }

    pub fn set_redis_up(&self, up: bool) {
        self.state.redis_up.set(i64::from(up));
    }

    pub fn set_paused(&self, paused: bool) {
        self.state.paused.set(i64::from(paused));
    }

    pub fn set_leader(&self, leader: bool) {
        self.state.leader.set(i64::from(leader));
    }

    /// Sets `circuit_open{policy}` to 1 for the open breakers and removes the others.
    /// The retry policies whose circuit breaker is open now.
    pub fn set_open_circuits<'a>(&self, policies: impl IntoIterator<Item = &'a str>) {
        self.state.circuit_open.reset();
        for policy in policies {
            self.state.circuit_open.with_label_values(&[policy]).set(1);
        }
    }

    /// Sets `held_jobs{queue,reason}` to these counts and removes every other series.
    pub fn set_held<'a>(&self, counts: impl IntoIterator<Item = (&'a str, &'a str, u64)>) {
        self.actions.held_jobs.reset();
        for (queue, reason, n) in counts {
            let label = self.queue_label(queue);
            self.actions
                .held_jobs
                .with_label_values(&[label, reason])
                .add(n as i64);
        }
    }

    /// An API request was refused for its token; `reason` is one of [`AUTH_FAILURE_REASONS`].
    pub fn auth_failed(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// One reconcile of one failed registry (`notification` or `size_check`).
    pub fn reconciled(&self, trigger: &str) {
        self.reconciles.with_label_values(&[trigger]).inc();
    }

    /// A failure of `queue` was indexed: counted when `new` (see `failures_seen_total`); the
    /// queue's series exists, at 0, from its first indexed failure on, so that a rate sees the
    /// first new one.
    pub fn failure_seen(&self, queue: &str, new: bool) {
        self.failures_seen
            .with_label_values(&[self.queue_label(queue)])
            .inc_by(u64::from(new));
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding never fails");
        String::from_utf8(buffer).expect("text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family of a fresh registry as `name type [labels] help`, one a line, sorted by name;
    /// each vec is given one series first, since an empty vec is not exposed at all.
    fn exposition_shape(m: &Metrics) -> String {
        for vec in [
            &m.queue.failed_jobs,
            &m.queue.waiting_jobs,
            &m.queue.exhausted_jobs,
            &m.queue.stopped_jobs,
            &m.queue.succeeded_jobs,
            &m.queue.oldest_failed_age,
            &m.queue.queued_jobs,
            &m.actions.skipped_jobs,
            &m.state.circuit_open,
        ] {
            vec.with_label_values(&["x"]).set(0);
        }
        m.actions.held_jobs.with_label_values(&["x", "y"]).set(0);
        for vec in [&m.actions.requeued, &m.actions.purged] {
            vec.with_label_values(&["x", "y", "z"]).inc_by(0);
        }
        m.actions
            .failed_again
            .with_label_values(&["x", "y"])
            .inc_by(0);
        m.actions.skipped.with_label_values(&["x"]).inc_by(0);
        m.failure_seen("x", false);
        let mut lines: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|family| {
                let labels: Vec<&str> = family.get_metric()[0]
                    .get_label()
                    .iter()
                    .map(|l| l.name())
                    .collect();
                format!(
                    "{} {:?} [{}] {}",
                    family.name(),
                    family.get_field_type(),
                    labels.join(","),
                    family.help()
                )
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// The public contract of `/metrics` (docs/interface.md): names, types, label names and help
    /// texts byte for byte. A change here is a change for every dashboard and alert.
    /// See: issue 20 (registration split into named groups without changing a byte).
    #[test]
    fn a_fresh_registry_exposes_every_family_with_its_type_labels_and_help() {
        let expected = [
            "rq_retryd_auth_failures_total COUNTER [reason] API requests refused for their token, by reason: missing, invalid, or limited (the client address is over its budget of failures and got 429).",
            "rq_retryd_build_info GAUGE [commit,version] Build information (crate version, git commit); always 1.",
            "rq_retryd_circuit_open GAUGE [policy] 1 while a retry policy's circuit breaker holds its requeues back.",
            "rq_retryd_exhausted_jobs GAUGE [queue] Failed jobs whose max_attempts is used up, per queue.",
            "rq_retryd_failed_jobs GAUGE [queue] Jobs in the failed registry, per queue (at the last scan).",
            "rq_retryd_failures_seen_total COUNTER [queue] New failures this instance saw arrive in a failed registry (a job not indexed before, or one that failed again), per queue; the failures already there when it started are not counted.",
            "rq_retryd_held_jobs GAUGE [queue,reason] Failed jobs whose due requeue a retry policy's hold_when holds back, per queue (of the failed registry) and reason (no_workers, queue_longer_than).",
            "rq_retryd_last_scan_timestamp_seconds GAUGE [] Unix time of the last completed scan.",
            "rq_retryd_leader GAUGE [] 1 on the instance that holds the lease and does the automatic scans and writes, 0 on standbys.",
            "rq_retryd_oldest_failed_job_age_seconds GAUGE [queue] Age of the oldest failure in the failed registry, per queue.",
            "rq_retryd_paused GAUGE [] 1 while automatic actions are paused (on every instance sharing this Redis).",
            "rq_retryd_purged_total COUNTER [policy,queue,trigger] Jobs purged, by queue, policy and trigger (auto|manual).",
            "rq_retryd_queued_jobs GAUGE [queue] Jobs waiting in the queue list, per queue.",
            "rq_retryd_reconciles_total COUNTER [trigger] Looks at one failed registry for jobs others removed (requeued or deleted by RQ, a dashboard, a script), by trigger: notification (a keyspace notification of a removal) or size_check (the registry's count changed against the index's).",
            "rq_retryd_redis_up GAUGE [] 1 when the last Redis command succeeded, else 0.",
            "rq_retryd_requeued_total COUNTER [policy,queue,trigger] Jobs requeued, by queue, policy and trigger (auto|manual).",
            "rq_retryd_retries_failed_again_total COUNTER [policy,queue] Automatic retries that failed again (seen as the next attempt or as exhaustion), by queue and policy.",
            "rq_retryd_scan_duration_seconds HISTOGRAM [] Duration of a full scan pass.",
            "rq_retryd_scan_errors_total COUNTER [] Scan passes that failed (e.g. Redis unreachable).",
            "rq_retryd_scans_total COUNTER [] Completed scan passes.",
            "rq_retryd_skipped_jobs GAUGE [reason] Failed jobs skipped without an action at the last full scan, by reason.",
            "rq_retryd_skipped_total COUNTER [reason] Failed jobs that became skipped without an action, by reason: each failure counted once per reason, not once per scan (rq_retryd_skipped_jobs is how many are skipped now).",
            "rq_retryd_stopped_jobs GAUGE [queue] Failed jobs RQ marks stopped (an operator stopped them), never retried automatically, per queue.",
            "rq_retryd_succeeded_jobs GAUGE [queue] Failed jobs whose last run succeeded (RQ's results), never retried automatically, per queue.",
            "rq_retryd_waiting_jobs GAUGE [queue] Failed jobs waiting for their backoff to end, per queue.",
        ];
        assert_eq!(exposition_shape(&Metrics::new()), expected.join("\n"));
    }

    /// Before any scan, what a scrape shows: the label values that read 0 from the start, the
    /// scan histogram's buckets and `build_info` at 1.
    #[test]
    fn a_fresh_registry_shows_zero_series_the_histogram_buckets_and_build_info() {
        let text = Metrics::new().render();
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let build_info = format!(
            "rq_retryd_build_info{{commit=\"{}\",version=\"{}\"}} 1",
            env!("RQ_RETRYD_GIT_COMMIT"),
            env!("CARGO_PKG_VERSION")
        );
        let mut expected = vec![
            "rq_retryd_auth_failures_total{reason=\"invalid\"} 0",
            "rq_retryd_auth_failures_total{reason=\"limited\"} 0",
            "rq_retryd_auth_failures_total{reason=\"missing\"} 0",
            build_info.as_str(),
            "rq_retryd_last_scan_timestamp_seconds 0",
            "rq_retryd_leader 0",
            "rq_retryd_paused 0",
            "rq_retryd_reconciles_total{trigger=\"notification\"} 0",
            "rq_retryd_reconciles_total{trigger=\"size_check\"} 0",
            "rq_retryd_redis_up 0",
        ];
        let buckets = [
            "0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120", "+Inf",
        ];
        let bucket_lines: Vec<String> = buckets
            .iter()
            .map(|le| format!("rq_retryd_scan_duration_seconds_bucket{{le=\"{le}\"}} 0"))
            .collect();
        expected.extend(bucket_lines.iter().map(String::as_str));
        expected.extend([
            "rq_retryd_scan_duration_seconds_sum 0",
            "rq_retryd_scan_duration_seconds_count 0",
            "rq_retryd_scan_errors_total 0",
            "rq_retryd_scans_total 0",
        ]);
        assert_eq!(series, expected);
    }
}
