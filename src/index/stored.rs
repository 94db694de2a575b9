//! How an entry is kept: what every pass reads ([`Hot`], 16 bytes) in a column of its own,
//! apart from the rest ([`Stored`]) and the key. A pass over every entry (a filtered page, a
//! dry run, a count, a search) reads the column, and an entry's other fields only when the
//! answer needs them (a page's jobs, a search for ids). At five million failed jobs the column
//! is 80 MB where whole entries with their keys were 400 MB, and such passes are bound by the
//! memory they read (issue 24, item 3).
//!
//! What a filter asks of an entry besides its failure time (queue, function, exception type,
//! policy, state, exhausted mark) is one number in the column: its [`Kind`], numbered while
//! some entry is of it ([`Kinds`]). A query decides once per kind.

use super::texts::TextRef;
use super::{Entry, GroupId, IdMap, State};
use crate::jobkey::JobKey;

/// What every pass reads (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Hot {
    pub failed_at_us: i64,
    /// The entry's kind, by number.
    pub kind: u32,
    /// Its search text.
    pub text: TextRef,
}

/// The rest of an entry (its key apart).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Stored {
    pub score: f64,
    /// Next due time for waiting jobs, else `i64::MAX`.
    pub due_us: i64,
    pub attempts: u32,
    /// The scan that last saw this entry.
    pub seen: u32,
}

// What a pass reads per entry is the column's size: keep it at 16 bytes.
const _: () = assert!(std::mem::size_of::<Hot>() == 16);
const _: () = assert!(std::mem::size_of::<Stored>() == 24);
const _: () = assert!(std::mem::size_of::<((u16, JobKey), Stored)>() == 56);

/// What a filter asks of an entry besides its failure time and texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Kind {
    pub group: GroupId,
    /// Interned policy id + 1; 0 for none.
    pub policy: u16,
    pub state: State,
    pub exhausted: bool,
}

/// The kinds entries are of, by number. A kind no entry is of any more gives its number back
/// for the next new kind, so there are never more numbers than kinds were ever held at once
/// (in practice queues × functions × exception types × the few states and policies a group's
/// jobs are in).
#[derive(Debug, Default)]
pub(super) struct Kinds {
    all: Vec<Kind>,
    /// Entries of each kind, by number (0: the number is free).
    held: Vec<u32>,
    numbers: IdMap<Kind, u32>,
    free: Vec<u32>,
}

impl Kinds {
    /// The number of `kind`, for one more entry of it.
    fn hold(&mut self, kind: Kind) -> u32 {
        let n = match self.numbers.get(&kind) {
            Some(&n) => n,
            None => {
                let n = match self.free.pop() {
                    Some(n) => {
                        self.all[n as usize] = kind;
                        n
                    }
                    None => {
                        self.all.push(kind);
                        self.held.push(0);
                        u32::try_from(self.all.len() - 1).expect("fewer than 4G kinds")
                    }
                };
                self.numbers.insert(kind, n);
                n
            }
        };
        self.held[n as usize] += 1;
        n
    }

    /// One entry fewer of kind `n`.
    fn release(&mut self, n: u32) {
        let held = &mut self.held[n as usize];
        *held -= 1;
        if *held == 0 {
            self.numbers.remove(&self.all[n as usize]);
            self.free.push(n);
        }
    }

    /// Every kind some entry is of, with how many are.
    pub fn held(&self) -> impl Iterator<Item = (&Kind, u64)> {
        self.all
            .iter()
            .zip(&self.held)
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| (k, u64::from(n)))
    }

    /// The kind numbered `n`.
    pub fn get(&self, n: u32) -> &Kind {
        &self.all[n as usize]
    }

    /// Every number's kind (a free number's is that of its last entries: no entry has it).
    pub fn all(&self) -> &[Kind] {
        &self.all
    }

    /// An entry of `queue` as it is kept, counted as one more entry of its kind (see
    /// [`Kinds::forget`]).
    pub fn split(&mut self, queue: u16, e: &Entry) -> (Hot, Stored) {
        let kind = self.hold(Kind {
            group: GroupId {
                queue,
                function: e.function,
                exception: e.exception,
            },
            policy: e.policy,
            state: e.state,
            exhausted: e.exhausted,
        });
        (
            Hot {
                failed_at_us: e.failed_at_us,
                kind,
                text: e.text,
            },
            Stored {
                score: e.score,
                due_us: e.due_us,
                attempts: e.attempts,
                seen: e.seen,
            },
        )
    }

    /// An entry that is no longer kept: whole, for the counts kept of it.
    pub fn forget(&mut self, h: &Hot, s: &Stored) -> Entry {
        let e = self.join(h, s);
        self.release(h.kind);
        e
    }

    /// An entry from how it is kept.
    pub fn join(&self, h: &Hot, s: &Stored) -> Entry {
        joined(self.get(h.kind), h, s)
    }
}

