//! Real RQ for the interop tests: the two pinned virtualenvs, `tests/python/rqctl.py` (RQ's own
//! Python API behind a tiny CLI), burst workers, and the `rq-retryd` binary run against a
//! throwaway server.
//!
//! Every child process runs with a deadline, so a hung worker or a hung `once` fails the test
//! with a message instead of hanging CI. Nothing here skips: a missing venv is a panic that says
//! how to create it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::{repo_root, wait_until};

/// How long one `rq worker --burst` may take; a healthy one takes about a second.
const WORKER_DEADLINE: Duration = Duration::from_secs(90);
/// How long one `rqctl.py` call or one `rq-retryd` invocation may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// One pinned RQ installation: a virtualenv with `bin/python` and `bin/rq`.
#[derive(Debug, Clone)]
pub struct Rq {
    /// The RQ version the venv must hold, e.g. "2.12.0"; test failures name it.
    pub version: &'static str,
    venv: PathBuf,
}

impl Rq {
    /// RQ 2.12.0, from `$RQ_RETRYD_VENV_RQ2` or `<repo>/target/venv-rq2`.
    pub fn rq2() -> Rq {
        Rq::locate("RQ_RETRYD_VENV_RQ2", "venv-rq2", "2.12.0")
    }

    /// RQ 1.16.2, from `$RQ_RETRYD_VENV_RQ1` or `<repo>/target/venv-rq1`.
    pub fn rq1() -> Rq {
        Rq::locate("RQ_RETRYD_VENV_RQ1", "venv-rq1", "1.16.2")
    }

