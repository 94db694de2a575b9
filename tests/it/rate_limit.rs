//! The global ceiling `max_requeues_per_second` (issue 6): after the first second's burst, the
//! requeue rate holds within 10% of the limit. Measured from the `retryd_requeued_at` stamps that
//! the requeue script writes, so process start-up does not count.

use crate::support;

use std::process::Command;

use redis::Commands;
use support::jobs::FailedJob;
use support::{binary, RedisServer};

#[test]
fn max_requeues_per_second_holds_within_ten_percent() {
    let _alone = support::one_heavy_test_at_a_time();
    let server = RedisServer::start();
    let mut con = server.conn();
    let (total, rate) = (450usize, 150usize);
    for i in 0..total {
        FailedJob::new(&format!("r{i}")).write(&mut con);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"{}\"\n[supervisor]\nbatch_size = 50\nmax_requeues_per_second = {rate}\n[[policy]]\nname = \"now\"\nbackoff = {{ strategy = \"fixed\", delay = \"0s\" }}\n",
            server.url()
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("once")
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["requeued"], total);

    let mut stamps: Vec<chrono::NaiveDateTime> = (0..total)
        .map(|i| {
            let at: String = con
                .hget(format!("rq:job:r{i}"), "retryd_requeued_at")
                .unwrap();
            chrono::NaiveDateTime::parse_from_str(&at, "%Y-%m-%dT%H:%M:%S%.fZ").unwrap()
        })
        .collect();
    stamps.sort();
    // The bucket starts full: the first `rate` requeues go at once. The rest must take
    // (total - rate) / rate seconds after that burst.
    let (burst_done, last) = (stamps[rate - 1], stamps[total - 1]);
    let seconds = (last - burst_done).num_milliseconds() as f64 / 1000.0;
    let measured = (total - rate) as f64 / seconds;
    eprintln!("max_requeues_per_second = {rate}: measured {measured:.1}/s over {seconds:.2}s after the burst");
    assert!(
        (rate as f64 * 0.9..=rate as f64 * 1.1).contains(&measured),
        "measured {measured:.1} requeues/s against a limit of {rate} (over {seconds:.2}s)"
    );
}
