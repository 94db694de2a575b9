//! The `q=` text search (issue 22, item 1) against a real `redis-server` and a real
//! `rq-retryd run`: what a search lists is what its groups count, what its dry run selects and
//! exactly what its retry-all or clear touches; odd ids (`clear`, `%2F`, non-ASCII) are found
//! by their id; a bad `q` is refused with 400 `invalid_q` and writes nothing.

use crate::support;

use serde_json::Value;

use support::api::*;
use support::http::{enc, HANDS_OFF};
use support::jobs::snapshot;

const CHARGE: &str = "app.billing.charge";

/// Mixed failures over two queues; the ones a search for `card_declined` must find are
/// `card-1` (exception line), `clear` (exception line, other case) and `desc-4` (description).
fn seed(con: &mut redis::Connection) {
    let declined = "Your card was declined (card_declined)";
    job("card-1", "default", CHARGE, "stripe.error.CardError", 60)
        .exception("stripe.error.CardError", declined)
        .write(con);
    job("card-2", "emails", CHARGE, "stripe.error.CardError", 70)
        .exception("stripe.error.CardError", "insufficient funds")
        .write(con);
    job("clear", "default", "app.tasks.sync", "ValueError", 80)
        .exception("ValueError", "upstream said CARD_DECLINED")
        .write(con);
    job("ok-3", "default", "app.tasks.sync", "ValueError", 90).write(con);
    job("desc-4", "emails", "app.tasks.notify", "KeyError", 100)
        .field("description", b"app.tasks.notify('card_declined', 7)")
        .write(con);
    // Only the exception line is searched, not the lines after it: a search is answered from
    // what the index keeps (see: index::search).
    job("multi-5", "default", "app.tasks.sync", "RuntimeError", 110)
        .exception("RuntimeError", "first line\nsecond line card_declined")
        .write(con);
    // Found by their ids alone (their texts do not hold them).
    job("a%2Fb", "default", "app.tasks.sync", "ValueError", 120)
        .exception("ValueError", "bad input")
        .write(con);
    job("ünï-7", "emails", "app.tasks.sync", "ValueError", 130)
        .exception("ValueError", "bad input")
        .write(con);
}

fn listed(daemon: &support::http::Daemon, query: &str) -> (u64, Vec<String>) {
    let v = daemon
        .get(&format!("/api/v1/jobs/failed?limit=100&{query}"))
        .expect(200);
    (v["total"].as_u64().unwrap(), sorted(ids_in(&v["jobs"])))
}

fn dry_run_ids(v: &Value) -> Vec<String> {
    let ids = v["job_ids"].as_array().unwrap();
    sorted(
        ids.iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect(),
    )
}

#[test]
fn a_search_lists_groups_and_retries_exactly_the_same_jobs() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    seed(&mut con);
    daemon.scan();
    let wanted = strings(&["card-1", "clear", "desc-4"]);

    let (total, ids) = listed(&daemon, "q=card_declined");
    assert_eq!((total, &ids), (3, &wanted));
    assert_eq!(
        listed(&daemon, "q=CARD_DECLINED").1,
        wanted,
        "case-insensitive"
    );
    assert_eq!(
        listed(&daemon, "q=card_declined&queue=default").1,
        strings(&["card-1", "clear"])
    );
    assert_eq!(
        listed(&daemon, &format!("q={}", enc("charge"))).1,
        strings(&["card-1", "card-2"]),
        "the function"
    );
    assert_eq!(
        listed(&daemon, "q=CardError").1,
        strings(&["card-1", "card-2"]),
        "the type"
    );
    assert_eq!(
        listed(&daemon, &format!("q={}", enc("notify('card"))).1,
        strings(&["desc-4"])
    );

    let groups = daemon
        .get("/api/v1/jobs/failed/groups?q=card_declined")
        .expect(200);
    let counted: u64 = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .sum();
    assert_eq!((groups["total"].as_u64(), counted), (Some(3), 3));

    let before = snapshot(&mut con);
    let dry = daemon
        .post("/api/v1/jobs/failed/retry-all?q=card_declined&dry_run=true")
        .expect(200);
    assert_eq!(dry["matched_count"], 3);
    assert_eq!(dry_run_ids(&dry), wanted);
    assert_eq!(snapshot(&mut con), before, "a dry run writes nothing");

    let done = daemon
        .post("/api/v1/jobs/failed/retry-all?q=card_declined")
        .expect(200);
    assert_eq!(
        (
            done["matched_count"].as_u64(),
            done["requeued_count"].as_u64()
        ),
        (Some(3), Some(3))
    );
    for id in &wanted {
        let queue = if id == "desc-4" { "emails" } else { "default" };
        assert!(!in_failed(&mut con, queue, id), "{id} left its registry");
        assert!(queue_ids(&mut con, queue).contains(id), "{id} requeued");
    }
    for (queue, id) in [
        ("emails", "card-2"),
        ("default", "ok-3"),
        ("default", "multi-5"),
        ("default", "a%2Fb"),
        ("emails", "ünï-7"),
    ] {
        assert!(in_failed(&mut con, queue, id), "{id} untouched");
        assert!(
            !queue_ids(&mut con, queue).contains(&id.to_string()),
            "{id} not queued"
        );
    }
    assert_eq!(listed(&daemon, "q=card_declined"), (0, vec![]));
}