    /// Finds the venv and checks that it really holds `version`, so a test named `rq1::...`
    /// cannot silently run against another RQ. Checking the installed `dist-info` directory
    /// avoids starting Python once per test just to ask.
    #[track_caller]
    fn locate(env_var: &str, default_dir: &str, version: &'static str) -> Rq {
        let venv = match std::env::var_os(env_var) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => repo_root().join("target").join(default_dir),
        };
        for tool in ["python", "rq"] {
            let path = venv.join("bin").join(tool);
            assert!(
                path.is_file(),
                "RQ {version} venv is missing {} (from ${env_var} or target/{default_dir}): \
                 run ./scripts/test.sh to create it",
                path.display()
            );
        }
        Rq::in_venv(venv, version)
    }

    /// The RQ of any venv (e.g. one a test made itself), checked like [`rq2`](Self::rq2)'s.
    #[track_caller]
    pub fn in_venv(venv: PathBuf, version: &'static str) -> Rq {
        super::machine::take_a_seat();
        for tool in ["python", "rq"] {
            let path = venv.join("bin").join(tool);
            assert!(path.is_file(), "{} is missing", path.display());
        }
        let dist_info = format!("rq-{version}.dist-info");
        let has_version = std::fs::read_dir(venv.join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|python_dir| {
                python_dir
                    .path()
                    .join("site-packages")
                    .join(&dist_info)
                    .is_dir()
            });
        assert!(
            has_version,
            "the venv at {} does not hold rq=={version}: run ./scripts/test.sh to recreate it",
            venv.display()
        );
        Rq { version, venv }
    }

    /// The venv's Python, with the environment every helper call shares: no `.pyc` files in the
    /// repository, and no click deprecation warnings from RQ 1.16 cluttering failure messages.
    fn python(&self) -> Command {
        let mut cmd = Command::new(self.venv.join("bin").join("python"));
        python_env(&mut cmd);
        cmd
    }

    /// Runs `rqctl.py --url URL ARGS...` and returns its stdout; any failure panics with stderr.
    /// The command runs in a `rqctl.py --serve` of this venv ([`CtlServer`]), as it would in a
    /// process of its own.
    #[track_caller]
    pub fn ctl(&self, url: &str, args: &[&str]) -> String {
        let what = format!("rqctl.py {} (RQ {})", args.join(" "), self.version);
        let mut argv = vec!["--url", url];
        argv.extend_from_slice(args);
        let run = CtlServer::run(self, &argv, &what);
        assert_eq!(run.code, 0, "{what} failed:\n{}", run.stderr);
        run.stdout.trim().to_string()
    }

    /// Runs one of the repository's benchmark scripts (`bench/NAME`) in this venv with `args`,
    /// within `deadline`.
    #[track_caller]
    pub fn bench_script(&self, name: &str, args: &[&str], deadline: Duration) -> Finished {
        let mut cmd = self.python();
        cmd.arg(super::repo_root().join("bench").join(name))
            .args(args);
        let what = format!("bench/{name} {} (RQ {})", args.join(" "), self.version);
        run_with_deadline(&mut cmd, deadline, &what)
    }

    /// Runs `tests/python/<script> ARGS...` in this venv and returns its stdout; any failure
    /// panics with stderr.
    #[track_caller]
    pub fn script(&self, script: &str, args: &[&str]) -> String {
        let mut cmd = self.python();
        cmd.arg(python_dir().join(script)).args(args);
        let what = format!("{script} {} (RQ {})", args.join(" "), self.version);
        let run = run_with_deadline(&mut cmd, COMMAND_DEADLINE, &what);
        assert_eq!(run.code, 0, "{what} failed:\n{}", run.stderr);
        run.stdout.trim().to_string()
    }

    /// Like [`ctl`](Self::ctl), parsing the one JSON object it prints.
    #[track_caller]
    pub fn ctl_json(&self, url: &str, args: &[&str]) -> Value {
        let out = self.ctl(url, args);
        match serde_json::from_str(&out) {
            Ok(value) => value,
            Err(e) => panic!("rqctl.py {} printed non-JSON ({e}): {out}", args.join(" ")),
        }
    }

    /// Enqueues a job through RQ's `Queue.enqueue_call` and returns its id.
    #[track_caller]
    pub fn enqueue(&self, url: &str, job: &JobSpec) -> String {
        let args = job.args.to_string();
        let kwargs = job.kwargs.to_string();
        let mut argv: Vec<String> = vec![
            "enqueue".into(),
            "--queue".into(),
            job.queue.clone(),
            "--func".into(),
            job.func.clone(),
            "--args".into(),
            args,
            "--kwargs".into(),
            kwargs,
        ];
        if let Some(meta) = &job.meta {
            argv.extend(["--meta".into(), meta.to_string()]);
        }
        if let Some(parent) = &job.depends_on {
            argv.extend(["--depends-on".into(), parent.clone()]);
        }
        if let Some(id) = &job.id {
            argv.extend(["--job-id".into(), id.clone()]);
        }
        if let Some(group) = &job.group {
            argv.extend(["--group".into(), group.clone()]);
        }
        if job.json_serializer {
            argv.extend(["--serializer".into(), "json".into()]);
        }
        if job.instance_method {
            argv.push("--method".into());
        }
        for (flag, value) in [
            ("--timeout", job.timeout),
            ("--result-ttl", job.result_ttl),
            ("--failure-ttl", job.failure_ttl),
        ] {
            if let Some(value) = value {
                argv.extend([flag.to_string(), value.to_string()]);
            }
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ctl(url, &argv)
    }

    /// `Job.fetch` as RQ sees the job: status, origin, func_name, args, kwargs, meta, timeouts,
    /// TTLs, the four dates (ISO strings or null) and the return value.
    #[track_caller]
    pub fn fetch(&self, url: &str, job_id: &str) -> Value {
        self.ctl_json(url, &["fetch", job_id])
    }

    /// RQ's status string for a job ("queued", "failed", "finished", ...).
    #[track_caller]
    pub fn status(&self, url: &str, job_id: &str) -> String {
        self.fetch(url, job_id)["status"]
            .as_str()
            .expect("status is a string")
            .to_string()
    }

    /// The ids in `FailedJobRegistry(queue)`, as RQ lists them (expired entries excluded).
    #[track_caller]
    pub fn failed_ids(&self, url: &str, queue: &str) -> Vec<String> {
        ids_of(&self.ctl_json(url, &["failed", "--queue", queue]))
    }

    /// The ids waiting in `Queue(queue)`, in order.
    #[track_caller]
    pub fn queued_ids(&self, url: &str, queue: &str) -> Vec<String> {
        ids_of(&self.ctl_json(url, &["queue", "--queue", queue]))
    }

    /// RQ's own manual requeue, `FailedJobRegistry(queue).requeue(job_id)`: the reference the
    /// differential test compares rq-retryd against.
    #[track_caller]
    pub fn requeue(&self, url: &str, queue: &str, job_id: &str) {
        let out = self.ctl_json(url, &["requeue", "--queue", queue, job_id]);
        assert_eq!(
            out["status"], "queued",
            "RQ's requeue left {job_id} as {out}"
        );
    }

    /// Runs `rq worker --burst` over `queues` with `tests/python` importable, and asserts it
    /// exited successfully (a job failing is a success for the worker; a crash is not).
    #[track_caller]
    pub fn burst_worker(&self, url: &str, queues: &[&str]) {
        self.burst_worker_with(url, queues, &[]);
    }

    /// [`burst_worker`](Self::burst_worker) with extra `rq worker` options, e.g.
    /// `["--serializer", "rq.serializers.JSONSerializer"]`.
    #[track_caller]
    pub fn burst_worker_with(&self, url: &str, queues: &[&str], options: &[&str]) {
        let mut cmd = Command::new(self.venv.join("bin").join("rq"));
        python_env(&mut cmd);
        cmd.args(["worker", "--burst", "-u", url])
            .args(options)
            .arg("--path")
            .arg(python_dir())
            .args(queues);
        let what = format!(
            "rq worker --burst {} (RQ {})",
            queues.join(" "),
            self.version
        );
        let run = run_with_deadline(&mut cmd, WORKER_DEADLINE, &what);
        assert_eq!(
            run.code, 0,
            "{what} exited with {}:\n{}",
            run.code, run.stderr
        );
    }

    /// Starts a long-running `rq worker` over `queues` (in its own process group, so that
    /// [`DyingWorker::kill9`] takes its work horse with it).
    #[track_caller]
    pub fn worker(&self, url: &str, queues: &[&str]) -> DyingWorker {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(self.venv.join("bin").join("rq"));
        python_env(&mut cmd);
        cmd.args(["worker", "-u", url, "--path"])
            .arg(python_dir())
            .args(queues)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rq worker (RQ {}): {e}", self.version));
        DyingWorker { child: Some(child) }
    }

    /// Seeds `count` failed jobs over `queues` with `tests/python/seed_failed_jobs.py`, which
    /// writes them through RQ's own failure code paths.
    #[track_caller]
    pub fn seed_failed_jobs(&self, url: &str, count: usize, queues: &[&str]) {
        let mut cmd = self.python();
        cmd.arg(python_dir().join("seed_failed_jobs.py"))
            .args(["--url", url, "--count", &count.to_string(), "--queues"])
            .arg(queues.join(","));
        let what = format!("seed_failed_jobs.py --count {count} (RQ {})", self.version);
        let run = run_with_deadline(&mut cmd, COMMAND_DEADLINE, &what);
        assert_eq!(run.code, 0, "{what} failed:\n{}", run.stderr);
    }
}

