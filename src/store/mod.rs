//! Shared state behind one small trait: namespaced keys with an absolute expiry, read,
//! written, compared-and-swapped atomically, and scanned. The login flows build everything
//! (refresh rotation, TOTP replay guard, recovery codes, lockout, revocations) on these
//! primitives, so the embedded (redb, one replica) and Redis (many replicas) stores only
//! implement storage, never policy. A store must never log values: some are secrets (sealed).

pub mod embedded;
pub mod redis;

use async_trait::async_trait;

/// Key spaces. Each has its own prefix in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ns {
    /// Per user: TOTP state (sealed secret, recovery code hashes, last used step).
    Mfa,
    /// Per session id: refresh family (current refresh jti, sealed backend credential).
    Session,
    /// Per user: the session ids of that user.
    UserSessions,
    /// Per session id: revoked until (value: unix seconds, decimal).
    Revoked,
    /// Per user or client address: failed attempts and lock.
    Lockout,
    /// One-time markers (MFA token ids).
    Once,
    /// Operator switches every replica follows (`lockdown`).
    Control,
}

impl Ns {
    /// As many as there are namespaces (checked by `index`).
    pub const COUNT: usize = 7;

    /// A dense index below [`Ns::COUNT`], for per-namespace counters.
    pub fn index(self) -> usize {
        match self {
            Ns::Mfa => 0,
            Ns::Session => 1,
            Ns::UserSessions => 2,
            Ns::Revoked => 3,
            Ns::Lockout => 4,
            Ns::Once => 5,
            Ns::Control => 6,
        }
    }

    pub fn prefix(self) -> &'static str {
        match self {
            Ns::Mfa => "mfa",
            Ns::Session => "session",
            Ns::UserSessions => "user_sessions",
            Ns::Revoked => "revoked",
            Ns::Lockout => "lockout",
            Ns::Once => "once",
            Ns::Control => "control",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// `expires_at` is unix seconds; 0 means never. Expired entries read as absent.
#[async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    async fn put(&self, ns: Ns, key: &str, value: &[u8], expires_at: u64)
    -> Result<(), StoreError>;

    async fn delete(&self, ns: Ns, key: &str) -> Result<(), StoreError>;

    /// Atomically sets `key` to `new` (or deletes it when `None`) if its current value is
    /// `expected` (`None`: absent or expired). Returns whether the swap happened.
    async fn compare_and_swap(
        &self,
        ns: Ns,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        expires_at: u64,
    ) -> Result<bool, StoreError>;

    /// All live entries of `ns` (used for the revocation set; keep such namespaces small).
    async fn scan(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// A number that changes whenever anything in `ns` is written (by any replica).
    async fn version(&self, ns: Ns) -> Result<u64, StoreError>;

    /// Reachability, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Physically deletes expired entries, for stores that do not do so by themselves (the
    /// embedded one); called periodically. Expired entries already read as absent either way.
    async fn sweep(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How both stores keep a value: its expiry (unix seconds, big-endian, 0 = never) first.
pub(crate) fn envelope(value: &[u8], expires_at: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The payload of a stored envelope if it has not expired at `now`.
pub(crate) fn live(raw: &[u8], now: u64) -> Option<&[u8]> {
    let (exp, value) = raw.split_at_checked(8)?;
    let exp = u64::from_be_bytes(exp.try_into().ok()?);
    (exp == 0 || exp > now).then_some(value)
}

/// Reads `key`, applies `f` to it, writes the result back atomically; retries on races with
/// a short random pause, so replicas racing on one key (lockout counters) take turns.
/// `f` returns the new value (None deletes), its expiry, and a result to hand back.
///
/// Within this process, updates of one key take turns on a lock first (one of
/// [`UPDATE_LOCKS`], by the key's hash): a burst of logins on one key (many users behind one
/// address share its lockout counter) then costs no retries here, and only other replicas can
/// race a compare-and-swap. A turn is awaited for at most [`UPDATE_TURN_WAIT`]: with the store
/// down every update fails on its own timeout, and queueing them one behind another would
/// turn a quick 503 into a long wait.
pub async fn update<T>(
    store: &dyn Store,
    ns: Ns,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, u64, T),
) -> Result<T, StoreError> {
    let _turn = tokio::time::timeout(UPDATE_TURN_WAIT, update_lock(ns, key).lock())
        .await
        .ok();
    for attempt in 0..32u32 {
        let current = store.get(ns, key).await?;
        let (new, expires_at, out) = f(current.as_deref());
        if new.as_deref() == current.as_deref() {
            return Ok(out);
        }
        if store
            .compare_and_swap(ns, key, current.as_deref(), new.as_deref(), expires_at)
            .await?
        {
            return Ok(out);
        }
        let jitter = rand::random_range(0..=(1u64 << attempt.min(5)));
        tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
    }
    Err(StoreError::Unavailable(format!(
        "too much contention on {}",
        ns.prefix()
    )))
}

/// How long an update waits for its turn on its key before racing without it.
const UPDATE_TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many locks in-process updates of distinct keys share (a collision only makes two keys
/// take turns).
const UPDATE_LOCKS: usize = 64;

fn update_lock(ns: Ns, key: &str) -> &'static tokio::sync::Mutex<()> {
    use std::hash::BuildHasher;
    static LOCKS: std::sync::LazyLock<Vec<tokio::sync::Mutex<()>>> =
        std::sync::LazyLock::new(|| (0..UPDATE_LOCKS).map(|_| Default::default()).collect());
    static SEED: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(Default::default);
    &LOCKS[(SEED.hash_one((ns.prefix(), key)) % UPDATE_LOCKS as u64) as usize]
}

/// Opens the configured store. Once [`crate::config::Config::validate`] has passed, only I/O
/// can fail here (the embedded database file).
pub async fn open(
    cfg: &crate::config::StoreConfig,
    clock: crate::clock::Clock,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    use crate::config::StoreKind;
    Ok(match &cfg.kind {
        StoreKind::Embedded => {
            std::sync::Arc::new(embedded::EmbeddedStore::open(&cfg.path, clock)?)
        }
        StoreKind::Redis(settings) => {
            std::sync::Arc::new(redis::RedisStore::connect(settings, clock).await?)
        }
    })
}

/// Behaviour every store must show; run against each implementation by its tests.
#[doc(hidden)]
pub mod conformance;
