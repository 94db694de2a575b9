//! The job's `data` field: zlib-compressed `(func_name, instance, args, kwargs)` in the job's
//! serializer (pickle by default, JSON with `JSONSerializer`). We only need the function name,
//! so we read just the first element instead of unpickling arbitrary Python objects.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

/// The most we decompress from one field; more is treated as corrupt (zip bomb guard).
pub const MAX_DECOMPRESSED: u64 = 16 * 1024 * 1024;

/// How much of `data` we inflate to find the function name: it is the first element, so a
/// job with megabytes of arguments costs no more than one with none.
const DATA_HEAD: usize = 64 * 1024;

/// Result of inflating a field that may or may not be zlib-compressed.
#[derive(Debug, PartialEq, Eq)]
pub enum Inflated {
    Data(Vec<u8>),
    TooLarge,
    NotZlib,
}

thread_local! {
    /// One inflater per thread, reset for each field: creating one allocates and clears about
    /// 40 KiB of state and window, which for a job's small fields costs more than inflating.
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(true));
}

/// Inflates zlib data, refusing to produce more than [`MAX_DECOMPRESSED`] bytes. Like Python's
/// `zlib.decompress`, a stream that ends early or carries a bad checksum is not zlib data.
pub fn inflate(bytes: &[u8]) -> Inflated {
    match inflate_up_to(bytes, MAX_DECOMPRESSED as usize + 1) {
        Inflated::Data(d) if d.len() as u64 > MAX_DECOMPRESSED => Inflated::TooLarge,
        other => other,
    }
}

/// Inflates at most `limit` bytes: the whole stream when it is shorter (checked to its end),
/// else its first `limit` bytes (`Inflated::Data` of exactly `limit` bytes).
fn inflate_up_to(bytes: &[u8], limit: usize) -> Inflated {
    INFLATER.with(|cell| {
        let mut inflater = cell.borrow_mut();
        inflater.reset(true);
        let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).clamp(256, limit));
        loop {
            let read = inflater.total_in() as usize;
            let written = out.len();
            let input = bytes.get(read..).unwrap_or_default();
            match inflater.decompress_vec(input, &mut out, FlushDecompress::Finish) {
                Ok(Status::StreamEnd) => return Inflated::Data(out),
                Err(_) => return Inflated::NotZlib,
                Ok(Status::Ok | Status::BufError) => {
                    if out.len() >= limit {
                        out.truncate(limit);
                        return Inflated::Data(out);
                    }
                    if out.len() == out.capacity() {
                        out.reserve(out.capacity().min(limit - out.len()));
                    } else if out.len() == written && inflater.total_in() as usize == read {
                        // No progress with room to spare: the input ended before the stream did.
                        return Inflated::NotZlib;
                    }
                }
            }
        }
    })
}

/// The dotted function name stored in a job's `data`, or `None` when it cannot be read.
/// Like RQ, falls back to the raw bytes when they are not zlib-compressed.
///
/// For an instance method (`queue.enqueue(obj.greet)`) RQ stores only `greet` and pickles the
/// instance next to it; the name is then `module.Class.greet` when the pickle names the
/// instance's class (`GLOBAL`/`STACK_GLOBAL` then `NEWOBJ`, as pickle writes an ordinary
/// object), else the bare name RQ stored.
pub fn func_name_from_data(data: &[u8]) -> Option<String> {
    let inflated = inflate_up_to(data, DATA_HEAD);
    let payload = match &inflated {
        Inflated::Data(d) => d.as_slice(),
        Inflated::TooLarge | Inflated::NotZlib => data,
    };
    let first = payload.iter().copied().find(|b| !b.is_ascii_whitespace())?;
    if first == b'[' {
        func_name_from_json(payload)
    } else {
        let name = super::pickle::first_element_str(payload)?;
        if name.contains('.') {
            return Some(name);
        }
        match super::pickle::second_element_class(payload) {
            Some((module, class)) => Some(format!("{module}.{class}.{name}")),
            None => Some(name),
        }
    }
}

