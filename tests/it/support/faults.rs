//! Fault injection for the reliability tests (issue 6): a Redis that keeps its data across
//! `kill -9` and can be hung with SIGSTOP, a daemon that can be `kill -9`ed, a fast seeder for
//! tens of thousands of RQ-shaped failed jobs, a seeded RNG, and the invariant check "every
//! job is in exactly one place".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::free_port;
use super::http::{try_request, Response};
use super::jobs::FailedJob;
use super::{spawn_daemon, wait_until};

/// A small deterministic RNG (splitmix64): the tests print their seed, so a failing sequence of
/// kill moments can be replayed with `RQ_RETRYD_FAULT_SEED=<seed>`.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `RQ_RETRYD_FAULT_SEED` when set, else from `default`.
    pub fn from_env(default: u64) -> (Rng, u64) {
        let seed = std::env::var("RQ_RETRYD_FAULT_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(default);
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Sends `signal` (e.g. "KILL", "STOP", "CONT") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A `redis-server` on a fixed port and a fixed data directory with an AOF, so every
/// acknowledged write survives `kill -9` and a restart on the same port sees the same data.
/// Killed (after SIGCONT) on drop.
///
/// The AOF is written but not fsynced (`appendfsync no`): Redis writes each command to the AOF
/// (write(2)) before it replies to it, in every fsync mode but `everysec`, which may postpone
/// that write while a background fsync runs. What the tests kill is the process, not the
/// machine, and the kernel keeps what a killed process wrote, so the restarted server reads
/// every acknowledged write back, as with `appendfsync always`. An fsync per write only adds
/// the disk's latency to each requeue: 5.6 ms here, 179 writes/s from one client against 9,100
/// without (`redis-benchmark -c 1 -n 5000 -t set`, 2026-12-03).
pub struct PersistentRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PersistentRedis {
    /// Picks a free port and a data directory; does not start the server.
    pub fn new() -> PersistentRedis {
        super::machine::take_a_seat();
        PersistentRedis {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        }
    }

    /// A fresh server, started and answering PING.
    pub fn started() -> PersistentRedis {
        let mut r = PersistentRedis::new();
        r.start();
        r
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (or restarts) the server on the same port with the same data, and waits until it
    /// answers PING with its data loaded.
    #[track_caller]
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    &self.port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "no",
                    "--aof-load-truncated",
                    "yes",
                ])
                .arg("--dir")
                .arg(self.dir.path())
                .arg("--logfile")
                .arg(self.dir.path().join("redis.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start redis-server ({e}); run scripts/test.sh, which installs it"
                    )
                });
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // The port was still held by the old process: try again.
                }
                if self.ping() {
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            if Instant::now() >= deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server did not come up on port {}:\n{log}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        let _ = con.set_read_timeout(Some(Duration::from_millis(500)));
        // PING answers LOADING errors while the AOF loads; only a real PONG counts.
        redis::cmd("PING").query::<String>(&mut con).is_ok()
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("redis-server is not running");
        let _ = Command::new("kill")
            .args(["-CONT", &child.id().to_string()])
            .status();
        child.kill().expect("kill -9 redis-server");
        child.wait().expect("wait for redis-server");
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn hang(&self) {
        signal(self.child.as_ref().expect("running").id(), "STOP");
    }

    /// SIGCONT after [`hang`](Self::hang).
    pub fn resume(&self) {
        signal(self.child.as_ref().expect("running").id(), "CONT");
    }

    /// A blocking connection for setting up and asserting.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connect to test redis")
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
    }
}

/// `[[policy]]` that requeues every failed job at once, once.
pub const RETRY_EVERYTHING_NOW: &str = "[[policy]]\nname = \"retry-everything-now\"\naction = \"retry\"\nmax_attempts = 1\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n";
/// The name of the policy above, as stored in `retryd_policy`.
pub const RETRY_POLICY: &str = "retry-everything-now";

