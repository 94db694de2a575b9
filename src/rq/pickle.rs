//! A reader for the small part of Python's pickle format that RQ's stored values use: strings,
//! numbers, `None`, booleans, containers and objects built from a class (`NEWOBJ`). It never
//! imports or calls anything: a class is only a name, an object only the name of its class.
//!
//! Pure and bounded: every opcode consumes input, containers nested inside others are kept only
//! as their kind (so a memo reference can never copy a large value twice), and anything outside
//! the subset is an error instead of a guess.

use std::rc::Rc;

/// A value as far as rq-retryd needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    /// An integer, as its decimal digits (Python's `str()` of it).
    Int(String),
    Float(f64),
    Str(Rc<str>),
    Bytes,
    /// A dict at the top of the stack, with its items; once inside another container it is
    /// only [`Value::Other`]`("dict")`.
    Dict(Vec<(Value, Value)>),
    /// A list, tuple or set, without its items.
    Other(&'static str),
    /// A global reference (`module`, `qualname`), e.g. a class.
    Global(Rc<str>, Rc<str>),
    /// An object made by calling the class (`module`, `qualname`) through `NEWOBJ`.
    Object(Rc<str>, Rc<str>),
}

impl Value {
    /// Python's name for the kind of value, for explanations.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes => "bytes",
            Value::Dict(_) => "dict",
            Value::Other(kind) => kind,
            Value::Global(..) => "class or function",
            Value::Object(..) => "object",
        }
    }

    /// The value as an element of another container: nested containers keep only their kind.
    fn nested(self) -> Value {
        match self {
            Value::Dict(_) => Value::Other("dict"),
            other => other,
        }
    }
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError(pub String);

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> PickleError {
    PickleError(what.into())
}

/// Reads a whole pickle and returns the value it stops with.
pub fn load(bytes: &[u8]) -> Result<Value, PickleError> {
    let mut machine = Machine::new(bytes);
    loop {
        if let Some(done) = machine.step()? {
            return Ok(done);
        }
    }
}

/// The first element of the tuple a pickle starts building, when it is a string (RQ's
/// `func_name`). Reads only as far as needed, so `bytes` may be cut off after it.
pub fn first_element_str(bytes: &[u8]) -> Option<String> {
    let mut machine = Machine::new(bytes);
    loop {
        if machine.step().ok()?.is_some() {
            return None;
        }
        let [base] = machine.marks[..] else { continue };
        if machine.stack.len() == base + 1 {
            return match machine.stack.get(base) {
                Some(Value::Str(name)) => Some(name.to_string()),
                _ => None,
            };
        }
    }
}

/// The class of the second element of the tuple a pickle starts building (RQ's
/// `(func_name, instance, args, kwargs)`), when that element is an object made from a class.
/// Reads only as far as needed, so `bytes` may be cut off after the instance.
pub fn second_element_class(bytes: &[u8]) -> Option<(String, String)> {
    let mut machine = Machine::new(bytes);
    loop {
        if machine.step().ok()?.is_some() {
            return None;
        }
        // The tuple's items sit above its MARK; the instance is known as soon as it is the
        // top item there (made by NEWOBJ, perhaps with its state already applied).
        let [base] = machine.marks[..] else { continue };
        if machine.stack.len() == base + 2 {
            if let Some(Value::Object(module, class)) = machine.stack.get(base + 1) {
                return Some((module.to_string(), class.to_string()));
            }
        }
    }
}

struct Machine<'a> {
    p: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Memo,
}

/// The pickle's memo. Keys counted up from 0 (MEMOIZE, and BINPUT as Python writes it) sit
/// in a vector, any other key in a map: a map made and every key hashed for each job's `meta`
/// cost 0.6k of the 5.3k instructions of its decoding in a first build (docs/benchmarks.md,
/// session 21). A key is in `dense` exactly when it is below `dense.len()`.
#[derive(Default)]
struct Memo {
    dense: Vec<Value>,
    sparse: std::collections::HashMap<u64, Value>,
}

impl Memo {
    /// How many keys are set (what MEMOIZE numbers the next one by).
    fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }

    fn put(&mut self, key: u64, value: Value) {
        match usize::try_from(key) {
            Ok(k) if k < self.dense.len() => self.dense[k] = value,
            Ok(k) if k == self.dense.len() => {
                self.dense.push(value);
                while !self.sparse.is_empty() {
                    match self.sparse.remove(&(self.dense.len() as u64)) {
                        Some(next) => self.dense.push(next),
                        None => break,
                    }
                }
            }
            _ => {
                self.sparse.insert(key, value);
            }
        }
    }

    fn get(&self, key: u64) -> Option<&Value> {
        match usize::try_from(key) {
            Ok(k) if k < self.dense.len() => self.dense.get(k),
            _ => self.sparse.get(&key),
        }
    }
}

