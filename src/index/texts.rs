//! The index's search texts (see [`super::search`]), one per entry: its exception line and its
//! description, lowercased and cut. An entry holds a 4-byte offset (in what was its padding)
//! into one buffer where its record is packed end to end with the others' (no allocation,
//! pointer or allocator overhead per job).
//!
//! **Exception lines are kept once.** The failures of an incident repeat a few exception lines
//! (`ConnectionError: ... Connection refused.`) over and over while each description differs
//! (it holds the job's arguments), and at five million failed jobs those repeats were half of
//! the texts' bytes (issue 24, item 3). So a record names its line by number among the
//! [`SHARED_LINES_MAX`] first distinct lines, and only a line beyond those is stored in the
//! record itself: a record is `[u32 line][u16 length][description]`, or, for a line of its own,
//! `[u32 INLINE][u16 length][line][u16 length][description]`.
//!
//! **Nor is the function name at the head of a description.** RQ describes a job as
//! `module.function(arguments)`, and the function is an interned name of the entry already;
//! when the description starts with it (lowercased), only the rest is stored and the length's
//! top bit says so ([`Stored::after_function`]). The caller puts the two back together.
//!
//! Replaced and removed records stay behind as garbage until it outweighs the live ones; then
//! the buffer (and the shared lines, keeping only those still named) is rebuilt from the live
//! entries in one pass.

use indexmap::IndexSet;

/// An entry's text: an offset into [`Texts`], or one of these two marks.
pub type TextRef = u32;
/// The job's texts were not read (yet).
pub const TEXT_UNKNOWN: TextRef = u32::MAX;
/// The job has none (it cannot be decoded).
pub const TEXT_MISSING: TextRef = u32::MAX - 1;

/// Below this many bytes of garbage the buffer is never rebuilt.
const COMPACT_MIN_GARBAGE: usize = 1 << 20;
/// How many distinct exception lines are kept once (at most 65,536 × 200 bytes, about 13 MiB
/// with their table). Lines beyond them are stored with their entry, so a flood of unique
/// lines (a `KeyError` naming each job's key) costs what it did before, plus 5 bytes a job.
pub const SHARED_LINES_MAX: usize = 65_536;
/// A record's line stored in the record, not shared.
const INLINE: u32 = u32::MAX;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Texts {
    bytes: Vec<u8>,
    /// The longest record stored (its bytes from its offset on).
    longest: usize,
    /// Bytes of records no entry refers to any more.
    garbage: usize,
    /// The shared exception lines, by number.
    lines: IndexSet<Box<[u8]>>,
}

/// The top bit of a description's length: the description follows the entry's function name.
const AFTER_FUNCTION: u16 = 1 << 15;

/// At most this many bytes of a field are kept (the search's bounds keep them far smaller).
fn cut(field: &[u8]) -> &[u8] {
    &field[..field.len().min(usize::from(AFTER_FUNCTION - 1))]
}

/// An entry's texts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored<'a> {
    pub line: &'a [u8],
    pub description: &'a [u8],
    /// `description` is what follows the entry's function name (lowercased) in the job's
    /// description, which starts with it.
    pub after_function: bool,
}

impl Texts {
    /// Stores an entry's exception `line` and `description` (what follows the function name,
    /// when `after_function`), or answers [`TEXT_MISSING`] when the buffer is full (4 GiB).
    pub fn push(&mut self, line: &[u8], description: &[u8], after_function: bool) -> TextRef {
        let Ok(at) = TextRef::try_from(self.bytes.len()) else {
            return TEXT_MISSING;
        };
        if at >= TEXT_MISSING {
            return TEXT_MISSING;
        }
        let (line, description) = (cut(line), cut(description));
        match self.share(line) {
            Some(number) => self.bytes.extend_from_slice(&number.to_le_bytes()),
            None => {
                self.bytes.extend_from_slice(&INLINE.to_le_bytes());
                self.push_field(line, 0);
            }
        }
        let flag = if after_function { AFTER_FUNCTION } else { 0 };
        self.push_field(description, flag);
        self.longest = self.longest.max(self.bytes.len() - at as usize);
        at
    }

