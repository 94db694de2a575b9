//! This instance's standing on the switchboard as its beats saw it: whether it holds the lease,
//! since when, and the shared switches.
//!
//! Every decision here is a pure function of the time on tokio's clock and the last beat Redis
//! answered ([`View`]): an instance holds the lease from the moment its renewing beat was sent
//! until one lease time later, whatever Redis says meanwhile. So the decisions are tested with a
//! paused clock, and [`Lease::beat`] and [`Lease::release`] are the only round trips to Redis
//! around them (tests/switchboard.rs runs both against a real server, on a paused clock too).

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Beat, Switchboard};

/// How long one beat may take before it counts as failed (a hung Redis must not hold the
/// renewal past the lease); never more than half the lease.
pub const BEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long giving the lease up may take on shutdown; after that it runs out by itself.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// This instance's lease token and its view of the switchboard, shared by its tasks: the
/// heartbeat writes it, the scan loop and the HTTP API read it.
#[derive(Debug)]
pub struct Lease {
    token: String,
    view: Mutex<View>,
}

/// What the beats have shown so far.
#[derive(Debug, Clone, Default)]
struct View {
    beat: Beat,
    /// When the beat that last took or renewed the lease for this instance was sent.
    renewed: Option<Instant>,
    /// Whether any beat has been seen (a scan request older than this instance is not news).
    seen_first_beat: bool,
    /// How many times this instance became active: the term of the lease it holds now, which
    /// tells the scan loop whether its last scan already answered the latest activation.
    terms: u64,
}

/// What one beat changed for this instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BeatChange {
    pub became_active: bool,
    pub stopped_being_active: bool,
    /// Another instance (or this one) asked for a scan since the last beat.
    pub scan_requested: bool,
}

impl View {
    /// Whether the last beat named `token` as the holder.
    fn names(&self, token: &str) -> bool {
        self.beat.lease.holder.as_deref() == Some(token)
    }

    /// Whether `token` holds the lease at `now`: the last beat named it, and the beat that
    /// renewed it was sent less than `ttl` before `now`.
    fn holds(&self, token: &str, now: Instant, ttl: Duration) -> bool {
        self.names(token)
            && self
                .renewed
                .is_some_and(|at| now.saturating_duration_since(at) < ttl)
    }

    /// Takes in `beat`, sent at `sent` and answered by `now`, and says what changed.
    fn absorb(
        &mut self,
        token: &str,
        beat: Beat,
        sent: Instant,
        now: Instant,
        ttl: Duration,
    ) -> BeatChange {
        let mine = beat.lease.holder.as_deref() == Some(token);
        // Active as `holds` saw it: a lease whose last renewal is older than the lease time
        // counted as lost (the scan loop stood by), even though no beat said so. A beat that
        // renews it is then a new start, and must wake the scan loop.
        let held = self.names(token) && self.renewed.is_some();
        let was_active = self.holds(token, now, ttl);
        let scan_requested = beat.switches.scan_requested_at.is_some()
            && beat.switches.scan_requested_at != self.beat.switches.scan_requested_at
            && self.seen_first_beat;
        self.renewed = mine.then_some(sent);
        self.seen_first_beat = true;
        self.beat = beat;
        let became_active = mine && !was_active;
        self.terms += u64::from(became_active);
        BeatChange {
            became_active,
            stopped_being_active: !mine && held,
            scan_requested,
        }
    }

    /// Forgets the lease (released, or run out without a renewal reaching Redis).
    fn forget(&mut self) {
        self.renewed = None;
        self.beat.lease.holder = None;
    }
}

