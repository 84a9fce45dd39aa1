//! The Redis store against a real `redis-server` (Debian's package), one per test on a free
//! port of 127.0.0.1: the shared conformance suite, what replicas rely on (seeing each other's
//! writes and versions, atomic compare-and-swap across connections), and outages: a killed,
//! a frozen and a silently unreachable Redis give `Unavailable` within 2 s, and the same store
//! recovers once Redis is back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;
use support::redis::RedisServer;

use authgate::clock::Clock;
use authgate::config::RedisConfig;
use authgate::store::redis::RedisStore;
use authgate::store::{Ns, Store, StoreError, update};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What "quickly" means for a call against a dead Redis.
const FAIL_FAST: Duration = Duration::from_secs(2);

/// A raw connection for looking at what the store left in Redis.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every call fails with `Unavailable` within [`FAIL_FAST`] and names no value.
/// Returns the slowest call's duration.
async fn assert_all_unavailable(store: &RedisStore, secret: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut check = |name: &str, started: Instant, r: Result<(), StoreError>| {
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert!(took < FAIL_FAST, "{name} took {took:?}");
        match r {
            Err(StoreError::Unavailable(msg)) => {
                assert!(!msg.contains(secret), "{name} error leaks a value: {msg}");
            }
            other => panic!("{name}: expected Unavailable, got {other:?}"),
        }
    };
    let t = Instant::now();
    check("ping", t, store.ping().await);
    let t = Instant::now();
    check("get", t, store.get(Ns::Session, "s").await.map(|_| ()));
    let t = Instant::now();
    check(
        "put",
        t,
        store.put(Ns::Session, "s", secret.as_bytes(), 0).await,
    );
    let t = Instant::now();
    check("delete", t, store.delete(Ns::Session, "s").await);
    let t = Instant::now();
    let r = store
        .compare_and_swap(Ns::Session, "s", Some(secret.as_bytes()), None, 0)
        .await;
    check("compare_and_swap", t, r.map(|_| ()));
    let t = Instant::now();
    check("scan", t, store.scan(Ns::Revoked).await.map(|_| ()));
    let t = Instant::now();
    check("version", t, store.version(Ns::Revoked).await.map(|_| ()));
    slowest
}