impl<'a> Machine<'a> {
    fn new(p: &'a [u8]) -> Machine<'a> {
        Machine {
            p,
            at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Default::default(),
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.p.len())
            .ok_or_else(|| bad("the pickle ends early"))?;
        let bytes = &self.p[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn uint(&mut self, len: usize) -> Result<u64, PickleError> {
        let mut value = 0u64;
        for (i, b) in self.take(len)?.iter().enumerate() {
            value |= u64::from(*b) << (8 * i);
        }
        Ok(value)
    }

    fn sized(&mut self, len_bytes: usize) -> Result<&'a [u8], PickleError> {
        let len = usize::try_from(self.uint(len_bytes)?).map_err(|_| bad("length too large"))?;
        self.take(len)
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.p[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("the pickle ends early"))?;
        let text = std::str::from_utf8(&rest[..end]).map_err(|_| bad("a line is not UTF-8"))?;
        self.at += end + 1;
        Ok(text)
    }

    fn text(bytes: &[u8]) -> Result<Value, PickleError> {
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(Rc::from(s)))
            .map_err(|_| bad("a string is not UTF-8"))
    }

    fn push(&mut self, value: Value) {
        self.stack.push(value);
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        if self.marks.last().is_some_and(|m| *m >= self.stack.len()) {
            return Err(bad("a value was expected above a mark"));
        }
        self.stack.pop().ok_or_else(|| bad("the stack is empty"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| bad("no mark to pop"))?;
        if mark > self.stack.len() {
            return Err(bad("a mark above the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        if self.marks.last().is_some_and(|m| *m >= self.stack.len()) {
            return Err(bad("a value was expected above a mark"));
        }
        self.stack
            .last_mut()
            .ok_or_else(|| bad("the stack is empty"))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let value = self.top()?.clone().nested();
        self.memo.put(key, value);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        let value = self
            .memo
            .get(key)
            .cloned()
            .ok_or_else(|| bad("a memo reference to nothing"))?;
        self.push(value);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(bad("a dict item without its value"));
        }
        let target = self.top()?;
        if let Value::Dict(entries) = target {
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                entries.push((k.nested(), v.nested()));
            }
        } else if !matches!(target, Value::Other(_) | Value::Object(..)) {
            return Err(bad("items set on a value that is no container"));
        }
        Ok(())
    }

    fn add_to(&mut self, _items: Vec<Value>) -> Result<(), PickleError> {
        match self.top()? {
            Value::Other(_) | Value::Object(..) => Ok(()),
            _ => Err(bad("items appended to a value that is no container")),
        }
    }

    /// Runs one opcode; `Some(value)` at STOP. One step per kind of opcode, so that each
    /// stays a screen long.
    fn step(&mut self) -> Result<Option<Value>, PickleError> {
        let op = *self.take(1)?.first().unwrap_or(&0);
        match op {
            0x80 => {
                self.take(1)?; // PROTO
            }
            0x95 => {
                self.take(8)?; // FRAME
            }
            b'.' => {
                let value = self.pop()?;
                return Ok(Some(value));
            }
            b'(' => self.marks.push(self.stack.len()),
            _ => {
                let known = self.number(op)?
                    || self.string(op)?
                    || self.container(op)?
                    || self.memo_op(op)?
                    || self.object(op)?;
                if !known {
                    return Err(bad(format!("unsupported pickle opcode 0x{op:02x}")));
                }
            }
        }
        Ok(None)
    }

    /// Pushes None, a boolean, an integer or a float (`false`: `op` is not one of those).
    fn number(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'K' => {
                let v = self.uint(1)?;
                self.push(Value::Int(v.to_string()));
            }
            b'M' => {
                let v = self.uint(2)?;
                self.push(Value::Int(v.to_string()));
            }
            b'J' => {
                let v = self.uint(4)? as u32 as i32;
                self.push(Value::Int(v.to_string()));
            }
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement
                let bytes = self.sized(if op == 0x8a { 1 } else { 4 })?;
                let value = if bytes.len() > 16 {
                    return Err(bad("an integer too large to read"));
                } else if bytes.is_empty() {
                    0i128
                } else {
                    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
                    let mut buf = [if negative { 0xff } else { 0 }; 16];
                    buf[..bytes.len()].copy_from_slice(bytes);
                    i128::from_le_bytes(buf)
                };
                self.push(Value::Int(value.to_string()));
            }
            b'I' | b'L' => {
                // INT / LONG, protocol 0: "I01\n" and "I00\n" are True and False
                let line = self.line()?.trim_end_matches('L');
                let value = match line {
                    "01" => Value::Bool(true),
                    "00" => Value::Bool(false),
                    digits => Value::Int(
                        digits
                            .parse::<i128>()
                            .map_err(|_| bad("an unreadable integer"))?
                            .to_string(),
                    ),
                };
                self.push(value);
            }
            b'G' => {
                let b = self.take(8)?;
                let v = f64::from_be_bytes(b.try_into().map_err(|_| bad("short float"))?);
                self.push(Value::Float(v));
            }
            b'F' => {
                let v = self
                    .line()?
                    .parse::<f64>()
                    .map_err(|_| bad("an unreadable float"))?;
                self.push(Value::Float(v));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Pushes a text or bytes (`false`: `op` is not one of those).
    fn string(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
            0x8c => {
                let b = self.sized(1)?;
                self.push(Self::text(b)?);
            }
            b'X' => {
                let b = self.sized(4)?;
                self.push(Self::text(b)?);
            }
            0x8d => {
                let b = self.sized(8)?;
                self.push(Self::text(b)?);
            }
            b'V' => {
                let line = self.line()?;
                if line.contains('\\') {
                    return Err(bad("an escaped protocol-0 string"));
                }
                self.push(Value::Str(Rc::from(line)));
            }
            b'U' | b'C' => {
                self.sized(1)?;
                self.push(Value::Bytes);
            }
            b'T' | b'B' => {
                self.sized(4)?;
                self.push(Value::Bytes);
            }
            0x8e | 0x96 => {
                self.sized(8)?;
                self.push(Value::Bytes);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Makes or fills a dict, list, tuple or set (`false`: `op` does none of that).
    fn container(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
            b'}' => self.push(Value::Dict(Vec::new())),
            b']' => self.push(Value::Other("list")),
            b')' => self.push(Value::Other("tuple")),
            0x8f => self.push(Value::Other("set")),
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Value::Dict(Vec::new()));
                self.set_items(items)?;
            }
            b'l' => {
                self.pop_mark()?;
                self.push(Value::Other("list"));
            }
            b't' => {
                self.pop_mark()?;
                self.push(Value::Other("tuple"));
            }
            0x91 => {
                self.pop_mark()?;
                self.push(Value::Other("frozenset"));
            }
            0x85..=0x87 => {
                for _ in 0..(op - 0x84) {
                    self.pop()?;
                }
                self.push(Value::Other("tuple"));
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b'a' => {
                let item = self.pop()?;
                self.add_to(vec![item])?;
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.add_to(items)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Stores the top of the stack in the memo, or pushes a memo entry (`false`: `op` is no
    /// memo opcode).
    fn memo_op(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
            0x94 => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?;
            }
            b'q' => {
                let key = self.uint(1)?;
                self.memo_put(key)?;
            }
            b'r' => {
                let key = self.uint(4)?;
                self.memo_put(key)?;
            }
            b'p' => {
                let key = self
                    .line()?
                    .parse::<u64>()
                    .map_err(|_| bad("an unreadable memo key"))?;
                self.memo_put(key)?;
            }
            b'h' => {
                let key = self.uint(1)?;
                self.memo_get(key)?;
            }
            b'j' => {
                let key = self.uint(4)?;
                self.memo_get(key)?;
            }
            b'g' => {
                let key = self
                    .line()?
                    .parse::<u64>()
                    .map_err(|_| bad("an unreadable memo key"))?;
                self.memo_get(key)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Globals, objects and plain stack work: POP, POP_MARK, DUP (`false`: `op` is none of
    /// these).
    fn object(&mut self, op: u8) -> Result<bool, PickleError> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global(Rc::from(module), Rc::from(name)));
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => {
                        self.push(Value::Global(module, name));
                    }
                    _ => return Err(bad("STACK_GLOBAL without two strings")),
                }
            }
            0x81 | 0x92 => {
                // NEWOBJ cls args / NEWOBJ_EX cls args kwargs
                if op == 0x92 {
                    self.pop()?;
                }
                self.pop()?;
                match self.pop()? {
                    Value::Global(module, class) => self.push(Value::Object(module, class)),
                    _ => return Err(bad("NEWOBJ of something that is not a class")),
                }
            }
            b'R' => {
                self.pop()?;
                self.pop()?;
                self.push(Value::Other("object"));
            }
            b'b' => {
                self.pop()?; // BUILD: the state; the object stays
                self.top()?;
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?.clone().nested();
                self.push(top);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps(("greet", tasks.Greeter(), ("x",), {}), protocol=5)` from CPython 3.11.
    const METHOD5: &[u8] = b"\x80\x05\x95F\x00\x00\x00\x00\x00\x00\x00(\x8c\x05greet\x94\x8c\tmod_tasks\x94\x8c\x07Greeter\x94\x93\x94)\x81\x94}\x94\x8c\x08greeting\x94\x8c\x05hello\x94sb\x8c\x01x\x94\x85\x94}\x94t\x94.";
    /// The same with protocol 2 (GLOBAL instead of STACK_GLOBAL).
    const METHOD2: &[u8] = b"\x80\x02(X\x05\x00\x00\x00greetq\x00cmod_tasks\nGreeter\nq\x01)\x81q\x02}q\x03X\x08\x00\x00\x00greetingq\x04X\x05\x00\x00\x00helloq\x05sbX\x01\x00\x00\x00xq\x06\x85q\x07}q\x08tq\t.";
    /// `pickle.dumps({"tenant": "acme-1", "n": 3, "b": True, "z": None, "f": 1.5,
    /// "big": 2**70, "neg": -5, "l": [1, 2]}, protocol=5)`.
    const META5: &[u8] = b"\x80\x05\x95\\\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x06tenant\x94\x8c\x06acme-1\x94\x8c\x01n\x94K\x03\x8c\x01b\x94\x88\x8c\x01z\x94N\x8c\x01f\x94G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x03big\x94\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x8c\x03neg\x94J\xfb\xff\xff\xff\x8c\x01l\x94]\x94(K\x01K\x02eu.";

    #[test]
    fn reads_the_class_of_the_instance_with_protocol_5_and_2() {
        for p in [METHOD5, METHOD2] {
            assert_eq!(
                second_element_class(p),
                Some(("mod_tasks".to_string(), "Greeter".to_string()))
            );
        }
    }

    #[test]
    fn reads_the_class_from_a_pickle_cut_off_after_the_instance() {
        let cut = &METHOD5[..METHOD5.len() - 12];
        assert_eq!(
            second_element_class(cut),
            Some(("mod_tasks".to_string(), "Greeter".to_string()))
        );
    }

    #[test]
    fn a_plain_function_has_no_instance_class() {
        // pickle.dumps(('app.tasks.send', None, (42,), {'to': 'x'}), protocol=5)
        let plain: &[u8] = b"\x80\x05\x95\x26\x00\x00\x00\x00\x00\x00\x00\x28\x8c\x0e\x61\x70\x70\x2e\x74\x61\x73\x6b\x73\x2e\x73\x65\x6e\x64\x94\x4e\x4b\x2a\x85\x94\x7d\x94\x8c\x02\x74\x6f\x94\x8c\x01\x78\x94\x73\x74\x94\x2e";
        assert_eq!(second_element_class(plain), None);
    }

    #[test]
    fn loads_a_dict_of_scalars_and_keeps_nested_containers_as_kinds() {
        let Value::Dict(items) = load(META5).unwrap() else {
            panic!("not a dict")
        };
        let s = |t: &str| Value::Str(Rc::from(t));
        assert_eq!(
            items,
            vec![
                (s("tenant"), s("acme-1")),
                (s("n"), Value::Int("3".into())),
                (s("b"), Value::Bool(true)),
                (s("z"), Value::None),
                (s("f"), Value::Float(1.5)),
                (s("big"), Value::Int((1i128 << 70).to_string())),
                (s("neg"), Value::Int("-5".into())),
                (s("l"), Value::Other("list")),
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x80",
            b"\x80\x05}",
            b"s.",
            b"(u.",
            b"\x93.",
            b"h\x05.",
            b"\x8c\xff",
            b"\x81.",
            b"Xzzzz",
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x8a\xff",
            b"1.",
            b"0.",
        ] {
            assert!(load(bad).is_err(), "{bad:?}");
            let _ = second_element_class(bad);
        }
    }
}

#[cfg(test)]
mod memo_props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The memo answers as one map would, whatever order the keys come in: counted up,
        /// overwritten, skipped ahead (filled in later), or far out.
        #[test]
        fn the_memo_answers_as_a_map(
            ops in proptest::collection::vec(
                (any::<bool>(), prop_oneof![0u64..12, Just(u64::MAX), Just(1u64 << 40)]),
                0..64,
            ),
        ) {
            let (mut memo, mut map) = (Memo::default(), std::collections::HashMap::new());
            for (i, (put, key)) in ops.into_iter().enumerate() {
                if put {
                    let value = Value::Int(i.to_string());
                    memo.put(key, value.clone());
                    map.insert(key, value);
                }
                prop_assert_eq!(memo.get(key), map.get(&key));
                prop_assert_eq!(memo.len(), map.len());
                for k in 0..12 {
                    prop_assert_eq!(memo.get(k), map.get(&k));
                }
            }
        }
    }
}
