//! Lockout against guessing: failures are counted per user and per client address over
//! `lockout.window`; at `max_failures` the key is locked for `lock_for`. Password and OTP
//! steps share the counters. State lives in the store, so replicas share it.
//!
//! An attempt is *reserved* before the password or code is checked, in the same atomic store
//! update that reads the counter: failures plus attempts still in flight may not pass
//! `max_failures`, so a burst of concurrent guesses cannot all get past a check that none of
//! them has counted yet (check-then-act). The outcome then settles the reservation: a failure
//! turns it into a counted failure, a success clears the key, anything else (backend down)
//! just releases it. A reservation a crashed replica never settles expires after `hold`.
//!
//! User keys are the name normalised as far as possible without the backend (ASCII lower
//! case, an `@domain` suffix cut), so `Alice`, `alice` and `alice@example.org` share one
//! counter; the canonical name the backend returns is normalised the same way.

use serde::{Deserialize, Serialize};

use crate::config;
use crate::store::{Ns, Store, StoreError, update};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// Times of recent failures (within the window).
    failures: Vec<u64>,
    locked_until: u64,
    /// Attempts in flight: (reservation id, expires at).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<(u64, u64)>,
}

impl Record {
    fn prune(&mut self, now: u64, window: u64) {
        self.failures.retain(|&t| t + window > now);
        self.pending.retain(|&(_, until)| until > now);
    }

    fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.pending.is_empty() && self.locked_until == 0
    }
}

pub struct Lockout {
    max_failures: usize,
    window: u64,
    lock_for: u64,
    /// How long a reservation holds its slot if never settled.
    hold: u64,
}

/// One attempt reserved on its keys; settle it with [`Lockout::fail`], [`Lockout::succeed`]
/// or [`Lockout::release`].
#[derive(Debug)]
#[must_use = "a reservation holds a lockout slot until it is settled"]
pub struct Attempt {
    keys: Vec<String>,
    id: u64,
}

impl Attempt {
    /// The user key it was reserved on.
    pub fn user_key(&self) -> &str {
        self.keys.first().map_or("", String::as_str)
    }
}

/// Lower-cases ASCII and cuts an `@domain` suffix: the key all spellings of one account share.
pub fn normalise(user: &str) -> String {
    let name = match user.rsplit_once('@') {
        Some((local, _)) if !local.is_empty() => local,
        _ => user,
    };
    name.to_ascii_lowercase()
}

/// The lockout key of a user name.
pub fn user_key(user: &str) -> String {
    format!("user:{}", normalise(user))
}

/// The keys one attempt counts against.
pub fn keys(user: &str, client: crate::client_addr::ClientAddr) -> [String; 2] {
    [user_key(user), format!("ip:{client}")]
}

fn decode(raw: Option<&[u8]>) -> Record {
    raw.and_then(|r| serde_json::from_slice(r).ok())
        .unwrap_or_default()
}

impl Lockout {
    /// `hold` bounds how long one attempt can take (the backend timeout, with a margin).
    pub fn new(cfg: &config::Lockout, hold: std::time::Duration) -> Self {
        Self {
            max_failures: cfg.max_failures as usize,
            window: cfg.window.as_secs(),
            lock_for: cfg.lock_for.as_secs(),
            hold: hold.as_secs().max(1),
        }
    }

    fn expiry(&self, now: u64) -> u64 {
        now + self.window.max(self.lock_for).max(self.hold) + 1
    }

    fn encode(&self, rec: &Record, now: u64) -> (Option<Vec<u8>>, u64) {
        if rec.is_empty() {
            (None, 0)
        } else {
            (serde_json::to_vec(rec).ok(), self.expiry(now))
        }
    }

    /// Seconds until the earliest of `keys` unlocks, if any is locked.
    pub async fn locked(
        &self,
        store: &dyn Store,
        keys: &[String],
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut wait = None;
        for key in keys {
            let rec = decode(store.get(Ns::Lockout, key).await?.as_deref());
            if rec.locked_until > now {
                wait = Some(wait.unwrap_or(0).max(rec.locked_until - now));
            }
        }
        Ok(wait)
    }

    /// Reserves one attempt on every key, or answers how many seconds to wait: a key is
    /// locked, or its failures plus attempts in flight already reach `max_failures`.
    pub async fn reserve(
        &self,
        store: &dyn Store,
        keys: &[String],
        now: u64,
    ) -> Result<Result<Attempt, u64>, StoreError> {
        let id = rand::random::<u64>();
        let mut held = Attempt {
            keys: Vec::with_capacity(keys.len()),
            id,
        };
        for key in keys {
            let refused = update(store, Ns::Lockout, key, |raw| {
                let mut rec = decode(raw);
                rec.prune(now, self.window);
                if rec.locked_until > now {
                    return (raw.map(<[u8]>::to_vec), 0, Some(rec.locked_until - now));
                }
                if rec.failures.len() + rec.pending.len() >= self.max_failures {
                    // Full of attempts still in flight: they settle within `hold`, most likely
                    // into a lock. Ask to come back soon rather than promise a time.
                    return (raw.map(<[u8]>::to_vec), 0, Some(1));
                }
                rec.pending.push((id, now + self.hold));
                let (value, expires) = self.encode(&rec, now);
                (value, expires, None)
            })
            .await;
            match refused {
                Ok(None) => held.keys.push(key.clone()),
                Ok(Some(wait)) => {
                    self.release(store, held, now).await?;
                    return Ok(Err(wait));
                }
                Err(e) => {
                    // Best effort: the slots expire after `hold` anyway.
                    let _ = self.release(store, held, now).await;
                    return Err(e);
                }
            }
        }
        Ok(Ok(held))
    }

