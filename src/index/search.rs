//! The `q=` text search of a selection (issue 22, item 1): a case-insensitive substring over a
//! failed job's exception type and exception line, its function, its description (with its
//! arguments) and its id.
//!
//! The index answers it from memory at a million jobs, so what it keeps per job is bounded:
//! the exception line and the description, lowercased, each cut to its first
//! [`FIELD_MAX`] bytes (see [`SearchText`]); function and exception type are interned names,
//! the id is the entry's key. A job read whole (a bulk action's check, a queue outside the
//! index) is searched through exactly the same text, so a bulk action with `q` touches exactly
//! what the listing with the same `q` shows. Whole tracebacks are not kept and not searched.
//!
//! Case-insensitive means: both sides are lowercased character by character (Unicode
//! `char::to_lowercase`), then compared byte for byte.

use std::cell::RefCell;

use memchr::memmem::Finder;

use super::invalid::Invalid;
use crate::jobkey::JobKey;
use crate::rq::JobFacts;

/// Bytes kept of each searched field (exception line, description), after lowercasing, cut on
/// a character boundary: a search finds what lies in the first 200 bytes of each.
pub const FIELD_MAX: usize = 200;
/// The longest `q` taken, in characters.
pub const Q_MAX_CHARS: usize = 200;

/// A search as typed, checked and lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle {
    lower: String,
}

impl Needle {
    /// `text` as a search: refused when blank, longer than [`Q_MAX_CHARS`] characters, or
    /// holding a control character (a search cannot span fields or lines).
    pub fn parse(text: &str) -> Result<Needle, Invalid> {
        Needle::parse_as("q", "invalid_q", text)
    }

    /// [`Needle::parse`] for a parameter `name`, refused with `code`.
    pub fn parse_as(name: &str, code: &'static str, text: &str) -> Result<Needle, Invalid> {
        let refuse = |why: &str| Err(Invalid::new(code, format!("{name} {why}")));
        if text.trim().is_empty() {
            return refuse("cannot be empty or blank");
        }
        if text.chars().count() > Q_MAX_CHARS {
            return refuse(&format!("must have at most {Q_MAX_CHARS} characters"));
        }
        if text.chars().any(char::is_control) {
            return refuse("cannot hold control characters (tabs, line breaks, ...)");
        }
        Ok(Needle { lower: lower(text) })
    }

    /// The search lowercased.
    pub fn as_str(&self) -> &str {
        &self.lower
    }

    /// Whether a job read whole is found: the same fields and bounds as the index's.
    pub fn finds_in(&self, f: &JobFacts) -> bool {
        let finder = Finder::new(self.lower.as_bytes());
        let found = |name: Option<&str>| name.is_some_and(|n| lower(n).contains(&self.lower));
        found(f.func_name.as_deref())
            || found(f.exc_type())
            || lower(&f.job_id).contains(&self.lower)
            || SearchText::of(f)
                .lowered()
                .iter()
                .any(|field| finder.find(field).is_some())
    }
}

/// Lowercases `text` character by character (see the module documentation).
pub fn lower(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

/// What a search looks through in a job's own texts, as read: its exception line and its
/// description. Stored in the index as bytes ([`SearchText::lowered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchText<'a> {
    pub exception_line: Option<&'a str>,
    pub description: Option<&'a str>,
}

