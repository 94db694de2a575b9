//! The Debian package (issue 14): installed with dpkg on this machine, checked where the unit
//! expects each file, then removed and purged.
//!
//! The package test needs the .deb in `$RQ_RETRYD_DEB` (scripts/test.sh builds it with
//! scripts/package.sh and sets it) and root (dpkg). Without either it fails and says so: it
//! never passes without installing. It refuses to run where rq-retryd is already installed, and
//! purges what it installed even when a check fails, so the machine is left as it was.

use crate::support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{binary, repo_root};

const UNIT: &str = "/usr/lib/systemd/system/rq-retryd.service";
const TEMPLATE: &str = "/usr/lib/systemd/system/rq-retryd@.service";
const CONFIG: &str = "/etc/rq-retryd/config.toml";
const BINARY: &str = "/usr/bin/rq-retryd";
const MAN_PAGE: &str = "/usr/share/man/man1/rq-retryd.1.gz";
const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/rq-retryd";
const ZSH_COMPLETION: &str = "/usr/share/zsh/vendor-completions/_rq-retryd";
const FISH_COMPLETION: &str = "/usr/share/fish/vendor_completions.d/rq-retryd.fish";
const DOC: &str = "/usr/share/doc/rq-retryd";

/// Runs `cmd`; panics with its output unless it exits 0.
#[track_caller]
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dpkg's status of the package, e.g. "install ok installed"; empty when dpkg never saw it.
fn package_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "rq-retryd"])
        .output()
        .expect("dpkg-query (this test needs a Debian system)");
    stdout(&out)
}

