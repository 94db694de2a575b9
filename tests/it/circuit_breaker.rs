//! Retry storms (issue 6): when most of a policy's requeues fail again, its circuit breaker
//! holds further requeues back for the cool-down, visibly; other policies go on.

use crate::support;

use redis::Commands;
use support::http::{Daemon, DaemonConfig};
use support::jobs::FailedJob;
use support::RedisServer;

#[test]
fn a_policy_whose_retries_keep_failing_is_held_back_and_others_go_on() {
    let server = RedisServer::start();
    let mut con = server.conn();
    // Each storm job was retried once before: requeueing it again means that retry failed again.
    for i in 0..30 {
        FailedJob::new(&format!("storm-{i}"))
            .queue("storm")
            .attempts(1)
            .write(&mut con);
    }
    for i in 0..5 {
        FailedJob::new(&format!("calm-{i}"))
            .queue("calm")
            .write(&mut con);
    }
    let policies = "[[policy]]\nname = \"storm\"\nqueues = [\"storm\"]\nmax_attempts = 5\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n\
                    circuit_breaker = { window = \"10m\", threshold = 0.5, min_requeues = 5, cool_down = \"1h\" }\n\
                    [[policy]]\nname = \"calm\"\nqueues = [\"calm\"]\nbackoff = { strategy = \"fixed\", delay = \"0s\" }\n";
    let mut config = DaemonConfig::new(&server.url(), policies);
    config.batch_size = 5;
    let daemon = Daemon::start_ready(&config);

    let report = daemon.get("/api/v1/supervisor").expect(200);
    let held = report["last_scan"]["report"]["skipped_by_reason"]["circuit_open"]
        .as_u64()
        .unwrap_or(0);
    let storm_requeued: i64 = con.llen("rq:queue:storm").unwrap();
    assert!(
        (5..=15).contains(&storm_requeued),
        "the breaker opens after the first batches: {storm_requeued} requeued"
    );
    assert_eq!(
        storm_requeued as u64 + held,
        30,
        "every storm job was either requeued or held: {report}"
    );
    let calm_requeued: i64 = con.llen("rq:queue:calm").unwrap();
    assert_eq!(calm_requeued, 5, "another policy is not held back");
    let open = &report["open_circuits"];
    assert_eq!(open[0]["policy"], "storm", "{report}");
    assert!(open[0]["until"].is_string());
    let metrics = daemon.get("/metrics").text();
    assert!(
        metrics.contains("rq_retryd_circuit_open{policy=\"storm\"} 1"),
        "{metrics}"
    );

    // A second scan still holds them back (cool-down 1h) and logs why.
    let second = daemon.scan()["report"].clone();
    assert_eq!(second["requeued"], 0, "{second}");
    assert_eq!(
        second["skipped_by_reason"]["circuit_open"].as_u64(),
        Some(30 - storm_requeued as u64),
        "{second}"
    );
    assert!(daemon.log().contains("circuit breaker opened"));
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}