impl<'a> SearchText<'a> {
    /// A decoded job's texts (its exception line from its failure text, when read).
    pub fn of(f: &'a JobFacts) -> SearchText<'a> {
        SearchText {
            exception_line: f
                .failure
                .as_ref()
                .and_then(crate::rq::failure::Failure::exception_line),
            description: f.description.as_deref(),
        }
    }

    /// The searched bytes: the exception line and the description, each lowercased and cut
    /// to [`FIELD_MAX`] bytes. A search looks in each apart, so none spans both.
    pub fn lowered(&self) -> [Vec<u8>; 2] {
        [self.exception_line, self.description].map(|field| {
            let mut out = Vec::with_capacity(64);
            push_lower(&mut out, field.unwrap_or(""));
            out
        })
    }
}

/// Appends `text` lowercased, up to [`FIELD_MAX`] bytes, whole characters only.
fn push_lower(out: &mut Vec<u8>, text: &str) {
    // The ASCII start byte by byte (one byte lowercases to one byte, the same as
    // `char::to_lowercase` gives): most texts are ASCII, and going character by character
    // was 8 % of the daemon's instructions in a first build (docs/benchmarks.md, session 21).
    let ascii = text
        .bytes()
        .position(|b| !b.is_ascii())
        .unwrap_or(text.len())
        .min(FIELD_MAX);
    out.extend(text.as_bytes()[..ascii].iter().map(u8::to_ascii_lowercase));
    let mut room = FIELD_MAX - ascii;
    let mut buf = [0u8; 4];
    // `ascii` is a character boundary: every byte before it is a character of its own.
    for c in text[ascii..].chars().flat_map(char::to_lowercase) {
        let encoded = c.encode_utf8(&mut buf);
        if encoded.len() > room {
            break;
        }
        room -= encoded.len();
        out.extend_from_slice(encoded.as_bytes());
    }
}

/// A needle compiled for a pass over the index: a substring finder, and whether it could be
/// in a UUID id at all (only hex digits and dashes), so most searches never format one.
pub struct Compiled {
    finder: Finder<'static>,
    lower: String,
    uuid_like: bool,
    /// The search as hex digits, when it is only those and fits a UUID's longest group.
    hex: Option<HexDigits>,
    /// A buffer for ids lowercased on the fly, reused across the pass.
    id_buf: RefCell<String>,
}

/// A search of hex digits only, found in a UUID's 16 bytes without writing them out: it can
/// only lie within one of the text's five groups (`8-4-4-4-12` digits). The places where its
/// first two digits stand are found for all 32 digits at once (a bit per digit), and only
/// those are compared whole (issue 24, item 3: writing out five million ids for a search like
/// `4e7a` took a third of its answer).
struct HexDigits {
    /// The digits' value, a mask of as many low bits, and how many digits.
    value: u64,
    mask: u64,
    len: u32,
    /// Its first digit, and its second if it has one, repeated in every digit.
    first: u128,
    second: Option<u128>,
    /// The lowest bit of each digit where it may begin (it fits in the digit's group).
    starts: u128,
}

/// The lowest bit of every digit of a UUID as one big-endian number.
const LOW_BITS: u128 = u128::MAX / 0xf;
/// Where each of the five groups of a UUID's 32 digits begins and ends.
const UUID_GROUPS: [(usize, usize); 5] = [(0, 8), (8, 12), (12, 16), (16, 20), (20, 32)];

/// The lowest bit of each digit of `x` that equals the digit `repeated` repeats.
fn equal_digits(x: u128, repeated: u128) -> u128 {
    let y = x ^ repeated;
    !((y | (y >> 1) | (y >> 2) | (y >> 3)) & LOW_BITS) & LOW_BITS
}

impl HexDigits {
    fn new(lower: &str) -> Option<HexDigits> {
        let len = lower.len();
        if !(1..=12).contains(&len) || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = u64::from_str_radix(lower, 16).ok()?;
        let digit = |i: usize| u128::from((value >> (4 * (len - 1 - i))) & 0xf) * LOW_BITS;
        // Digit `start` (0 the first written) has its lowest bit at 4 × (31 - start).
        let starts = UUID_GROUPS
            .iter()
            .flat_map(|&(from, to)| (from..to).filter(move |s| s + len <= to))
            .fold(0u128, |bits, start| bits | 1 << (4 * (31 - start)));
        Some(HexDigits {
            value,
            mask: (1u64 << (4 * len)) - 1,
            len: len as u32,
            first: digit(0),
            second: (len > 1).then(|| digit(1)),
            starts,
        })
    }