/// What to enqueue: `JobSpec::new("q", "tasks.ok")` plus optional arguments and TTLs.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub queue: String,
    pub func: String,
    pub args: Value,
    pub kwargs: Value,
    pub meta: Option<Value>,
    pub timeout: Option<i64>,
    pub result_ttl: Option<i64>,
    pub failure_ttl: Option<i64>,
    /// The id of a job this one waits for (`depends_on`): it stays deferred until that one
    /// finishes.
    pub depends_on: Option<String>,
    /// The job's id (RQ makes one up when `None`).
    pub id: Option<String>,
    /// RQ 2.x: the group the job joins (`Group(name).enqueue_many`).
    pub group: Option<String>,
    /// Enqueued with `rq.serializers.JSONSerializer` instead of pickle.
    pub json_serializer: bool,
    /// `func` is `module.Class.method`: enqueue that method of a new instance.
    pub instance_method: bool,
}

impl JobSpec {
    /// A job calling `func` (a dotted name in `tests/python`, e.g. `tasks.fail_first`) on `queue`
    /// with no arguments and RQ's default TTLs.
    pub fn new(queue: &str, func: &str) -> JobSpec {
        JobSpec {
            queue: queue.to_string(),
            func: func.to_string(),
            args: Value::Array(vec![]),
            kwargs: Value::Object(Default::default()),
            meta: None,
            timeout: None,
            result_ttl: None,
            failure_ttl: None,
            depends_on: None,
            id: None,
            group: None,
            json_serializer: false,
            instance_method: false,
        }
    }

    /// Enqueues with `rq.serializers.JSONSerializer` (workers need the same serializer).
    pub fn json_serializer(mut self) -> JobSpec {
        self.json_serializer = true;
        self
    }

