//! Finding which of one queue's indexed failures left their registry without walking the
//! registry: the index knows each entry's registry score, so Redis's count of a score range
//! (`ZCOUNT key lo hi`, O(log n)) is compared with the index's count of it; ranges whose counts
//! differ are halved (by the index's median score, so each half holds half of the index's
//! entries) until a range holds at most a few hundred entries, and only those are read exactly
//! (`ZRANGEBYSCORE … WITHSCORES`). For k removals among n entries that is about
//! k·log2(n/leaf) ZCOUNTs in log2(n/leaf) pipelined round trips, and k leaves read.
//!
//! Pure: [`Bisect`] says which ranges it wants counted next and takes the answers; the caller
//! does the I/O (`Supervisor::reconcile`). A removal and an unrelated addition inside the same
//! range cancel out in the counts: what this misses, the next full scan drops, as before.
//!
//! See: issue 21, item 4.

/// One score range of a queue's index entries: the entries at positions `start..end` of the
/// sorted scores, whose scores are `lo..=hi`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub lo: f64,
    pub hi: f64,
    start: usize,
    end: usize,
}

impl Span {
    /// How many index entries the range holds.
    pub fn indexed(&self) -> u64 {
        (self.end - self.start) as u64
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Bisect {
    scores: Vec<f64>,
    leaf: usize,
    asking: Vec<Span>,
    leaves: Vec<Span>,
    /// Ranges the registry holds nothing of: every entry in them is gone, no read needed.
    empty: Vec<Span>,
    /// Redis's count of the whole range (the first answer).
    registry_total: Option<u64>,
}

impl Bisect {
    /// Starts with the whole range of `scores` (one queue's index entries, any order); ranges
    /// of at most `leaf` entries are read rather than halved.
    pub fn new(mut scores: Vec<f64>, leaf: usize) -> Bisect {
        scores.sort_unstable_by(f64::total_cmp);
        let asking = match (scores.first(), scores.last()) {
            (Some(&lo), Some(&hi)) => vec![Span {
                lo,
                hi,
                start: 0,
                end: scores.len(),
            }],
            _ => Vec::new(),
        };
        Bisect {
            scores,
            leaf: leaf.max(1),
            asking,
            leaves: Vec::new(),
            empty: Vec::new(),
            registry_total: None,
        }
    }

    /// The ranges whose registry count ([`Bisect::answer`]) is wanted next; empty when done.
    pub fn asking(&self) -> &[Span] {
        &self.asking
    }

    /// Takes Redis's count of each range [`Bisect::asking`] returned (same order): a range
    /// whose count equals the index's is settled, a small or unsplittable one that differs
    /// becomes a leaf, a larger one is halved and asked about next.
    pub fn answer(&mut self, counts: &[u64]) {
        assert_eq!(counts.len(), self.asking.len(), "one count per range asked");
        if self.registry_total.is_none() {
            self.registry_total = counts.first().copied();
        }
        let asked = std::mem::take(&mut self.asking);
        for (span, &count) in asked.iter().zip(counts) {
            if count == span.indexed() {
                continue;
            }
            if count == 0 {
                self.empty.push(*span);
                continue;
            }
            match self.halves(span) {
                Some((left, right)) if span.indexed() as usize > self.leaf => {
                    self.asking.push(left);
                    self.asking.push(right);
                }
                _ => self.leaves.push(*span),
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.asking.is_empty()
    }

    /// The ranges to read exactly, sorted by score and disjoint (from each other and from
    /// [`Bisect::empty`]).
    pub fn leaves(&self) -> Vec<Span> {
        let mut leaves = self.leaves.clone();
        leaves.sort_by(|a, b| a.lo.total_cmp(&b.lo));
        leaves
    }

    /// The ranges the registry holds nothing of (RQ's cleanup of expired entries, a deleted
    /// registry): their entries are all gone, without a read.
    pub fn empty(&self) -> &[Span] {
        &self.empty
    }

    /// Redis's count of the whole range of the index's scores, once asked.
    pub fn registry_total(&self) -> Option<u64> {
        self.registry_total
    }

    /// How many entries the index holds for the queue.
    pub fn indexed(&self) -> u64 {
        self.scores.len() as u64
    }

    /// Splits a range at its median score into two disjoint score ranges, or `None` when all
    /// its entries share one score (RQ's scores are whole seconds: a burst of failures in one
    /// second shares one, and is then read as one leaf).
    fn halves(&self, span: &Span) -> Option<(Span, Span)> {
        let slice = &self.scores[span.start..span.end];
        let median = slice[slice.len() / 2];
        // The first entry with the median score; if that is the first of the range, split
        // after the last entry with it instead.
        let mut cut = slice.partition_point(|s| *s < median);
        if cut == 0 {
            cut = slice.partition_point(|s| *s <= median);
        }
        if cut == 0 || cut == slice.len() {
            return None;
        }
        let at = span.start + cut;
        Some((
            Span {
                lo: span.lo,
                hi: self.scores[at - 1],
                start: span.start,
                end: at,
            },
            Span {
                lo: self.scores[at],
                hi: span.hi,
                start: at,
                end: span.end,
            },
        ))
    }
}
