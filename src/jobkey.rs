//! Job ids as compact map keys, for the memories that hold one entry per failed job (the
//! decision memory, the skip memory, the failure index).

/// A job id as a map key. RQ's default ids are UUID4 text (36 bytes, which would be a heap
/// allocation of 48 per entry); those that read back identically from their 16 bytes are kept
/// in the entry itself, any other id on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKey {
    Uuid([u8; 16]),
    Text(Box<str>),
    /// A registry member that is not UTF-8 (skipped as `invalid_id`, never decided on).
    Bytes(Box<[u8]>),
}

/// A UUID key feeds its 16 bytes to the hasher in one write (the derived hash wrote the
/// variant, the array's length and then its bytes: three SipHash writes for each of the five
/// or so lookups a job gets in a first build; docs/benchmarks.md, session 22). Equal keys are
/// the same variant, so they hash alike.
impl std::hash::Hash for JobKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            JobKey::Uuid(bytes) => state.write_u128(u128::from_le_bytes(*bytes)),
            JobKey::Text(text) => {
                state.write_u8(1);
                text.hash(state);
            }
            JobKey::Bytes(bytes) => {
                state.write_u8(2);
                bytes.hash(state);
            }
        }
    }
}

impl JobKey {
    pub fn new(job_id: &str) -> JobKey {
        match uuid_bytes(job_id) {
            Some(bytes) => JobKey::Uuid(bytes),
            None => JobKey::Text(job_id.into()),
        }
    }

    pub fn from_bytes(member: &[u8]) -> JobKey {
        match std::str::from_utf8(member) {
            Ok(text) => JobKey::new(text),
            Err(_) => JobKey::Bytes(member.into()),
        }
    }

    /// Appends the id's text to `out` ([`JobKey::to_id`] without allocating for a UUID or a
    /// text id: the what-if writes out every indexed job's id).
    pub fn push_id(&self, out: &mut String) {
        match self {
            JobKey::Text(text) => out.push_str(text),
            JobKey::Bytes(bytes) => out.push_str(&String::from_utf8_lossy(bytes)),
            JobKey::Uuid(bytes) => out.push_str(
                std::str::from_utf8(&uuid_text(bytes)).expect("hex digits and dashes are ASCII"),
            ),
        }
    }

    pub fn to_id(&self) -> Box<str> {
        match self {
            JobKey::Text(text) => text.clone(),
            JobKey::Bytes(bytes) => String::from_utf8_lossy(bytes).into(),
            JobKey::Uuid(bytes) => String::from_utf8_lossy(&uuid_text(bytes)).into(),
        }
    }
}

/// The canonical lowercase text of a UUID's 16 bytes, without allocating (a search looks at
/// a million ids per request).
pub fn uuid_text(bytes: &[u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0xf)];
        at += 2;
    }
    out
}

/// The 16 bytes of a UUID in canonical lowercase text (`8-4-4-4-12` hex digits), else `None`:
/// only text that [`JobKey::to_id`] gives back byte for byte.
fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 36 || [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
        return None;
    }
    // (first character, bytes) of the five groups of hex digits.
    const GROUPS: [(usize, usize); 5] = [(0, 4), (9, 2), (14, 2), (19, 2), (24, 6)];
    let mut out = [0u8; 16];
    let mut at = 0;
    // Every digit looked up, and one check at the end: a branch per digit made this 1.5 % of
    // a first build's instructions, five keys a job (docs/benchmarks.md, session 22).
    let mut invalid = 0u8;
    for (start, bytes) in GROUPS {
        for pair in text[start..start + 2 * bytes].chunks_exact(2) {
            let (high, low) = (
                HEX_VALUE[usize::from(pair[0])],
                HEX_VALUE[usize::from(pair[1])],
            );
            invalid |= high | low;
            out[at] = high << 4 | low;
            at += 1;
        }
    }
    (invalid & NOT_HEX == 0).then_some(out)
}

/// Marks a byte that is no lowercase hex digit in [`HEX_VALUE`].
const NOT_HEX: u8 = 0x10;

/// Each byte's value as a lowercase hex digit, else [`NOT_HEX`] (uppercase would not read
/// back identically).
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The digit-by-digit reading `uuid_bytes` replaced, kept as the reference.
    fn reference(text: &str) -> Option<[u8; 16]> {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let text = text.as_bytes();
        if text.len() != 36 || [8, 13, 18, 23].iter().any(|&i| text[i] != b'-') {
            return None;
        }
        let hex: Vec<u8> = text.iter().copied().filter(|&c| c != b'-').collect();
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(out)
    }

    proptest! {
        /// Ids shaped like UUIDs, from an alphabet with uppercase digits, dashes and a
        /// non-ASCII letter mixed in: the table reads them as the reference does, and every
        /// key gives back its id byte for byte.
        #[test]
        fn uuid_keys_read_as_the_reference_and_give_back_their_id(
            id in "[0-9a-fA-F\\-gé]{8}-[0-9a-f]{4}-[0-9a-fG]{4}-[0-9a-f\\-]{4}-[0-9a-fF]{12}",
            other in ".{0,40}",
        ) {
            for id in [id.as_str(), other.as_str()] {
                prop_assert_eq!(uuid_bytes(id), reference(id));
                prop_assert_eq!(&*JobKey::new(id).to_id(), id);
                let mut pushed = String::from("x");
                JobKey::new(id).push_id(&mut pushed);
                prop_assert_eq!(&pushed[1..], id);
            }
        }

        /// A member that is not UTF-8 is written out as `to_id` writes it.
        #[test]
        fn push_id_writes_what_to_id_gives(member in proptest::collection::vec(any::<u8>(), 0..40)) {
            let key = JobKey::from_bytes(&member);
            let mut pushed = String::new();
            key.push_id(&mut pushed);
            prop_assert_eq!(&*pushed, &*key.to_id());
        }

        #[test]
        fn every_canonical_uuid_is_kept_as_its_bytes(bytes in any::<[u8; 16]>()) {
            let text = uuid_text(&bytes);
            let key = JobKey::new(std::str::from_utf8(&text).unwrap());
            prop_assert_eq!(key, JobKey::Uuid(bytes));
        }
    }
}
