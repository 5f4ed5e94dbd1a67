//! The memory of event ids already seen: bounded, expiring, safe under concurrent deliveries.
//!
//! Keys are `source:id` strings (one mechanism, one key space per source), stored as the first 128 bits of
//! their SHA-256 so that an entry costs the same whatever the id's length. Entries expire after the window
//! (Segment keeps 24 h of messageIds) and the oldest are forgotten first once the size cap is reached, so a
//! flood of distinct ids keeps memory flat.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use dashmap::{mapref::entry::Entry, DashMap};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// What the memory knows of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// Not seen within the window: the caller now owns it, and must `commit` or `forget` it.
    New,
    /// Another request holds it and has not finished recording it: only the store can tell.
    InFlight,
    /// Recorded: a re-delivery.
    Seen,
}

pub struct DedupeMemory {
    /// key hash → entry: bits 63..25 the expiry in milliseconds since `epoch` (17 years of them), bits 24..1
    /// a sequence number that ties the entry to its slot in `order`, bit 0 set once the delivery that owns
    /// the key has been recorded. Only recorded keys make a re-delivery a duplicate: a copy that arrives
    /// while the first is still being written must not be acknowledged on its word.
    seen: DashMap<u64, u64>,
    /// Insertion order (hash, entry without its recorded bit), for expiry and the size cap. Slots of
    /// forgotten or re-remembered keys go stale; they are skipped when they reach the front.
    order: Mutex<VecDeque<(u64, u64)>>,
    next_seq: AtomicU64,
    ttl: Duration,
    capacity: usize,
    epoch: Instant,
}

const RECORDED: u64 = 1;
const SEQ_BITS: u32 = 24;

/// The first 64 bits of the key's SHA-256: 16 bytes an entry. Two of a million remembered ids share a
/// hash with a probability of about 3 in 100 million.
fn key_hash(key: &str) -> u64 {
    let digest = Sha256::digest(key.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn entry(expiry: u64, seq: u64) -> u64 {
    (expiry << (SEQ_BITS + 1)) | ((seq & ((1 << SEQ_BITS) - 1)) << 1)
}

fn expiry_of(entry: u64) -> u64 {
    entry >> (SEQ_BITS + 1)
}

impl DedupeMemory {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            seen: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(0),
            ttl,
            capacity: capacity.max(1),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Looks `key` up and, when it is new, remembers it as in flight. Two concurrent calls with the same new
    /// key: exactly one gets `New`.
    pub fn sight(&self, key: &str) -> Sighting {
        let hash = key_hash(key);
        let now = self.now_ms();
        let fresh = entry(
            now + self.ttl.as_millis() as u64,
            self.next_seq.fetch_add(1, Ordering::Relaxed),
        );
        let sighting = match self.seen.entry(hash) {
            Entry::Occupied(mut seen) => {
                let value = *seen.get();
                if expiry_of(value) <= now {
                    seen.insert(fresh);
                    Sighting::New
                } else if value & RECORDED == RECORDED {
                    Sighting::Seen
                } else {
                    Sighting::InFlight
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(fresh);
                Sighting::New
            }
        };
        if sighting == Sighting::New {
            self.push_and_evict(hash, fresh, now);
        }
        sighting
    }

    /// Marks `key` as recorded: from now on a re-delivery is a duplicate.
    pub fn commit(&self, key: &str) {
        if let Some(mut value) = self.seen.get_mut(&key_hash(key)) {
            *value |= RECORDED;
        }
    }

    /// Remembers and commits at once (tests, and callers with nothing to record).
    pub fn first_sighting(&self, key: &str) -> bool {
        let new = self.sight(key) == Sighting::New;
        if new {
            self.commit(key);
        }
        new
    }

    /// Forgets `key`, so that a delivery we could not accept is not taken for a duplicate when it is re-sent.
    pub fn forget(&self, key: &str) {
        self.seen.remove(&key_hash(key));
    }

    /// Number of ids remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn push_and_evict(&self, hash: u64, slot: u64, now: u64) {
        let mut order = self.order.lock().expect("dedupe order lock");
        order.push_back((hash, slot));
        while let Some(&(old, old_slot)) = order.front() {
            // Counted in live entries, not queue slots: a forgotten key leaves a stale slot behind.
            if expiry_of(old_slot) > now && self.seen.len() <= self.capacity {
                break;
            }
            order.pop_front();
            // Only the entry this slot describes: a key remembered again since keeps living.
            self.seen.remove_if(&old, |_, e| *e & !RECORDED == old_slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_key_is_new_once_then_a_duplicate() {
        let d = DedupeMemory::new(Duration::from_secs(60), 100);
        assert!(d.first_sighting("segment:a"));
        assert!(!d.first_sighting("segment:a"));
        assert!(d.first_sighting("customerio:a"), "key spaces are separate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_new_again_after_the_window() {
        let d = DedupeMemory::new(Duration::from_secs(60), 100);
        assert!(d.first_sighting("k"));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!d.first_sighting("k"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(d.first_sighting("k"));
        // Expired entries are dropped as new ones arrive.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(d.first_sighting("other"));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn the_size_cap_forgets_the_oldest_first() {
        let d = DedupeMemory::new(Duration::from_secs(3600), 1000);
        for i in 0..10_000 {
            assert!(d.first_sighting(&format!("k{i}")));
        }
        assert_eq!(d.len(), 1000);
        assert!(!d.first_sighting("k9999"), "recent ids are remembered");
        assert!(d.first_sighting("k0"), "the oldest were forgotten");
    }

    #[test]
    fn a_key_is_only_a_duplicate_once_its_owner_has_recorded_it() {
        let d = DedupeMemory::new(Duration::from_secs(60), 10);
        assert_eq!(d.sight("k"), Sighting::New);
        assert_eq!(d.sight("k"), Sighting::InFlight);
        d.commit("k");
        assert_eq!(d.sight("k"), Sighting::Seen);
    }

    #[test]
    fn forgetting_a_key_lets_its_redelivery_through() {
        let d = DedupeMemory::new(Duration::from_secs(60), 10);
        assert!(d.first_sighting("k"));
        d.forget("k");
        assert!(d.first_sighting("k"));
    }

    #[test]
    fn concurrent_deliveries_of_one_id_race_to_one_winner() {
        let d = Arc::new(DedupeMemory::new(Duration::from_secs(60), 10_000));
        let winners: usize = (0..8)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|i| d.first_sighting(&format!("id{i}")))
                        .count()
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(winners, 1000);
    }
}
