//! The job's `data` field: zlib-compressed `(func_name, instance, args, kwargs)` in the job's
//! serializer (pickle by default, JSON with `JSONSerializer`). We only need the function name,
//! so we read just the first element instead of unpickling arbitrary Python objects.

use std::io::Read;

/// The most we decompress from one field; more is treated as corrupt (zip bomb guard).
pub const MAX_DECOMPRESSED: u64 = 16 * 1024 * 1024;

/// Result of inflating a field that may or may not be zlib-compressed.
#[derive(Debug, PartialEq, Eq)]
pub enum Inflated {
    Data(Vec<u8>),
    TooLarge,
    NotZlib,
}

/// Inflates zlib data, refusing to produce more than [`MAX_DECOMPRESSED`] bytes.
pub fn inflate(bytes: &[u8]) -> Inflated {
    let mut out = Vec::new();
    let mut decoder = flate2::read::ZlibDecoder::new(bytes).take(MAX_DECOMPRESSED + 1);
    match decoder.read_to_end(&mut out) {
        Ok(_) if out.len() as u64 > MAX_DECOMPRESSED => Inflated::TooLarge,
        Ok(_) => Inflated::Data(out),
        Err(_) => Inflated::NotZlib,
    }
}

/// The dotted function name stored in a job's `data`, or `None` when it cannot be read.
/// Like RQ, falls back to the raw bytes when they are not zlib-compressed.
pub fn func_name_from_data(data: &[u8]) -> Option<String> {
    let payload = match inflate(data) {
        Inflated::Data(d) => d,
        Inflated::TooLarge => return None,
        Inflated::NotZlib => data.to_vec(),
    };
    let first = payload.iter().copied().find(|b| !b.is_ascii_whitespace())?;
    if first == b'[' {
        func_name_from_json(&payload)
    } else {
        func_name_from_pickle(&payload)
    }
}

fn func_name_from_json(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get(0)?.as_str().map(str::to_string)
}

/// Walks the pickle opcodes up to the first string: PROTO, FRAME and MARK come first, then the
/// function name (SHORT_BINUNICODE, BINUNICODE, BINUNICODE8 or protocol-0 UNICODE).
fn func_name_from_pickle(p: &[u8]) -> Option<String> {
    let mut i = 0usize;
    let take = |from: usize, len: usize| -> Option<&[u8]> { p.get(from..from.checked_add(len)?) };
    loop {
        let op = *p.get(i)?;
        i += 1;
        match op {
            0x80 => i += 1,          // PROTO n
            0x95 => i += 8,          // FRAME len (8 bytes)
            b'(' | b'}' | b']' => {} // MARK, EMPTY_DICT, EMPTY_LIST
            0x8c => {
                // SHORT_BINUNICODE: 1-byte length
                let len = usize::from(*p.get(i)?);
                return String::from_utf8(take(i + 1, len)?.to_vec()).ok();
            }
            b'X' => {
                let len = u32::from_le_bytes(take(i, 4)?.try_into().ok()?) as usize;
                return String::from_utf8(take(i + 4, len)?.to_vec()).ok();
            }
            0x8d => {
                let len = usize::try_from(u64::from_le_bytes(take(i, 8)?.try_into().ok()?)).ok()?;
                return String::from_utf8(take(i + 8, len)?.to_vec()).ok();
            }
            b'V' => {
                let end = p[i..].iter().position(|&b| b == b'\n')?;
                return String::from_utf8(p[i..i + end].to_vec()).ok();
            }
            _ => return None,
        }
    }
}

/// The function name in a default description such as `app.tasks.send(42, to='x')`.
pub fn func_name_from_description(description: &str) -> Option<String> {
    let head = description.split('(').next()?.trim();
    let looks_dotted = !head.is_empty()
        && head.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        });
    looks_dotted.then(|| head.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// `pickle.dumps(('app.tasks.send', None, (42,), {'to': 'x'}), protocol=5)` from CPython 3.11.
    const PICKLE5: &[u8] = b"\x80\x05\x95\x26\x00\x00\x00\x00\x00\x00\x00\x28\x8c\x0e\x61\x70\x70\x2e\x74\x61\x73\x6b\x73\x2e\x73\x65\x6e\x64\x94\x4e\x4b\x2a\x85\x94\x7d\x94\x8c\x02\x74\x6f\x94\x8c\x01\x78\x94\x73\x74\x94\x2e";

    #[test]
    fn reads_the_function_name_from_compressed_pickle() {
        assert_eq!(
            func_name_from_data(&zlib(PICKLE5)).as_deref(),
            Some("app.tasks.send")
        );
    }

    #[test]
    fn reads_uncompressed_pickle_like_rq_does() {
        assert_eq!(
            func_name_from_data(PICKLE5).as_deref(),
            Some("app.tasks.send")
        );
    }

    #[test]
    fn reads_json_serializer_payloads() {
        let json = br#"["app.tasks.send", null, [42], {"to": "x"}]"#;
        assert_eq!(
            func_name_from_data(&zlib(json)).as_deref(),
            Some("app.tasks.send")
        );
    }

    #[test]
    fn garbage_yields_none_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x80",
            b"\x80\x05\x95",
            b"\x8c\xff",
            b"Xzzzz",
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"[1,",
        ] {
            assert_eq!(func_name_from_data(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn description_fallback_only_accepts_dotted_names() {
        assert_eq!(
            func_name_from_description("app.tasks.send(42, to='x')").as_deref(),
            Some("app.tasks.send")
        );
        assert_eq!(func_name_from_description("my custom text"), None);
    }

    #[test]
    fn inflate_refuses_bombs() {
        let bomb = zlib(&vec![0u8; (MAX_DECOMPRESSED + 10) as usize]);
        assert_eq!(inflate(&bomb), Inflated::TooLarge);
    }
}
