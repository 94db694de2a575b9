//! Reacting to new failures without waiting for `scan_interval`: with Redis keyspace
//! notifications enabled (`notify-keyspace-events` with `z` and `K` or `E`), every ZADD to a
//! `rq:failed:<q>` registry names its queue, and the scan loop looks at just that queue. Every
//! removal from one (ZREM by RQ's requeue and delete, ZREMRANGEBYSCORE by its cleanup; DEL and
//! expiry with `g` and `x`) names its queue too, and the index drops what left it within a
//! second (`Supervisor::reconcile`; issue 21, item 4). Without notifications nothing arrives:
//! the regular scans find new failures, and a size check every second what left.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::index::events::IndexEvent;
use crate::rq::Keys;
use crate::state::DaemonState;

/// The keyevent channels of removals from sorted sets that are subscribed to (the keyspace
/// pattern on the failed registries carries every event of theirs already).
const REMOVAL_EVENTS: [&str; 3] = ["zrem", "zremrangebyscore", "zremrangebyrank"];

/// Keyspace payloads that mean members may have left a failed registry.
const REMOVALS: [&str; 9] = [
    "zrem",
    "zremrangebyscore",
    "zremrangebyrank",
    "zremrangebylex",
    "zpopmin",
    "zpopmax",
    "del",
    "expired",
    "evicted",
];

/// The channels to subscribe to for a database and key prefix: keyspace events on every failed
/// registry (payload `zadd`, or a removal) and keyevent `zadd` events (payload = the key).
pub fn patterns(db: i64, prefix: &str) -> [String; 2] {
    let keys = Keys::new(prefix);
    [
        format!("__keyspace@{db}__:{}", keys.failed_pattern()),
        format!("__keyevent@{db}__:zadd"),
    ]
}

/// The keyevent channels of removals from sorted sets (payload = the key), subscribed to as
/// well; a Redis user that may not subscribe to them still gets the others.
pub fn removal_channels(db: i64) -> Vec<String> {
    REMOVAL_EVENTS
        .iter()
        .map(|e| format!("__keyevent@{db}__:{e}"))
        .collect()
}

/// What a notification says about one of our failed registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notified {
    /// A failure was added to the queue's registry.
    Added(String),
    /// Members may have left the queue's registry.
    Removed(String),
}

/// What a notification on `channel` with `payload` says about our failed registries, if
/// anything.
pub fn classify(channel: &str, payload: &[u8], db: i64, prefix: &str) -> Option<Notified> {
    let keys = Keys::new(prefix);
    let (event, key) = if let Some(key) = channel.strip_prefix(&format!("__keyspace@{db}__:")) {
        (std::str::from_utf8(payload).ok()?, key)
    } else {
        let event = channel.strip_prefix(&format!("__keyevent@{db}__:"))?;
        (event, std::str::from_utf8(payload).ok()?)
    };
    let queue = keys.queue_name_from_failed_key(key)?.to_string();
    if event == "zadd" {
        Some(Notified::Added(queue))
    } else if REMOVALS.contains(&event) {
        Some(Notified::Removed(queue))
    } else {
        None
    }
}

/// The queue a notification is about, if it is an addition to one of our failed registries.
pub fn queue_of(channel: &str, payload: &[u8], db: i64, prefix: &str) -> Option<String> {
    match classify(channel, payload, db, prefix)? {
        Notified::Added(queue) => Some(queue),
        Notified::Removed(_) => None,
    }
}

/// The queues notified and not yet taken by a pass. A name goes on the channel only when it
/// enters the set, so the channel holds each queue at most once. Before, every failure's two
/// messages (keyspace and keyevent) were sent and dropped when the channel was full: a storm on
/// one queue filled it within a fraction of a second, and a failure on another queue lost its
/// only notification until the next full scan (issue 24, items 2 and 4).
#[derive(Debug, Default)]
pub struct Pending(std::sync::Mutex<std::collections::HashSet<String>>);

impl Pending {
    /// Marks `queue` pending; returns whether it was not pending already.
    pub fn enter(&self, queue: &str) -> bool {
        let mut pending = self.0.lock().expect("pending lock");
        !pending.contains(queue) && pending.insert(queue.to_string())
    }

    /// Takes `queue` out: a pass is about to look at it, so what is notified from now on needs
    /// another.
    pub fn take(&self, queue: &str) {
        self.0.lock().expect("pending lock").remove(queue);
    }
}

/// Sends `queue` to the scan loop unless it is pending already (see [`Pending`]).
pub fn forward(pending: &Pending, tx: &mpsc::Sender<String>, queue: String) {
    if pending.enter(&queue) {
        if let Err(e) = tx.try_send(queue) {
            // More distinct queues pending than the channel holds: a later notification of
            // this one must be able to enter again.
            let (mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q)) = e;
            pending.take(&q);
        }
    }
}

