//! Failed authentications per client address: a small burst, then one guess every
//! [`FAILURE_INTERVAL`], so that guessing a token over the API is slow (issue 19).
//!
//! A hand-written GCRA (a "theoretical arrival time" per address) rather than `governor`'s keyed
//! limiter, which the crate already uses for requeues: this table must be asked "is this address
//! over its budget?" without spending from it (a request with a valid token spends nothing), it
//! must hold at most [`MAX_ADDRESSES`] entries (governor's keyed stores grow until
//! `retain_recent` is called), and each entry also carries the state of its rate-limited log
//! line.
//!
//! Time is a parameter (`now`), so the tests drive it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications an address may make at once.
pub const FAILURE_BURST: u32 = 10;
/// After the burst, one more failure is allowed every this long (10 a minute).
pub const FAILURE_INTERVAL: Duration = Duration::from_secs(6);
/// At most one log line per address per this long; it counts the failures since the last.
pub const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (about 100 bytes each); beyond, the oldest entry goes, idle
/// ones first.
pub const MAX_ADDRESSES: usize = 10_000;

/// Why a request was refused, the `reason` label of `rq_retryd_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No bearer token at all: not a guess, so it spends none of the address's budget.
    Missing,
    /// A token no configured token equals: a guess.
    Invalid,
    /// The address is over its budget: the token it presented was refused (429) unseen.
    Limited,
}

impl FailureReason {
    pub const ALL: [FailureReason; 3] = [
        FailureReason::Missing,
        FailureReason::Invalid,
        FailureReason::Limited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Missing => "missing",
            FailureReason::Invalid => "invalid",
            FailureReason::Limited => "limited",
        }
    }
}

/// The key of an address: IPv4 as is, IPv6 by its /64 (one host usually holds a whole /64, so
/// a per-address key would give it 2^64 budgets); an IPv4-mapped IPv6 address is its IPv4.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[derive(Debug)]
struct Entry {
    /// GCRA's theoretical arrival time: the budget is full when it is `<= now`, and each
    /// counted failure moves it one interval later.
    tat: Instant,
    /// When the last log line for this address was written.
    logged_at: Option<Instant>,
    /// Failures since that line (not logged one by one).
    unlogged: u64,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    /// Keys in insertion order, for eviction; always the same keys as `entries`.
    order: VecDeque<IpAddr>,
}

/// The per-address table. Shared by every request of one listener.
#[derive(Debug)]
pub struct FailureLimiter {
    table: Mutex<Table>,
    burst: u32,
    interval: Duration,
    capacity: usize,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::new(FAILURE_BURST, FAILURE_INTERVAL, MAX_ADDRESSES)
    }
}

/// What [`FailureLimiter::record`] says about logging this failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDecision {
    /// Write a line now; it stands for this failure and `earlier` unlogged ones before it.
    Log { earlier: u64 },
    /// This address had its line within [`LOG_WINDOW`]: count it for the next one.
    Quiet,
}

impl FailureLimiter {
    pub fn new(burst: u32, interval: Duration, capacity: usize) -> FailureLimiter {
        FailureLimiter {
            table: Mutex::new(Table::default()),
            burst: burst.max(1),
            interval,
            capacity: capacity.max(1),
        }
    }

    /// `Some(how long until the next attempt)` when `ip` is over its budget: every token it
    /// presents is then refused without being looked at, so that a guess that happens to be
    /// right is not told apart from a wrong one (guess, then use).
    pub fn limited(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let table = self.table.lock().expect("auth failure table");
        let entry = table.entries.get(&client_key(ip))?;
        let ahead = entry.tat.saturating_duration_since(now);
        let allowed = self.interval * (self.burst - 1);
        (ahead > allowed).then(|| ahead - allowed)
    }

