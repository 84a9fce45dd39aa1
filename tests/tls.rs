//! TLS where authgate crosses a host: a real `redis-server` speaking only TLS (`rediss://`,
//! `store.ca_file`, the password from `store.password_file` or the URL from `store.url_file`),
//! and the nethcti simulator served over https (`backend.ca_file`). Each with the right CA
//! (login works) and a CA that did not sign the server (a clear 503 at login, the reason in the
//! log, no panic). Certificates are made per test with rcgen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use authgate::config::{BackendConfig, Config, StoreKind};
use support::app::{ALICE_PASSWORD, TestApp, TestAppBuilder};
use support::logs::{log, log_text};
use support::nethcti_sim::NethctiSim;
use support::redis::RedisServer;
use support::tls::TestCa;

const REDIS_PASSWORD: &str = "redis-pw-5b1e9c";

/// `[store]` as an operator writes it, loaded the way `serve` loads it (the `*_file` keys read).
fn store_from_toml(text: &str) -> StoreKind {
    Config::from_toml_str(&format!("[store]\nkind = \"redis\"\n{text}"))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .store
        .kind
}

fn with_store(kind: StoreKind) -> TestAppBuilder {
    TestApp::builder().config(|c| c.store.kind = kind)
}

async fn status(app: &TestApp) -> serde_json::Value {
    app.send("GET", "/status", None, None).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_needs_the_right_ca() {
    log();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("authgate test redis CA");
    let other = TestCa::new("someone else's CA");
    let (cert, key) = ca.issue().write(dir.path(), "redis");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let other_file = other.write(dir.path(), "other.pem");
    let redis = RedisServer::start_tls(&cert, &key, &ca_file, Some(REDIS_PASSWORD));
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{REDIS_PASSWORD}\n")).unwrap();
    let url = format!("rediss://127.0.0.1:{}/", redis.port);

    // The right CA, the password from its file: logins reach Redis and work.
    let app = with_store(store_from_toml(&format!(
        "url = {url:?}\npassword_file = {password_file:?}\nca_file = {ca_file:?}\n"
    )))
    .start()
    .await;
    let login = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(status(&app).await["store"]["up"], true);
    app.shutdown().await;

    // The whole URL (password included) from store.url_file works the same.
    let url_file = dir.path().join("redis-url");
    std::fs::write(
        &url_file,
        format!("rediss://:{REDIS_PASSWORD}@127.0.0.1:{}/\n", redis.port),
    )
    .unwrap();
    let app = with_store(store_from_toml(&format!(
        "url_file = {url_file:?}\nca_file = {ca_file:?}\n"
    )))
    .start()
    .await;
    let login = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.text);
    app.shutdown().await;

    // Without the password Redis refuses: 503, not a panic.
    let app = with_store(store_from_toml(&format!(
        "url = {url:?}\nca_file = {ca_file:?}\n"
    )))
    .start()
    .await;
    let login = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(login.status, 503, "{}", login.text);
    app.shutdown().await;

    // A CA that did not sign Redis's certificate: refused, 503 at login, and the log says why.
    let app = with_store(store_from_toml(&format!(
        "url = {url:?}\npassword_file = {password_file:?}\nca_file = {other_file:?}\n"
    )))
    .start()
    .await;
    let login = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(login.status, 503, "{}", login.text);
    assert_eq!(
        login.body["error"], "temporarily_unavailable",
        "{}",
        login.text
    );
    assert_eq!(status(&app).await["store"]["up"], false);
    app.shutdown().await;
    let logged = log_text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("redis") && l.contains("invalid peer certificate")),
        "the log does not say Redis's certificate was refused:\n{logged}"
    );
    assert!(
        !logged.contains(REDIS_PASSWORD),
        "the Redis password was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backend_needs_the_right_ca() {
    log();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("authgate test backend CA");
    let other = TestCa::new("someone else's CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let other_file = other.write(dir.path(), "other.pem");
    let sim = NethctiSim::start_tls(
        &[("alice", ALICE_PASSWORD)],
        Duration::from_secs(3600),
        ca.issue().server_config(),
    )
    .await;
    assert!(sim.url().starts_with("https://"), "{}", sim.url());

    let app_with = |ca_file: Option<std::path::PathBuf>| {
        TestApp::builder()
            .nethcti(&sim.url(), Duration::from_secs(5))
            .config(move |c| {
                if let BackendConfig::Nethcti(remote) = &mut c.backend {
                    remote.ca_file = ca_file;
                }
            })
    };

    let app = app_with(Some(ca_file)).start().await;
    let login = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(status(&app).await["backend"]["up"], true);
    app.shutdown().await;

    // Another CA, or none (the public roots): the backend's certificate is refused.
    for ca_file in [Some(other_file), None] {
        let app = app_with(ca_file.clone()).start().await;
        let login = app.login("alice", ALICE_PASSWORD).await;
        assert_eq!(login.status, 503, "{ca_file:?}: {}", login.text);
        assert_eq!(login.body["error"], "temporarily_unavailable");
        assert_eq!(status(&app).await["backend"]["up"], false, "{ca_file:?}");
        app.shutdown().await;
    }
    let logged = log_text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("backend") && l.contains("invalid peer certificate")),
        "the log does not say the backend's certificate was refused:\n{logged}"
    );
    assert!(!logged.contains(ALICE_PASSWORD), "a password was logged");
}