/// `rq-retryd run` whose process id is at hand, for `kill -9`. Its output goes to files in its
/// own directory; killed on drop.
pub struct KillableDaemon {
    child: Mutex<Option<Child>>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl KillableDaemon {
    /// Writes a config (the given `[supervisor]` lines, a free loopback HTTP port, warn-level
    /// logs, `policies`) and spawns `rq-retryd --config FILE run`. Returns at once: it does not
    /// wait for anything, so a kill can land during start-up too.
    pub fn spawn(redis_url: &str, supervisor: &str, policies: &str) -> KillableDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = format!(
            "[redis]\nurl = \"{redis_url}\"\n\n[supervisor]\n{supervisor}\n\n[http]\nlisten = \"{addr}\"\n\n[logging]\nlevel = \"info\"\n\n{policies}\n"
        );
        let path = dir.path().join("rq-retryd.toml");
        std::fs::write(&path, config).expect("write config");
        let child = spawn_daemon(&path, dir.path());
        KillableDaemon {
            child: Mutex::new(Some(child)),
            addr,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().as_ref().expect("running").id()
    }

    /// `kill -9`; returns how the process ended (it must not have exited on its own before).
    #[track_caller]
    pub fn kill9(&mut self) {
        let mut child = self
            .child
            .get_mut()
            .unwrap()
            .take()
            .expect("daemon is running");
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "rq-retryd exited on its own ({status}) before the kill:\n{}",
                self.log()
            );
        }
        child.kill().expect("kill -9 rq-retryd");
        child.wait().expect("wait for rq-retryd");
    }

    /// The exit code if the daemon has exited (-1 for a signal).
    pub fn exited(&self) -> Option<i32> {
        let mut child = self.child.lock().unwrap();
        child
            .as_mut()?
            .try_wait()
            .expect("wait")
            .map(|s| s.code().unwrap_or(-1))
    }

    /// One request, or the I/O error (connection refused while starting).
    pub fn try_call(&self, method: &str, path: &str) -> std::io::Result<Response> {
        try_request(self.addr, method, path, &[], b"")
    }

    /// `GET path`, panicking on an I/O error.
    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.try_call("GET", path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    /// Polls `/healthz` until it answers 200 (or panics with the log after 30 s).
    #[track_caller]
    pub fn wait_healthy(&self) {
        let healthy = wait_until(Duration::from_secs(30), || {
            if let Some(code) = self.exited() {
                panic!(
                    "rq-retryd exited with {code} while starting:\n{}",
                    self.log()
                );
            }
            matches!(self.try_call("GET", "/healthz"), Ok(r) if r.status == 200).then_some(())
        });
        assert!(
            healthy.is_some(),
            "rq-retryd never answered /healthz:\n{}",
            self.log()
        );
    }

    /// Everything the daemon wrote so far.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    /// SIGTERM and wait (≤ 20 s); returns the exit code.
    #[track_caller]
    pub fn stop(&mut self) -> i32 {
        let mut child = self
            .child
            .get_mut()
            .unwrap()
            .take()
            .expect("daemon is running");
        signal(child.id(), "TERM");
        match wait_until(Duration::from_secs(20), || child.try_wait().expect("wait")) {
            Some(status) => status.code().unwrap_or(-1),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rq-retryd ignored SIGTERM for 20 s:\n{}", self.log());
            }
        }
    }
}

impl Drop for KillableDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().ok().and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One seeded job: its id and its queue (= origin).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seeded {
    pub id: String,
    pub queue: String,
}

/// Seeds `per_queue` failed jobs on each of `queues` (ids `<tag>-<queue>-<n>`), each byte for
/// byte what [`FailedJob::write`] writes: one template per queue is written that way, and its
/// hash and results stream are copied with DUMP/RESTORE in pipelines (tens of thousands of
/// jobs in well under a second). Returns the jobs in seeding order.
pub fn seed(
    con: &mut redis::Connection,
    tag: &str,
    queues: &[&str],
    per_queue: usize,
) -> Vec<Seeded> {
    let mut out = Vec::with_capacity(queues.len() * per_queue);
    for queue in queues {
        let template = format!("{tag}-template-{queue}");
        FailedJob::new(&template).queue(queue).write(con);
        let job_key = format!("rq:job:{template}");
        let results_key = format!("rq:results:{template}");
        let job: Vec<u8> = redis::cmd("DUMP").arg(&job_key).query(con).unwrap();
        let results: Vec<u8> = redis::cmd("DUMP").arg(&results_key).query(con).unwrap();
        let ttl_ms: i64 = redis::cmd("PTTL").arg(&job_key).query(con).unwrap();
        assert!(ttl_ms > 0, "the template job has RQ's failure_ttl EXPIRE");
        let score: f64 = redis::cmd("ZSCORE")
            .arg(format!("rq:failed:{queue}"))
            .arg(&template)
            .query(con)
            .unwrap();
        let _: () = redis::pipe()
            .cmd("DEL")
            .arg(&job_key)
            .arg(&results_key)
            .ignore()
            .cmd("ZREM")
            .arg(format!("rq:failed:{queue}"))
            .arg(&template)
            .ignore()
            .query(con)
            .unwrap();
        let ids: Vec<String> = (0..per_queue)
            .map(|n| format!("{tag}-{queue}-{n}"))
            .collect();
        for chunk in ids.chunks(2000) {
            let mut pipe = redis::pipe();
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(format!("rq:failed:{queue}"));
            for id in chunk {
                pipe.cmd("RESTORE")
                    .arg(format!("rq:job:{id}"))
                    .arg(ttl_ms)
                    .arg(&job)
                    .ignore()
                    .cmd("RESTORE")
                    .arg(format!("rq:results:{id}"))
                    .arg(0)
                    .arg(&results)
                    .ignore();
                zadd.arg(score).arg(id);
            }
            pipe.add_command(zadd).ignore();
            let _: () = pipe.query(con).unwrap();
        }
        out.extend(ids.into_iter().map(|id| Seeded {
            id,
            queue: queue.to_string(),
        }));
    }
    out
}