/// The first element of a JSON array when it is a string; the rest of the document (possibly
/// cut off at [`DATA_HEAD`]) is not read.
fn func_name_from_json(payload: &[u8]) -> Option<String> {
    let open = payload.iter().position(|&b| b == b'[')?;
    let rest = &payload[open + 1..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &rest[start..];
    if rest.first() != Some(&b'"') {
        return None;
    }
    let mut escaped = false;
    let end = rest.iter().enumerate().skip(1).find_map(|(i, &b)| {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return Some(i),
            _ => {}
        }
        None
    })?;
    serde_json::from_slice(&rest[..=end]).ok()
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

    /// `pickle.dumps(("greet", mod_tasks.Greeter(), ("x",), {}), protocol=5)`: an instance
    /// method as RQ stores it (1.16 and 2.12 alike).
    const METHOD5: &[u8] = b"\x80\x05\x95F\x00\x00\x00\x00\x00\x00\x00(\x8c\x05greet\x94\x8c\tmod_tasks\x94\x8c\x07Greeter\x94\x93\x94)\x81\x94}\x94\x8c\x08greeting\x94\x8c\x05hello\x94sb\x8c\x01x\x94\x85\x94}\x94t\x94.";

    #[test]
    fn instance_methods_are_named_after_the_instances_class() {
        assert_eq!(
            func_name_from_data(&zlib(METHOD5)).as_deref(),
            Some("mod_tasks.Greeter.greet")
        );
        // Where the class cannot be read, the bare name RQ stored stays.
        let mut damaged = METHOD5.to_vec();
        damaged[32] = 0x01; // the class name is no longer a string
        assert_eq!(func_name_from_data(&damaged).as_deref(), Some("greet"));
    }

    /// `pickle.dumps(("app.tasks.send", None, (42, "x"), {"k": [1, 2]}), protocol=N)` for every
    /// protocol Python writes: the function name is read from each.
    #[test]
    fn reads_the_function_name_from_every_pickle_protocol() {
        let protocols: [&[u8]; 6] = [
            b"(Vapp.tasks.send\np0\nN(I42\nVx\np1\ntp2\n(dp3\nVk\np4\n(lp5\nI1\naI2\nastp6\n.",
            b"(X\x0e\x00\x00\x00app.tasks.sendq\x00N(K*X\x01\x00\x00\x00xq\x01tq\x02}q\x03X\x01\x00\x00\x00kq\x04]q\x05(K\x01K\x02estq\x06.",
            b"\x80\x02(X\x0e\x00\x00\x00app.tasks.sendq\x00NK*X\x01\x00\x00\x00xq\x01\x86q\x02}q\x03X\x01\x00\x00\x00kq\x04]q\x05(K\x01K\x02estq\x06.",
            b"\x80\x03(X\x0e\x00\x00\x00app.tasks.sendq\x00NK*X\x01\x00\x00\x00xq\x01\x86q\x02}q\x03X\x01\x00\x00\x00kq\x04]q\x05(K\x01K\x02estq\x06.",
            b"\x80\x04\x95-\x00\x00\x00\x00\x00\x00\x00(\x8c\x0eapp.tasks.send\x94NK*\x8c\x01x\x94\x86\x94}\x94\x8c\x01k\x94]\x94(K\x01K\x02est\x94.",
            b"\x80\x05\x95-\x00\x00\x00\x00\x00\x00\x00(\x8c\x0eapp.tasks.send\x94NK*\x8c\x01x\x94\x86\x94}\x94\x8c\x01k\x94]\x94(K\x01K\x02est\x94.",
        ];
        for (protocol, bytes) in protocols.iter().enumerate() {
            assert_eq!(
                func_name_from_data(&zlib(bytes)).as_deref(),
                Some("app.tasks.send"),
                "protocol {protocol}"
            );
            // Cut off after the name, as a 64 KiB head of a huge payload can be.
            let cut = bytes.len() / 2;
            assert_eq!(
                func_name_from_data(&bytes[..cut]).as_deref(),
                Some("app.tasks.send"),
                "protocol {protocol}, cut at {cut}"
            );
        }
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
    fn json_names_are_unescaped_and_the_rest_is_not_needed() {
        let json = br#" ["app.tasks.\u0073end \"x\"", null, [42"#;
        assert_eq!(
            func_name_from_data(&zlib(json)).as_deref(),
            Some("app.tasks.send \"x\"")
        );
        assert_eq!(func_name_from_data(br#"[42, "x"]"#), None);
    }

    #[test]
    fn huge_arguments_do_not_hide_the_function_name() {
        let mut pickle = PICKLE5[..PICKLE5.len() - 1].to_vec();
        pickle.extend(std::iter::repeat_n(b'N', 20 << 20));
        assert_eq!(
            func_name_from_data(&zlib(&pickle)).as_deref(),
            Some("app.tasks.send")
        );
    }

    #[test]
    fn truncated_or_damaged_streams_are_not_zlib() {
        let whole = zlib(b"Traceback (most recent call last):\nValueError: x");
        assert_eq!(
            inflate(&whole),
            Inflated::Data(b"Traceback (most recent call last):\nValueError: x".to_vec())
        );
        assert_eq!(inflate(&whole[..whole.len() - 3]), Inflated::NotZlib);
        let mut bad_sum = whole.clone();
        *bad_sum.last_mut().unwrap() ^= 1;
        assert_eq!(inflate(&bad_sum), Inflated::NotZlib);
        assert_eq!(inflate(b""), Inflated::NotZlib);
        // The inflater is reused: a failure leaves nothing behind for the next field.
        assert_eq!(inflate(&zlib(b"ok")), Inflated::Data(b"ok".to_vec()));
    }

    #[test]
    fn inflate_refuses_bombs() {
        let bomb = zlib(&vec![0u8; (MAX_DECOMPRESSED + 10) as usize]);
        assert_eq!(inflate(&bomb), Inflated::TooLarge);
    }
}
