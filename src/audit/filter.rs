//! Which audit entries a reader asked for: pure. An entry is looked at through its
//! [`Summary`] (what the filters test: 48 bytes plus 4 per job id, its names shared through
//! [`Names`]), so that the whole capped stream can be held in memory and filtered in a
//! millisecond (see `mirror`).

use std::hash::{DefaultHasher, Hash, Hasher};

use super::names::{Names, Sym, SymSet};
use super::{field, AuditAction, RawEntry, AUTOMATIC_WHO};

/// A stream entry's id (`<ms>-<seq>`): its place in the stream, the paging cursor, and its
/// time (when Redis appended it; for a folded entry, its last write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// `<ms>-<seq>` as Redis writes it, each part of 1 to 19 digits (what a u64 always
    /// holds, and what the API's `cursor` pattern says); `None` for anything else.
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What the filters test of one entry. Nothing that can be read back from the stream is kept
/// (`why`, `at`, the ids themselves): a page reads its entries back by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub id: StreamId,
    /// `who`, lowercased (the filter is case-insensitive).
    pub who: Sym,
    pub queue: Sym,
    pub to_queue: Option<Sym>,
    /// `None` for an action name this version does not know.
    pub action: Option<AuditAction>,
    /// The hashes of the listed job ids, sorted ([`id_hash`]); a match is confirmed against
    /// the ids themselves when the entry is read back, so a 32-bit hash is enough (a false
    /// match among a full stream's million ids is rare, and costs one entry read back).
    pub job_ids: Box<[u32]>,
}

impl Summary {
    /// The summary of a raw entry, its names kept in `names`; `None` when its id is not a
    /// stream id.
    pub fn of(raw: &RawEntry, names: &mut Names) -> Option<Summary> {
        let (id, fields) = raw;
        let id = StreamId::parse(id)?;
        let get = |name: &str| field(fields, name).unwrap_or_default();
        let listed = super::job_ids(&get("job_ids_json"), &get("job_ids"));
        let mut job_ids: Vec<u32> = listed.iter().map(|j| id_hash(j)).collect();
        job_ids.sort_unstable();
        Some(Summary {
            id,
            who: names.intern(&get("who").to_lowercase()),
            queue: names.intern(&get("queue")),
            to_queue: field(fields, "to_queue").map(|q| names.intern(&q)),
            action: AuditAction::of_name(&get("action")),
            job_ids: job_ids.into(),
        })
    }

    /// The same summary with its names moved to `to` (from `from`, which named them).
    pub fn renamed(&self, from: &Names, to: &mut Names) -> Summary {
        Summary {
            who: to.intern(from.name(self.who)),
            queue: to.intern(from.name(self.queue)),
            to_queue: self.to_queue.map(|q| to.intern(from.name(q))),
            ..self.clone()
        }
    }
}

/// The entry a raw entry took the place of (a fold), which readers drop.
pub fn replaces(raw: &RawEntry) -> Option<StreamId> {
    field(&raw.1, "replaces").and_then(|r| StreamId::parse(&r))
}

/// The hash a job id is summarized by (stable within the process, which is all it needs).
pub fn id_hash(job_id: &str) -> u32 {
    let mut h = DefaultHasher::new();
    job_id.hash(&mut h);
    let h = h.finish();
    (h ^ (h >> 32)) as u32
}

/// What a reader asked for; every part that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// A case-insensitive part of `who` (`alice` finds `ops-alice@10.0.0.5`).
    pub who: Option<String>,
    /// Only people's actions: the supervisor's automatic entries are left out.
    pub people_only: bool,
    pub action: Option<AuditAction>,
    /// The queue acted on, or the queue jobs were requeued to.
    pub queue: Option<String>,
    /// Entries that list this job id.
    pub job_id: Option<String>,
    /// Written at or after / at or before (milliseconds since the epoch; the stream id's time).
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

/// A filter made ready to test many entries against the names of one mirror: which names
/// `who` is part of, the queue's symbol and the job id's hash, each found once.
#[derive(Debug)]
pub struct Compiled<'a> {
    filter: &'a AuditFilter,
    who: Option<SymSet>,
    automatic: SymSet,
    /// `Some(None)`: a queue no entry names, so none matches.
    queue: Option<Option<Sym>>,
    job_hash: Option<u32>,
}

impl Compiled<'_> {
    /// Whether the entry `s` is asked for. A job id match is by hash here: the caller confirms
    /// it on the entry itself ([`AuditFilter::confirms`]).
    pub fn matches(&self, s: &Summary) -> bool {
        let f = self.filter;
        f.since_ms.is_none_or(|t| s.id.ms >= t)
            && f.until_ms.is_none_or(|t| s.id.ms <= t)
            && !(f.people_only && self.automatic.contains(s.who))
            && f.action.is_none_or(|a| s.action == Some(a))
            && self.who.as_ref().is_none_or(|w| w.contains(s.who))
            && self
                .queue
                .is_none_or(|q| q.is_some_and(|q| s.queue == q || s.to_queue == Some(q)))
            && self
                .job_hash
                .is_none_or(|h| s.job_ids.binary_search(&h).is_ok())
    }
}