/// The group name of a gid, from /etc/group.
fn group_name(gid: u32) -> String {
    let out = run(Command::new("getent").args(["group", &gid.to_string()]));
    stdout(&out)
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `man`'s output as plain text: grotty writes bold as `X\bX` and underline as `_\bX`.
fn without_overstrikes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the system user `rq-retryd` exists.
fn service_user_exists() -> bool {
    Command::new("getent")
        .args(["passwd", "rq-retryd"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Purges the package when dropped, so a failed check still leaves the machine as it was; and
/// deletes the `rq-retryd` user when the install created it (a purge keeps system users, as
/// Debian does, but this machine had none before the test).
struct Installed {
    user_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let status = package_status();
        if !status.is_empty() && !status.contains("not-installed") {
            let _ = Command::new("dpkg").args(["--purge", "rq-retryd"]).status();
        }
        if !self.user_existed && service_user_exists() {
            let _ = Command::new("userdel").arg("rq-retryd").status();
        }
        let group_left = Command::new("getent")
            .args(["group", "rq-retryd"])
            .output()
            .is_ok_and(|out| out.status.success());
        if !self.user_existed && group_left {
            let _ = Command::new("groupdel").arg("rq-retryd").status();
        }
    }
}

/// The installed daemon, running as the service user, with its log in a file; killed when
/// dropped, so a failed check does not leave it behind.
struct Running {
    child: std::process::Child,
    log: PathBuf,
}

impl Running {
    /// Stops it with SIGTERM, as systemd would, and returns what it logged.
    fn stop(&mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The installed daemon runs and does its job: `/usr/bin/rq-retryd`, as the service user, on
/// the shipped config, with only the Redis URL and the listen address pointed at this test's
/// own through the environment overrides (`RQ_RETRYD_REDIS_URL`, `RQ_RETRYD_HTTP_LISTEN`, which
/// an operator can also set in a drop-in's `Environment=`). It retries a job that failed an hour
/// ago by the shipped policy and answers on its API. `chroot`: run it inside that root (same
/// network, so it reaches the test's Redis) instead of on this machine.
fn installed_daemon_retries_a_failed_job(chroot: Option<&Path>) {
    let redis = support::RedisServer::start();
    let mut con = redis.conn();
    support::jobs::FailedJob::new("pkg-job-1")
        .failed_secs_ago(3600)
        .write(&mut con);
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("rq-retryd.log");
    let mut command = match chroot {
        Some(root) => {
            let mut c = Command::new("chroot");
            c.arg(root).arg("setpriv");
            c
        }
        None => Command::new("setpriv"),
    };
    let child = command
        .args([
            "--reuid=rq-retryd",
            "--regid=rq-retryd",
            "--init-groups",
            BINARY,
            "--config",
            CONFIG,
            "run",
        ])
        .env("RQ_RETRYD_REDIS_URL", redis.url())
        .env("RQ_RETRYD_HTTP_LISTEN", listen.to_string())
        .env_remove("RQ_RETRYD_AUTH_TOKEN")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("setpriv (util-linux)");
    let mut daemon = Running { child, log };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let queued = loop {
        let queued: Vec<String> = redis::cmd("LRANGE")
            .arg("rq:queue:default")
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .unwrap();
        if !queued.is_empty() || std::time::Instant::now() > deadline {
            break queued;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        queued,
        ["pkg-job-1"],
        "the installed daemon did not retry the job: {}",
        daemon.stop()
    );
    let policy: Option<String> = redis::cmd("HGET")
        .arg("rq:job:pkg-job-1")
        .arg("retryd_policy")
        .query(&mut con)
        .unwrap();
    assert_eq!(policy.as_deref(), Some("default-retry"));
    let health = support::http::request(listen, "GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200, "{}", daemon.stop());
    let policies = support::http::request(listen, "GET", "/api/v1/policies", &[], b"").json();
    assert_eq!(
        policies["policies"][0]["name"], "default-retry",
        "{policies}"
    );
    let log = daemon.stop();
    assert!(
        log.contains("rq-retryd stopped") && !log.contains("ERROR") && !log.contains("WARN"),
        "the installed daemon logged a problem or did not stop cleanly:\n{log}"
    );
}

/// Runs a `systemd-analyze verify` command: it must succeed without a word about rq-retryd's
/// units (it also warns about units of the host that the test does not own).
#[track_caller]
fn assert_verifies(verify: &mut Command, what: &str) {
    let out = verify
        .output()
        .expect("systemd-analyze (scripts/test.sh installs systemd)");
    let noise = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !noise.contains("rq-retryd"),
        "systemd-analyze verify {what}: {noise}"
    );
}

/// The .deb under test, or a failure that says how to get one.
fn deb_under_test() -> PathBuf {
    let deb = std::env::var_os("RQ_RETRYD_DEB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "RQ_RETRYD_DEB is not set: this test installs the Debian package. Run \
             ./scripts/test.sh (it builds the package and sets it), or \
             RQ_RETRYD_DEB=$(./scripts/package.sh | tail -n 1) cargo test --test it package::"
            )
        });
    assert!(
        deb.is_file(),
        "RQ_RETRYD_DEB={} is not a file",
        deb.display()
    );
    deb
}

/// See issue 14: `dpkg -i` puts every file where the unit and the docs say, the service user
/// can read its config, the unit verifies, nothing is started, the page and the completions
/// load; a reinstall keeps an edited config; `dpkg -r` keeps the config and `--purge` removes it.
#[test]
fn the_debian_package_installs_where_the_unit_expects_and_removes_cleanly() {
    // It installs /etc/rq-retryd/config.toml, which any other test's binary run without a
    // config would read: no other test runs meanwhile.
    let _alone = support::machine::exclusive();
    let deb = deb_under_test();
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        stdout(&uid).trim(),
        "0",
        "installing the package needs root (CI runs as root)"
    );
    assert!(
        package_status().is_empty() || package_status().contains("not-installed"),
        "rq-retryd is already known to dpkg ({}); this test will not touch an existing install",
        package_status()
    );
    for path in [BINARY, "/etc/rq-retryd"] {
        assert!(
            !Path::new(path).exists(),
            "{path} exists; this test will not overwrite an existing install"
        );
    }

    let info = stdout(&run(Command::new("dpkg-deb").arg("--info").arg(&deb)));
    assert!(info.contains("Package: rq-retryd"), "{info}");
    assert!(
        info.contains(&format!("Version: {}-", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );

    // Exactly these files, nothing stray (e.g. a /usr/local path or a missing completion).
    let listing = stdout(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
    let mut files: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.'))
        .collect();
    files.sort_unstable();
    let mut expected = vec![
        BINARY,
        CONFIG,
        UNIT,
        TEMPLATE,
        "/usr/lib/sysusers.d/rq-retryd.conf",
        MAN_PAGE,
        BASH_COMPLETION,
        ZSH_COMPLETION,
        FISH_COMPLETION,
        "/usr/share/doc/rq-retryd/README.md",
        "/usr/share/doc/rq-retryd/deploy.md",
        "/usr/share/doc/rq-retryd/LICENSE",
        "/usr/share/doc/rq-retryd/copyright",
        "/usr/share/doc/rq-retryd/examples/example.toml",
        "/usr/share/doc/rq-retryd/examples/prometheus-alerts.yml",
        "/usr/share/doc/rq-retryd/examples/grafana-dashboard.json",
    ];
    expected.sort_unstable();
    assert_eq!(files, expected, "the package's files:\n{listing}");

    let _purge_at_the_end = Installed {
        user_existed: service_user_exists(),
    };
    let install = run(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(package_status(), "install ok installed");
    let install_log = format!(
        "{}{}",
        stdout(&install),
        String::from_utf8_lossy(&install.stderr)
    );

    // The files, where the unit, the man page and Debian's shells look for them.
    let mode = |path: &str| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{path}: {e}\ndpkg -i said:\n{install_log}"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(BINARY), 0o755);
    for path in [
        UNIT,
        TEMPLATE,
        "/usr/lib/sysusers.d/rq-retryd.conf",
        MAN_PAGE,
        BASH_COMPLETION,
        ZSH_COMPLETION,
        FISH_COMPLETION,
        &format!("{DOC}/README.md"),
        &format!("{DOC}/LICENSE"),
        &format!("{DOC}/copyright"),
        &format!("{DOC}/examples/example.toml"),
    ] {
        assert_eq!(mode(path), 0o644, "{path}");
        assert!(
            std::fs::metadata(path).unwrap().len() > 0,
            "{path} is empty"
        );
    }
    let license = std::fs::read_to_string(format!("{DOC}/LICENSE")).unwrap();
    assert!(license.starts_with("MIT License"), "{license}");

    // The config: a conffile, root:rq-retryd 0640 in a root:rq-retryd 0750 directory.
    let conffiles = stdout(&run(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${Conffiles}",
        "rq-retryd",
    ])));
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    for (path, want) in [(CONFIG, 0o640), ("/etc/rq-retryd", 0o750)] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, want, "{path}");
        assert_eq!(meta.uid(), 0, "{path} is root's");
        assert_eq!(group_name(meta.gid()), "rq-retryd", "{path}'s group");
    }

    // The unit runs the installed binary on the installed config, and verifies.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == format!("ExecStart={BINARY} --config {CONFIG} run")),
        "{unit}"
    );
    let template = std::fs::read_to_string(TEMPLATE).unwrap();
    assert!(
        template
            .lines()
            .any(|l| l == format!("ExecStart={BINARY} --config /etc/rq-retryd/%i.toml run")),
        "{template}"
    );
    // Every program the units run is this package's or one it depends on: a minimal Debian 12
    // (debootstrap --variant=minbase, or the debian:12 image) has no procps, so no /bin/kill
    // for ExecReload unless the package asks for it.
    let depends = stdout(&run(Command::new("dpkg-query").args([
        "-W",
        "-f=${Depends}",
        "rq-retryd",
    ])));
    let depended: Vec<&str> = depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    for text in [&unit, &template] {
        for line in text.lines().filter(|l| l.starts_with("Exec")) {
            let Some(program) = line.split_once('=').and_then(|(_, cmd)| {
                cmd.trim_start_matches(['-', '@', '+', '!'])
                    .split(' ')
                    .next()
            }) else {
                continue;
            };
            let owner = stdout(&run(Command::new("dpkg").args(["-S", program])));
            let owner = owner.split(':').next().unwrap_or_default().trim();
            assert!(
                owner == "rq-retryd" || depended.contains(&owner),
                "{line}: {program} is in package {owner}, which rq-retryd does not depend on \
                 (Depends: {depends})"
            );
        }
    }
    assert_verifies(Command::new("systemd-analyze").args(["verify", UNIT]), UNIT);
    // An instance of the template: verify reads it from a path named like the instance.
    let instance_dir = tempfile::tempdir().unwrap();
    let instance = instance_dir.path().join("rq-retryd@billing.service");
    std::os::unix::fs::symlink(TEMPLATE, &instance).unwrap();
    assert_verifies(
        Command::new("systemd-analyze").arg("verify").arg(&instance),
        "rq-retryd@billing.service",
    );

    // Installed, not enabled or started: the config needs editing first.
    for wants in [
        "/etc/systemd/system/multi-user.target.wants/rq-retryd.service",
        "/etc/systemd/system/multi-user.target.wants/rq-retryd@.service",
    ] {
        assert!(!Path::new(wants).exists(), "{wants}: enabled on install");
    }
    // Only processes of this system count: the daemon that
    // a_fresh_debian_12_installs_the_package_and_runs_it starts in its chroot, which may run
    // at the same time in this test process, has the same command line.
    let running = Command::new("pgrep")
        .args(["-f", "^/usr/bin/rq-retryd"])
        .output()
        .unwrap();
    let on_this_system: Vec<&str> = std::str::from_utf8(&running.stdout)
        .unwrap()
        .lines()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|root| root == Path::new("/"))
        })
        .collect();
    assert!(
        on_this_system.is_empty(),
        "the package started rq-retryd: {}",
        stdout(&running)
    );
    let postinst = std::fs::read_to_string("/var/lib/dpkg/info/rq-retryd.postinst").unwrap();
    assert!(
        postinst.contains("deb-systemd-invoke try-restart rq-retryd.service")
            && postinst.contains("systemctl try-restart 'rq-retryd@*.service'")
            && !postinst.contains("deb-systemd-invoke start"),
        "an upgrade restarts the running units and an install starts nothing:\n{postinst}"
    );

    // The binary is the one this checkout built, and the config it ships is valid and safe.
    let version = stdout(&run(Command::new(BINARY).arg("--version")));
    let ours = stdout(&run(Command::new(binary()).arg("--version")));
    assert_eq!(version, ours, "the package holds another build");
    let checked = stdout(&run(Command::new(BINARY)
        .args(["--config", CONFIG, "check-config"])
        .env_remove("RQ_RETRYD_REDIS_URL")
        .env_remove("RQ_RETRYD_HTTP_LISTEN")
        .env_remove("RQ_RETRYD_AUTH_TOKEN")));
    assert!(
        checked.starts_with(&format!("config: {CONFIG} (valid)\n")),
        "{checked}"
    );
    // The service user reads it through its group; other users cannot.
    let as_user = |user: &str, group: &str| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={user}"),
                &format!("--regid={group}"),
                "--init-groups",
                BINARY,
                "--config",
                CONFIG,
                "check-config",
            ])
            .output()
            .expect("setpriv (util-linux)")
    };
    let service = as_user("rq-retryd", "rq-retryd");
    assert!(
        service.status.success(),
        "the rq-retryd user cannot read {CONFIG}: {}",
        String::from_utf8_lossy(&service.stderr)
    );
    let other = as_user("nobody", "nogroup");
    let refused = String::from_utf8_lossy(&other.stderr);
    assert!(
        other.status.code() == Some(2) && refused.contains("Permission denied"),
        "{CONFIG} must not be readable by other users: {refused}{}",
        stdout(&other)
    );

    // It runs and does its job.
    installed_daemon_retries_a_failed_job(None);

    // The man page renders without a groff warning.
    let man = Command::new("man")
        .args(["--warnings", "-l", MAN_PAGE])
        .env("MANWIDTH", "80")
        .env("PAGER", "cat")
        .output()
        .expect("man (scripts/test.sh installs man-db)");
    let page = without_overstrikes(&stdout(&man));
    let warnings = String::from_utf8_lossy(&man.stderr);
    assert!(
        man.status.success() && warnings.trim().is_empty(),
        "man -l: {warnings}"
    );
    for heading in ["NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "FILES"] {
        assert!(page.contains(heading), "no {heading} in:\n{page}");
    }
    assert!(
        page.contains("rq-retryd once [--dry-run] [--json]"),
        "{page}"
    );

    // bash loads the completion and completes a subcommand with it.
    let completed = stdout(&run(Command::new("bash").arg("-c").arg(format!(
        "source {BASH_COMPLETION} && fn=$(complete -p rq-retryd | grep -o -- '-F [^ ]*' | cut -c4-) \
         && COMP_WORDS=(rq-retryd check) COMP_CWORD=1 && \"$fn\" rq-retryd check rq-retryd \
         && printf '%s\\n' \"${{COMPREPLY[@]}}\""
    ))));
    assert_eq!(
        completed.trim(),
        "check-config",
        "bash completion of 'check'"
    );
    let zsh = std::fs::read_to_string(ZSH_COMPLETION).unwrap();
    assert!(zsh.starts_with("#compdef rq-retryd"), "{zsh}");
    let fish = std::fs::read_to_string(FISH_COMPLETION).unwrap();
    assert!(fish.contains("complete -c rq-retryd"), "{fish}");

    // A reinstall (dpkg's upgrade path) keeps an edited config, with its owner and mode.
    let edited = format!(
        "{}# edited by the administrator\n",
        std::fs::read_to_string(CONFIG).unwrap()
    );
    std::fs::write(CONFIG, &edited).unwrap();
    run(Command::new("dpkg")
        .args(["-i", "--force-confold"])
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    let meta = std::fs::metadata(CONFIG).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(group_name(meta.gid()), "rq-retryd");

    // dpkg -r removes the program and keeps the config; --purge removes the config too.
    run(Command::new("dpkg").args(["-r", "rq-retryd"]));
    for gone in [BINARY, UNIT, TEMPLATE, MAN_PAGE, BASH_COMPLETION] {
        assert!(!Path::new(gone).exists(), "{gone} is left after dpkg -r");
    }
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        edited,
        "dpkg -r keeps the conffile"
    );
    assert_eq!(package_status(), "deinstall ok config-files");
    run(Command::new("dpkg").args(["--purge", "rq-retryd"]));
    for gone in [CONFIG, "/etc/rq-retryd", DOC] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is left after dpkg --purge"
        );
    }
    let overrides = stdout(
        &Command::new("dpkg-statoverride")
            .arg("--list")
            .output()
            .unwrap(),
    );
    assert!(
        !overrides.contains("/etc/rq-retryd"),
        "statoverrides left: {overrides}"
    );
    let status = package_status();
    assert!(
        status.is_empty() || status.contains("not-installed"),
        "after --purge dpkg says {status}"
    );
}

