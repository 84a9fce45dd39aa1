//! Two authgate replicas sharing a real `redis-server`: a revocation made on one is applied
//! by the other within a second; with Redis gone, checks go on from the last known
//! revocation set while login and refresh answer 503; after Redis returns, state resyncs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/app.rs"]
mod app;
#[path = "support/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use app::{ALICE_PASSWORD, TestApp};
use redis_server::RedisServer;
use serde_json::json;

/// Replica `n`: its own directory, the keys of the first replica (as from a Kubernetes
/// Secret), state in the shared Redis.
async fn replica(redis: &RedisServer, keys_from: Option<&TestApp>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    if let Some(first) = keys_from {
        let from = first.dir.path().join("data/keys");
        std::fs::create_dir_all(data.join("keys")).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), data.join("keys").join(entry.file_name())).unwrap();
        }
    }
    let users = dir.path().join("users");
    authgate::backend::file::set_user(&users, "alice", ALICE_PASSWORD).unwrap();
    let config = format!(
        "[listen]\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n[backend]\nkind = \"file\"\nusers_file = {users:?}\n[store]\nkind = \"redis\"\nurl = \"{}\"\npath = {data:?}\n",
        redis.url()
    );
    TestApp::start_with(dir, config, authgate::clock::Clock::manual(app::T0)).await
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
    let login = |app: &TestApp| {
        let app_base = app.base.clone();
        let http = app.http.clone();
        async move {
            let r = http
                .post(format!("{app_base}/auth/login"))
                .json(&json!({"username": "alice", "password": ALICE_PASSWORD}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (_, t1) = login(&a).await;
    let (_, t2) = login(&a).await;
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
        assert_eq!(login(app).await.0, 503);
        assert_eq!(
            app.post("/auth/refresh", json!({"refresh_token": refresh}))
                .await
                .status,
            503
        );
        assert_eq!(app.send("GET", "/readyz", None, None).await.status, 503);
    }

    // Redis comes back empty (no persistence): the replicas put back what they know.
    redis.restart();
    within(Duration::from_secs(5), || async {
        a.send("GET", "/readyz", None, None).await.status == 200
    })
    .await;
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