    /// The shared line's number, sharing it now if there is room.
    fn share(&mut self, line: &[u8]) -> Option<u32> {
        if let Some(number) = self.lines.get_index_of(line) {
            return Some(number as u32);
        }
        (self.lines.len() < SHARED_LINES_MAX).then(|| self.lines.insert_full(line.into()).0 as u32)
    }

    /// Appends a field (cut) with its length, `flag` set in the length's top bit.
    fn push_field(&mut self, field: &[u8], flag: u16) {
        let len = field.len() as u16 | flag;
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(field);
    }

    /// The field at `at`, whether its length's top bit is set, and the offset just past it.
    fn field(&self, at: usize) -> (&[u8], bool, usize) {
        let len = u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]);
        let (flag, len) = (
            len & AFTER_FUNCTION != 0,
            usize::from(len & !AFTER_FUNCTION),
        );
        (&self.bytes[at + 2..at + 2 + len], flag, at + 2 + len)
    }

    /// The texts at `at` (empty for the two marks).
    pub fn get(&self, at: TextRef) -> Stored<'_> {
        self.record(at).0
    }

    /// The record at `at` and its length in bytes.
    fn record(&self, at: TextRef) -> (Stored<'_>, usize) {
        if at >= TEXT_MISSING {
            return (Stored::default(), 0);
        }
        let start = at as usize;
        let head: [u8; 4] = self.bytes[start..start + 4].try_into().expect("4 bytes");
        let (line, next) = match u32::from_le_bytes(head) {
            INLINE => {
                let (line, _, next) = self.field(start + 4);
                (line, next)
            }
            number => (&*self.lines[number as usize], start + 4),
        };
        let (description, after_function, end) = self.field(next);
        let stored = Stored {
            line,
            description,
            after_function,
        };
        (stored, end - start)
    }

    /// The number of the shared line the record at `at` names, if it names one.
    pub fn shared_line(&self, at: TextRef) -> Option<usize> {
        if at >= TEXT_MISSING {
            return None;
        }
        let start = at as usize;
        let head: [u8; 4] = self.bytes[start..start + 4].try_into().expect("4 bytes");
        match u32::from_le_bytes(head) {
            INLINE => None,
            number => Some(number as usize),
        }
    }

    /// The shared lines, by number: a search tests each once rather than once per entry.
    pub fn shared_lines(&self) -> impl Iterator<Item = &[u8]> {
        self.lines.iter().map(|line| &**line)
    }

    /// Notes that no entry refers to the record at `at` any more.
    pub fn release(&mut self, at: TextRef) {
        self.garbage += self.record(at).1;
    }

    /// Whether the garbage now outweighs the live records (time to [`Texts::rebuild`]).
    pub fn worth_rebuilding(&self) -> bool {
        self.garbage >= COMPACT_MIN_GARBAGE && self.garbage * 2 > self.bytes.len()
    }

    /// A new buffer holding only the records `refs` point at; each ref is updated in place.
    pub fn rebuild<'r>(&mut self, refs: impl Iterator<Item = &'r mut TextRef>) {
        let mut fresh = Texts {
            bytes: Vec::with_capacity(self.bytes.len() - self.garbage),
            ..Texts::default()
        };
        for r in refs {
            if *r < TEXT_MISSING {
                let t = self.get(*r);
                *r = fresh.push(t.line, t.description, t.after_function);
            }
        }
        *self = fresh;
    }

    /// Where `finder`'s bytes occur in the stored records (see [`Occurrences`]), found by a
    /// pass over the whole buffer in `parts` parts at once; `None` once they occur more than
    /// about `most` times (then many records hold them, and each is better tested on its
    /// own).
    pub fn occurrences(
        &self,
        finder: &memchr::memmem::Finder<'_>,
        parts: usize,
        most: usize,
    ) -> Option<Occurrences> {
        let len = self.bytes.len();
        let words = len.div_ceil(WORD_BYTES);
        let mut bits = vec![0u64; words];
        let per_part = words.div_ceil(parts.max(1)).max(1);
        let overlap = finder.needle().len().saturating_sub(1);
        // Each part gives up past its share of `most`.
        let most = most.div_ceil(parts.max(1));
        let scan = |first_word: usize, bits: &mut [u64]| -> bool {
            let from = first_word * WORD_BYTES;
            let to = (from + bits.len() * WORD_BYTES).min(len);
            // Occurrences that begin in this part, including those that run into the next.
            let hay = &self.bytes[from..(to + overlap).min(len)];
            let mut found = 0usize;
            for at in finder.find_iter(hay) {
                if at >= to - from {
                    break;
                }
                let block = at / BLOCK;
                bits[block / 64] |= 1 << (block % 64);
                found += 1;
                if found > most {
                    return false;
                }
            }
            true
        };
        let complete = std::thread::scope(|s| {
            let mut chunks = bits.chunks_mut(per_part).enumerate();
            let first = chunks.next();
            let others: Vec<_> = chunks
                .map(|(i, chunk)| s.spawn(move || scan(i * per_part, chunk)))
                .collect();
            let mine = first.is_none_or(|(_, chunk)| scan(0, chunk));
            others
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .fold(mine, |all, one| all && one)
        });
        complete.then_some(Occurrences {
            bits,
            longest: self.longest,
        })
    }

    /// Bytes held, garbage and shared lines included (for the benchmark's cost per job).
    pub fn held_bytes(&self) -> usize {
        self.bytes.capacity()
            + self
                .lines
                .iter()
                .map(|l| l.len() + 2 * std::mem::size_of::<usize>() + 16)
                .sum::<usize>()
    }
}

