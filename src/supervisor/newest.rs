//! How far a notified pass lists a failed registry (newest first). It used to take windows of
//! [`super::SCAN_WINDOW`] (6,000 ids) and stop after the first with nothing new, so every
//! notified pass over a busy queue listed at least 12,000 registry entries to read a few hundred
//! new ones: during a storm of 5,000 failures a second, most of a pass's listing (issue 24,
//! item 2). It now takes windows of [`super::LIST_WINDOW`] and stops after one with nothing new
//! that also reaches below the second before the newest score any pass listed before: RQ
//! scores a failure with its whole-second failure time plus its `failure_ttl`, so the newest
//! second holds known and new failures side by side, ordered by id, and a window that ends
//! inside it may have new ones right after it. The second before it, because with several
//! workers a failure scored with second n can be written after another's of second n+1 was
//! listed (a storm of 8,000 a second left 89 failures of 460,000 to the next full scan this
//! way, session 23; see `LATE`). The rule goes on wherever the old one did (a window with
//! something new), and further inside those two seconds; what neither finds (a failure scored
//! lower still, as a shorter `failure_ttl` gives) the full scans do, as before. Having the
//! reconcile's size check send the next pass down to such failures instead was tried in
//! session 23 and not kept: past the rate the daemon keeps up with, the index lag p99 went
//! from 4.0 to 7.0 s (docs/benchmarks.md, "Issue 24 at its end").

use std::collections::HashMap;
use std::sync::Mutex;

/// The highest registry score listed so far, per queue.
#[derive(Debug, Default)]
pub struct Newest(Mutex<HashMap<String, f64>>);

impl Newest {
    /// The highest score listed in `queue`'s registry before now.
    pub fn get(&self, queue: &str) -> Option<f64> {
        self.0.lock().expect("newest lock").get(queue).copied()
    }

    /// Raises `queue`'s highest listed score to the highest of `page`.
    pub fn note(&self, queue: &str, page: &[(Vec<u8>, f64)]) {
        let Some(top) = page.iter().map(|(_, s)| *s).reduce(f64::max) else {
            return;
        };
        let mut newest = self.0.lock().expect("newest lock");
        match newest.get_mut(queue) {
            Some(seen) => *seen = seen.max(top),
            None => {
                newest.insert(queue.to_string(), top);
            }
        }
    }
}

/// How far below the newest score listed before a pass goes on: one second of RQ's scores,
/// for a failure of the second before whose write landed after the newest was listed.
const LATE: f64 = 1.0;

/// Whether a newest-first pass lists the window after one that had `read` failures to read
/// and whose last (lowest) score was `lowest`, given the newest score listed before the pass.
pub fn goes_on(read: usize, lowest: Option<f64>, newest_before: Option<f64>) -> bool {
    read > 0 || matches!((lowest, newest_before), (Some(l), Some(n)) if l >= n - LATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_with_something_new_is_always_followed() {
        assert!(goes_on(1, Some(10.0), Some(20.0)));
        assert!(goes_on(3, None, None));
    }

    #[test]
    fn a_window_of_known_failures_is_followed_only_while_inside_the_newest_listed_second() {
        // Ended inside the newest second listed before: new failures of that second may sort
        // after it (ties are ordered by id).
        assert!(goes_on(0, Some(20.0), Some(20.0)));
        assert!(goes_on(0, Some(21.0), Some(20.0)));
        // Ended inside the second before it: a failure of that second may have been written
        // after the newest was listed (two workers across a second boundary).
        assert!(goes_on(0, Some(19.0), Some(20.0)));
        // Ended below that: everything after is older than what the last pass saw.
        assert!(!goes_on(0, Some(18.5), Some(20.0)));
        // Nothing listed before (the first pass) or an empty window: the old rule.
        assert!(!goes_on(0, Some(20.0), None));
        assert!(!goes_on(0, None, Some(20.0)));
    }

    #[test]
    fn the_newest_score_only_rises() {
        let newest = Newest::default();
        assert_eq!(newest.get("q"), None);
        newest.note("q", &[(b"a".to_vec(), 5.0), (b"b".to_vec(), 7.0)]);
        newest.note("q", &[(b"c".to_vec(), 6.0)]);
        newest.note("q", &[]);
        assert_eq!(newest.get("q"), Some(7.0));
        assert_eq!(newest.get("other"), None);
    }
}
