//! Two authgate replicas sharing a real `redis-server`: a revocation made on one is applied
//! by the other within a second; with Redis gone, checks go on from the last known
//! revocation set while login and refresh answer 503, the replicas stay ready (a Redis outage
//! must not take every application pod out of its Service) and `/status` says the store is
//! down; after Redis returns, state resyncs. A replica that starts while Redis is down serves
//! unready until its first revocation sync.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::app::{ALICE_PASSWORD, TestApp};
use support::redis::RedisServer;

/// Replica `n`: its own directory, the keys of the first replica (as from a Kubernetes
/// Secret), state in the shared Redis.
async fn replica(redis: &RedisServer, keys_from: Option<&TestApp>) -> TestApp {
    let mut builder = TestApp::builder().redis(&redis.url());
    if let Some(first) = keys_from {
        builder = builder.keys_from(first);
    }
    builder.start().await
}

/// `store.up` of the replica's `/status`.
async fn store_up(app: &TestApp) -> bool {
    let status = app.send("GET", "/status", None, None).await;
    assert_eq!(status.status, 200, "{}", status.text);
    status.body["store"]["up"]
        .as_bool()
        .unwrap_or_else(|| panic!("no store.up in {}", status.text))
}

async fn within<F, Fut>(limit: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if probe().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_replica_within_a_second() {
    let redis = RedisServer::start();
    let a = replica(&redis, None).await;
    let b = replica(&redis, Some(&a)).await;
    let t = a.login("alice", ALICE_PASSWORD).await.body;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(b.authz("/api", Some(&access)).await.status, 200);
    assert_eq!(
        a.send("POST", "/auth/logout", None, Some(&access))
            .await
            .status,
        204
    );
    let took = within(Duration::from_secs(1), || async {
        b.authz("/api", Some(&access)).await.status == 401
    })
    .await;
    eprintln!("replica b applied the revocation after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_checks_going_and_resyncs_after() {
    let mut redis = RedisServer::start();
    let a = replica(&redis, None).await;
    let b = replica(&redis, Some(&a)).await;
    let t1 = a.login("alice", ALICE_PASSWORD).await.body;
    let t2 = a.login("alice", ALICE_PASSWORD).await.body;
    let live = t1["access_token"].as_str().unwrap().to_owned();
    let refresh = t1["refresh_token"].as_str().unwrap().to_owned();
    let revoked = t2["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        a.send("POST", "/auth/logout", None, Some(&revoked))
            .await
            .status,
        204
    );
    within(Duration::from_secs(1), || async {
        b.authz("/api", Some(&revoked)).await.status == 401
    })
    .await;

    redis.kill();
    for app in [&a, &b] {
        // Checks go on from the last known state.
        assert_eq!(app.authz("/api", Some(&live)).await.status, 200);
        assert_eq!(app.authz("/api", Some(&revoked)).await.status, 401);
        // Login and refresh need the store.
        assert_eq!(app.login("alice", ALICE_PASSWORD).await.status, 503);
        assert_eq!(
            app.post("/auth/refresh", json!({"refresh_token": refresh}))
                .await
                .status,
            503
        );
        // Still able to decide checks: ready, and the store's outage is on /status.
        assert_eq!(app.send("GET", "/readyz", None, None).await.status, 200);
        within(Duration::from_secs(3), || async { !store_up(app).await }).await;
        let status = app.send("GET", "/status", None, None).await;
        assert_eq!(status.status, 200);
        assert_eq!(status.body["ready"], true, "{}", status.text);
        assert!(
            app.send("GET", "/metrics", None, None)
                .await
                .text
                .contains("\nauthgate_store_up 0\n")
        );
    }

    // Redis comes back empty (no persistence): the replicas put back what they know.
    redis.restart();
    within(Duration::from_secs(5), || async { store_up(&a).await }).await;
    assert_eq!(a.send("GET", "/readyz", None, None).await.status, 200);
    let c = replica(&redis, Some(&a)).await;
    within(Duration::from_secs(3), || async {
        c.authz("/api", Some(&revoked)).await.status == 401
    })
    .await;
    // And new revocations flow again.
    assert_eq!(
        b.send("POST", "/auth/logout", None, Some(&live))
            .await
            .status,
        204
    );
    within(Duration::from_secs(1), || async {
        a.authz("/api", Some(&live)).await.status == 401
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_started_while_redis_is_down_is_unready_until_its_first_sync() {
    let mut redis = RedisServer::start();
    let a = replica(&redis, None).await;
    let t = a.login("alice", ALICE_PASSWORD).await.body;
    let revoked = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        a.send("POST", "/auth/logout", None, Some(&revoked))
            .await
            .status,
        204
    );

    redis.kill();
    // Starts (it no longer refuses to), but has never seen the revocations: unready.
    let b = replica(&redis, Some(&a)).await;
    let readyz = b.send("GET", "/readyz", None, None).await;
    assert_eq!(readyz.status, 503, "{}", readyz.text);
    let status = b.send("GET", "/status", None, None).await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.body["ready"], false, "{}", status.text);
    assert_eq!(status.body["store"]["up"], false, "{}", status.text);
    // And stays so while Redis is away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.send("GET", "/readyz", None, None).await.status, 503);

    // Redis returns (empty; replica a puts back what it knows): b syncs once and is ready,
    // with the revocation made before it started.
    redis.restart();
    within(Duration::from_secs(5), || async {
        b.send("GET", "/readyz", None, None).await.status == 200
    })
    .await;
    within(Duration::from_secs(3), || async {
        b.authz("/api", Some(&revoked)).await.status == 401
    })
    .await;
    let status = b.send("GET", "/status", None, None).await;
    assert_eq!(status.body["ready"], true, "{}", status.text);
    assert_eq!(status.body["store"]["up"], true, "{}", status.text);
}
