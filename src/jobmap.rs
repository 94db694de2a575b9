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
//! slot in an `IndexMap`, and takes 80 and 5 here; its passes over every entry read a tenth
//! less memory.

use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

use crate::jobkey::JobKey;

/// See the module documentation.
#[derive(Debug)]
pub struct JobMap<V, K = JobKey> {
    entries: Vec<(K, V)>,
    /// Positions in `entries`, by the hash of their key.
    table: HashTable<u32>,
    hasher: RandomState,
}

impl<V, K> Default for JobMap<V, K> {
    fn default() -> Self {
        JobMap {
            entries: Vec::new(),
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<V, K: Hash + Eq> JobMap<V, K> {
    fn hash(hasher: &RandomState, key: &K) -> u64 {
        hasher.hash_one(key)
    }

    /// The position of `key`'s entry (see [`JobMap::as_slice`]).
    pub fn position(&self, key: &K) -> Option<usize> {
        let hash = Self::hash(&self.hasher, key);
        let entries = &self.entries;
        self.table
            .find(hash, |&at| entries[at as usize].0 == *key)
            .map(|&at| at as usize)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.position(key).map(|at| &self.entries[at].1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.position(key).map(|at| &mut self.entries[at].1)
    }

    /// Adds or replaces `key`'s value.
    pub fn insert(&mut self, key: K, value: V) {
        self.replace(key, value);
    }

    /// Adds or replaces `key`'s value, giving back the value it replaces.
    pub fn replace(&mut self, key: K, value: V) -> Option<V> {
        // One hash for the lookup and the insert.
        let hash = Self::hash(&self.hasher, &key);
        let entries = &self.entries;
        if let Some(&at) = self.table.find(hash, |&at| entries[at as usize].0 == key) {
            return Some(std::mem::replace(&mut self.entries[at as usize].1, value));
        }
        let at = u32::try_from(self.entries.len()).expect("fewer than 4G entries");
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.table
            .insert_unique(hash, at, |&i| Self::hash(hasher, &entries[i as usize].0));
        self.entries.push((key, value));
        None
    }

    /// Removes `key`, moving the last entry into its place.
    pub fn swap_remove(&mut self, key: &K) -> Option<V> {
        let at = self.position(key)?;
        Some(self.swap_remove_index(at).1)
    }

    /// Removes the entry at position `at`, moving the last entry into its place.
    pub fn swap_remove_index(&mut self, at: usize) -> (K, V) {
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
        self.entries.swap_remove(at)
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
        let mut dropped = 0usize;
        let mut at = self.entries.len();
        while at > 0 {
            at -= 1;
            let (k, v) = &mut self.entries[at];
            if keep(k, v) {
                continue;
            }
            dropped += 1;
            if dropped * 2 > self.entries.len() {
                // Many go: the rest in one pass, then one rebuild.
                self.entries.swap_remove(at);
                let mut i = 0usize;
                self.entries.retain_mut(|(k, v)| {
                    i += 1;
                    i > at || keep(k, v)
                });
                self.rebuild_table();
                return;
            }
            self.swap_remove_index(at);
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
        self.table.clear();
    }

    /// Makes room for `n` more entries at once (a table grown step by step briefly holds the
    /// old and the new one at each step).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve_exact(n);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        RemoveAt(u8),
        Retain(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
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
        /// leaves the map holding exactly what a `HashMap` given the same holds, each entry at
        /// the position the map names for it.
        #[test]
        fn a_job_map_holds_what_a_hash_map_holds(ops in proptest::collection::vec(op(), 0..400)) {
            let mut map = JobMap::default();
            let mut model: HashMap<JobKey, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(map.replace(key(k), v), model.insert(key(k), v)),
                    Op::Remove(k) => prop_assert_eq!(map.swap_remove(&key(k)), model.remove(&key(k))),
                    Op::RemoveAt(i) if !map.is_empty() => {
                        let (k, v) = map.swap_remove_index(usize::from(i) % map.len());
                        prop_assert_eq!(model.remove(&k), Some(v));
                    }
                    Op::RemoveAt(_) => {}
                    Op::Retain(m) => {
                        let m = u32::from(m.max(1));
                        map.retain(|_, v| *v % m != 0);
                        model.retain(|_, v| *v % m != 0);
                    }
                    Op::Clear => {
                        map.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(map.get(k), Some(v));
                    let at = map.position(k).expect("a held key has a position");
                    prop_assert_eq!(&map.as_slice()[at], &(k.clone(), *v));
                }
                let held: HashMap<JobKey, u32> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(&held, &model);
            }
        }
    }

    #[test]
    fn retain_drops_a_few_in_place_and_many_with_one_rebuild_each_key_called_once() {
        for drop_every in [1000u32, 7, 2, 1] {
            let mut map = JobMap::default();
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
        let mut map = JobMap::default();
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
