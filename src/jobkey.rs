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
            JobKey::Uuid(bytes) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut out = String::with_capacity(36);
                for (i, b) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        out.push('-');
                    }
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                out.into_boxed_str()
            }
        }
    }
}

/// The 16 bytes of a UUID in canonical lowercase text (`8-4-4-4-12` hex digits), else `None`:
/// only text that [`JobKey::to_id`] gives back byte for byte.
fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, &c) in text.iter().enumerate() {
        let value = match c {
            b'-' if matches!(i, 8 | 13 | 18 | 23) => continue,
            b'0'..=b'9' if !matches!(i, 8 | 13 | 18 | 23) => c - b'0',
            b'a'..=b'f' if !matches!(i, 8 | 13 | 18 | 23) => c - b'a' + 10,
            _ => return None,
        };
        out[nibbles / 2] |= value << if nibbles.is_multiple_of(2) { 4 } else { 0 };
        nibbles += 1;
    }
    (nibbles == 32).then_some(out)
}
