//! A job's `meta` (RQ's `job.meta`), as policies match on it. RQ stores the dict in the job
//! hash's `meta` field with the job's serializer and without compression (`Job.to_dict` and
//! `Job.save_meta` in RQ 1.16 and 2.12: `serializer.dumps(self.meta)`): a pickle with the
//! default serializer, a JSON object with `rq.serializers.JSONSerializer`. An empty meta is not
//! stored at all.
//!
//! Only top-level values are kept. A string is compared as it is; an integer, a boolean and
//! `None` as Python's `str()` prints them (`42`, `True`, `None`), which is what a user who
//! writes `meta = { priority = "1" }` sees in Python; anything else (a float, bytes, a list, a
//! dict, an object) never matches, and says so.

use std::fmt;

use super::pickle::{self, Value};

/// The most of a `meta` field that is read; a bigger one is unreadable (and so matches no
/// `meta` policy) rather than a cost on every scan.
pub const MAX_META_BYTES: usize = 1 << 20;

/// What a job's `meta` holds, as far as policies look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// The top-level keys (strings) and their values, in stored order.
    Read(Vec<(String, MetaValue)>),
    /// The field could not be read as RQ's serializers write it; why.
    Unreadable(String),
}

/// One top-level value of `meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaValue {
    /// A string, or an integer, boolean or `None` as Python's `str()` of it.
    Text(String),
    /// A value no pattern matches, with Python's name for its type (`float`, `list`, ...).
    Other(&'static str),
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::Text(t) => write!(f, "{t:?}"),
            MetaValue::Other(kind) => write!(f, "a {kind}"),
        }
    }
}

impl Meta {
    /// The value under `key`, `None` when the key is not set.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        match self {
            Meta::Read(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Meta::Unreadable(_) => None,
        }
    }
}

/// Decodes the stored `meta` field (`None`: not stored, which RQ reads as `{}`).
pub fn decode(stored: Option<&[u8]>) -> Meta {
    let Some(bytes) = stored.filter(|b| !b.is_empty()) else {
        return Meta::Read(Vec::new());
    };
    if bytes.len() > MAX_META_BYTES {
        return Meta::Unreadable(format!(
            "meta is {} bytes, more than the {MAX_META_BYTES} read",
            bytes.len()
        ));
    }
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    let result = if first == Some(b'{') {
        from_json(bytes)
    } else {
        from_pickle(bytes)
    };
    result.unwrap_or_else(Meta::Unreadable)
}

fn from_json(bytes: &[u8]) -> Result<Meta, String> {
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("meta is not a JSON object: {e}"))?;
    Ok(Meta::Read(
        value
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => MetaValue::Text(s),
                    serde_json::Value::Bool(b) => MetaValue::Text(python_bool(b)),
                    serde_json::Value::Null => MetaValue::Text("None".to_string()),
                    serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                        MetaValue::Text(n.to_string())
                    }
                    serde_json::Value::Number(_) => MetaValue::Other("float"),
                    serde_json::Value::Array(_) => MetaValue::Other("list"),
                    serde_json::Value::Object(_) => MetaValue::Other("dict"),
                };
                (k, v)
            })
            .collect(),
    ))
}

fn from_pickle(bytes: &[u8]) -> Result<Meta, String> {
    let value = pickle::load(bytes).map_err(|e| format!("meta is not a readable pickle: {e}"))?;
    let Value::Dict(items) = value else {
        return Err(format!("meta is a pickled {}, not a dict", value.kind()));
    };
    Ok(Meta::Read(
        items
            .into_iter()
            .filter_map(|(k, v)| {
                // A key that is not a string can never be named in the config.
                let Value::Str(k) = k else { return None };
                let v = match v {
                    Value::Str(s) => MetaValue::Text(s.to_string()),
                    Value::Int(digits) => MetaValue::Text(digits),
                    Value::Bool(b) => MetaValue::Text(python_bool(b)),
                    Value::None => MetaValue::Text("None".to_string()),
                    other => MetaValue::Other(other.kind()),
                };
                Some((k.to_string(), v))
            })
            .collect(),
    ))
}

fn python_bool(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> MetaValue {
        MetaValue::Text(t.to_string())
    }

    /// `pickle.dumps({"tenant": "acme-1"}, protocol=5)`, as RQ's default serializer writes it.
    const PICKLED: &[u8] =
        b"\x80\x05\x95\x16\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x06tenant\x94\x8c\x06acme-1\x94s.";

    #[test]
    fn reads_pickled_and_json_meta_alike() {
        let pickled = decode(Some(PICKLED));
        assert_eq!(pickled.get("tenant"), Some(&text("acme-1")));
        let json = decode(Some(
            br#"{"tenant": "acme-1", "n": 3, "ok": true, "z": null, "f": 1.5, "l": [1]}"#,
        ));
        assert_eq!(json.get("tenant"), Some(&text("acme-1")));
        assert_eq!(json.get("n"), Some(&text("3")));
        assert_eq!(json.get("ok"), Some(&text("True")));
        assert_eq!(json.get("z"), Some(&text("None")));
        assert_eq!(json.get("f"), Some(&MetaValue::Other("float")));
        assert_eq!(json.get("l"), Some(&MetaValue::Other("list")));
        assert_eq!(json.get("missing"), None);
    }

    #[test]
    fn no_stored_meta_is_rqs_empty_dict() {
        assert_eq!(decode(None), Meta::Read(vec![]));
        assert_eq!(decode(Some(b"")), Meta::Read(vec![]));
    }

    #[test]
    fn unreadable_meta_says_why_and_has_no_keys() {
        for (bad, why) in [
            (&b"\x80\x05garbage"[..], "not a readable pickle"),
            (b"{not json", "not a JSON object"),
            (b"\x80\x05]\x94.", "a pickled list, not a dict"),
        ] {
            let meta = decode(Some(bad));
            let Meta::Unreadable(reason) = &meta else {
                panic!("{bad:?} decoded as {meta:?}")
            };
            assert!(reason.contains(why), "{reason}");
            assert_eq!(meta.get("tenant"), None);
        }
        let huge = vec![b' '; MAX_META_BYTES + 1];
        assert!(matches!(decode(Some(&huge)), Meta::Unreadable(_)));
    }
}