    fn in_uuid(&self, bytes: &[u8; 16]) -> bool {
        let x = u128::from_be_bytes(*bytes);
        let mut places = equal_digits(x, self.first) & self.starts;
        if let Some(second) = self.second {
            places &= equal_digits(x, second) << 4;
        }
        while places != 0 {
            // The digits from there on, brought to the low bits.
            let shift = places.trailing_zeros() + 4 - 4 * self.len;
            if (x >> shift) as u64 & self.mask == self.value {
                return true;
            }
            places &= places - 1;
        }
        false
    }
}

impl Compiled {
    pub fn new(needle: &Needle) -> Compiled {
        let lower = needle.as_str().to_string();
        Compiled {
            finder: Finder::new(lower.as_bytes()).into_owned(),
            uuid_like: lower.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            hex: HexDigits::new(&lower),
            lower,
            id_buf: RefCell::new(String::new()),
        }
    }

    /// Whether a name (a function, an exception type) holds the search.
    pub fn in_name(&self, name: &str) -> bool {
        lower(name).contains(&self.lower)
    }

    /// The lengths `k` (0 < k < the search's length) for which `head` ends with the search's
    /// first `k` bytes: a text that starts with the rest after `head` holds the search across
    /// the join.
    pub fn cuts_after(&self, head: &[u8]) -> Vec<usize> {
        let needle = self.lower.as_bytes();
        (1..needle.len())
            .filter(|&k| head.ends_with(&needle[..k]))
            .collect()
    }

    /// Whether `text` starts with the search's bytes from `k` on (see [`Compiled::cuts_after`]).
    pub fn rest_starts(&self, k: usize, text: &[u8]) -> bool {
        text.starts_with(&self.lower.as_bytes()[k..])
    }

    /// The search, lowercased.
    pub fn as_str(&self) -> &str {
        &self.lower
    }

    /// Its finder (to look for it in a whole buffer of texts at once).
    pub fn finder(&self) -> &Finder<'static> {
        &self.finder
    }

    /// Whether stored search text holds it.
    pub fn in_text(&self, text: &[u8]) -> bool {
        self.finder.find(text).is_some()
    }

