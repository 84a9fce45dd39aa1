//! The behaviour every [`Store`] must show, as one function each implementation's tests call
//! (the embedded store in unit tests, Redis against a real `redis-server`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{Ns, Store, update};
use crate::clock::Clock;

/// Panics on the first deviation. `clock` must be the store's (manual) clock, now at >= 1000.
pub async fn run(store: &dyn Store, clock: &Clock) {
    let now = clock.now();
    store.ping().await.unwrap();

    // get/put/delete, namespaces are separate.
    assert_eq!(store.get(Ns::Mfa, "alice").await.unwrap(), None);
    store.put(Ns::Mfa, "alice", b"one", 0).await.unwrap();
    assert_eq!(
        store.get(Ns::Mfa, "alice").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(store.get(Ns::Session, "alice").await.unwrap(), None);
    store.delete(Ns::Mfa, "alice").await.unwrap();
    assert_eq!(store.get(Ns::Mfa, "alice").await.unwrap(), None);

    // Expiry follows the store's clock.
    store.put(Ns::Once, "m1", b"x", now + 10).await.unwrap();
    assert!(store.get(Ns::Once, "m1").await.unwrap().is_some());
    clock.advance(11);
    assert_eq!(store.get(Ns::Once, "m1").await.unwrap(), None);
    let now = clock.now();

    // Compare-and-swap: absent -> value, wrong expectation fails, value -> None deletes.
    assert!(
        store
            .compare_and_swap(Ns::Once, "k", None, Some(b"a"), now + 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap(Ns::Once, "k", None, Some(b"b"), now + 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap(Ns::Once, "k", Some(b"x"), Some(b"b"), now + 100)
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap(Ns::Once, "k", Some(b"a"), Some(b"b"), now + 100)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get(Ns::Once, "k").await.unwrap().as_deref(),
        Some(&b"b"[..])
    );
    assert!(
        store
            .compare_and_swap(Ns::Once, "k", Some(b"b"), None, 0)
            .await
            .unwrap()
    );
    assert_eq!(store.get(Ns::Once, "k").await.unwrap(), None);
    // An expired value counts as absent for CAS.
    store.put(Ns::Once, "e", b"old", now + 1).await.unwrap();
    clock.advance(2);
    let now = clock.now();
    assert!(
        store
            .compare_and_swap(Ns::Once, "e", None, Some(b"new"), now + 100)
            .await
            .unwrap()
    );

    // Concurrent updates through `update` lose nothing and do not give up: a burst of 500
    // on one key (logins behind one address share a lockout counter), all in flight at once.
    let tasks = (0..500).map(|_| {
        update(store, Ns::Lockout, "counter", |cur| {
            let n: u64 = cur
                .map(|v| std::str::from_utf8(v).unwrap().parse().unwrap())
                .unwrap_or(0);
            (Some((n + 1).to_string().into_bytes()), 0, ())
        })
    });
    for outcome in futures_util::future::join_all(tasks).await {
        outcome.unwrap();
    }
    assert_eq!(
        store.get(Ns::Lockout, "counter").await.unwrap().as_deref(),
        Some(&b"500"[..])
    );

    // Scan sees live entries of one namespace only; version moves on writes.
    let v0 = store.version(Ns::Revoked).await.unwrap();
    store.put(Ns::Revoked, "s1", b"1", now + 100).await.unwrap();
    store.put(Ns::Revoked, "s2", b"2", now + 1).await.unwrap();
    store.put(Ns::Session, "s3", b"3", now + 100).await.unwrap();
    assert_ne!(store.version(Ns::Revoked).await.unwrap(), v0);
    clock.advance(2);
    let mut keys: Vec<String> = store
        .scan(Ns::Revoked)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["s1".to_owned()]);
}
