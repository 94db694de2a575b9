//! Reacting to new failures without waiting for `scan_interval`: with Redis keyspace
//! notifications enabled (`notify-keyspace-events` with `z` and `K` or `E`), every ZADD to a
//! `rq:failed:<q>` registry names its queue, and the scan loop looks at just that queue. Without
//! notifications nothing arrives and the regular scans do the work.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::index::events::IndexEvent;
use crate::rq::Keys;
use crate::state::DaemonState;

/// The channels to subscribe to for a database and key prefix: keyspace events on every failed
/// registry (payload `zadd`) and keyevent `zadd` events (payload = the key).
pub fn patterns(db: i64, prefix: &str) -> [String; 2] {
    let keys = Keys::new(prefix);
    [
        format!("__keyspace@{db}__:{}", keys.failed_pattern()),
        format!("__keyevent@{db}__:zadd"),
    ]
}

/// The queue a notification is about, if it is an addition to one of our failed registries.
pub fn queue_of(channel: &str, payload: &[u8], db: i64, prefix: &str) -> Option<String> {
    let keys = Keys::new(prefix);
    if let Some(key) = channel.strip_prefix(&format!("__keyspace@{db}__:")) {
        return (payload == b"zadd")
            .then(|| keys.queue_name_from_failed_key(key))
            .flatten()
            .map(str::to_string);
    }
    if channel == format!("__keyevent@{db}__:zadd") {
        let key = std::str::from_utf8(payload).ok()?;
        return keys.queue_name_from_failed_key(key).map(str::to_string);
    }
    None
}

/// Subscribes and forwards queue names until `cancel` fires, resubscribing with capped backoff
/// when the connection drops.
pub async fn listen(
    state: std::sync::Arc<DaemonState>,
    tx: mpsc::Sender<String>,
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
                                Some(msg) => {
                                    if let Some(queue) = queue_of(msg.get_channel_name(), msg.get_payload_bytes(), db, &prefix) {
                                        debug!(queue, "new failure notified");
                                        // A full channel means a pass is pending anyway.
                                        let _ = tx.try_send(queue);
                                    }
                                }
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
}
