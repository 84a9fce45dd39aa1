//! The Redis store: state shared by many replicas through one Redis server. Keys are
//! `authgate:{ns prefix}:{key}`; values carry their expiry (unix seconds from the injected
//! clock, 0 = never) in the same 8-byte envelope as the embedded store, so expiry follows
//! authgate's clock and never Redis's; a Redis TTL (relative, with slack) only cleans up.
//! Every write runs as one Lua script that also maintains the namespace's index (a sorted
//! set scored by expiry, which `scan` reads instead of walking the keyspace) and bumps the
//! namespace's version counter, so replicas see writes and versions move together.
//! Bookkeeping keys live under `authgate:_index:{prefix}` and `authgate:_version:{prefix}`,
//! outside every data key space, so no user-chosen key (a username, a client address) can
//! collide with them.
//!
//! Calls are bounded: a dead or frozen Redis gives [`StoreError::Unavailable`] within
//! [`OP_DEADLINE`], never a hang. The connection manager reconnects by itself after a lost
//! connection; a connection that has only timed out for a while (a silent network path) is
//! replaced. This module must never log values or put them into errors: some are secrets, so
//! error messages are built from error kinds, never from Redis's text.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisError, Script, TlsCertificates, Value};

use super::{Ns, Store, StoreError, envelope, live};
use crate::clock::Clock;
use crate::config::RedisConfig;

/// Upper bound for one store call, reconnection included.
pub const OP_DEADLINE: Duration = Duration::from_millis(1500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Without a successful reply for this long, a timed-out connection is replaced.
const STALE_AFTER: Duration = Duration::from_secs(2);
/// Redis keeps a value this much longer than its expiry: authgate's clock decides liveness,
/// and replicas' clocks may be slightly ahead of the writer's.
const TTL_SLACK_SECS: u64 = 60;
/// Redis rejects expiries that overflow in milliseconds; "never" is 0, not a huge number.
const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

/// Atomic put / delete / compare-and-swap, plus index and version upkeep.
/// KEYS: data key, index, version.
/// ARGV: now, "cas"|"set", has_expected, expected, has_new, new envelope, ttl secs (0: none),
/// index score, member (the caller's key), version seed.
const WRITE_LUA: &str = r"
local now = tonumber(ARGV[1])
if ARGV[2] == 'cas' then
  local raw = redis.call('GET', KEYS[1])
  local live = nil
  if raw and #raw >= 8 then
    local exp = 0
    for i = 1, 8 do exp = exp * 256 + string.byte(raw, i) end
    if exp == 0 or exp > now then live = string.sub(raw, 9) end
  end
  if ARGV[3] == '1' then
    if live ~= ARGV[4] then return 0 end
  elseif live ~= nil then
    return 0
  end
end
if ARGV[5] == '1' then
  if ARGV[7] ~= '0' then
    redis.call('SET', KEYS[1], ARGV[6], 'EX', ARGV[7])
  else
    redis.call('SET', KEYS[1], ARGV[6])
  end
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[9])
else
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[9])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[3], ARGV[10])
end
redis.call('INCR', KEYS[3])
return 1
";

/// Prunes expired index members and returns `member, raw value` pairs of the rest.
/// KEYS: index. ARGV: now, data key prefix.
const SCAN_LUA: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local raw = redis.call('GET', ARGV[2] .. member)
  if raw then
    out[#out + 1] = member
    out[#out + 1] = raw
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
";

pub struct RedisStore {
    client: Client,
    conn: ArcSwap<ConnectionManager>,
    clock: Clock,
    write: Script,
    scan: Script,
    started: Instant,
    /// Milliseconds since `started` of the last reply (or connection replacement).
    last_progress_ms: AtomicU64,
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(250))
}

/// The client for `settings`: its URL, the password from `store.password_file`, the CA of
/// `store.ca_file`. The URL may hold a password: errors never echo it.
fn client(settings: &RedisConfig) -> Result<Client, StoreError> {
    let bad_url = |e: RedisError| {
        StoreError::Unavailable(format!(
            "store.url is not a usable redis url: {}",
            describe(&e)
        ))
    };
    let mut info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(bad_url)?;
    if let Some(password) = &settings.password {
        let redis = info
            .redis_settings()
            .clone()
            .set_password(password.expose());
        info = info.set_redis_settings(redis);
    }
    match &settings.ca_file {
        None => Client::open(info).map_err(bad_url),
        Some(path) => {
            // Checked by `crate::tls::read_ca_file` when the configuration was loaded.
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Unavailable(format!(
                    "store.ca_file {}: cannot read: {e}",
                    path.display()
                ))
            })?;
            let certificates = TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            Client::build_with_tls(info, certificates).map_err(|e| {
                StoreError::Unavailable(format!(
                    "store.ca_file {}: {}",
                    path.display(),
                    describe(&e)
                ))
            })
        }
    }
}

