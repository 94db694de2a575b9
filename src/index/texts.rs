//! The index's search texts (see [`super::search`]), one per entry, packed end to end in one
//! buffer: an entry holds a 4-byte offset (in what was its padding), the buffer a 2-byte length
//! and the bytes. No allocation, pointer or allocator overhead per job, so a million jobs cost
//! their texts' bytes plus 2 each. Replaced and removed texts stay behind as garbage until it
//! outweighs the live texts; then the buffer is rebuilt from the live entries (one pass).

/// An entry's text: an offset into [`Texts`], or one of these two marks.
pub type TextRef = u32;
/// The job's texts were not read (yet).
pub const TEXT_UNKNOWN: TextRef = u32::MAX;
/// The job has none (it cannot be decoded).
pub const TEXT_MISSING: TextRef = u32::MAX - 1;

/// Below this many bytes of garbage the buffer is never rebuilt.
const COMPACT_MIN_GARBAGE: usize = 1 << 20;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Texts {
    bytes: Vec<u8>,
    /// Bytes of texts no entry refers to any more.
    garbage: usize,
}

impl Texts {
    /// Stores `text` (at most 65,535 bytes are kept; the search's bounds keep it far
    /// smaller), or answers [`TEXT_MISSING`] when the buffer is full (4 GiB).
    pub fn push(&mut self, text: &[u8]) -> TextRef {
        let len = text.len().min(usize::from(u16::MAX));
        let Ok(at) = TextRef::try_from(self.bytes.len()) else {
            return TEXT_MISSING;
        };
        if at >= TEXT_MISSING {
            return TEXT_MISSING;
        }
        self.bytes.extend_from_slice(&(len as u16).to_le_bytes());
        self.bytes.extend_from_slice(&text[..len]);
        at
    }

    /// The text at `at` (empty for the two marks).
    pub fn get(&self, at: TextRef) -> &[u8] {
        if at >= TEXT_MISSING {
            return &[];
        }
        let at = at as usize;
        let len = usize::from(u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]));
        &self.bytes[at + 2..at + 2 + len]
    }

    /// Notes that no entry refers to the text at `at` any more.
    pub fn release(&mut self, at: TextRef) {
        if at < TEXT_MISSING {
            self.garbage += 2 + self.get(at).len();
        }
    }

    /// Whether the garbage now outweighs the live texts (time to [`Texts::rebuild`]).
    pub fn worth_rebuilding(&self) -> bool {
        self.garbage >= COMPACT_MIN_GARBAGE && self.garbage * 2 > self.bytes.len()
    }

    /// A new buffer holding only the texts `refs` point at; each ref is updated in place.
    pub fn rebuild<'r>(&mut self, refs: impl Iterator<Item = &'r mut TextRef>) {
        let mut fresh = Texts {
            bytes: Vec::with_capacity(self.bytes.len() - self.garbage),
            garbage: 0,
        };
        for r in refs {
            if *r < TEXT_MISSING {
                *r = fresh.push(self.get(*r));
            }
        }
        *self = fresh;
    }

    /// Bytes held, garbage included (for the benchmark's cost per job).
    pub fn held_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_survive_a_rebuild_and_the_garbage_goes() {
        let mut texts = Texts::default();
        let big = vec![b'x'; 60_000];
        let dropped: Vec<TextRef> = (0..20).map(|_| texts.push(&big)).collect();
        let mut kept = [texts.push(b"card_declined"), TEXT_UNKNOWN, TEXT_MISSING];
        assert!(!texts.worth_rebuilding());
        for at in dropped {
            texts.release(at);
        }
        assert!(texts.worth_rebuilding());
        texts.rebuild(kept.iter_mut());
        assert_eq!(texts.get(kept[0]), b"card_declined");
        assert_eq!((kept[1], kept[2]), (TEXT_UNKNOWN, TEXT_MISSING));
        assert_eq!(texts.bytes.len(), 2 + 13);
        assert_eq!(texts.get(TEXT_UNKNOWN), b"");
    }
}