impl Lease {
    /// A lease token (this instance's name on the switchboard) that has not beaten yet.
    pub fn new(token: String) -> Lease {
        Lease {
            token,
            view: Mutex::new(View::default()),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().expect("lease lock")
    }

    /// Whether this instance holds the lease now (as of its last successful beat, and no longer
    /// than `ttl` after that beat was sent).
    pub fn holds(&self, ttl: Duration) -> bool {
        self.held_term(ttl).is_some()
    }

    /// The term this instance holds the lease in (see [`Lease::holds`]): 1 after it first
    /// became active, one more each time it became active again; `None` when it does not hold
    /// it. Read together with the holding, so no activation can fall between the two.
    pub fn held_term(&self, ttl: Duration) -> Option<u64> {
        let view = self.view();
        view.holds(&self.token, Instant::now(), ttl)
            .then_some(view.terms)
    }

    /// The last beat's view of the switchboard.
    pub fn last_beat(&self) -> Beat {
        self.view().beat.clone()
    }

    /// Whether automatic writes are held back on every instance, as last seen.
    pub fn holds_writes(&self) -> bool {
        self.view().beat.switches.holds_writes()
    }

    /// Notes a pause or resume this instance just wrote to the switchboard.
    pub fn set_paused(&self, paused: bool) {
        self.view().beat.switches.paused = paused;
    }

    /// After a failed beat: forgets the lease when it ran out without a renewal reaching Redis;
    /// returns whether it did (then this instance is not the active one).
    pub fn forget_if_lapsed(&self, ttl: Duration) -> bool {
        let mut view = self.view();
        let lapsed = !view.holds(&self.token, Instant::now(), ttl);
        if lapsed {
            view.forget();
        }
        lapsed
    }

    fn absorb(&self, beat: Beat, sent: Instant, ttl: Duration) -> BeatChange {
        self.view()
            .absorb(&self.token, beat, sent, Instant::now(), ttl)
    }

    /// One beat: takes or renews the lease when this instance takes part in the election
    /// (`elect`; else it only reads), reads the switches, and takes the answer in. The lease
    /// runs from when the beat was sent. Fails after [`BEAT_TIMEOUT`] (at most half the lease).
    pub async fn beat<C: ConnectionLike + Send>(
        &self,
        board: &Switchboard,
        con: &mut C,
        elect: bool,
        ttl: Duration,
    ) -> RedisResult<BeatChange> {
        let sent = Instant::now();
        let token = elect.then_some(self.token.as_str());
        let beat = tokio::time::timeout(BEAT_TIMEOUT.min(ttl / 2), board.beat(con, token, ttl))
            .await
            .unwrap_or_else(|_| Err(RedisError::from((ErrorKind::Io, "heartbeat timed out"))))?;
        if beat.lease.corrupt {
            error!(key = %board.keys.retryd_lease(), "the lease key is not a string: no instance can be active until it is deleted");
        }
        if beat.switches.corrupt {
            error!(key = %board.keys.retryd_switches(), "the switches key is not a hash: automatic writes are held back until it is deleted");
        }
        let holder = beat.lease.holder.clone();
        let change = self.absorb(beat, sent, ttl);
        if change.became_active {
            info!(instance = %self.token, "this instance holds the lease: it does the automatic scans and writes");
        } else if change.stopped_being_active {
            warn!(instance = %self.token, active = ?holder, "this instance lost the lease: standing by");
        }
        Ok(change)
    }

    /// Gives the lease up if it is still this instance's (on shutdown, so that a standby takes
    /// over at its next beat instead of after the lease time), and forgets it either way;
    /// returns whether Redis released it. Bounded by [`RELEASE_TIMEOUT`].
    pub async fn release<C: ConnectionLike + Send>(
        &self,
        board: &Switchboard,
        con: &mut C,
    ) -> bool {
        let released =
            match tokio::time::timeout(RELEASE_TIMEOUT, board.release(con, &self.token)).await {
                Ok(Ok(released)) => released,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot release the lease; it runs out by itself");
                    false
                }
                Err(_) => {
                    warn!("releasing the lease timed out; it runs out by itself");
                    false
                }
            };
        if released {
            info!(instance = %self.token, "lease released");
        }
        self.view().forget();
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switchboard::{LeaseView, Switches};
    use tokio::time::advance;

    const TTL: Duration = Duration::from_secs(15);

    fn held_by(holder: &str) -> Beat {
        Beat {
            lease: LeaseView {
                holder: Some(holder.to_string()),
                remaining: Some(TTL),
                corrupt: false,
            },
            ..Default::default()
        }
    }

    fn scan_requested_at(at: &str) -> Beat {
        Beat {
            switches: Switches {
                scan_requested_at: Some(at.to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_held_for_one_lease_time_from_when_the_renewing_beat_was_sent() {
        let lease = Lease::new("me".into());
        assert!(!lease.holds(TTL), "no beat yet");
        let sent = Instant::now();
        // The answer takes a second to arrive: the lease still runs from the sending.
        advance(Duration::from_secs(1)).await;
        let change = lease.absorb(held_by("me"), sent, TTL);
        assert!(change.became_active, "{change:?}");
        advance(TTL - Duration::from_secs(1) - Duration::from_millis(1)).await;
        assert!(lease.holds(TTL));
        advance(Duration::from_millis(1)).await;
        assert!(!lease.holds(TTL), "one lease time after the sending");
    }

    // See: issue 11 (CI: Redis killed and restarted while the daemon was stopped for longer
    // than the lease; its next beat renewed the lease it still held in Redis, but the scan
    // loop, which had stood by, was never woken and the remaining jobs were never requeued).
    #[tokio::test(start_paused = true)]
    async fn a_beat_that_renews_a_lease_which_ran_out_locally_makes_the_instance_active_again() {
        let lease = Lease::new("me".into());
        let first = lease.absorb(held_by("me"), Instant::now(), TTL);
        assert!(first.became_active, "{first:?}");
        advance(TTL / 3).await;
        let second = lease.absorb(held_by("me"), Instant::now(), TTL);
        assert_eq!(second, BeatChange::default(), "a plain renewal is no news");

        // No renewal reached Redis for longer than the lease (a stalled process, a hung
        // Redis): the instance counts itself as standing by...
        advance(TTL * 2).await;
        assert!(!lease.holds(TTL));
        // ...and the beat that finds the lease still its own is a new start.
        let back = lease.absorb(held_by("me"), Instant::now(), TTL);
        assert!(back.became_active, "{back:?}");
        assert!(!back.stopped_being_active, "{back:?}");
        assert!(lease.holds(TTL));
    }

    // See: CI of session 19's stop (the beat that made the instance active woke the scan loop
    // after its first scan had begun, and a second full scan ran: at five million jobs, two
    // minutes of work for nothing). The scan loop compares terms instead.
    #[tokio::test(start_paused = true)]
    async fn the_term_counts_activations_and_is_read_with_the_holding() {
        let lease = Lease::new("me".into());
        assert_eq!(lease.held_term(TTL), None, "no beat yet");
        lease.absorb(held_by("me"), Instant::now(), TTL);
        assert_eq!(lease.held_term(TTL), Some(1));
        advance(TTL / 3).await;
        lease.absorb(held_by("me"), Instant::now(), TTL);
        assert_eq!(lease.held_term(TTL), Some(1), "a renewal is the same term");
        advance(TTL * 2).await;
        assert_eq!(lease.held_term(TTL), None, "run out locally");
        lease.absorb(held_by("me"), Instant::now(), TTL);
        assert_eq!(lease.held_term(TTL), Some(2), "active again: a new term");
        lease.absorb(held_by("other"), Instant::now(), TTL);
        assert_eq!(lease.held_term(TTL), None);
        lease.absorb(held_by("me"), Instant::now(), TTL);
        assert_eq!(lease.held_term(TTL), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_beat_naming_another_holder_stops_the_active_instance_and_only_once() {
        let lease = Lease::new("me".into());
        lease.absorb(held_by("me"), Instant::now(), TTL);
        advance(TTL / 3).await;
        let lost = lease.absorb(held_by("other"), Instant::now(), TTL);
        assert!(lost.stopped_being_active && !lost.became_active, "{lost:?}");
        assert!(!lease.holds(TTL));
        let again = lease.absorb(held_by("other"), Instant::now(), TTL);
        assert_eq!(again, BeatChange::default(), "standing by is no news");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_beat_forgets_the_lease_only_once_it_ran_out() {
        let lease = Lease::new("me".into());
        lease.absorb(held_by("me"), Instant::now(), TTL);
        advance(TTL - Duration::from_secs(1)).await;
        assert!(!lease.forget_if_lapsed(TTL), "still within the lease");
        assert_eq!(lease.last_beat().lease.holder.as_deref(), Some("me"));
        advance(Duration::from_secs(1)).await;
        assert!(lease.forget_if_lapsed(TTL));
        assert_eq!(lease.last_beat().lease.holder, None);
        // A lease forgotten is not "lost" again when another instance shows up with it.
        let other = lease.absorb(held_by("other"), Instant::now(), TTL);
        assert_eq!(other, BeatChange::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_scan_request_is_news_once_and_never_at_the_first_beat() {
        let lease = Lease::new("me".into());
        let first = lease.absorb(scan_requested_at("t1"), Instant::now(), TTL);
        assert!(!first.scan_requested, "asked before this instance started");
        let same = lease.absorb(scan_requested_at("t1"), Instant::now(), TTL);
        assert!(!same.scan_requested);
        let new = lease.absorb(scan_requested_at("t2"), Instant::now(), TTL);
        assert!(new.scan_requested);
    }
}
