//! The in-memory revocation set read on every check: session ids that must be refused until
//! the last token of that session has expired. Reads are a lock-free snapshot load; writes
//! (logout, reuse detection, store sync) copy the map, which is fine for their rate.
//! The store holds the revocations every replica shares; this module keeps the in-memory view
//! in step with it ([`keep_in_sync`]) through the [`Store`] trait alone, never a particular
//! store. A store outage must never empty the view: checks go on with the last known set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::{Ns, Store, StoreError};

/// How often the store is asked for revocations of other replicas (so every replica applies
/// a revocation within a second).
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// How often entries whose tokens have all expired are dropped.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub struct Revocations {
    clock: Clock,
    /// sid -> unix time after which the entry is useless (every token of it has expired).
    set: ArcSwap<HashMap<Arc<str>, u64>>,
    /// Bumped whenever a session is newly revoked (here or merged from the store), so that
    /// long-lived holders of a session (relayed sockets) wake up and look, instead of polling.
    generation: watch::Sender<u64>,
}

impl Revocations {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            set: ArcSwap::from_pointee(HashMap::new()),
            generation: watch::Sender::new(0),
        }
    }

    /// A receiver that sees a change after every new revocation; check
    /// [`Revocations::is_revoked`] for the sessions you hold when it does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
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
        self.bump();
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
        self.bump();
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

/// Merges the store's revocations into `revocations` (a full resync).
pub async fn sync(store: &dyn Store, revocations: &Revocations) -> Result<(), StoreError> {
    let entries = store
        .scan(Ns::Revoked)
        .await?
        .into_iter()
        .filter_map(|(sid, until)| {
            let until = std::str::from_utf8(&until).ok()?.parse().ok()?;
            Some((Arc::<str>::from(sid), until))
        })
        .collect();
    revocations.merge(entries);
    Ok(())
}

/// After an outage the store may have lost data (a Redis restarted without persistence):
/// writes back what this replica knows, so replicas started later learn it too.
pub async fn republish(store: &dyn Store, revocations: &Revocations) -> Result<(), StoreError> {
    for (sid, until) in revocations.entries() {
        store
            .put(Ns::Revoked, &sid, until.to_string().as_bytes(), until)
            .await?;
    }
    Ok(())
}

/// What the sync loop knows of the store, for readiness, `/status` and the store gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncState {
    /// The revocation set has been loaded from the store at least once.
    pub loaded: bool,
    /// The last sync reached the store.
    pub store_up: bool,
}

impl SyncState {
    /// The state after the first load at start-up, successful or not.
    pub fn after_first_load(ok: bool) -> Self {
        Self {
            loaded: ok,
            store_up: ok,
        }
    }
}

/// Keeps `revocations` in step with the store until `stop` completes: resyncs whenever the
/// namespace's version moves, republishes after the store comes back from an outage, and
/// prunes expired entries. Publishes what it learns of the store in `state` (its initial value
/// says whether the start-up load succeeded; if not, the store counts as down until a sync
/// succeeds).
pub async fn keep_in_sync(
    store: Arc<dyn Store>,
    revocations: Arc<Revocations>,
    state: tokio::sync::watch::Sender<SyncState>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut sync_tick = tokio::time::interval(SYNC_EVERY);
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune_tick = tokio::time::interval(PRUNE_EVERY);
    prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen_version = None;
    let mut store_down = !state.borrow().store_up;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = sync_tick.tick() => {
                let result = match store.version(Ns::Revoked).await {
                    Ok(v) if seen_version == Some(v) && !store_down => Ok(()),
                    Ok(v) => sync(&*store, &revocations).await.map(|()| seen_version = Some(v)),
                    Err(e) => Err(e),
                };
                let up = result.is_ok();
                state.send_if_modified(|s| {
                    let next = SyncState { loaded: s.loaded || up, store_up: up };
                    std::mem::replace(s, next) != next
                });
                match result {
                    Ok(()) if store_down => {
                        store_down = false;
                        let healed = republish(&*store, &revocations).await;
                        tracing::info!(republished = healed.is_ok(), "store reachable again; revocations resynced");
                    }
                    Err(e) if !store_down => {
                        store_down = true;
                        tracing::error!(error = %e, "store unreachable; checks go on with the last known revocations");
                    }
                    _ => {}
                }
            }
            _ = prune_tick.tick() => revocations.prune(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
    fn holders_are_told_of_new_revocations_only() {
        let r = Revocations::new(Clock::manual(100));
        let mut rx = r.subscribe();
        assert!(!rx.has_changed().unwrap());
        r.revoke("s1", 200);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // A resync that brings nothing new wakes nobody.
        r.merge(HashMap::from([(Arc::from("s1"), 150)]));
        assert!(!rx.has_changed().unwrap());
        r.merge(HashMap::from([(Arc::from("s2"), 150)]));
        assert!(rx.has_changed().unwrap());
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