/// The template unit is the plain one for an instance: the same lines but for the description,
/// the config path and the log directory (so its hardening cannot fall behind).
/// `/proc` mounted inside a chroot (apt's maintainer scripts need it), unmounted when dropped,
/// before the chroot's directory is removed.
struct ProcMount(PathBuf);

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The bare Debian 12 as a tarball: `scripts/debian-root.sh` makes it once with
/// `debootstrap --variant=minbase bookworm` (about 90 s; Debian's mirror) and reuses it while it
/// is fresh; scripts/test.sh runs it in the background before `cargo test`, and without a
/// tarball this builds one (the script's lock makes a concurrent caller wait for it).
fn bare_debian_12_tarball() -> PathBuf {
    let out = run(&mut Command::new(
        repo_root().join("scripts/debian-root.sh"),
    ));
    let text = stdout(&out);
    let tarball = PathBuf::from(text.lines().last().unwrap_or_default());
    assert!(
        tarball.is_file(),
        "scripts/debian-root.sh named no tarball:\n{text}"
    );
    tarball
}

/// See issue 14, "a fresh Debian 12 installs and runs": a minimal Debian 12 (debootstrap's
/// minbase, extracted fresh for this run from the tarball of `bare_debian_12_tarball`, so
/// nothing a previous run did is in it) installs the package with
/// `apt-get install ./rq-retryd_*.deb`, which must fetch everything it depends on; in it the
/// units verify, the shipped config checks and the daemon retries a job on this test's Redis.
/// This machine has long had what the package needs, so only a bare system shows a missing
/// dependency (it found /bin/kill: procps is not in minbase).
#[test]
fn a_fresh_debian_12_installs_the_package_and_runs_it() {
    let deb = deb_under_test();
    let uid = stdout(&run(Command::new("id").arg("-u")));
    assert_eq!(uid.trim(), "0", "debootstrap and chroot need root");
    let tarball = bare_debian_12_tarball();
    let target = repo_root().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("debian12-")
        .tempdir_in(&target)
        .unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&root));
    run(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(root.join("proc")));
    let _proc = ProcMount(root.join("proc"));
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).unwrap();
    std::fs::copy(&deb, root.join("tmp/rq-retryd.deb")).unwrap();
    let in_root = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg(&root)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env_remove("RQ_RETRYD_REDIS_URL")
            .env_remove("RQ_RETRYD_HTTP_LISTEN")
            .env_remove("RQ_RETRYD_AUTH_TOKEN");
        c
    };
    for program in ["/usr/bin/systemd-analyze", "/bin/kill"] {
        assert!(
            !root.join(program.trim_start_matches('/')).exists(),
            "the bare system already has {program}: this test would not show it missing"
        );
    }
    run(&mut in_root(&["apt-get", "update", "-q"]));
    run(&mut in_root(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "/tmp/rq-retryd.deb",
    ]));
    let status = stdout(&run(&mut in_root(&[
        "dpkg-query",
        "-W",
        "-f=${Status}",
        "rq-retryd",
    ])));
    assert_eq!(status, "install ok installed");

    let version = stdout(&run(&mut in_root(&[BINARY, "--version"])));
    let ours = stdout(&run(Command::new(binary()).arg("--version")));
    assert_eq!(version, ours, "the package holds another build");
    let checked = stdout(&run(&mut in_root(&[
        BINARY,
        "--config",
        CONFIG,
        "check-config",
    ])));
    assert!(
        checked.starts_with(&format!("config: {CONFIG} (valid)\n")),
        "{checked}"
    );
    // The template is verified as an instance, through a link named like one.
    std::os::unix::fs::symlink(TEMPLATE, root.join("tmp/rq-retryd@billing.service")).unwrap();
    for unit in [UNIT, "/tmp/rq-retryd@billing.service"] {
        assert_verifies(
            &mut in_root(&["systemd-analyze", "verify", unit]),
            &format!("{unit} on a fresh Debian 12"),
        );
    }
    installed_daemon_retries_a_failed_job(Some(&root));
}