/// What went wrong, from the error's kind only: Redis's own text may quote values.
fn describe(e: &RedisError) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_connection_dropped() {
        "connection lost".into()
    } else if let Some(io) = e
        .is_io_error()
        .then(|| std::error::Error::source(e))
        .flatten()
    {
        // The socket's own error (a refused certificate: "invalid peer certificate:
        // UnknownIssuer"), which never holds what was sent or received.
        format!("I/O error: {io}")
    } else if let Some(code) = e.code() {
        format!("{} ({code})", e.category())
    } else {
        e.category().to_owned()
    }
}

fn unavailable(op: &str, ns: Option<Ns>, why: &str) -> StoreError {
    match ns {
        Some(ns) => StoreError::Unavailable(format!("redis {op} in {}: {why}", ns.prefix())),
        None => StoreError::Unavailable(format!("redis {op}: {why}")),
    }
}

fn unexpected(op: &str, ns: Ns) -> StoreError {
    StoreError::Corrupt(format!("unexpected redis reply to {op} in {}", ns.prefix()))
}

fn data_prefix(ns: Ns) -> String {
    format!("authgate:{}:", ns.prefix())
}

fn data_key(ns: Ns, key: &str) -> String {
    format!("authgate:{}:{key}", ns.prefix())
}

fn index_key(ns: Ns) -> String {
    format!("authgate:_index:{}", ns.prefix())
}

fn version_key(ns: Ns) -> String {
    format!("authgate:_version:{}", ns.prefix())
}

/// A write as the Lua script sees it.
struct Write<'a> {
    op: &'static str,
    cas: bool,
    expected: Option<&'a [u8]>,
    new: Option<&'a [u8]>,
    expires_at: u64,
}

impl RedisStore {
    /// Builds the store without waiting for Redis: a replica may start before Redis does and
    /// stays unready (see [`Store::ping`]) until it answers. Fails only on an invalid URL or
    /// an unreadable CA file. A `rediss://` URL is TLS on rustls (aws-lc-rs), checked against
    /// `store.ca_file` when given, else the public roots.
    pub async fn connect(settings: &RedisConfig, clock: Clock) -> Result<Self, StoreError> {
        let client = client(settings)?;
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())
            .map_err(|e| unavailable("connect", None, &describe(&e)))?;
        let store = Self {
            client,
            conn: ArcSwap::from_pointee(conn),
            clock,
            write: Script::new(WRITE_LUA),
            scan: Script::new(SCAN_LUA),
            started: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
        };
        if let Err(e) = store.ping().await {
            tracing::warn!(error = %e, "redis store not reachable yet; will keep trying");
        }
        Ok(store)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one call against the current connection, bounded by [`OP_DEADLINE`].
    async fn call<T, F, Fut>(&self, op: &str, ns: Option<Ns>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let current = self.conn.load_full();
        let result = tokio::time::timeout(OP_DEADLINE, f(ConnectionManager::clone(&current))).await;
        match result {
            Ok(Ok(v)) => {
                self.last_progress_ms
                    .store(self.elapsed_ms(), Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_timeout() {
                    self.replace_if_stale(&current);
                }
                Err(unavailable(op, ns, &describe(&e)))
            }
            Err(_) => {
                self.replace_if_stale(&current);
                Err(unavailable(op, ns, "timed out"))
            }
        }
    }

    /// A connection that only times out may sit on a path that silently drops packets; the
    /// connection manager only reconnects after an error that closes it. Replace it once
    /// nothing has answered for [`STALE_AFTER`].
    fn replace_if_stale(&self, seen: &Arc<ConnectionManager>) {
        let stale_ms = u64::try_from(STALE_AFTER.as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.elapsed_ms();
        if now_ms.saturating_sub(self.last_progress_ms.load(Ordering::Relaxed)) < stale_ms {
            return;
        }
        let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), manager_config())
        else {
            return;
        };
        let prev = self.conn.compare_and_swap(seen, Arc::new(fresh));
        if Arc::ptr_eq(&prev, seen) {
            // The fresh connection gets a full period before it can be judged stale.
            self.last_progress_ms.store(now_ms, Ordering::Relaxed);
            tracing::warn!("redis connection unresponsive; replaced it");
        }
    }