/// `status`, `retryd_attempts`, `retryd_policy` of a job hash.
type HashFields = (Option<String>, Option<String>, Option<String>);

/// For each job hash: `status`, `retryd_attempts`, `retryd_policy` (`=value`, or `!` when
/// absent) and its PTTL, as one string per job (fields split by \x1f, jobs by \x1e). A
/// pipeline of HMGET and PTTL answers 4 values per job, which the debug build of the client
/// parses slowly: the whole check over 24,000 jobs took 2.4-2.9 s with it, 1.1-2.2 s with this
/// (on a loaded 2-core machine), and the crash test checks nine times.
const JOB_HASHES: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HMGET', key, 'status', 'retryd_attempts', 'retryd_policy')
  local parts = {}
  for j = 1, 3 do
    parts[j] = fields[j] and ('=' .. fields[j]) or '!'
  end
  parts[4] = tostring(redis.call('PTTL', key))
  out[i] = table.concat(parts, '\31')
end
return table.concat(out, '\30')
";

/// [`HashFields`] and PTTL of each job's hash, in the order of `jobs`.
fn job_hashes(con: &mut redis::Connection, jobs: &[Seeded]) -> Vec<(HashFields, i64)> {
    let script = redis::Script::new(JOB_HASHES);
    let mut out = Vec::with_capacity(jobs.len());
    // Chunks, so that no script holds Redis for long.
    for chunk in jobs.chunks(5_000) {
        let mut call = script.prepare_invoke();
        for j in chunk {
            call.key(format!("rq:job:{}", j.id));
        }
        let packed: String = call.invoke(con).unwrap();
        let field = |f: &str| match f {
            "!" => None,
            value => Some(value.strip_prefix('=').expect("=value or !").to_string()),
        };
        for record in packed.split('\x1e') {
            let parts: Vec<&str> = record.split('\x1f').collect();
            let [status, attempts, policy, pttl] = parts[..] else {
                panic!("a job hash record of 4 fields: {record:?}");
            };
            out.push((
                (field(status), field(attempts), field(policy)),
                pttl.parse().expect("PTTL"),
            ));
        }
    }
    assert_eq!(out.len(), jobs.len(), "one record per job");
    out
}

/// Where a job was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Failed,
    Queued,
}

/// One job as the invariant check found it.
#[derive(Debug, Clone)]
pub struct JobState {
    pub place: Place,
    pub attempts: Option<String>,
    pub policy: Option<String>,
}

/// The census after a check.
#[derive(Debug, Clone, Default)]
pub struct Census {
    pub failed: usize,
    pub queued: usize,
    pub states: HashMap<String, JobState>,
}