    /// `func` names `module.Class.method`: enqueue that method of a new instance.
    pub fn instance_method(mut self) -> JobSpec {
        self.instance_method = true;
        self
    }

    /// Positional arguments, a JSON array.
    pub fn args(mut self, args: Value) -> JobSpec {
        self.args = args;
        self
    }

    /// Keyword arguments, a JSON object.
    pub fn kwargs(mut self, kwargs: Value) -> JobSpec {
        self.kwargs = kwargs;
        self
    }

    /// `job.meta`, a JSON object.
    pub fn meta(mut self, meta: Value) -> JobSpec {
        self.meta = Some(meta);
        self
    }

    /// Waits for job `parent` (RQ's `depends_on`).
    pub fn depends_on(mut self, parent: &str) -> JobSpec {
        self.depends_on = Some(parent.to_string());
        self
    }

    /// The job's id.
    pub fn id(mut self, id: &str) -> JobSpec {
        self.id = Some(id.to_string());
        self
    }

    /// Enqueues the job into group `name` (RQ 2.x).
    pub fn group(mut self, name: &str) -> JobSpec {
        self.group = Some(name.to_string());
        self
    }

    /// Job timeout, result TTL and failure TTL, in seconds.
    pub fn ttls(mut self, timeout: i64, result_ttl: i64, failure_ttl: i64) -> JobSpec {
        self.timeout = Some(timeout);
        self.result_ttl = Some(result_ttl);
        self.failure_ttl = Some(failure_ttl);
        self
    }
}

/// The outcome of one `rq-retryd` invocation.
#[derive(Debug)]
pub struct RetrydRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RetrydRun {
    /// Asserts exit 0 and parses the `--json` summary from stdout; on failure the panic carries
    /// stdout and stderr, which is what you need to see why.
    #[track_caller]
    pub fn summary(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "rq-retryd exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        match serde_json::from_str(self.stdout.trim()) {
            Ok(summary) => summary,
            Err(e) => panic!(
                "rq-retryd --json printed no single JSON object ({e})\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            ),
        }
    }

    /// One counter of the summary (`requeued`, `purged`, ...); panics if it is missing.
    #[track_caller]
    pub fn count(&self, field: &str) -> u64 {
        let summary = self.summary();
        match summary[field].as_u64() {
            Some(n) => n,
            None => panic!(
                "summary has no numeric {field:?}: {summary}\nstderr:\n{}",
                self.stderr
            ),
        }
    }
}

/// Runs `rq-retryd --config CONFIG ARGS...` (e.g. `["once", "--json"]`) with the RQ_RETRYD_*
/// environment cleared, so only the test's config decides which Redis it talks to.
pub fn retryd(config: &Path, args: &[&str]) -> RetrydRun {
    let mut cmd = super::retryd_command();
    cmd.arg("--config").arg(config).args(args);
    let what = format!("rq-retryd --config {} {}", config.display(), args.join(" "));
    let run = run_with_deadline(&mut cmd, COMMAND_DEADLINE, &what);
    RetrydRun {
        code: run.code,
        stdout: run.stdout,
        stderr: run.stderr,
    }
}

/// `rq-retryd --config CONFIG once --json [EXTRA...]`.
pub fn retryd_once(config: &Path, extra: &[&str]) -> RetrydRun {
    let mut args = vec!["once", "--json"];
    args.extend_from_slice(extra);
    retryd(config, &args)
}

/// A complete config for a test server: its URL, all queues, a rate limit that never
/// interferes, info logs on stderr, then `policies` (one or more `[[policy]]` tables) verbatim.
pub fn config_with_policies(url: &str, policies: &str) -> String {
    format!(
        "[redis]\nurl = \"{url}\"\n\n\
         [supervisor]\nqueues = [\"*\"]\nmax_requeues_per_second = 100000\n\n\
         [logging]\nlevel = \"info\"\n\n\
         {policies}\n"
    )
}

/// Writes `toml` to `dir/rq-retryd.toml` and returns the path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("rq-retryd.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

/// `tests/python`, where `tasks.py`, `rqctl.py` and the seed script live.
pub fn python_dir() -> PathBuf {
    repo_root().join("tests").join("python")
}

fn python_env(cmd: &mut Command) {
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONWARNINGS", "ignore")
        .env("PYTHONUNBUFFERED", "1");
}

