//! A map from job ids (or keys that hold one) to small values, dense: the entries side by side
//! in one vector, and a hash table of 4-byte positions into it (hashbrown's `HashTable`, the
//! table under std's `HashMap`). For the memories that hold one entry per failed job: the
//! decision memory, and the failure index (keyed by queue and job).
//!
//! Why not `HashMap` or `IndexMap`: a table sized for five million entries has 8.4M slots (a
//! power of two, at most 7/8 full), and inserts in random order touch every one of them. A
//! `HashMap` keeps the entry itself in each slot (57 bytes for the decision memory's), so it
//! costs 96 bytes a job at 5M; `IndexMap` keeps 9 bytes a slot but stores each entry's hash
//! beside it (79 bytes a job); here a slot is 5 bytes and an entry its own size (64 bytes a job
//! for the decision memory: issue 24, item 3). The failure index took 88 bytes an entry and 9 a
//! slot in an `IndexMap`, and takes 72 (with its column, below) and 5 here.
//!
//! A map may also keep a second value per entry in a column of its own (`H`, by position): the
//! failure index keeps there the 16 bytes each of its filters reads, so that a pass over every
//! entry reads those alone (issue 24, item 3). The decision memory keeps none (`()`, no bytes).

use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

use crate::jobkey::JobKey;

/// See the module documentation.
#[derive(Debug)]
pub struct JobMap<V, K = JobKey, H = ()> {
    entries: Vec<(K, V)>,
    /// Each entry's second value, at the entry's position.
    hot: Vec<H>,
    /// Positions in `entries`, by the hash of their key.
    table: HashTable<u32>,
    hasher: RandomState,
}