/// Checks the promise of issue 6 over `jobs` and panics with every violation it finds:
/// each job id is in exactly one place (its failed registry or its queue's list), no id appears
/// twice in a queue list, no queue list holds an id that was not seeded there, every job hash
/// still exists, and the hash agrees with the place (`failed` in the registry, `queued` in the
/// list; a failed hash keeps its expiry, a requeued one has none). Nothing else may be in the
/// failed registries either.
#[track_caller]
pub fn check_invariant(con: &mut redis::Connection, jobs: &[Seeded]) -> Census {
    let mut by_queue: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for j in jobs {
        by_queue.entry(&j.queue).or_default().insert(&j.id);
    }
    let mut violations: Vec<String> = Vec::new();
    let mut in_list: HashMap<String, usize> = HashMap::new();
    let mut in_registry: HashSet<String> = HashSet::new();
    for (queue, ids) in &by_queue {
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("rq:queue:{queue}"))
            .arg(0)
            .arg(-1)
            .query(con)
            .unwrap();
        for id in list {
            if !ids.contains(id.as_str()) {
                violations.push(format!(
                    "rq:queue:{queue} holds {id:?}, which was not seeded on that queue"
                ));
            }
            *in_list.entry(id).or_default() += 1;
        }
        let registry: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("rq:failed:{queue}"))
            .arg(0)
            .arg(-1)
            .query(con)
            .unwrap();
        for id in registry {
            if !ids.contains(id.as_str()) {
                violations.push(format!(
                    "rq:failed:{queue} holds {id:?}, which was not seeded on that queue"
                ));
            }
            in_registry.insert(id);
        }
    }
    for (id, n) in &in_list {
        if *n > 1 {
            violations.push(format!("{id} appears {n} times in its queue list"));
        }
    }
    let hashes = job_hashes(con, jobs);
    let mut census = Census::default();
    for (j, ((status, attempts, policy), pttl)) in jobs.iter().zip(hashes) {
        let listed = in_list.contains_key(&j.id);
        let registered = in_registry.contains(&j.id);
        let place = match (registered, listed) {
            (true, false) => Place::Failed,
            (false, true) => Place::Queued,
            (true, true) => {
                violations.push(format!(
                    "{} is both in rq:failed:{q} and in rq:queue:{q}",
                    j.id,
                    q = j.queue
                ));
                continue;
            }
            (false, false) => {
                violations.push(format!(
                    "{} is lost: neither in rq:failed:{q} nor in rq:queue:{q}",
                    j.id,
                    q = j.queue
                ));
                continue;
            }
        };
        let Some(status) = status else {
            violations.push(format!("the hash rq:job:{} is gone ({place:?})", j.id));
            continue;
        };
        let expected = match place {
            Place::Failed => "failed",
            Place::Queued => "queued",
        };
        if status != expected {
            violations.push(format!(
                "{} is {place:?} but its hash says status={status:?}",
                j.id
            ));
        }
        // A failed job keeps RQ's failure_ttl EXPIRE; a requeued one (no `ttl` field) must not
        // expire while it waits in its queue.
        let expiry_ok = match place {
            Place::Failed => pttl > 0,
            Place::Queued => pttl == -1,
        };
        if !expiry_ok {
            violations.push(format!(
                "{} is {place:?} but its hash has PTTL {pttl}",
                j.id
            ));
        }
        match place {
            Place::Failed => census.failed += 1,
            Place::Queued => census.queued += 1,
        }
        census.states.insert(
            j.id.clone(),
            JobState {
                place,
                attempts,
                policy,
            },
        );
    }
    if !violations.is_empty() {
        let shown: Vec<&String> = violations.iter().take(30).collect();
        panic!(
            "the invariant is broken ({} violations over {} jobs; first ones):\n{}",
            violations.len(),
            jobs.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    census
}

/// Asserts that every job in `census` was requeued by the daemon's retry policy: queued, with
/// `retryd_attempts` = 1 and `retryd_policy` = [`RETRY_POLICY`].
#[track_caller]
pub fn assert_all_auto_requeued(census: &Census, total: usize) {
    assert_eq!(census.failed, 0, "jobs left in the failed registries");
    assert_eq!(census.queued, total, "every job is in its queue");
    let wrong: Vec<(&String, &JobState)> = census
        .states
        .iter()
        .filter(|(_, s)| {
            s.attempts.as_deref() != Some("1") || s.policy.as_deref() != Some(RETRY_POLICY)
        })
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "jobs whose requeue stamp is not one automatic attempt by {RETRY_POLICY}: {wrong:?}"
    );
}

/// The sum of all samples of `name` in a Prometheus exposition (all label sets).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    super::http::parse_metrics(text)
        .iter()
        .filter(|s| s.matches(name, labels))
        .map(|s| s.value)
        .sum()
}

/// The total of `count` over the audit stream's entries with this `action` (and `who`, when
/// given).
pub fn audited(con: &mut redis::Connection, action: &str, who: Option<&str>) -> u64 {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("rq:retryd:audit")
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    entries
        .iter()
        .map(|(_, fields)| fields.iter().cloned().collect::<HashMap<String, String>>())
        .filter(|f| {
            f.get("action").map(String::as_str) == Some(action)
                && who.is_none_or(|w| f.get("who").map(String::as_str) == Some(w))
        })
        .map(|f| f["count"].parse::<u64>().unwrap())
        .sum()
}
