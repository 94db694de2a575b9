//! The global ceiling on automatic requeues (`max_requeues_per_second`).

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A token bucket refilled at `per_second`, with one second's worth of burst.
#[derive(Debug)]
pub struct RequeueLimiter {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl RequeueLimiter {
    pub fn new(per_second: u32) -> RequeueLimiter {
        let rate = NonZeroU32::new(per_second.max(1)).expect("nonzero");
        RequeueLimiter {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            burst: rate.get(),
        }
    }

    /// Waits until `n` requeues may go out.
    pub async fn acquire(&self, mut n: u32) {
        while n > 0 {
            let take = n.min(self.burst);
            let permits = NonZeroU32::new(take).expect("nonzero");
            // `take <= burst`, so capacity is always sufficient.
            let _ = self.limiter.until_n_ready(permits).await;
            n -= take;
        }
    }
}
