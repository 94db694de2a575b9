//! Job ids as compact map keys, for the memories that hold one entry per failed job (the
//! decision memory, the skip memory, the failure index).

/// A job id as a map key. RQ's default ids are UUID4 text (36 bytes, which would be a heap
/// allocation of 48 per entry); those that read back identically from their 16 bytes are kept
/// in the entry itself, any other id on the heap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKey {
    Uuid([u8; 16]),
    Text(Box<str>),
    /// A registry member that is not UTF-8 (skipped as `invalid_id`, never decided on).
    Bytes(Box<[u8]>),
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
    for (start, bytes) in GROUPS {
        for pair in text[start..start + 2 * bytes].chunks_exact(2) {
            out[at] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
            at += 1;
        }
    }
    Some(out)
}

/// A lowercase hex digit's value (uppercase would not read back identically).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}