/// Bytes of the buffer a bit of [`Occurrences`] stands for.
const BLOCK: usize = 64;
/// Bytes of the buffer a word of bits stands for.
const WORD_BYTES: usize = BLOCK * 64;

/// Where a search's bytes begin in the buffer of records, a bit per [`BLOCK`] bytes: a record
/// with no bit set from its offset through the longest record's length holds no occurrence in
/// its stored fields, so a search reads only the records that may (issue 24, item 3: reading
/// every record's fields took most of a search at five million jobs). Garbage records and
/// the records' length bytes can set bits too; they only send a record to be read.
#[derive(Debug)]
pub struct Occurrences {
    bits: Vec<u64>,
    longest: usize,
}

impl Occurrences {
    /// Whether the record at `at` may hold an occurrence (false for the two marks).
    pub fn may_hold(&self, at: TextRef) -> bool {
        if at >= TEXT_MISSING {
            return false;
        }
        let first = at as usize / BLOCK;
        let last = (at as usize + self.longest.max(1) - 1) / BLOCK;
        (first / 64..=last / 64).any(|w| {
            let Some(&word) = self.bits.get(w) else {
                return false;
            };
            let lo = if w == first / 64 { first % 64 } else { 0 };
            let hi = if w == last / 64 { last % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - hi)) & (u64::MAX << lo);
            word & mask != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored<'a>(line: &'a [u8], description: &'a [u8], after_function: bool) -> Stored<'a> {
        Stored {
            line,
            description,
            after_function,
        }
    }

    /// Every record whose stored line or description holds a search is one the occurrences
    /// say may hold it, whatever the parts the buffer is looked at in; some others are not;
    /// past `most` occurrences there is no answer.
    #[test]
    fn a_record_that_holds_a_search_is_always_one_that_may() {
        let mut texts = Texts::default();
        // Fill the shared lines, so that the records below keep their lines inline.
        for i in 0..SHARED_LINES_MAX {
            texts.push(format!("{i}").as_bytes(), b"", false);
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut field = |max: u64| -> Vec<u8> {
            let len = next(max + 1);
            (0..len).map(|_| b"ab"[next(2) as usize]).collect()
        };
        let records: Vec<(TextRef, Vec<u8>, Vec<u8>)> = (0..3000)
            .map(|_| {
                let (line, description) = (field(200), field(200));
                (texts.push(&line, &description, false), line, description)
            })
            .collect();
        let holds = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        for needle in ["abbabbbbbbab", "bbbbbbbbbbbbbb", "ab", "a"] {
            let finder = memchr::memmem::Finder::new(needle.as_bytes());
            for parts in [1, 2, 3, 8] {
                let found = texts
                    .occurrences(&finder, parts, usize::MAX)
                    .expect("no bound");
                let mut not = 0;
                for (at, line, description) in &records {
                    let held =
                        holds(line, needle.as_bytes()) || holds(description, needle.as_bytes());
                    assert!(
                        !held || found.may_hold(*at),
                        "{needle} at {at}, {parts} parts"
                    );
                    not += usize::from(!found.may_hold(*at));
                }
                if needle.len() > 12 {
                    assert!(not > 100, "{needle}: only {not} records left out");
                }
                assert!(!found.may_hold(TEXT_UNKNOWN) && !found.may_hold(TEXT_MISSING));
            }
            if needle.len() == 1 {
                assert!(
                    texts.occurrences(&finder, 2, 1000).is_none(),
                    "past the bound"
                );
            }
        }
    }

    #[test]
    fn texts_survive_a_rebuild_and_the_garbage_goes() {
        let mut texts = Texts::default();
        let big = vec![b'x'; 30_000];
        let dropped: Vec<TextRef> = (0..40).map(|_| texts.push(b"", &big, false)).collect();
        let mut kept = [
            texts.push(b"valueerror: card_declined", b"(1)", true),
            TEXT_UNKNOWN,
            TEXT_MISSING,
        ];
        assert!(!texts.worth_rebuilding());
        for at in dropped {
            texts.release(at);
        }
        assert!(texts.worth_rebuilding());
        texts.rebuild(kept.iter_mut());
        assert_eq!(
            texts.get(kept[0]),
            stored(b"valueerror: card_declined", b"(1)", true)
        );
        assert_eq!((kept[1], kept[2]), (TEXT_UNKNOWN, TEXT_MISSING));
        assert_eq!(
            texts.bytes.len(),
            4 + 2 + 3,
            "the line is shared, not inline"
        );
        assert_eq!(
            texts.lines.len(),
            1,
            "the empty line no entry names is gone"
        );
        assert_eq!(texts.get(TEXT_UNKNOWN), Stored::default());
    }

    #[test]
    fn a_repeated_line_is_kept_once_and_lines_past_the_shared_ones_are_kept_inline() {
        let mut texts = Texts::default();
        let a = texts.push(b"connectionerror: refused", b"app.pull(1)", false);
        let b = texts.push(b"connectionerror: refused", b"(2)", true);
        assert_eq!(texts.lines.len(), 1);
        assert_eq!(texts.bytes.len(), (4 + 2 + 11) + (4 + 2 + 3));
        for i in 1..SHARED_LINES_MAX {
            texts.push(format!("keyerror: 'k{i}'").as_bytes(), b"", false);
        }
        assert_eq!(texts.lines.len(), SHARED_LINES_MAX);
        let before = texts.bytes.len();
        let own = texts.push(b"keyerror: 'one more'", b"(7)", true);
        assert_eq!(
            texts.bytes.len() - before,
            4 + 2 + 20 + 2 + 3,
            "a line past the shared ones is stored in its record"
        );
        assert_eq!(
            texts.get(own),
            stored(b"keyerror: 'one more'", b"(7)", true)
        );
        assert_eq!(
            texts.get(a),
            stored(b"connectionerror: refused", b"app.pull(1)", false)
        );
        assert_eq!(
            texts.get(b),
            stored(b"connectionerror: refused", b"(2)", true)
        );
        texts.release(own);
        assert_eq!(
            texts.garbage,
            4 + 2 + 20 + 2 + 3,
            "a record's length, line included"
        );
    }

    #[test]
    fn a_field_is_cut_below_the_flag_bit() {
        let mut texts = Texts::default();
        let long = vec![b'y'; 40_000];
        let at = texts.push(&long, &long, false);
        let t = texts.get(at);
        assert_eq!((t.line.len(), t.description.len()), (32_767, 32_767));
        assert!(!t.after_function);
    }
}