impl<V, K, H> Default for JobMap<V, K, H> {
    fn default() -> Self {
        JobMap {
            entries: Vec::new(),
            hot: Vec::new(),
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<V, K: Hash + Eq, H: Default> JobMap<V, K, H> {
    /// Adds or replaces `key`'s value (a new entry's second value is `H`'s default).
    pub fn insert(&mut self, key: K, value: V) {
        self.replace(key, value);
    }

    /// Adds or replaces `key`'s value, giving back the value it replaces (the second value
    /// stays; a new entry's is `H`'s default).
    pub fn replace(&mut self, key: K, value: V) -> Option<V> {
        // One hash for the lookup and the insert.
        let hash = Self::hash(&self.hasher, &key);
        match self.find(hash, &key) {
            Some(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            None => {
                self.push(hash, key, H::default(), value);
                None
            }
        }
    }
}

impl<V, K: Hash + Eq, H> JobMap<V, K, H> {
    fn hash(hasher: &RandomState, key: &K) -> u64 {
        hasher.hash_one(key)
    }

    /// The position of `key`'s entry (see [`JobMap::as_slice`]).
    pub fn position(&self, key: &K) -> Option<usize> {
        self.find(Self::hash(&self.hasher, key), key)
    }

    /// The position of `key`'s entry, its hash given.
    fn find(&self, hash: u64, key: &K) -> Option<usize> {
        let entries = &self.entries;
        self.table
            .find(hash, |&at| entries[at as usize].0 == *key)
            .map(|&at| at as usize)
    }

    /// Adds an entry whose key the map does not hold, its hash given.
    fn push(&mut self, hash: u64, key: K, hot: H, value: V) {
        let at = u32::try_from(self.entries.len()).expect("fewer than 4G entries");
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.table
            .insert_unique(hash, at, |&i| Self::hash(hasher, &entries[i as usize].0));
        self.entries.push((key, value));
        self.hot.push(hot);
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.position(key).map(|at| &self.entries[at].1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.position(key).map(|at| &mut self.entries[at].1)
    }

    /// `key`'s second value and value.
    pub fn get_with(&self, key: &K) -> Option<(&H, &V)> {
        self.position(key)
            .map(|at| (&self.hot[at], &self.entries[at].1))
    }

    /// `key`'s second value and value, to change.
    pub fn get_mut_with(&mut self, key: &K) -> Option<(&mut H, &mut V)> {
        self.position(key)
            .map(|at| (&mut self.hot[at], &mut self.entries[at].1))
    }

    /// Adds or replaces `key`'s second value and value, giving back those it replaces.
    pub fn replace_with(&mut self, key: K, hot: H, value: V) -> Option<(H, V)> {
        // One hash for the lookup and the insert.
        let hash = Self::hash(&self.hasher, &key);
        if let Some(at) = self.find(hash, &key) {
            return Some((
                std::mem::replace(&mut self.hot[at], hot),
                std::mem::replace(&mut self.entries[at].1, value),
            ));
        }
        self.push(hash, key, hot, value);
        None
    }

    /// Removes `key`, moving the last entry into its place.
    pub fn swap_remove(&mut self, key: &K) -> Option<V> {
        self.swap_remove_with(key).map(|(_, v)| v)
    }

    /// Removes `key`, moving the last entry into its place; gives back its second value and
    /// value.
    pub fn swap_remove_with(&mut self, key: &K) -> Option<(H, V)> {
        let at = self.position(key)?;
        let (_, hot, value) = self.swap_remove_at(at);
        Some((hot, value))
    }

    /// Removes the entry at position `at`, moving the last entry into its place.
    pub fn swap_remove_index(&mut self, at: usize) -> (K, V) {
        let (key, _, value) = self.swap_remove_at(at);
        (key, value)
    }

    /// [`JobMap::swap_remove_index`], with the entry's second value.
    fn swap_remove_at(&mut self, at: usize) -> (K, H, V) {
        let last = self.entries.len() - 1;
        self.forget_position(at);
        if at != last {
            let hash = Self::hash(&self.hasher, &self.entries[last].0);
            let slot = self
                .table
                .find_mut(hash, |&i| i as usize == last)
                .expect("every entry has its slot");
            *slot = at as u32;
        }
        let hot = self.hot.swap_remove(at);
        let (key, value) = self.entries.swap_remove(at);
        (key, hot, value)
    }

    /// Removes the table's slot for the entry at `at`.
    fn forget_position(&mut self, at: usize) {
        let hash = Self::hash(&self.hasher, &self.entries[at].0);
        match self.table.find_entry(hash, |&i| i as usize == at) {
            Ok(slot) => {
                slot.remove();
            }
            Err(_) => unreachable!("every entry has its slot"),
        }
    }

    /// Keeps the entries `keep` says to keep: one pass from the last entry to the first, each
    /// dropped entry swapped out with the last, so that dropping a few of millions touches a
    /// few slots of the table instead of building it again (a full scan's end drops the jobs
    /// gone since the last, while the failure index's readers wait). Dropping more than half
    /// builds the table again once, which is then cheaper.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.retain_with(|k, _, v| keep(k, v));
    }

    /// [`JobMap::retain`], `keep` seeing each entry's second value too.
    pub fn retain_with(&mut self, mut keep: impl FnMut(&K, &H, &mut V) -> bool) {
        let mut dropped = 0usize;
        let mut at = self.entries.len();
        while at > 0 {
            at -= 1;
            let (k, v) = &mut self.entries[at];
            if keep(k, &self.hot[at], v) {
                continue;
            }
            dropped += 1;
            if dropped * 2 > self.entries.len() {
                // Many go: the rest in one pass, then one rebuild.
                self.swap_remove_at(at);
                let kept: Vec<bool> = (0..at)
                    .map(|i| {
                        let (k, v) = &mut self.entries[i];
                        keep(k, &self.hot[i], v)
                    })
                    .collect();
                let mut flags = kept.iter().chain(std::iter::repeat(&true));
                self.entries.retain(|_| *flags.next().expect("endless"));
                let mut flags = kept.iter().chain(std::iter::repeat(&true));
                self.hot.retain(|_| *flags.next().expect("endless"));
                self.rebuild_table();
                return;
            }
            self.swap_remove_at(at);
        }
    }

    fn rebuild_table(&mut self) {
        self.table.clear();
        let (entries, hasher) = (&self.entries, &self.hasher);
        for (at, (key, _)) in entries.iter().enumerate() {
            self.table
                .insert_unique(Self::hash(hasher, key), at as u32, |&i| {
                    Self::hash(hasher, &entries[i as usize].0)
                });
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.hot.clear();
        self.table.clear();
    }

    /// Makes room for `n` more entries at once (a table grown step by step briefly holds the
    /// old and the new one at each step).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve_exact(n);
        self.hot.reserve_exact(n);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.table
            .reserve(n, |&i| Self::hash(hasher, &entries[i as usize].0));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in no particular order (by position).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// The entries side by side, by position: a pass over them reads one run of memory.
    pub fn as_slice(&self) -> &[(K, V)] {
        &self.entries
    }

    /// The second values, by position (see [`JobMap::as_slice`]).
    pub fn hot_slice(&self) -> &[H] {
        &self.hot
    }

    /// The second values, to change in place.
    pub fn hot_slice_mut(&mut self) -> &mut [H] {
        &mut self.hot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16, u32),
        Remove(u8),
        RemoveAt(u8),
        Retain(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), any::<u16>(), any::<u32>()).prop_map(|(k, h, v)| Op::Insert(k, h, v)),
            3 => any::<u8>().prop_map(Op::Remove),
            2 => any::<u8>().prop_map(Op::RemoveAt),
            1 => any::<u8>().prop_map(Op::Retain),
            1 => Just(Op::Clear),
        ]
    }

    /// Ids of both kinds: UUIDs (kept in 16 bytes) and any other text.
    fn key(k: u8) -> JobKey {
        if k.is_multiple_of(2) {
            JobKey::new(&format!("{k:08x}-0000-4000-8000-000000000000"))
        } else {
            JobKey::new(&format!("job-{k}"))
        }
    }

    proptest! {
        /// Any sequence of inserts, removals (by key and by position), retains and clears
        /// leaves the map holding exactly what a `HashMap` given the same holds, each entry and
        /// its second value at the position the map names for it.
        #[test]
        fn a_job_map_holds_what_a_hash_map_holds(ops in proptest::collection::vec(op(), 0..400)) {
            let mut map: JobMap<u32, JobKey, u16> = JobMap::default();
            let mut model: HashMap<JobKey, (u16, u32)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, h, v) => prop_assert_eq!(map.replace_with(key(k), h, v), model.insert(key(k), (h, v))),
                    Op::Remove(k) if k % 3 == 0 => prop_assert_eq!(map.swap_remove(&key(k)), model.remove(&key(k)).map(|(_, v)| v)),
                    Op::Remove(k) => prop_assert_eq!(map.swap_remove_with(&key(k)), model.remove(&key(k))),
                    Op::RemoveAt(i) if !map.is_empty() => {
                        let (k, v) = map.swap_remove_index(usize::from(i) % map.len());
                        prop_assert_eq!(model.remove(&k).map(|(_, v)| v), Some(v));
                    }
                    Op::RemoveAt(_) => {}
                    Op::Retain(m) => {
                        // Both values decide, so that a second value out of place shows.
                        let m = u32::from(m.max(1));
                        let keep = |h: u16, v: u32| !(v ^ u32::from(h)).is_multiple_of(m);
                        map.retain_with(|_, h, v| keep(*h, *v));
                        model.retain(|_, (h, v)| keep(*h, *v));
                    }
                    Op::Clear => {
                        map.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(map.hot_slice().len(), model.len());
                for (k, (h, v)) in &model {
                    prop_assert_eq!(map.get(k), Some(v));
                    prop_assert_eq!(map.get_with(k), Some((h, v)));
                    let at = map.position(k).expect("a held key has a position");
                    prop_assert_eq!(&map.as_slice()[at], &(k.clone(), *v));
                    prop_assert_eq!(map.hot_slice()[at], *h);
                }
                let held: HashMap<JobKey, u32> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(held, model.iter().map(|(k, (_, v))| (k.clone(), *v)).collect::<HashMap<_, _>>());
            }
        }
    }

    /// `replace` on a map with second values keeps an entry's second value, and gives a new
    /// one the default.
    #[test]
    fn replace_keeps_the_second_value_and_a_new_entry_gets_the_default() {
        let mut map: JobMap<u32, JobKey, u16> = JobMap::default();
        map.replace_with(key(1), 7, 10);
        assert_eq!(map.replace(key(1), 11), Some(10));
        assert_eq!(map.replace(key(2), 20), None);
        assert_eq!(map.get_with(&key(1)), Some((&7, &11)));
        assert_eq!(map.get_with(&key(2)), Some((&0, &20)));
        let (h, v) = map.get_mut_with(&key(2)).unwrap();
        (*h, *v) = (3, 21);
        assert_eq!(map.swap_remove_with(&key(2)), Some((3, 21)));
    }

    #[test]
    fn retain_drops_a_few_in_place_and_many_with_one_rebuild_each_key_called_once() {
        for drop_every in [1000u32, 7, 2, 1] {
            let mut map: JobMap<u32> = JobMap::default();
            for k in 0..1000u32 {
                map.insert(JobKey::new(&format!("j{k}")), k);
            }
            let mut asked = Vec::new();
            map.retain(|_, v| {
                asked.push(*v);
                !v.is_multiple_of(drop_every)
            });
            asked.sort_unstable();
            assert_eq!(
                asked,
                (0..1000).collect::<Vec<_>>(),
                "each entry asked once"
            );
            let kept: Vec<u32> = (0..1000u32)
                .filter(|v| !v.is_multiple_of(drop_every))
                .collect();
            assert_eq!(map.len(), kept.len());
            for v in kept {
                let key = JobKey::new(&format!("j{v}"));
                assert_eq!(map.as_slice()[map.position(&key).unwrap()], (key, v));
            }
            assert_eq!(map.get(&JobKey::new("j0")), None);
        }
    }

    #[test]
    fn reserved_room_takes_entries_without_growing() {
        let mut map: JobMap<u32> = JobMap::default();
        map.reserve(1000);
        let (entries, slots) = (map.entries.capacity(), map.table.capacity());
        for k in 0..1000u32 {
            map.insert(JobKey::new(&format!("j{k}")), k);
        }
        assert_eq!(
            (map.entries.capacity(), map.table.capacity()),
            (entries, slots)
        );
        *map.get_mut(&JobKey::new("j7")).unwrap() += 1;
        assert_eq!(map.get(&JobKey::new("j7")), Some(&8));
    }
}
