//! Lockout against guessing: failures are counted per user and per client address over
//! `lockout.window`; at `max_failures` the key is locked for `lock_for`. Password and OTP
//! steps share the counters. State lives in the store, so replicas share it.
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
}

pub struct Lockout {
    max_failures: usize,
    window: u64,
    lock_for: u64,
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
pub fn keys(user: &str, client: std::net::IpAddr) -> [String; 2] {
    [user_key(user), format!("ip:{client}")]
}

fn decode(raw: Option<&[u8]>) -> Record {
    raw.and_then(|r| serde_json::from_slice(r).ok())
        .unwrap_or_default()
}

impl Lockout {
    pub fn new(cfg: &config::Lockout) -> Self {
        Self {
            max_failures: cfg.max_failures as usize,
            window: cfg.window.as_secs(),
            lock_for: cfg.lock_for.as_secs(),
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

    /// Counts a failure against each key; returns the lock duration if this locked any.
    pub async fn fail(
        &self,
        store: &dyn Store,
        keys: &[String],
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut locked = None;
        for key in keys {
            let (max, window, lock_for) = (self.max_failures, self.window, self.lock_for);
            let newly = update(store, Ns::Lockout, key, |raw| {
                let mut rec = decode(raw);
                rec.failures.retain(|&t| t + window > now);
                rec.failures.push(now);
                let mut newly = false;
                if rec.failures.len() >= max && rec.locked_until <= now {
                    rec.locked_until = now + lock_for;
                    rec.failures.clear();
                    newly = true;
                }
                let expires = now + window.max(lock_for) + 1;
                (serde_json::to_vec(&rec).ok(), expires, newly)
            })
            .await?;
            if newly {
                locked = Some(self.lock_for);
            }
        }
        Ok(locked)
    }

    /// Forgets the failures of `key` (after a successful login of that user).
    pub async fn clear(&self, store: &dyn Store, key: &str) -> Result<(), StoreError> {
        store.delete(Ns::Lockout, key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