    async fn write(&self, ns: Ns, key: &str, w: Write<'_>) -> Result<bool, StoreError> {
        let now = self.clock.now();
        // A value that is already expired is stored as its absence.
        let new = w
            .new
            .filter(|_| w.expires_at == 0 || w.expires_at > now)
            .map(|v| envelope(v, w.expires_at));
        let ttl = if w.expires_at == 0 {
            0
        } else {
            (w.expires_at.saturating_sub(now) + TTL_SLACK_SECS).min(MAX_TTL_SECS)
        };
        let score = if w.expires_at == 0 {
            "+inf".to_owned()
        } else {
            w.expires_at.to_string()
        };
        let seed = (rand::random::<u64>() >> 2).to_string();
        let mut inv = self.write.prepare_invoke();
        inv.key(data_key(ns, key))
            .key(index_key(ns))
            .key(version_key(ns))
            .arg(now.to_string())
            .arg(if w.cas { "cas" } else { "set" })
            .arg(if w.expected.is_some() { "1" } else { "0" })
            .arg(w.expected.unwrap_or_default())
            .arg(if new.is_some() { "1" } else { "0" })
            .arg(new.as_deref().unwrap_or_default())
            .arg(ttl.to_string())
            .arg(score)
            .arg(key)
            .arg(seed);
        let reply = self
            .call(w.op, Some(ns), |mut c| async move {
                inv.invoke_async::<Value>(&mut c).await
            })
            .await?;
        match reply {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            _ => Err(unexpected(w.op, ns)),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = data_key(ns, key);
        let reply = self
            .call("get", Some(ns), |mut c| async move {
                redis::cmd("GET").arg(k).query_async::<Value>(&mut c).await
            })
            .await?;
        let now = self.clock.now();
        match reply {
            Value::Nil => Ok(None),
            Value::BulkString(raw) => Ok(live(&raw, now).map(<[u8]>::to_vec)),
            _ => Err(unexpected("get", ns)),
        }
    }

    async fn put(
        &self,
        ns: Ns,
        key: &str,
        value: &[u8],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let w = Write {
            op: "put",
            cas: false,
            expected: None,
            new: Some(value),
            expires_at,
        };
        self.write(ns, key, w).await.map(|_| ())
    }

    async fn delete(&self, ns: Ns, key: &str) -> Result<(), StoreError> {
        let w = Write {
            op: "delete",
            cas: false,
            expected: None,
            new: None,
            expires_at: 0,
        };
        self.write(ns, key, w).await.map(|_| ())
    }

    async fn compare_and_swap(
        &self,
        ns: Ns,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let w = Write {
            op: "compare-and-swap",
            cas: true,
            expected,
            new,
            expires_at,
        };
        self.write(ns, key, w).await
    }

    async fn scan(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let now = self.clock.now();
        let mut inv = self.scan.prepare_invoke();
        inv.key(index_key(ns))
            .arg(now.to_string())
            .arg(data_prefix(ns));
        let reply = self
            .call("scan", Some(ns), |mut c| async move {
                inv.invoke_async::<Value>(&mut c).await
            })
            .await?;
        let Value::Array(items) = reply else {
            return Err(unexpected("scan", ns));
        };
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(member), Some(raw)) = (items.next(), items.next()) {
            let (Value::BulkString(member), Value::BulkString(raw)) = (member, raw) else {
                return Err(unexpected("scan", ns));
            };
            let key = String::from_utf8(member).map_err(|_| unexpected("scan", ns))?;
            if let Some(value) = live(&raw, now) {
                out.push((key, value.to_vec()));
            }
        }
        Ok(out)
    }

    async fn version(&self, ns: Ns) -> Result<u64, StoreError> {
        let k = version_key(ns);
        let reply = self
            .call("version", Some(ns), |mut c| async move {
                redis::cmd("GET").arg(k).query_async::<Value>(&mut c).await
            })
            .await?;
        match reply {
            Value::Nil => Ok(0),
            Value::BulkString(raw) => std::str::from_utf8(&raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| unexpected("version", ns)),
            _ => Err(unexpected("version", ns)),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let reply = self
            .call("ping", None, |mut c| async move {
                redis::cmd("PING").query_async::<Value>(&mut c).await
            })
            .await?;
        match reply {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            _ => Err(StoreError::Unavailable(
                "redis ping: unexpected reply".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn envelope_round_trip_and_expiry() {
        let raw = envelope(b"v", 10);
        assert_eq!(live(&raw, 9), Some(&b"v"[..]));
        assert_eq!(live(&raw, 10), None);
        assert_eq!(live(&envelope(b"", 0), u64::MAX), Some(&b""[..]));
        assert_eq!(live(b"short", 0), None);
    }

    #[test]
    fn bookkeeping_keys_cannot_collide_with_data_keys() {
        for ns in [Ns::Lockout, Ns::Revoked] {
            for key in ["_index", "_version", ""] {
                assert_ne!(data_key(ns, key), index_key(ns));
                assert_ne!(data_key(ns, key), version_key(ns));
            }
        }
        assert_eq!(data_key(Ns::Revoked, "s1"), "authgate:revoked:s1");
    }

    #[tokio::test]
    async fn invalid_url_is_an_error_without_the_url() {
        let Err(StoreError::Unavailable(msg)) =
            RedisStore::connect(&RedisConfig::new("nope://:hunter2@x"), Clock::manual(1_000)).await
        else {
            panic!("expected an error");
        };
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