/// Polls until the store answers again; returns how long that took.
async fn wait_recovered(store: &RedisStore, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let r = store.ping().await;
        assert!(t.elapsed() < FAIL_FAST, "ping took {:?}", t.elapsed());
        if r.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "store did not recover within {within:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms() {
    let server = RedisServer::start();
    let clock = Clock::manual(1_000);
    let store = RedisStore::connect(&RedisConfig::new(server.url()), clock.clone())
        .await
        .unwrap();
    authgate::store::conformance::run(&store, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_binary_and_redis_cleans_up_after_the_clock() {
    let server = RedisServer::start();
    let clock = Clock::manual(1_000);
    let store = RedisStore::connect(&RedisConfig::new(server.url()), clock.clone())
        .await
        .unwrap();
    let mut conn = raw(&server).await;

    // Bytes round-trip exactly, and CAS compares them exactly.
    let bin: &[u8] = &[0, 0xff, 0x80, b'\n', 0, b'\'', b']', 0xc3];
    store.put(Ns::Mfa, "bin", bin, 0).await.unwrap();
    assert_eq!(
        store.get(Ns::Mfa, "bin").await.unwrap().as_deref(),
        Some(bin)
    );
    let mut almost = bin.to_vec();
    almost[7] = 0xc4;
    assert!(
        !store
            .compare_and_swap(Ns::Mfa, "bin", Some(&almost), Some(b"x"), 0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap(Ns::Mfa, "bin", Some(&bin[..7]), Some(b"x"), 0)
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap(Ns::Mfa, "bin", Some(bin), Some(b""), 0)
            .await
            .unwrap()
    );
    // An empty value is present, not absent.
    assert_eq!(
        store.get(Ns::Mfa, "bin").await.unwrap().as_deref(),
        Some(&b""[..])
    );
    assert!(
        !store
            .compare_and_swap(Ns::Mfa, "bin", None, Some(b"y"), 0)
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap(Ns::Mfa, "bin", Some(b""), Some(b"y"), 0)
            .await
            .unwrap()
    );

    // The Redis TTL is relative to the store's clock (here in 1970), plus slack.
    store.put(Ns::Once, "t", b"v", 1_005).await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("authgate:once:t")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((60..=65).contains(&ttl), "ttl {ttl}");
    let ttl: i64 = redis::cmd("TTL")
        .arg("authgate:mfa:bin")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "no expiry means no TTL");
    // A value already expired is not stored at all.
    store.put(Ns::Once, "t", b"v", 1_000).await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg("authgate:once:t")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);

    // The scan index follows writes and sheds expired members.
    store.put(Ns::Revoked, "r1", b"1", 1_001).await.unwrap();
    store.put(Ns::Revoked, "r2", b"2", 0).await.unwrap();
    let card: i64 = redis::cmd("ZCARD")
        .arg("authgate:_index:revoked")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(card, 2);
    clock.advance(5);
    let keys: Vec<String> = store
        .scan(Ns::Revoked)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec!["r2".to_owned()]);
    let card: i64 = redis::cmd("ZCARD")
        .arg("authgate:_index:revoked")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(card, 1, "expired member pruned from the index");

    // User-chosen keys cannot touch the bookkeeping.
    let v = store.version(Ns::Lockout).await.unwrap();
    store
        .put(Ns::Lockout, "_version", b"attacker", 0)
        .await
        .unwrap();
    store
        .put(Ns::Lockout, "_index", b"attacker", 0)
        .await
        .unwrap();
    assert_ne!(store.version(Ns::Lockout).await.unwrap(), v);
    assert_eq!(
        store.get(Ns::Lockout, "_index").await.unwrap().as_deref(),
        Some(&b"attacker"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_writes_versions_and_swaps() {
    let server = RedisServer::start();
    let (clock_a, clock_b) = (Clock::manual(1_000), Clock::manual(1_000));
    let a = Arc::new(
        RedisStore::connect(&RedisConfig::new(server.url()), clock_a)
            .await
            .unwrap(),
    );
    let b = Arc::new(
        RedisStore::connect(&RedisConfig::new(server.url()), clock_b)
            .await
            .unwrap(),
    );

    // A revocation written by one replica is seen, versioned and scanned by the other.
    let vb = b.version(Ns::Revoked).await.unwrap();
    a.put(Ns::Revoked, "sid-1", b"2000", 2_000).await.unwrap();
    let vb2 = b.version(Ns::Revoked).await.unwrap();
    assert_ne!(vb2, vb);
    assert_eq!(vb2, a.version(Ns::Revoked).await.unwrap());
    assert_eq!(
        b.get(Ns::Revoked, "sid-1").await.unwrap().as_deref(),
        Some(&b"2000"[..])
    );
    assert_eq!(
        b.scan(Ns::Revoked).await.unwrap(),
        vec![("sid-1".to_owned(), b"2000".to_vec())]
    );
    // Writes elsewhere do not move this namespace's version.
    a.put(Ns::Session, "sid-1", b"x", 0).await.unwrap();
    assert_eq!(b.version(Ns::Revoked).await.unwrap(), vb2);
    b.delete(Ns::Revoked, "sid-1").await.unwrap();
    assert_ne!(a.version(Ns::Revoked).await.unwrap(), vb2);
    assert_eq!(a.get(Ns::Revoked, "sid-1").await.unwrap(), None);
    assert!(a.scan(Ns::Revoked).await.unwrap().is_empty());

    // Two replicas racing to consume the same one-time marker: exactly one wins.
    for i in 0..20 {
        let key = format!("mfa-jti-{i}");
        let (ra, rb) = tokio::join!(
            a.compare_and_swap(Ns::Once, &key, None, Some(b"a"), 1_300),
            b.compare_and_swap(Ns::Once, &key, None, Some(b"b"), 1_300),
        );
        assert!(
            ra.unwrap() ^ rb.unwrap(),
            "round {i}: exactly one swap wins"
        );
    }

    // Read-modify-write from both replicas at once loses no update. (Retried here until it
    // lands: `store::update` gives up after 16 lost races, which two writers in lockstep
    // reach; what is tested is that the swap is atomic across connections.)
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut lost = 0u32;
            for _ in 0..50 {
                loop {
                    let cur = store.get(Ns::Lockout, "alice").await.unwrap();
                    let n: u64 = cur
                        .as_deref()
                        .map(|v| std::str::from_utf8(v).unwrap().parse().unwrap())
                        .unwrap_or(0);
                    let next = (n + 1).to_string();
                    if store
                        .compare_and_swap(
                            Ns::Lockout,
                            "alice",
                            cur.as_deref(),
                            Some(next.as_bytes()),
                            0,
                        )
                        .await
                        .unwrap()
                    {
                        break;
                    }
                    lost += 1;
                    assert!(lost < 100_000, "livelock");
                    tokio::task::yield_now().await;
                }
            }
            lost
        }));
    }
    let mut lost = 0;
    for t in tasks {
        lost += t.await.unwrap();
    }
    assert_eq!(
        a.get(Ns::Lockout, "alice").await.unwrap().as_deref(),
        Some(&b"100"[..]),
        "{lost} lost races"
    );
    eprintln!("two replicas, 100 increments: {lost} lost races");
    assert!(lost > 0, "the writers never raced: the test proves nothing");
    // `update` on top of the same store, one replica at a time, as the conformance suite does.
    update(b.as_ref(), Ns::Lockout, "alice", |cur| {
        assert_eq!(cur, Some(&b"100"[..]));
        (Some(b"101".to_vec()), 0, ())
    })
    .await
    .unwrap();
    assert_eq!(
        a.get(Ns::Lockout, "alice").await.unwrap().as_deref(),
        Some(&b"101"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_fails_fast_and_the_same_store_recovers_after_restart() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&RedisConfig::new(server.url()), Clock::manual(1_000))
        .await
        .unwrap();
    let secret = "sealed-secret-value-7f3a";
    store
        .put(Ns::Session, "s", secret.as_bytes(), 0)
        .await
        .unwrap();

    server.kill();
    let slowest = assert_all_unavailable(&store, secret).await;
    // Still failing fast on a second round, while reconnection attempts keep failing.
    let slowest = slowest.max(assert_all_unavailable(&store, secret).await);

    server.restart();
    let recovered = wait_recovered(&store, Duration::from_secs(10)).await;
    eprintln!(
        "killed redis: slowest failing call {slowest:?}, recovered {recovered:?} after restart"
    );
    store.put(Ns::Revoked, "s2", b"1", 0).await.unwrap();
    assert_eq!(
        store.get(Ns::Revoked, "s2").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(store.scan(Ns::Revoked).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_times_out_and_the_store_resumes() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&RedisConfig::new(server.url()), Clock::manual(1_000))
        .await
        .unwrap();
    store.put(Ns::Mfa, "alice", b"v", 0).await.unwrap();

    server.signal("-STOP");
    let slowest = assert_all_unavailable(&store, "v-never-in-errors").await;
    server.signal("-CONT");
    let recovered = wait_recovered(&store, Duration::from_secs(10)).await;
    eprintln!(
        "frozen redis: slowest failing call {slowest:?}, recovered {recovered:?} after SIGCONT"
    );
    assert_eq!(
        store.get(Ns::Mfa, "alice").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// A TCP relay whose existing connections can be made to swallow traffic silently (no FIN,
/// no RST), as a dropped network path or a vanished peer does.
struct Relay {
    port: u16,
    conns: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Relay {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let registry = conns.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let dead = Arc::new(AtomicBool::new(false));
                registry.lock().unwrap().push(dead.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, dead.clone()));
                tokio::spawn(pipe(sr, cw, dead));
            }
        });
        Self { port, conns }
    }

    fn blackhole_existing(&self) {
        for c in self.conns.lock().unwrap().iter() {
            c.store(true, Ordering::SeqCst);
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dead: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if dead.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_dead_connection_is_replaced() {
    let server = RedisServer::start();
    let relay = Relay::start(server.port).await;
    let store = RedisStore::connect(
        &RedisConfig::new(format!("redis://127.0.0.1:{}/", relay.port)),
        Clock::manual(1_000),
    )
    .await
    .unwrap();
    store.put(Ns::Mfa, "alice", b"v", 0).await.unwrap();

    // The open connection now goes nowhere; new connections through the relay still work.
    // Only a store that gives up on the silent connection gets through again.
    relay.blackhole_existing();
    let started = Instant::now();
    let mut failures = 0;
    loop {
        let t = Instant::now();
        let r = store.get(Ns::Mfa, "alice").await;
        assert!(t.elapsed() < FAIL_FAST, "get took {:?}", t.elapsed());
        match r {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some(&b"v"[..]));
                break;
            }
            Err(StoreError::Unavailable(_)) => failures += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "store still stuck on the dead connection after {failures} failures"
        );
    }
    eprintln!(
        "silent connection: {failures} failed calls, working again after {:?}",
        started.elapsed()
    );
    assert!(failures > 0, "the relay did not cut the connection");
}