    /// Records a refused request from `ip`: an `Invalid` one spends from the budget; every
    /// reason counts for the log line.
    pub fn record(&self, ip: IpAddr, reason: FailureReason, now: Instant) -> LogDecision {
        let key = client_key(ip);
        let mut table = self.table.lock().expect("auth failure table");
        if !table.entries.contains_key(&key) {
            if table.entries.len() >= self.capacity {
                self.evict_one(&mut table, now);
            }
            table.entries.insert(
                key,
                Entry {
                    tat: now,
                    logged_at: None,
                    unlogged: 0,
                },
            );
            table.order.push_back(key);
        }
        let entry = table.entries.get_mut(&key).expect("just inserted");
        if reason == FailureReason::Invalid {
            entry.tat = entry.tat.max(now) + self.interval;
        }
        let due = entry
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_WINDOW);
        if due {
            let earlier = entry.unlogged;
            entry.logged_at = Some(now);
            entry.unlogged = 0;
            LogDecision::Log { earlier }
        } else {
            entry.unlogged += 1;
            LogDecision::Quiet
        }
    }

    /// Removes the oldest entry, preferring one whose budget is full again (looking at a few
    /// only, so an insert stays cheap under a flood of new addresses).
    fn evict_one(&self, table: &mut Table, now: Instant) {
        for _ in 0..8 {
            let Some(key) = table.order.pop_front() else {
                return;
            };
            let idle = table.entries.get(&key).is_none_or(|e| e.tat <= now);
            if idle {
                table.entries.remove(&key);
                return;
            }
            table.order.push_back(key);
        }
        if let Some(key) = table.order.pop_front() {
            table.entries.remove(&key);
        }
    }

    /// How many addresses the table holds (for tests).
    pub fn len(&self) -> usize {
        self.table.lock().expect("auth failure table").entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const T: Duration = FAILURE_INTERVAL;

    #[test]
    fn an_address_gets_its_burst_then_one_guess_per_interval() {
        let limiter = FailureLimiter::default();
        let now = Instant::now();
        let a = ip("10.0.0.1");
        for i in 0..FAILURE_BURST {
            assert_eq!(
                limiter.limited(a, now),
                None,
                "failure {i} is within the burst"
            );
            limiter.record(a, FailureReason::Invalid, now);
        }
        assert_eq!(limiter.limited(a, now), Some(T));
        assert_eq!(limiter.limited(a, now + T / 2), Some(T / 2));
        assert_eq!(
            limiter.limited(a, now + T),
            None,
            "one more after an interval"
        );
        limiter.record(a, FailureReason::Invalid, now + T);
        assert_eq!(limiter.limited(a, now + T), Some(T));
        // Another address has its own budget.
        assert_eq!(limiter.limited(ip("10.0.0.2"), now), None);
        // After burst × interval of quiet the whole burst is back.
        let later = now + T * (FAILURE_BURST + 1);
        for _ in 0..FAILURE_BURST {
            assert_eq!(limiter.limited(a, later), None);
            limiter.record(a, FailureReason::Invalid, later);
        }
        assert!(limiter.limited(a, later).is_some());
    }

    #[test]
    fn missing_tokens_and_refusals_spend_nothing() {
        let limiter = FailureLimiter::default();
        let now = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..100 {
            limiter.record(a, FailureReason::Missing, now);
            limiter.record(a, FailureReason::Limited, now);
        }
        assert_eq!(limiter.limited(a, now), None);
    }

    #[test]
    fn one_log_line_per_address_per_window_counts_the_quiet_ones() {
        let limiter = FailureLimiter::default();
        let now = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(
            limiter.record(a, FailureReason::Invalid, now),
            LogDecision::Log { earlier: 0 }
        );
        for _ in 0..499 {
            assert_eq!(
                limiter.record(a, FailureReason::Limited, now),
                LogDecision::Quiet
            );
        }
        assert_eq!(
            limiter.record(ip("10.0.0.2"), FailureReason::Missing, now),
            LogDecision::Log { earlier: 0 },
            "another address logs at once"
        );
        assert_eq!(
            limiter.record(a, FailureReason::Limited, now + LOG_WINDOW),
            LogDecision::Log { earlier: 499 }
        );
    }

    #[test]
    fn the_table_holds_at_most_its_capacity_and_evicts_idle_entries_first() {
        let limiter = FailureLimiter::new(2, T, 100);
        let now = Instant::now();
        let guesser = ip("192.0.2.1");
        limiter.record(guesser, FailureReason::Invalid, now);
        limiter.record(guesser, FailureReason::Invalid, now);
        assert!(limiter.limited(guesser, now).is_some());
        for i in 0..10_000u32 {
            let other = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limiter.record(other, FailureReason::Missing, now);
            assert!(limiter.len() <= 100);
        }
        assert!(
            limiter.limited(guesser, now).is_some(),
            "a limited address outlives idle ones"
        );
    }

    #[test]
    fn the_metric_knows_every_reason() {
        let reasons = FailureReason::ALL.map(FailureReason::as_str);
        assert_eq!(reasons, crate::metrics::AUTH_FAILURE_REASONS);
    }

    #[test]
    fn ipv6_addresses_are_limited_by_their_64_prefix() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }
}