    /// Turns the reservation into a failure on each of its keys; returns the lock duration if
    /// this locked any.
    pub async fn fail(
        &self,
        store: &dyn Store,
        attempt: Attempt,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut locked = None;
        for key in &attempt.keys {
            let newly = update(store, Ns::Lockout, key, |raw| {
                let mut rec = decode(raw);
                rec.prune(now, self.window);
                rec.pending.retain(|&(id, _)| id != attempt.id);
                rec.failures.push(now);
                let mut newly = false;
                if rec.failures.len() >= self.max_failures && rec.locked_until <= now {
                    rec.locked_until = now + self.lock_for;
                    rec.failures.clear();
                    newly = true;
                }
                let (value, expires) = self.encode(&rec, now);
                (value, expires, newly)
            })
            .await?;
            if newly {
                locked = Some(self.lock_for);
            }
        }
        Ok(locked)
    }

    /// Settles a successful attempt: its slot is freed, and the failures and lock of every
    /// key in `clear` (the user's, whether reserved on or not) are forgotten.
    pub async fn succeed(
        &self,
        store: &dyn Store,
        attempt: Attempt,
        clear: &[String],
        now: u64,
    ) -> Result<(), StoreError> {
        let mut keys: Vec<&String> = attempt.keys.iter().collect();
        keys.extend(clear.iter().filter(|k| !attempt.keys.contains(k)));
        for key in keys {
            let forget = clear.contains(key);
            update(store, Ns::Lockout, key, |raw| {
                let mut rec = decode(raw);
                rec.prune(now, self.window);
                rec.pending.retain(|&(id, _)| id != attempt.id);
                if forget {
                    rec.failures.clear();
                    rec.locked_until = 0;
                }
                let (value, expires) = self.encode(&rec, now);
                (value, expires, ())
            })
            .await?;
        }
        Ok(())
    }

    /// Frees the reservation without counting anything (the attempt was never decided).
    pub async fn release(
        &self,
        store: &dyn Store,
        attempt: Attempt,
        now: u64,
    ) -> Result<(), StoreError> {
        for key in &attempt.keys {
            update(store, Ns::Lockout, key, |raw| {
                let mut rec = decode(raw);
                rec.prune(now, self.window);
                rec.pending.retain(|&(id, _)| id != attempt.id);
                let (value, expires) = self.encode(&rec, now);
                (value, expires, ())
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::store::embedded::EmbeddedStore;

    #[test]
    fn spellings_of_one_account_share_a_key() {
        for name in ["alice", "ALICE", "Alice@Example.org", "aLiCe"] {
            assert_eq!(user_key(name), "user:alice", "{name}");
        }
        // Cut at the last `@`, as nethcti-server does.
        assert_eq!(user_key("Alice@x@y"), "user:alice@x");
        assert_eq!(user_key("@alice"), "user:@alice");
        assert_eq!(user_key("201"), "user:201");
        // Only ASCII is folded: no Unicode case mapping surprises.
        assert_eq!(normalise("ZOË"), "zoË");
    }

    #[tokio::test]
    async fn reservations_count_towards_the_limit_and_settle() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Clock::manual(1_000)).unwrap();
        let cfg = config::Lockout {
            max_failures: 3,
            window: Duration::from_secs(300),
            lock_for: Duration::from_secs(900),
        };
        let lockout = Lockout::new(&cfg, Duration::from_secs(10));
        let keys = [user_key("alice")];
        let now = 1_000;
        let a = lockout.reserve(&store, &keys, now).await.unwrap().unwrap();
        let b = lockout.reserve(&store, &keys, now).await.unwrap().unwrap();
        let c = lockout.reserve(&store, &keys, now).await.unwrap().unwrap();
        // Three in flight: a fourth is refused before anything was checked.
        assert_eq!(
            lockout
                .reserve(&store, &keys, now)
                .await
                .unwrap()
                .unwrap_err(),
            1
        );
        // Released and succeeded slots free up; failures stay counted.
        lockout.release(&store, a, now).await.unwrap();
        assert_eq!(lockout.fail(&store, b, now).await.unwrap(), None);
        let d = lockout.reserve(&store, &keys, now).await.unwrap().unwrap();
        assert_eq!(lockout.fail(&store, c, now).await.unwrap(), None);
        assert_eq!(lockout.fail(&store, d, now).await.unwrap(), Some(900));
        assert_eq!(
            lockout
                .reserve(&store, &keys, now)
                .await
                .unwrap()
                .unwrap_err(),
            900
        );
        // A slot never settled expires after `hold`.
        let later = now + 901;
        for _ in 0..3 {
            let _lost = lockout
                .reserve(&store, &keys, later)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(
            lockout
                .reserve(&store, &keys, later)
                .await
                .unwrap()
                .is_err()
        );
        let t = later + 11;
        let g = lockout.reserve(&store, &keys, t).await.unwrap().unwrap();
        let h = lockout.reserve(&store, &keys, t).await.unwrap().unwrap();
        lockout.fail(&store, h, t).await.unwrap();
        let _i = lockout.reserve(&store, &keys, t).await.unwrap().unwrap();
        assert!(lockout.reserve(&store, &keys, t).await.unwrap().is_err());
        // Success forgets the failures of the key, but not other attempts' slots.
        lockout.succeed(&store, g, &keys, t).await.unwrap();
        for _ in 0..2 {
            let _j = lockout.reserve(&store, &keys, t).await.unwrap().unwrap();
        }
        assert!(lockout.reserve(&store, &keys, t).await.unwrap().is_err());
    }
}