#[test]
fn odd_ids_are_found_by_their_id_and_cleared_exactly() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    seed(&mut con);
    daemon.scan();
    assert_eq!(listed(&daemon, "q=clear").1, strings(&["clear"]));
    assert_eq!(
        listed(&daemon, &format!("q={}", enc("ÜNÏ"))).1,
        strings(&["ünï-7"])
    );
    let slash = format!("q={}", enc("%2f"));
    assert_eq!(listed(&daemon, &slash).1, strings(&["a%2Fb"]));

    let dry = daemon
        .delete(&format!("/api/v1/jobs/failed/clear?dry_run=true&{slash}"))
        .expect(200);
    assert_eq!(dry_run_ids(&dry), strings(&["a%2Fb"]));
    let done = daemon
        .delete(&format!("/api/v1/jobs/failed/clear?{slash}"))
        .expect(200);
    assert_eq!(done["deleted_count"], 1);
    assert!(!exists(&mut con, "rq:job:a%2Fb"));
    assert!(
        exists(&mut con, "rq:job:clear"),
        "the job named clear stays"
    );
    assert_eq!(listed(&daemon, "").0, 7);
}

#[test]
fn a_bad_search_is_refused_everywhere_and_writes_nothing() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    seed(&mut con);
    daemon.scan();
    let before = snapshot(&mut con);
    let long = "x".repeat(201);
    for q in ["", "%20%20", "a%09b", "line%0Abreak", long.as_str()] {
        for (method, path) in [
            ("GET", "/api/v1/jobs/failed"),
            ("GET", "/api/v1/jobs/failed/groups"),
            ("POST", "/api/v1/jobs/failed/retry-all"),
            ("DELETE", "/api/v1/jobs/failed/clear"),
        ] {
            daemon
                .call(method, &format!("{path}?q={q}"))
                .expect_error(400, "invalid_q");
        }
    }
    let longest = "x".repeat(200);
    assert_eq!(listed(&daemon, &format!("q={longest}")).0, 0);
    daemon
        .get("/api/v1/jobs/failed?query=card")
        .expect_error(400, "unknown_parameter");
    assert_eq!(snapshot(&mut con), before);
}

/// Whole tracebacks are searched from Redis a bounded stretch at a time: the pages of a
/// traceback search together find every job whose failure text holds the text (here one
/// whose mention is on a line after the exception line, which `q` on the listing does not
/// see), and say how far through the selection they are.
#[test]
fn a_traceback_search_pages_through_the_selection_and_says_how_far_it_is() {
    let (redis, daemon) = start(HANDS_OFF);
    let mut con = redis.conn();
    seed(&mut con);
    daemon.scan();
    let before = snapshot(&mut con);
    let mut found = Vec::new();
    let mut from = 0;
    let mut stretches = 0;
    loop {
        let v = daemon
            .get(&format!(
                "/api/v1/jobs/traceback-search?text=CARD_declined&budget=3&from={from}"
            ))
            .expect(200);
        stretches += 1;
        assert_eq!(v["of"], 8, "{v}");
        assert!(v["searched"].as_u64().unwrap() <= 3, "{v}");
        assert_eq!(
            v["searched_through"],
            from + v["searched"].as_u64().unwrap()
        );
        found.extend(ids_in(&v["jobs"]));
        match v["next"].as_u64() {
            Some(next) => from = next,
            None => {
                assert_eq!(v["searched_through"], 8, "{v}");
                break;
            }
        }
    }
    assert_eq!(stretches, 3, "8 jobs, 3 a stretch");
    assert_eq!(sorted(found), strings(&["card-1", "clear", "multi-5"]));
    let v = daemon
        .get("/api/v1/jobs/traceback-search?text=second%20line&queue=default")
        .expect(200);
    assert_eq!(
        (v["of"].as_u64(), ids_in(&v["jobs"])),
        (Some(5), strings(&["multi-5"]))
    );
    assert_eq!(v["jobs"][0]["line"], "second line card_declined");
    // The listing's q narrows what is read: only the CardErrors' texts.
    let v = daemon
        .get("/api/v1/jobs/traceback-search?text=declined&q=carderror")
        .expect(200);
    assert_eq!(
        (v["of"].as_u64(), sorted(ids_in(&v["jobs"]))),
        (Some(2), strings(&["card-1"]))
    );
    daemon
        .get("/api/v1/jobs/traceback-search?queue=default")
        .expect_error(400, "invalid_query");
    daemon
        .get("/api/v1/jobs/traceback-search?text=x&budget=0")
        .expect_error(400, "invalid_budget");
    daemon
        .get("/api/v1/jobs/traceback-search?text=%09")
        .expect_error(400, "invalid_text");
    daemon
        .get("/api/v1/jobs/traceback-search?text=x&q=%20")
        .expect_error(400, "invalid_q");
    assert_eq!(snapshot(&mut con), before, "a search writes nothing");
}
