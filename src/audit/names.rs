//! The names audit entries repeat (who, queue), each kept once for the whole mirror: 10,000
//! entries name a handful of writers and queues, and a 4-byte [`Sym`] per use costs less than
//! a string of its own per entry.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

/// A name's place in [`Names`] (never 0, so that `Option<Sym>` is 4 bytes too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(NonZeroU32);

impl Sym {
    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// Names kept once each; they are never forgotten one by one ([`Names::len`] tells the owner
/// when to build a fresh table from what is still in use).
#[derive(Debug, Default)]
pub struct Names {
    index: HashMap<Arc<str>, Sym>,
    names: Vec<Arc<str>>,
}

impl Names {
    /// The name's symbol, added when new.
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(s) = self.index.get(name) {
            return *s;
        }
        let n = u32::try_from(self.names.len() + 1).expect("fewer than 4 billion names");
        let sym = Sym(NonZeroU32::new(n).expect("n >= 1"));
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.index.insert(name, sym);
        sym
    }

    /// The name's symbol, if it has one (a name no entry uses has none).
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.index.get(name).copied()
    }

    pub fn name(&self, sym: Sym) -> &str {
        &self.names[sym.index()]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// For each symbol (by [`Sym`] order), whether its name passes `test`: what a filter on a
    /// part of a name computes once instead of once per entry.
    pub fn each(&self, test: impl Fn(&str) -> bool) -> SymSet {
        SymSet(self.names.iter().map(|n| test(n)).collect())
    }
}

/// A set of symbols of one [`Names`], as [`Names::each`] computed it.
#[derive(Debug, Clone)]
pub struct SymSet(Vec<bool>);

impl SymSet {
    pub fn contains(&self, sym: Sym) -> bool {
        self.0.get(sym.index()).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once_and_found_again() {
        let mut names = Names::default();
        let a = names.intern("supervisor");
        let b = names.intern("ops-alice@10.0.0.5");
        assert_eq!(names.intern("supervisor"), a);
        assert_ne!(a, b);
        assert_eq!((names.name(a), names.len()), ("supervisor", 2));
        assert_eq!(names.get("nobody"), None);
        let alice = names.each(|n| n.contains("alice"));
        assert!(alice.contains(b) && !alice.contains(a));
        assert_eq!(std::mem::size_of::<Option<Sym>>(), 4);
    }
}