#[test]
fn the_template_unit_differs_from_the_plain_unit_only_in_the_instance_lines() {
    let read = |name: &str| {
        std::fs::read_to_string(repo_root().join("deploy/systemd").join(name))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let plain = read("rq-retryd.service");
    let template = read("rq-retryd@.service");
    let expected: Vec<String> = plain
        .iter()
        .map(|line| match line.as_str() {
            l if l.starts_with("Description=rq-retryd,") => {
                l.replacen("Description=rq-retryd,", "Description=rq-retryd %i,", 1)
            }
            l if l.starts_with("ExecStart=") => {
                l.replace("/etc/rq-retryd/config.toml", "/etc/rq-retryd/%i.toml")
            }
            "LogsDirectory=rq-retryd" => "LogsDirectory=rq-retryd-%i".to_string(),
            l => l.to_string(),
        })
        .collect();
    assert_eq!(template, expected);
    assert_ne!(template, plain);
}

/// The config the package installs is safe before anyone edits it: valid, loopback only, and no
/// policy deletes anything.
#[test]
fn the_packaged_config_is_valid_listens_on_loopback_and_purges_nothing() {
    let path = repo_root().join("deploy/debian/config.toml");
    let out = run(Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env_remove("RQ_RETRYD_REDIS_URL")
        .env_remove("RQ_RETRYD_HTTP_LISTEN")
        .env_remove("RQ_RETRYD_AUTH_TOKEN"));
    let text = stdout(&out);
    assert!(text.contains("(valid)"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["http.listen", "127.0.0.1:9732"]),
        "{text}"
    );
    let policies = text.split("policies").nth(1).unwrap_or_default();
    assert!(policies.contains("default-retry"), "{text}");
    assert!(
        !policies.contains("purge"),
        "a packaged policy purges:\n{text}"
    );
}
