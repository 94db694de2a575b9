//! Backoff: how long to wait before the next automatic requeue.
//!
//! Jitter is deterministic per (job id, attempt): every scan, and every rq-retryd instance running
//! the same config, computes the same due time for the same failure, so repeated scans agree and
//! two instances never disagree about whether a job is due.

use std::time::Duration;

/// The longest delay we ever compute, whatever the config says; keeps date arithmetic finite.
pub const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A backoff strategy with its parameters, validated by the config loader.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// The same delay before every attempt.
    Fixed { delay: Duration, jitter: f64 },
    /// `initial + step * n` before attempt `n + 1`, capped at `max` when given.
    Linear {
        initial: Duration,
        step: Duration,
        max: Option<Duration>,
        jitter: f64,
    },
    /// `initial * multiplier^n` before attempt `n + 1`, capped at `max`.
    Exponential {
        initial: Duration,
        multiplier: f64,
        max: Duration,
        jitter: f64,
    },
}

impl Backoff {
    /// The default for a retry policy that names no backoff: exponential from 30s, doubling, at
    /// most one hour, 10% jitter.
    pub fn conservative() -> Backoff {
        Backoff::Exponential {
            initial: Duration::from_secs(30),
            multiplier: 2.0,
            max: Duration::from_secs(3600),
            jitter: 0.1,
        }
    }

    /// The delay between a failure and the requeue that follows it, when `previous_attempts`
    /// automatic requeues have already happened. Never negative, never above the cap.
    pub fn delay(&self, job_id: &str, previous_attempts: u32) -> Duration {
        let n = f64::from(previous_attempts);
        let (base, cap, jitter) = match *self {
            Backoff::Fixed { delay, jitter } => (delay.as_secs_f64(), None, jitter),
            Backoff::Linear {
                initial,
                step,
                max,
                jitter,
            } => (initial.as_secs_f64() + step.as_secs_f64() * n, max, jitter),
            Backoff::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => (
                initial.as_secs_f64() * multiplier.powf(n),
                Some(max),
                jitter,
            ),
        };
        let spread = jitter * (2.0 * unit_interval(job_id, previous_attempts) - 1.0);
        let mut secs = base * (1.0 + spread);
        if let Some(cap) = cap {
            secs = secs.min(cap.as_secs_f64());
        }
        if !secs.is_finite() {
            secs = MAX_DELAY.as_secs_f64();
        }
        Duration::from_secs_f64(secs.clamp(0.0, MAX_DELAY.as_secs_f64()))
    }

    /// A short human description for `check-config` and `explain`.
    pub fn describe(&self) -> String {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        let jit = |j: f64| {
            if j > 0.0 {
                format!(" ±{:.0}%", j * 100.0)
            } else {
                String::new()
            }
        };
        match *self {
            Backoff::Fixed { delay, jitter } => format!("fixed {}{}", fmt(delay), jit(jitter)),
            Backoff::Linear {
                initial,
                step,
                max,
                jitter,
            } => format!(
                "linear {} +{}{}{}",
                fmt(initial),
                fmt(step),
                max.map(|m| format!(" max {}", fmt(m))).unwrap_or_default(),
                jit(jitter)
            ),
            Backoff::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => format!(
                "exponential {} x{} max {}{}",
                fmt(initial),
                multiplier,
                fmt(max),
                jit(jitter)
            ),
        }
    }
}

/// A stable pseudo-random number in [0, 1) from the job id and attempt (FNV-1a; the standard
/// library's hasher is not guaranteed stable across Rust versions, and instances must agree).
fn unit_interval(job_id: &str, attempt: u32) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in job_id.bytes().chain(attempt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalise (splitmix64) so that ids differing in one character spread over the whole range.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn exponential_doubles_then_stops_at_the_cap() {
        let b = Backoff::Exponential {
            initial: S(30),
            multiplier: 2.0,
            max: S(300),
            jitter: 0.0,
        };
        let delays: Vec<u64> = (0..6).map(|n| b.delay("j", n).as_secs()).collect();
        assert_eq!(delays, vec![30, 60, 120, 240, 300, 300]);
    }

    #[test]
    fn linear_adds_a_step_per_attempt() {
        let b = Backoff::Linear {
            initial: S(10),
            step: S(5),
            max: None,
            jitter: 0.0,
        };
        assert_eq!(b.delay("j", 0), S(10));
        assert_eq!(b.delay("j", 3), S(25));
    }

    #[test]
    fn jitter_is_the_same_on_every_scan_and_differs_between_jobs() {
        let b = Backoff::Fixed {
            delay: S(100),
            jitter: 0.5,
        };
        assert_eq!(b.delay("job-a", 1), b.delay("job-a", 1));
        let distinct: std::collections::HashSet<_> =
            (0..50).map(|i| b.delay(&format!("job-{i}"), 1)).collect();
        assert!(
            distinct.len() > 40,
            "jitter should spread jobs, got {} distinct",
            distinct.len()
        );
    }

    fn any_backoff() -> impl Strategy<Value = Backoff> {
        let secs = 0u64..100_000;
        let jitter = 0.0f64..=1.0;
        prop_oneof![
            (secs.clone(), jitter.clone()).prop_map(|(d, j)| Backoff::Fixed {
                delay: S(d),
                jitter: j
            }),
            (
                secs.clone(),
                secs.clone(),
                proptest::option::of(secs.clone()),
                jitter.clone()
            )
                .prop_map(|(i, s, m, j)| Backoff::Linear {
                    initial: S(i),
                    step: S(s),
                    max: m.map(S),
                    jitter: j
                }),
            (secs.clone(), 1.0f64..10.0, secs, jitter).prop_map(|(i, mult, m, j)| {
                Backoff::Exponential {
                    initial: S(i),
                    multiplier: mult,
                    max: S(m),
                    jitter: j,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn delays_never_exceed_the_cap_and_stay_finite(b in any_backoff(), id in "[a-z0-9-]{1,36}", n in 0u32..10_000) {
            let d = b.delay(&id, n);
            prop_assert!(d <= MAX_DELAY);
            match b {
                Backoff::Exponential { max, .. } => prop_assert!(d <= max),
                Backoff::Linear { max: Some(max), .. } => prop_assert!(d <= max),
                _ => {}
            }
        }

        #[test]
        fn jitter_stays_within_its_fraction(d in 1u64..100_000, j in 0.0f64..=1.0, id in "[a-z0-9]{1,20}", n in 0u32..50) {
            let b = Backoff::Fixed { delay: S(d), jitter: j };
            let got = b.delay(&id, n).as_secs_f64();
            let base = d as f64;
            prop_assert!(got >= base * (1.0 - j) - 1e-6 && got <= base * (1.0 + j) + 1e-6);
        }
    }
}