    /// Whether the job id holds it (lowercased like the rest).
    pub fn in_id(&self, key: &JobKey) -> bool {
        match key {
            JobKey::Uuid(bytes) => match &self.hex {
                Some(hex) => hex.in_uuid(bytes),
                None => {
                    self.uuid_like && self.finder.find(&crate::jobkey::uuid_text(bytes)).is_some()
                }
            },
            JobKey::Text(id) => {
                let mut buf = self.id_buf.borrow_mut();
                buf.clear();
                buf.extend(id.chars().flat_map(char::to_lowercase));
                buf.contains(&self.lower)
            }
            JobKey::Bytes(_) => lower(&key.to_id()).contains(&self.lower),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `push_lower` as it was before its ASCII start (session 21): character by character.
    fn push_lower_by_char(out: &mut Vec<u8>, text: &str) {
        let mut room = FIELD_MAX;
        let mut buf = [0u8; 4];
        for c in text.chars().flat_map(char::to_lowercase) {
            let encoded = c.encode_utf8(&mut buf);
            if encoded.len() > room {
                break;
            }
            room -= encoded.len();
            out.extend_from_slice(encoded.as_bytes());
        }
    }

    proptest! {
        /// A search of hex digits finds a UUID id exactly when its written-out text holds the
        /// search: searches cut from the id's own text (within a group, across a dash, and its digits
        /// across a group's end without the dash) and random ones, of every length.
        #[test]
        fn hex_digits_are_found_in_a_uuid_exactly_where_its_text_holds_them(
            bytes in any::<[u8; 16]>(),
            from in 0usize..36,
            len in 1usize..14,
            other in "[0-9a-f]{1,13}",
        ) {
            let text = crate::jobkey::uuid_text(&bytes);
            let text = std::str::from_utf8(&text).unwrap();
            let cut = &text[from..(from + len).min(36)];
            // The digits with the dashes taken out, every cut of them: one across a dash is
            // in no group.
            let digits: String = text.chars().filter(|&c| c != '-').collect();
            let across = (0..32).flat_map(|from| (from + 1..=32.min(from + 12)).map(move |to| (from, to)));
            let across: Vec<&str> = across.map(|(from, to)| &digits[from..to]).collect();
            for q in [cut, other.as_str()].into_iter().chain(across) {
                let c = Compiled::new(&Needle::parse(q).unwrap());
                prop_assert_eq!(
                    c.in_id(&JobKey::Uuid(bytes)),
                    text.contains(q),
                    "{} in {}", q, text
                );
            }
        }

        /// The ASCII start lowercases and cuts exactly as character by character does: mixed
        /// texts, a non-ASCII character before, at and after the cut, characters whose
        /// lowercase is longer (`İ`).
        #[test]
        fn lowering_the_ascii_start_byte_by_byte_changes_nothing(
            text in "([A-Za-z0-9 _.:()'-]{0,120}[ÄÖÜéİẞΣ€😀]?){0,4}",
        ) {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            push_lower(&mut fast, &text);
            push_lower_by_char(&mut slow, &text);
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn a_search_is_cut_where_the_function_name_ends_with_its_first_part() {
        let c = |q: &str| Compiled::new(&Needle::parse(q).unwrap());
        assert_eq!(c("bill(42").cuts_after(b"app.tasks.bill"), vec![4]);
        assert!(c("bill(42").rest_starts(4, b"(42, 'eur')"));
        assert!(!c("bill(42").rest_starts(4, b"(43, 'eur')"));
        // Every cut that fits, none of the whole search (that is the name's own match).
        assert_eq!(c("aaa").cuts_after(b"xaaa"), vec![1, 2]);
        assert_eq!(c("bill").cuts_after(b"app.tasks.bill"), Vec::<usize>::new());
        assert_eq!(c("zzz").cuts_after(b"app.tasks.bill"), Vec::<usize>::new());
    }

    #[test]
    fn a_blank_long_or_control_search_is_refused_with_invalid_q() {
        let long = "é".repeat(Q_MAX_CHARS + 1);
        for text in ["", "   ", "a\tb", "line\nbreak", "nul\0", long.as_str()] {
            let refused = Needle::parse(text).unwrap_err();
            assert_eq!(refused.code, "invalid_q", "{text:?}");
            assert!(refused.message.starts_with("q "), "{refused:?}");
        }
        let longest = "é".repeat(Q_MAX_CHARS);
        assert!(Needle::parse(&longest).is_ok(), "200 characters, 400 bytes");
        assert_eq!(
            Needle::parse("Card_DECLINED").unwrap().as_str(),
            "card_declined"
        );
    }

    #[test]
    fn each_field_is_cut_to_its_bound_on_a_character_boundary() {
        let line = format!("ValueError: {}", "ä".repeat(FIELD_MAX));
        let [first, second] = SearchText {
            exception_line: Some(&line),
            description: Some("App.Tasks.Charge(42, TOKEN='X')"),
        }
        .lowered()
        .map(|field| String::from_utf8(field).expect("whole characters only"));
        assert!(
            first.len() <= FIELD_MAX && first.len() >= FIELD_MAX - 1,
            "{}",
            first.len()
        );
        assert!(first.starts_with("valueerror: ää"));
        assert_eq!(second, "app.tasks.charge(42, token='x')");
    }

    /// The index answers a search from what it keeps: every field, ids like `clear` and
    /// `%2F`, a job whose texts are not read counted apart, the same set for pages, dry-run
    /// tallies and groups.
    #[test]
    fn the_index_finds_by_exception_line_function_description_and_id() {
        use crate::index::{FailureIndex, Known, Observation, Order, Selection, State};
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let obs = |id: &'static str, function, line, description| Observation {
            queue: "default",
            job_id: id,
            score: 1e10,
            failed_at: at,
            function: Known::Is(function),
            exception: Known::Is("ValueError"),
            attempts: 0,
            exhausted: false,
            policy: None,
            state: State::Unmatched,
            next_due: None,
            text: Known::Is(SearchText {
                exception_line: line,
                description,
            }),
        };
        let mut index = FailureIndex::default();
        let card = "stripe.error.CardError: Your card was declined (card_declined)";
        index.observe(&obs(
            "a",
            "app.billing.charge",
            Some(card),
            Some("charge(42, 'EUR')"),
        ));
        index.observe(&obs(
            "Clear",
            "app.mail.send",
            Some("TimeoutError: timed out"),
            None,
        ));
        index.observe(&Observation {
            text: Known::Unknown,
            ..obs("c", "app.x", None, None)
        });
        index.observe(&Observation::undecodable("default", "café-%2F", 1e10));
        let found = |q: &str| {
            let query = Selection {
                q: Some(Needle::parse(q).unwrap()),
                ..Selection::default()
            };
            let page = index.page(&query, Order::Oldest, 0, 10);
            let mut ids: Vec<String> = page.jobs.into_iter().map(|j| j.job_id).collect();
            ids.sort();
            let tally = index.tally(&query, 10);
            let grouped: u64 = index.groups_matching(&query).iter().map(|g| g.count).sum();
            assert_eq!(
                grouped, page.total,
                "{q}: groups count what the page counts"
            );
            // A bulk action never selects an undecodable job (the tally skips them).
            let decodable = ids.iter().filter(|i| !i.starts_with("café")).count();
            assert_eq!(
                tally.matched, decodable as u64,
                "{q}: a dry run selects the same"
            );
            (ids, page.unknown)
        };
        assert_eq!(found("CARD_DECLINED"), (vec!["a".into()], 1));
        assert_eq!(found("'eur'"), (vec!["a".into()], 1));
        assert_eq!(found("mail.SEND"), (vec!["Clear".into()], 1));
        assert_eq!(found("clear"), (vec!["Clear".into()], 1));
        assert_eq!(found("valueerror").0, vec!["Clear", "a", "c"]);
        assert_eq!(found("%2f"), (vec!["café-%2F".into()], 1));
        assert_eq!(found("CAFÉ"), (vec!["café-%2F".into()], 1));
        assert_eq!(found("nowhere"), (vec![], 1));
    }

    /// The ids the index lists first (up to 10) for the search `q`, sorted.
    fn listed(index: &crate::index::FailureIndex, q: &str) -> Vec<String> {
        use crate::index::{Order, Selection};
        let query = Selection {
            q: Some(Needle::parse(q).unwrap()),
            ..Selection::default()
        };
        let mut ids: Vec<String> = index
            .page(&query, Order::Newest, 0, 10)
            .jobs
            .into_iter()
            .map(|j| j.job_id)
            .collect();
        ids.sort();
        ids
    }

    /// The ids of the jobs read whole that the search `q` selects, sorted.
    fn selected(facts: &[JobFacts], q: &str, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
        let query = crate::index::Selection {
            q: Some(Needle::parse(q).unwrap()),
            ..Default::default()
        };
        let mut ids: Vec<String> = facts
            .iter()
            .filter(|f| query.matches(f, &[], now))
            .map(|f| f.job_id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// An index of `facts`, as the scans index jobs they read.
    fn indexed(facts: &[JobFacts]) -> crate::index::FailureIndex {
        let mut index = crate::index::FailureIndex::default();
        for f in facts {
            let decision = crate::policy::Decision::Unmatched;
            index.observe(&crate::index::Observation::decided(
                f, 1e10, None, &decision,
            ));
        }
        index
    }

    /// RQ's descriptions start with the function's name, which the index keeps apart (the
    /// texts store only the arguments): a search across the two, or in either, finds the job
    /// as a search of the whole description would, and a job read whole agrees.
    #[test]
    fn a_search_across_the_function_name_and_its_arguments_finds_the_job() {
        let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let facts: Vec<JobFacts> = [
            (
                "rq",
                "App.Images.Resize",
                "app.images.resize(632426, tenant='ACME')",
            ),
            ("custom", "App.Images.Resize", "resize the banner (632426)"),
            ("other", "App.Images.Crop", "app.images.crop(1)"),
        ]
        .into_iter()
        .map(|(id, function, description)| JobFacts {
            job_id: id.into(),
            func_name: Some(function.into()),
            description: Some(description.into()),
            failed_at: now,
            failure: Some(crate::rq::Failure::from_text("KeyError: 'width'".into())),
            ..crate::index::selection::tests::job("default", id)
        })
        .collect();
        let index = indexed(&facts);
        let found = |q: &str| {
            let ids = listed(&index, q);
            assert_eq!(
                ids,
                selected(&facts, q, now),
                "{q}: a job read whole agrees"
            );
            ids
        };
        assert_eq!(found("RESIZE(6324"), vec!["rq"], "across the two");
        assert_eq!(found("es.resize(632426, tenant='acme')"), vec!["rq"]);
        assert_eq!(found("tenant='acme'"), vec!["rq"], "in the arguments alone");
        assert_eq!(
            found("banner (632426"),
            vec!["custom"],
            "a description of its own"
        );
        assert_eq!(found("(632426"), vec!["custom", "rq"]);
        assert_eq!(found("crop(1)"), vec!["other"]);
        assert_eq!(
            found("app.images"),
            vec!["custom", "other", "rq"],
            "the names"
        );
        assert_eq!(
            found("'width'"),
            vec!["custom", "other", "rq"],
            "the shared line"
        );
        assert_eq!(found("crop(6"), Vec::<String>::new());
    }

    /// Jobs of queue `q` and function `App.Billing.Charge` that failed at `now`, one per
    /// (id, failure text, description).
    fn billing_jobs(
        texts: &[(&str, &str, Option<&str>)],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<JobFacts> {
        texts
            .iter()
            .map(|(id, text, description)| JobFacts {
                job_id: id.to_string(),
                func_name: Some("App.Billing.Charge".into()),
                description: description.map(str::to_string),
                failed_at: now,
                failure: Some(crate::rq::Failure::from_text(text.to_string())),
                meta: None,
                ..crate::index::selection::tests::job("q", "")
            })
            .collect()
    }

    /// A bulk action reads the jobs the index does not know as they are now whole and matches
    /// them with `Selection::matches`: the two must agree on every search, or a bulk action
    /// would touch what the listing does not show. See: issue 22, item 1.
    #[test]
    fn a_job_read_whole_is_found_exactly_when_the_index_finds_it() {
        let long = format!("Stripe said {} card_declined", "ß".repeat(FIELD_MAX));
        let texts = [
            (
                "0f8fad5b-d9cb-469f-a165-70867728950e",
                "ValueError: x",
                Some("a.b(1)"),
            ),
            (
                "Clear",
                &*format!("KeyError: {long}"),
                Some("İstanbul.Ünïcode('ΣΑΣ')"),
            ),
            (
                "a%2Fb",
                "Work-horse terminated unexpectedly; waitpid returned 9",
                None,
            ),
            (
                "x",
                "Traceback (most recent call last):\n  File \"t.py\"\nboom: card_declined",
                None,
            ),
        ];
        let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let facts = billing_jobs(&texts, now);
        let index = indexed(&facts);
        for q in [
            "card_declined",
            "BILLING",
            "d9cb-469f",
            "clear",
            "%2f",
            "workhorse",
            "rq.workhorse",
            "istanbul",
            "i̇stanbul",
            "σας",
            "ünï",
            "valueerror: x",
            "ßß",
            "a.b(1)",
            "boom",
        ] {
            let by_index = listed(&index, q);
            assert_eq!(by_index, selected(&facts, q, now), "q={q:?}");
            if q == "card_declined" {
                // Clear's mention lies past the first 200 bytes of its exception line.
                assert_eq!(by_index, vec!["x"]);
            }
            if q == "BILLING" {
                assert_eq!(by_index.len(), 4, "every job's function");
            }
        }
    }

    #[test]
    fn ids_are_searched_case_insensitively_whatever_their_key() {
        let c = |q: &str| Compiled::new(&Needle::parse(q).unwrap());
        let uuid = JobKey::new("0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_eq!(&*uuid.to_id(), "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert!(c("D9CB-469F").in_id(&uuid));
        assert!(c("0f8fad5b-d9cb-469f-a165-70867728950e").in_id(&uuid));
        assert!(!c("d9cbx").in_id(&uuid));
        assert!(c("ÉTÉ").in_id(&JobKey::new("job-été-1")));
        assert!(c("%2f").in_id(&JobKey::new("a%2Fb")));
        assert!(!c("clear").in_id(&JobKey::new("cle-ar")));
    }
}
