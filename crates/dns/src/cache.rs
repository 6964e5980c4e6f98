//! Wire-format answer cache of one UDP worker: the bytes of a query after its ID -> the encoded
//! reply, valid for one [`Index`](crate::Index) generation.
//!
//! A reply from the index is a function of the query bytes (name with its letter case, type,
//! class, flags, EDNS record), the transport and the index contents; the only part of the reply
//! that differs between two queries with the same bytes after the ID is the ID. So a hit copies
//! the stored reply and patches the ID, without parsing or allocating. Entries carry the index
//! generation read under the same read lock as the data that produced them, and the generation
//! moves on every change of the index, so a changed index is never answered from stale entries.
//!
//! The table is set-associative (4 ways per set, least recently used replaced), allocated zeroed
//! so untouched sets cost no memory, and bounded: at most [`SLOTS`] entries of at most
//! [`MAX_ENTRY`] bytes each.

use std::hash::BuildHasher;

/// Entries per worker.
pub(crate) const SLOTS: usize = 1 << 15;
const WAYS: usize = 4;
/// Largest query + reply kept (bigger replies are rare and are encoded each time).
pub(crate) const MAX_ENTRY: usize = 1024;
/// Longest query considered.
const MAX_QUERY: usize = 512;

#[derive(Debug, Clone)]
struct Entry {
    hash: u64,
    generation: u64,
    last_use: u64,
    key_len: usize,
    /// Metrics slot and TC flag of the reply, so hits are counted like misses.
    metric: usize,
    truncated: bool,
    /// The query after its ID, then the reply.
    bytes: Vec<u8>,
}

/// What a hit returns.
pub(crate) struct Hit<'a> {
    /// The stored reply (its ID is the one of the query that filled the entry).
    pub reply: &'a [u8],
    pub metric: usize,
    pub truncated: bool,
}

/// The cache (see the module documentation).
#[derive(Debug)]
pub(crate) struct AnswerCache {
    slots: Vec<Option<Box<Entry>>>,
    hasher: foldhash::fast::RandomState,
    clock: u64,
}

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache {
            // `None` is all zero bits: `vec!` makes a zeroed allocation, resident once touched.
            slots: vec![None; SLOTS],
            hasher: foldhash::fast::RandomState::default(),
            clock: 0,
        }
    }
}

impl AnswerCache {
    fn key(query: &[u8]) -> Option<&[u8]> {
        (query.len() >= 12 && query.len() <= MAX_QUERY).then(|| &query[2..])
    }

    fn set(&self, hash: u64) -> std::ops::Range<usize> {
        let first = (hash as usize) & (SLOTS - 1) & !(WAYS - 1);
        first..first + WAYS
    }

    /// The reply stored for `query` at index generation `generation`.
    pub(crate) fn get(&mut self, query: &[u8], generation: u64) -> Option<Hit<'_>> {
        let key = Self::key(query)?;
        let hash = self.hasher.hash_one(key);
        self.clock += 1;
        let clock = self.clock;
        let range = self.set(hash);
        let e = self.slots[range]
            .iter_mut()
            .flatten()
            .find(|e| e.hash == hash && e.generation == generation && &e.bytes[..e.key_len] == key)?;
        e.last_use = clock;
        Some(Hit { reply: &e.bytes[e.key_len..], metric: e.metric, truncated: e.truncated })
    }

    /// Stores `reply` for `query`, both computed at index generation `generation`.
    pub(crate) fn put(&mut self, query: &[u8], generation: u64, reply: &[u8], metric: usize, truncated: bool) {
        let Some(key) = Self::key(query) else {
            return;
        };
        if key.len() + reply.len() > MAX_ENTRY {
            return;
        }
        let hash = self.hasher.hash_one(key);
        self.clock += 1;
        let range = self.set(hash);
        let set = &mut self.slots[range];
        // The same key (an older generation), else an empty way, else the least recently used.
        let way = set
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.hash == hash && &e.bytes[..e.key_len] == key))
            .or_else(|| set.iter().position(Option::is_none))
            .or_else(|| {
                set.iter()
                    .enumerate()
                    .min_by_key(|(_, e)| {
                        e.as_ref().map(|e| (e.generation == generation, e.last_use)).unwrap_or((false, 0))
                    })
                    .map(|(i, _)| i)
            })
            .unwrap_or(0);
        let e = set[way].get_or_insert_with(|| {
            Box::new(Entry {
                hash: 0,
                generation: 0,
                last_use: 0,
                key_len: 0,
                metric: 0,
                truncated: false,
                bytes: Vec::new(),
            })
        });
        e.hash = hash;
        e.generation = generation;
        e.last_use = self.clock;
        e.key_len = key.len();
        e.metric = metric;
        e.truncated = truncated;
        e.bytes.clear();
        e.bytes.extend_from_slice(key);
        e.bytes.extend_from_slice(reply);
    }

    /// Entries held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}
