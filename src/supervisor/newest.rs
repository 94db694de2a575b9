//! How far a notified pass lists a failed registry (newest first). It used to take windows of
//! [`super::SCAN_WINDOW`] (6,000 ids) and stop after the first with nothing new, so every
//! notified pass over a busy queue listed at least 12,000 registry entries to read a few hundred
//! new ones: during a storm of 5,000 failures a second, most of a pass's listing (issue 24,
//! item 2). It now takes windows of [`super::LIST_WINDOW`] and stops after one with nothing new
//! that also reaches below the newest score any pass listed before: RQ scores a failure with
//! its whole-second failure time plus its `failure_ttl`, so the newest second holds known and
//! new failures side by side, ordered by id, and a window that ends inside it may have new
//! ones right after it. The rule goes on wherever the old one did (a window with something
//! new), and further inside that tie. A failure scored below the newest (a shorter
//! `failure_ttl`, or a worker whose write of second n landed after another's of second n+1)
//! is found by the reconcile's size check within a second (`super::reconcile`): it notes the
//! lowest score of the members the index does not hold ([`Newest::reach`]), and the next
//! notified pass over the queue lists down to it. Before that (session 23: 89 failures of
//! 460,000 in a storm of 8,000 a second) such a failure waited for the next full scan.

use std::collections::HashMap;
use std::sync::Mutex;

/// The highest registry score listed so far, per queue, and how far down the next notified
/// pass must list.
#[derive(Debug, Default)]
pub struct Newest {
    listed: Mutex<HashMap<String, f64>>,
    reach: Mutex<HashMap<String, f64>>,
}

impl Newest {
    /// The highest score listed in `queue`'s registry before now.
    pub fn get(&self, queue: &str) -> Option<f64> {
        self.listed.lock().expect("newest lock").get(queue).copied()
    }

    /// Asks the next notified pass over `queue` to list down to `score` at least.
    pub fn reach(&self, queue: &str, score: f64) {
        let mut reach = self.reach.lock().expect("reach lock");
        match reach.get_mut(queue) {
            Some(low) => *low = low.min(score),
            None => {
                reach.insert(queue.to_string(), score);
            }
        }
    }

    /// The score a newest-first pass over `queue` that begins now goes on down to (see
    /// [`goes_on`]): the newest listed before, or lower where [`Newest::reach`] asked, which
    /// this pass then answers.
    pub fn take_floor(&self, queue: &str) -> Option<f64> {
        let reach = self.reach.lock().expect("reach lock").remove(queue);
        match (self.get(queue), reach) {
            (Some(newest), Some(low)) => Some(newest.min(low)),
            (newest, low) => newest.or(low),
        }
    }

    /// Raises `queue`'s highest listed score to the highest of `page`.
    pub fn note(&self, queue: &str, page: &[(Vec<u8>, f64)]) {
        let Some(top) = page.iter().map(|(_, s)| *s).reduce(f64::max) else {
            return;
        };
        let mut newest = self.listed.lock().expect("newest lock");
        match newest.get_mut(queue) {
            Some(seen) => *seen = seen.max(top),
            None => {
                newest.insert(queue.to_string(), top);
            }
        }
    }
}

/// Whether a newest-first pass lists the window after one that had `read` failures to read
/// and whose last (lowest) score was `lowest`, given the newest score listed before the pass.
pub fn goes_on(read: usize, lowest: Option<f64>, newest_before: Option<f64>) -> bool {
    read > 0 || matches!((lowest, newest_before), (Some(l), Some(n)) if l >= n)
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
        // Ended below it: everything after is older than what the last pass saw.
        assert!(!goes_on(0, Some(19.0), Some(20.0)));
        // Nothing listed before (the first pass) or an empty window: the old rule.
        assert!(!goes_on(0, Some(20.0), None));
        assert!(!goes_on(0, None, Some(20.0)));
    }

    #[test]
    fn a_reach_lowers_the_floor_of_the_next_pass_only() {
        let newest = Newest::default();
        assert_eq!(newest.take_floor("q"), None);
        newest.reach("q", 9.0);
        assert_eq!(newest.take_floor("q"), Some(9.0), "nothing listed yet");
        newest.note("q", &[(b"a".to_vec(), 20.0)]);
        assert_eq!(newest.take_floor("q"), Some(20.0));
        newest.reach("q", 12.0);
        newest.reach("q", 15.0);
        newest.reach("other", 1.0);
        assert_eq!(newest.take_floor("q"), Some(12.0), "the lowest asked");
        assert_eq!(newest.take_floor("q"), Some(20.0), "answered once");
        newest.reach("q", 30.0);
        assert_eq!(newest.take_floor("q"), Some(20.0), "never above the newest");
        assert_eq!(newest.take_floor("other"), Some(1.0));
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
