//! The in-memory revocation set read on every check: session ids that must be refused until
//! the last token of that session has expired. Reads are a lock-free snapshot load; writes
//! (logout, reuse detection, store sync) copy the map, which is fine for their rate.
//! Persistence and replication are the store's job; this module only holds the current view.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::Clock;

pub struct Revocations {
    clock: Clock,
    /// sid -> unix time after which the entry is useless (every token of it has expired).
    set: ArcSwap<HashMap<Arc<str>, u64>>,
}

impl Revocations {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            set: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    pub fn is_revoked(&self, sid: &str) -> bool {
        self.set.load().contains_key(sid)
    }

    /// Revokes `sid` until `until` (unix seconds).
    pub fn revoke(&self, sid: &str, until: u64) {
        let sid: Arc<str> = sid.into();
        self.set.rcu(|current| {
            let mut next = HashMap::clone(current);
            let entry = next.entry(sid.clone()).or_insert(until);
            *entry = (*entry).max(until);
            next
        });
    }

    /// Adds what the store knows (a full resync). Revocation only ever grows until expiry,
    /// so merging is always right, and a store that lost data cannot un-revoke a session.
    pub fn merge(&self, entries: HashMap<Arc<str>, u64>) {
        let current = self.set.load();
        let news = entries
            .iter()
            .any(|(sid, until)| current.get(sid).is_none_or(|u| u < until));
        if !news {
            return;
        }
        self.set.rcu(|current| {
            let mut next = HashMap::clone(current);
            for (sid, &until) in &entries {
                let entry = next.entry(sid.clone()).or_insert(until);
                *entry = (*entry).max(until);
            }
            next
        });
    }

    /// Every entry, for re-publishing to a store that came back empty.
    pub fn entries(&self) -> Vec<(Arc<str>, u64)> {
        self.set
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Drops entries whose tokens have all expired.
    pub fn prune(&self) {
        let now = self.clock.now();
        if self.set.load().values().all(|&until| until >= now) {
            return;
        }
        self.set.rcu(|current| {
            current
                .iter()
                .filter(|&(_, &until)| until >= now)
                .map(|(k, v)| (k.clone(), *v))
                .collect::<HashMap<_, _>>()
        });
    }

    pub fn len(&self) -> usize {
        self.set.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_until_pruned_after_expiry() {
        let clock = Clock::manual(100);
        let r = Revocations::new(clock.clone());
        assert!(!r.is_revoked("s1"));
        r.revoke("s1", 200);
        r.revoke("s2", 150);
        assert!(r.is_revoked("s1") && r.is_revoked("s2"));
        clock.set(160);
        r.prune();
        assert!(r.is_revoked("s1"));
        assert!(!r.is_revoked("s2"));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn merge_never_forgets() {
        let r = Revocations::new(Clock::manual(100));
        r.revoke("local", 500);
        r.merge(HashMap::from([
            (Arc::from("remote"), 300),
            (Arc::from("local"), 200),
        ]));
        assert!(r.is_revoked("local") && r.is_revoked("remote"));
        let mut entries = r.entries();
        entries.sort();
        assert_eq!(
            entries,
            vec![(Arc::from("local"), 500), (Arc::from("remote"), 300)]
        );
    }
}
