//! The cache of verified access tokens: the reason the hot path does no signature work for a
//! token it has seen. Keys are a keyed 128-bit SipHash-1-3 of the token text (a random key per
//! process, so nobody can aim for a collision with a cached token); values are the verified
//! claims, so every hit is still checked for expiry and revocation by the caller and the cache
//! can never extend a token's life.
//!
//! Sharded maps under read-write locks: a hit takes one uncontended read lock. Memory is
//! bounded by an estimate of each entry's bytes; a full shard first drops expired entries,
//! then an eighth of what is left (whatever the map yields first, which is arbitrary).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use siphasher::sip128::{Hasher128, SipHasher13};

use super::Verified;

const SHARDS: usize = 16;

/// The key is already a uniform keyed hash: use its bits as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u128; fold them in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Shard = HashMap<u128, Arc<Verified>, BuildHasherDefault<Identity>>;

struct Slot {
    map: Shard,
    bytes: usize,
}

pub struct VerifiedCache {
    key: (u64, u64),
    shards: Vec<RwLock<Slot>>,
    budget_per_shard: usize,
}

/// Approximate bytes an entry costs: the claims, their strings, and the map slot.
fn cost(v: &Verified) -> usize {
    // The last term covers allocator rounding and the map's spare capacity: with it the
    // estimate matches the ~490 bytes per token measured by bench/run.
    v.approx_bytes() + std::mem::size_of::<(u128, Arc<Verified>)>() + 160
}

impl VerifiedCache {
    pub fn new(budget_bytes: u64) -> Self {
        let budget = usize::try_from(budget_bytes).unwrap_or(usize::MAX);
        Self {
            key: (rand::random(), rand::random()),
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Slot {
                        map: Shard::default(),
                        bytes: 0,
                    })
                })
                .collect(),
            budget_per_shard: budget / SHARDS,
        }
    }

    pub fn key(&self, token: &str) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(token.as_bytes());
        h.finish128().as_u128()
    }

    fn shard(&self, key: u128) -> &RwLock<Slot> {
        &self.shards[(key >> 64) as usize % SHARDS]
    }

    pub fn get(&self, key: u128) -> Option<Arc<Verified>> {
        let slot = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        slot.map.get(&key).cloned()
    }

    /// Caches `value`; `now` lets a full shard drop expired entries first.
    pub fn insert(&self, key: u128, value: Arc<Verified>, now: u64) {
        let size = cost(&value);
        if size > self.budget_per_shard {
            return;
        }
        let mut slot = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if slot.bytes + size > self.budget_per_shard {
            slot.map.retain(|_, v| v.exp >= now);
            slot.bytes = slot.map.values().map(|v| cost(v)).sum();
        }
        if slot.bytes + size > self.budget_per_shard {
            let drop_count = slot.map.len() / 8 + 1;
            let victims: Vec<u128> = slot.map.keys().take(drop_count).copied().collect();
            for k in victims {
                if let Some(v) = slot.map.remove(&k) {
                    slot.bytes -= cost(&v);
                }
            }
        }
        if let Some(old) = slot.map.insert(key, value) {
            slot.bytes -= cost(&old);
        }
        slot.bytes += size;
    }

    /// Forgets one entry, if present.
    pub fn remove(&self, key: u128) {
        let mut slot = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.map.remove(&key) {
            slot.bytes -= cost(&old);
        }
    }

    /// Forgets every entry (the keys changed: verdicts must be reached again).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut slot = shard.write().unwrap_or_else(|p| p.into_inner());
            slot.map.clear();
            slot.bytes = 0;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::token::Kind;

    fn verified(exp: u64) -> Arc<Verified> {
        Arc::new(Verified {
            kind: Kind::Access,
            sub: "alice".into(),
            sid: "0123456789abcdefghijkl".into(),
            jti: "0123456789abcdefghijkl".into(),
            amr: vec!["pwd".into()],
            iat: 0,
            nbf: 0,
            exp,
            credential: None,
        })
    }

    #[test]
    fn keys_differ_per_process_key_and_token() {
        let a = VerifiedCache::new(1 << 20);
        let b = VerifiedCache::new(1 << 20);
        assert_ne!(a.key("t1"), a.key("t2"));
        assert_ne!(a.key("t1"), b.key("t1"));
        assert_eq!(a.key("t1"), a.key("t1"));
    }

    #[test]
    fn stays_within_its_budget() {
        let budget = 64 * 1024;
        let cache = VerifiedCache::new(budget);
        for i in 0..10_000u32 {
            cache.insert(cache.key(&i.to_string()), verified(100), 0);
        }
        let per_entry = cost(&verified(100));
        assert!(
            cache.len() * per_entry <= budget as usize,
            "{} entries",
            cache.len()
        );
        assert!(
            cache.len() * per_entry > budget as usize / 2,
            "{} entries",
            cache.len()
        );
        // Recent entries are findable.
        assert!(cache.get(cache.key("9999")).is_some());
    }

    #[test]
    fn remove_and_clear_forget_entries() {
        let cache = VerifiedCache::new(1 << 20);
        for i in 0..100u32 {
            cache.insert(cache.key(&i.to_string()), verified(100), 0);
        }
        cache.remove(cache.key("7"));
        assert!(cache.get(cache.key("7")).is_none());
        assert!(cache.get(cache.key("8")).is_some());
        assert_eq!(cache.len(), 99);
        cache.clear();
        assert_eq!(cache.len(), 0);
        let bytes: usize = cache.shards.iter().map(|s| s.read().unwrap().bytes).sum();
        assert_eq!(bytes, 0);
    }

    #[test]
    fn a_full_shard_drops_expired_entries_first() {
        let cache = VerifiedCache::new(16 * 8 * cost(&verified(0)) as u64);
        for i in 0..1000u32 {
            cache.insert(cache.key(&format!("old{i}")), verified(10), 0);
        }
        let live: Vec<u128> = (0..16u32).map(|i| cache.key(&format!("new{i}"))).collect();
        for k in &live {
            cache.insert(*k, verified(1000), 50);
        }
        let kept = live.iter().filter(|k| cache.get(**k).is_some()).count();
        assert_eq!(
            kept, 16,
            "live entries were evicted while expired ones were there"
        );
    }
}