impl AuditFilter {
    /// The filter, ready to test entries whose names are in `names`.
    pub fn compile(&self, names: &Names) -> Compiled<'_> {
        let who = self.who.as_ref().map(|w| {
            let w = w.to_lowercase();
            names.each(|n| n.contains(w.as_str()))
        });
        Compiled {
            filter: self,
            who,
            automatic: names.each(|n| AUTOMATIC_WHO.contains(&n)),
            queue: self.queue.as_ref().map(|q| names.get(q)),
            job_hash: self.job_id.as_deref().map(id_hash),
        }
    }

    /// Whether an entry read back (whose summary matched) lists the job id asked for.
    pub fn confirms(&self, entry: &super::AuditEntry) -> bool {
        self.job_id
            .as_ref()
            .is_none_or(|j| entry.job_ids.iter().any(|listed| listed == j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str, pairs: &[(&str, &str)]) -> RawEntry {
        let fields = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        (id.to_string(), fields)
    }

    fn alice_retry(names: &mut Names) -> Summary {
        Summary::of(
            &raw(
                "1700000000000-3",
                &[
                    ("who", "Ops-Alice@10.0.0.5"),
                    ("action", "requeue"),
                    ("queue", "emails"),
                    ("to_queue", "emails-slow"),
                    ("job_ids_json", r#"["a,b","clear","é/%2F"]"#),
                ],
            ),
            names,
        )
        .unwrap()
    }

    #[test]
    fn stream_ids_parse_only_as_redis_writes_them() {
        assert_eq!(
            StreamId::parse("1700000000000-3"),
            Some(StreamId {
                ms: 1_700_000_000_000,
                seq: 3
            })
        );
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "1-2-3",
            "a-1",
            "+1-1",
            "1 -1",
            "99999999999999999999-0",
            "1-12345678901234567890",
        ] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(StreamId::parse("12-0").unwrap().to_string(), "12-0");
    }

    #[test]
    fn each_filter_holds_or_refuses_on_its_own() {
        let mut names = Names::default();
        let s = alice_retry(&mut names);
        names.intern("email");
        let yes = [
            AuditFilter::default(),
            AuditFilter {
                who: Some("alice".into()),
                ..Default::default()
            },
            AuditFilter {
                people_only: true,
                ..Default::default()
            },
            AuditFilter {
                action: Some(AuditAction::Requeue),
                ..Default::default()
            },
            AuditFilter {
                queue: Some("emails".into()),
                ..Default::default()
            },
            AuditFilter {
                queue: Some("emails-slow".into()),
                ..Default::default()
            },
            AuditFilter {
                job_id: Some("a,b".into()),
                ..Default::default()
            },
            AuditFilter {
                job_id: Some("é/%2F".into()),
                ..Default::default()
            },
            AuditFilter {
                since_ms: Some(1_700_000_000_000),
                until_ms: Some(1_700_000_000_000),
                ..Default::default()
            },
        ];
        for f in yes {
            assert!(f.compile(&names).matches(&s), "{f:?}");
        }
        let no = [
            AuditFilter {
                who: Some("bob".into()),
                ..Default::default()
            },
            AuditFilter {
                action: Some(AuditAction::Purge),
                ..Default::default()
            },
            AuditFilter {
                queue: Some("email".into()),
                ..Default::default()
            },
            AuditFilter {
                job_id: Some("a".into()),
                ..Default::default()
            },
            AuditFilter {
                since_ms: Some(1_700_000_000_001),
                ..Default::default()
            },
            AuditFilter {
                until_ms: Some(1_699_999_999_999),
                ..Default::default()
            },
        ];
        for f in no {
            assert!(!f.compile(&names).matches(&s), "{f:?}");
        }
    }

    #[test]
    fn people_only_leaves_out_the_automatic_writers() {
        let people = AuditFilter {
            people_only: true,
            ..Default::default()
        };
        let mut names = Names::default();
        let alice = Summary::of(&raw("1-0", &[("who", "Ops-Alice")]), &mut names).unwrap();
        for who in AUTOMATIC_WHO {
            let s = Summary::of(&raw("1-0", &[("who", who)]), &mut names).unwrap();
            assert!(!people.compile(&names).matches(&s), "{who}");
        }
        assert!(people.compile(&names).matches(&alice));
    }

    #[test]
    fn an_unknown_action_matches_no_action_filter_and_a_fold_names_what_it_replaces() {
        let mut names = Names::default();
        let fold = raw("5-0", &[("action", "teleport"), ("replaces", "4-1")]);
        let s = Summary::of(&fold, &mut names).unwrap();
        assert_eq!(s.action, None);
        assert_eq!(replaces(&fold), StreamId::parse("4-1"));
        let f = AuditFilter {
            action: Some(AuditAction::Requeue),
            ..Default::default()
        };
        assert!(!f.compile(&names).matches(&s));
        assert!(Summary::of(&raw("not-an-id", &[]), &mut names).is_none());
    }
}