/// Subscribes and forwards queue names until `cancel` fires (those with a new failure to `tx`,
/// those something left to `removed`), resubscribing with capped backoff when the connection
/// drops.
pub async fn listen(
    state: std::sync::Arc<DaemonState>,
    tx: mpsc::Sender<String>,
    pending: std::sync::Arc<Pending>,
    removed: mpsc::Sender<String>,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_millis(250);
    while !cancel.is_cancelled() {
        // Each (re)subscription goes to the current master (it moves with a Sentinel failover).
        let config = state.config();
        let prefix = config.redis.key_prefix.clone();
        let client = match crate::connection::client_for_master(&config, state.master().as_ref()) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "keyspace notifications unavailable");
                return;
            }
        };
        let db = client.get_connection_info().redis_settings().db();
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                let mut subscribed = true;
                for pattern in patterns(db, &prefix) {
                    if let Err(e) = pubsub.psubscribe(&pattern).await {
                        warn!(error = %e, "cannot subscribe to keyspace notifications");
                        subscribed = false;
                    }
                }
                for channel in removal_channels(db) {
                    if let Err(e) = pubsub.subscribe(&channel).await {
                        warn!(error = %e, channel, "cannot subscribe to removals from the failed registries; the size check finds them within a second or two");
                    }
                }
                // The other instances' writes, for this one's index (needs no Redis setting).
                let events = crate::rq::Keys::new(&prefix).retryd_index_events();
                if let Err(e) = pubsub.subscribe(&events).await {
                    warn!(error = %e, "cannot subscribe to the other instances' index events");
                    subscribed = false;
                }
                if subscribed {
                    info!(db, "listening for failed-registry notifications (effective when notify-keyspace-events has z and K or E) and for the other instances' writes");
                    delay = Duration::from_millis(250);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            msg = messages.next() => match msg {
                                Some(msg) if msg.get_channel_name() == events => {
                                    match IndexEvent::apply(msg.get_payload_bytes(), &state.instance, &state.index) {
                                        Ok(n) => debug!(jobs = n, "applied another instance's writes to the index"),
                                        Err(e) => warn!(channel = %events, error = %e, "ignored a message that is not an index event"),
                                    }
                                }
                                Some(msg) => match classify(msg.get_channel_name(), msg.get_payload_bytes(), db, &prefix) {
                                    Some(Notified::Added(queue)) => {
                                        debug!(queue, "new failure notified");
                                        forward(&pending, &tx, queue);
                                    }
                                    Some(Notified::Removed(queue)) => {
                                        debug!(queue, "removal from a failed registry notified");
                                        let _ = removed.try_send(queue);
                                    }
                                    None => {}
                                },
                                None => break,
                            },
                        }
                    }
                }
            }
            Err(e) => debug!(error = %e, "notification connection failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storm on one queue must not crowd out another queue's notification (issue 24).
    #[test]
    fn a_storm_on_one_queue_leaves_room_for_another_queues_notification() {
        let (tx, mut rx) = mpsc::channel::<String>(4);
        let pending = Pending::default();
        for _ in 0..10_000 {
            forward(&pending, &tx, "busy".to_string());
        }
        forward(&pending, &tx, "quiet".to_string());
        let mut sent = Vec::new();
        while let Ok(q) = rx.try_recv() {
            sent.push(q);
        }
        assert_eq!(
            sent,
            ["busy", "quiet"],
            "each pending queue once, none dropped"
        );
        // Taken by a pass: the next notification of it is sent again.
        pending.take("busy");
        forward(&pending, &tx, "busy".to_string());
        forward(&pending, &tx, "quiet".to_string());
        assert_eq!(rx.try_recv().ok().as_deref(), Some("busy"));
        assert!(
            rx.try_recv().is_err(),
            "quiet is still pending: not sent twice"
        );
    }

    #[test]
    fn a_queue_the_full_channel_refused_can_enter_again() {
        let (tx, mut rx) = mpsc::channel::<String>(1);
        let pending = Pending::default();
        forward(&pending, &tx, "a".to_string());
        forward(&pending, &tx, "b".to_string()); // the channel is full: refused
        assert_eq!(rx.try_recv().ok().as_deref(), Some("a"));
        pending.take("a");
        forward(&pending, &tx, "b".to_string());
        assert_eq!(rx.try_recv().ok().as_deref(), Some("b"));
    }

    #[test]
    fn keyspace_and_keyevent_notifications_name_the_queue() {
        assert_eq!(
            queue_of("__keyspace@0__:rq:failed:emails", b"zadd", 0, "rq").as_deref(),
            Some("emails")
        );
        assert_eq!(
            queue_of("__keyspace@0__:rq:failed:emails", b"zrem", 0, "rq"),
            None
        );
        assert_eq!(
            queue_of("__keyevent@0__:zadd", b"rq:failed:emails", 0, "rq").as_deref(),
            Some("emails")
        );
        assert_eq!(
            queue_of("__keyevent@0__:zadd", b"rq:wip:emails", 0, "rq"),
            None
        );
        assert_eq!(
            queue_of("__keyspace@1__:rq:failed:emails", b"zadd", 0, "rq"),
            None
        );
    }

    // See: issue 21, item 4 (requeues and deletes by RQ's API stayed listed for a scan).
    #[test]
    fn removals_from_a_failed_registry_name_its_queue() {
        let removed = |q: &str| Some(Notified::Removed(q.to_string()));
        for event in ["zrem", "zremrangebyscore", "del", "expired"] {
            assert_eq!(
                classify("__keyspace@0__:rq:failed:emails", event.as_bytes(), 0, "rq"),
                removed("emails"),
                "{event}"
            );
        }
        assert_eq!(
            classify("__keyevent@0__:zrem", b"rq:failed:emails", 0, "rq"),
            removed("emails")
        );
        assert_eq!(
            classify("__keyevent@0__:zremrangebyscore", b"rq:failed:a:b", 0, "rq"),
            removed("a:b")
        );
        assert_eq!(
            classify("__keyevent@0__:zadd", b"rq:failed:emails", 0, "rq"),
            Some(Notified::Added("emails".into()))
        );
        // Other keys, other databases, other events: nothing.
        assert_eq!(
            classify("__keyevent@0__:zrem", b"rq:wip:emails", 0, "rq"),
            None
        );
        assert_eq!(
            classify("__keyevent@1__:zrem", b"rq:failed:emails", 0, "rq"),
            None
        );
        assert_eq!(
            classify("__keyspace@0__:rq:failed:emails", b"zincrby", 0, "rq"),
            None
        );
        assert!(removal_channels(0).contains(&"__keyevent@0__:zrem".to_string()));
    }
}