fn ids_of(listing: &Value) -> Vec<String> {
    listing["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {listing}"))
        .iter()
        .map(|id| id.as_str().expect("id is a string").to_string())
        .collect()
}

/// What a finished child printed, and its exit code (-1 when killed by a signal).
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A `rqctl.py --serve` of one venv: one Python, with RQ imported, for many [`Rq::ctl`] calls.
/// Idle ones wait in [`CTL_SERVERS`]; a call takes one (or starts one), so calls of tests
/// running at once never wait on each other, and puts it back when answered. One that misses
/// its deadline is killed, not put back. They end with the test program (their stdin closes).
struct CtlServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

/// Idle [`CtlServer`]s by venv.
static CTL_SERVERS: std::sync::Mutex<Vec<(PathBuf, CtlServer)>> = std::sync::Mutex::new(Vec::new());

impl CtlServer {
    fn start(rq: &Rq) -> CtlServer {
        let mut cmd = rq.python();
        cmd.arg(python_dir().join("rqctl.py"))
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rqctl.py --serve (RQ {}): {e}", rq.version));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        CtlServer {
            child,
            stdin,
            stdout,
        }
    }

    fn take(rq: &Rq) -> CtlServer {
        let idle = {
            let mut servers = CTL_SERVERS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = servers.iter().position(|(venv, _)| *venv == rq.venv);
            at.map(|i| servers.swap_remove(i).1)
        };
        idle.unwrap_or_else(|| CtlServer::start(rq))
    }

    /// Runs one command (`argv` as rqctl.py's command line) within [`COMMAND_DEADLINE`].
    #[track_caller]
    fn run(rq: &Rq, argv: &[&str], what: &str) -> Finished {
        use std::io::{BufRead, Write};
        let mut server = CtlServer::take(rq);
        let pid = server.child.id();
        let line = serde_json::to_string(argv).expect("argv as JSON") + "\n";
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut answer = String::new();
            let ok = server.stdin.write_all(line.as_bytes()).is_ok()
                && server.stdin.flush().is_ok()
                && server.stdout.read_line(&mut answer).is_ok_and(|n| n > 0);
            let _ = tx.send(ok.then_some((server, answer)));
        });
        let (server, answer) = match rx.recv_timeout(COMMAND_DEADLINE) {
            Ok(Some(done)) => done,
            Ok(None) => panic!("{what}: rqctl.py --serve ended without an answer"),
            Err(_) => {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                panic!("{what} did not finish within {COMMAND_DEADLINE:?}; killed it");
            }
        };
        let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|e| {
            panic!("{what}: rqctl.py --serve answered non-JSON ({e}): {answer}")
        });
        CTL_SERVERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((rq.venv.clone(), server));
        let text = |field: &str| answer[field].as_str().unwrap_or_default().to_string();
        Finished {
            code: answer["code"].as_i64().unwrap_or(-1) as i32,
            stdout: text("stdout"),
            stderr: text("stderr"),
        }
    }
}

/// Runs `cmd` to completion with no stdin, capturing output, and panics if it takes longer
/// than `deadline`. Output is drained on threads so a chatty child cannot block on a full pipe.
fn run_with_deadline(cmd: &mut Command, deadline: Duration, what: &str) -> Finished {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let exited = wait_until(deadline, || child.try_wait().expect("wait for child"));
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within {deadline:?}; killed it");
    };
    Finished {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A real `rq worker` that a test kills with `kill -9`, work horse and all, as when a machine
/// dies under it. Killed on drop too.
pub struct DyingWorker {
    child: Option<std::process::Child>,
}

impl DyingWorker {
    /// `kill -9` of the worker, its process group and its work horse, then reaps it. RQ's work
    /// horse calls `os.setsid()`, so it leaves the worker's group: it is found as the worker's
    /// child and killed by its pid first, or it would outlive the test (a `tasks.hang_first`
    /// horse sleeps 600 s, an orphan looping on a Redis that is gone).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let horses = children_of(child.id());
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-9", "--", &group]).status();
            for horse in horses {
                let _ = Command::new("kill")
                    .args(["-9", &horse.to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pids of `pid`'s children (Linux's `/proc/PID/task/*/children`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

impl Drop for DyingWorker {
    fn drop(&mut self) {
        self.kill9();
    }
}