fn joined(k: &Kind, h: &Hot, s: &Stored) -> Entry {
    Entry {
        score: s.score,
        failed_at_us: h.failed_at_us,
        due_us: s.due_us,
        function: k.group.function,
        exception: k.group.exception,
        attempts: s.attempts,
        seen: s.seen,
        text: h.text,
        policy: k.policy,
        state: k.state,
        exhausted: k.exhausted,
    }
}

/// One entry as a pass meets it: its hot fields and kind read, the rest only when asked for
/// (a reference is not a read).
#[derive(Clone, Copy)]
pub(super) struct EntryRef<'a> {
    pub hot: &'a Hot,
    pub kind: &'a Kind,
    cold: &'a ((u16, JobKey), Stored),
}

impl<'a> EntryRef<'a> {
    pub fn new(hot: &'a Hot, cold: &'a ((u16, JobKey), Stored), kinds: &'a Kinds) -> Self {
        EntryRef {
            hot,
            kind: kinds.get(hot.kind),
            cold,
        }
    }

    pub fn group(&self) -> &'a GroupId {
        &self.kind.group
    }

    /// The entry's key (queue, job id).
    pub fn key(&self) -> &'a (u16, JobKey) {
        &self.cold.0
    }

    pub fn stored(&self) -> &'a Stored {
        &self.cold.1
    }

    /// The whole entry.
    pub fn entry(&self) -> Entry {
        joined(self.kind, self.hot, &self.cold.1)
    }
}

#[cfg(test)]
impl Kinds {
    /// Whether each number's count is the number of entries (by their hot fields) of it, a
    /// number is free exactly when none is, and each held kind has the number it is at.
    pub fn counts_match(&self, hot: &[Hot]) -> bool {
        let mut counted = vec![0u32; self.all.len()];
        for h in hot {
            counted[h.kind as usize] += 1;
        }
        let mut free = self.free.clone();
        free.sort_unstable();
        let unheld: Vec<u32> = (0..self.all.len() as u32)
            .filter(|&n| counted[n as usize] == 0)
            .collect();
        counted == self.held
            && free == unheld
            && self.numbers.len() == self.all.len() - free.len()
            && self
                .numbers
                .iter()
                .all(|(k, &n)| self.all[n as usize] == *k && counted[n as usize] > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, state: State) -> Entry {
        Entry {
            score: 1.0,
            failed_at_us: 1,
            due_us: i64::MAX,
            function,
            exception: 0,
            attempts: 1,
            seen: 0,
            text: 0,
            policy: 0,
            state,
            exhausted: false,
        }
    }

    /// A kind no entry is of gives its number back: jobs that each have a function of their
    /// own, one at a time, take one number between them, not one each.
    #[test]
    fn a_number_no_entry_holds_is_given_to_the_next_new_kind() {
        let mut kinds = Kinds::default();
        let mut hot = Vec::new();
        for f in 0..1000 {
            let (h, s) = kinds.split(0, &entry(f, State::Waiting));
            hot.push(h);
            assert!(kinds.counts_match(&hot));
            assert_eq!(kinds.forget(&h, &s).function, f);
            hot.pop();
            assert!(kinds.counts_match(&hot));
        }
        assert_eq!(kinds.all().len(), 1);
        let (a, _) = kinds.split(0, &entry(1, State::Due));
        let (b, _) = kinds.split(0, &entry(1, State::Due));
        let (c, _) = kinds.split(1, &entry(1, State::Due));
        assert_eq!(a.kind, b.kind, "one kind, one number");
        assert_ne!(a.kind, c.kind, "another queue is another kind");
        assert!(kinds.counts_match(&[a, b, c]));
    }
}
