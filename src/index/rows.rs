//! The index's entries one by one, for answers that decide again over every indexed failure
//! (the what-if of a candidate policy file, see [`crate::simulate`]). A row keeps the group's
//! names interned ([`GroupId`]) so that work that depends only on the group is done once per
//! group, not once per job.

use chrono::{DateTime, Utc};

use super::stored::EntryRef;
use super::{time, FailureIndex, Known, State};
use crate::jobkey::JobKey;

/// One group (queue × function × exception type) as interned ids: its identity in one index,
/// to join per-group answers (the trend's, the what-if's) to [`super::Group`]s. Meaningless
/// across indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GroupId {
    pub(super) queue: u16,
    pub(super) function: u32,
    pub(super) exception: u32,
}

/// One indexed failure, as the scans last decided it.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub group: GroupId,
    pub job: &'a JobKey,
    pub failed_at: DateTime<Utc>,
    pub attempts: u32,
    pub exhausted: bool,
    /// The deciding policy's id (see [`FailureIndex::policy_named`]); 0 for none.
    pub policy: u16,
    /// A number the rows of one group, policy, state and exhausted mark share, below
    /// [`FailureIndex::kind_numbers`]: what depends only on those can be kept per number in a
    /// vector during one pass.
    pub kind: u32,
    pub state: State,
}

/// A group's names.
#[derive(Debug, Clone, Copy)]
pub struct GroupNames<'a> {
    pub queue: &'a str,
    pub function: Known<&'a str>,
    pub exception: Known<&'a str>,
}

impl FailureIndex {
    /// Every entry, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        (0..self.entries.len()).map(|at| row(self.entry_ref(at)))
    }

    /// `each` over every entry's row, in parts answered at once (see [`super::parts`]); the
    /// answers in entry order.
    pub fn rows_in_parts<'s, R: Send>(
        &'s self,
        each: impl Fn(&mut dyn Iterator<Item = Row<'s>>) -> R + Sync,
    ) -> Vec<R> {
        self.in_parts(|part| each(&mut part.refs().map(|(_, r)| row(r))))
    }

    /// The names of a group some row of this index named.
    pub fn group_names(&self, g: GroupId) -> GroupNames<'_> {
        fn known(k: Known<&std::sync::Arc<str>>) -> Known<&str> {
            match k {
                Known::Is(n) => Known::Is(&**n),
                Known::Missing => Known::Missing,
                Known::Unknown => Known::Unknown,
            }
        }
        GroupNames {
            queue: &self.queues.names[usize::from(g.queue)],
            function: known(self.functions.name(g.function)),
            exception: known(self.exceptions.name(g.exception)),
        }
    }

    /// How many kind numbers rows may have (see [`Row::kind`]).
    pub fn kind_numbers(&self) -> usize {
        self.kinds.all().len()
    }

    /// The name of a row's deciding policy (`None` for id 0: no policy decided).
    pub fn policy_named(&self, id: u16) -> Option<&str> {
        (id > 0).then(|| &*self.policies.names[usize::from(id - 1)])
    }
}

fn row(r: EntryRef<'_>) -> Row<'_> {
    Row {
        group: *r.group(),
        job: &r.key().1,
        failed_at: time(r.hot.failed_at_us),
        attempts: r.stored().attempts,
        exhausted: r.kind.exhausted,
        policy: r.kind.policy,
        kind: r.hot.kind,
        state: r.kind.state,
    }
}
