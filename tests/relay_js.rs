//! The real JavaScript client (`socket.io-client` 4.x under node, `tests/js/client.js`) through
//! the relay: straight at authgate and through the shipped Envoy (gRPC and HTTP ext_authz) and
//! nginx configs, and their Unix socket variants (authgate on `unix:` listeners). It logs in
//! with the JWT in the `login` event as NethVoice CTI does, gets a pushed event and an ack, is
//! refused (`401`) with every bad token without the backend ever seeing it, and is
//! disconnected within a second of a logout.
//!
//! Needs node and `scripts/install-test-deps` (which installs socket.io-client under
//! `target/node`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use authgate::clock::Clock;
use authgate::config::ListenAddr;
use serde_json::{Value, json};

use support::app::TestApp;
use support::js_client::JsClient;
use support::nethcti_socket::Backend;
use support::process::local;
use support::proxy::{Ports, ProxyKind, authgate_sockets, spawn_proxy};

const ALICE: (&str, &str) = ("alice", "alice secret");
const BOB: (&str, &str) = ("bob", "bob secret");

async fn backend() -> Backend {
    Backend::start(&[ALICE, BOB]).await
}

async fn tokens(app: &TestApp, (user, password): (&str, &str)) -> Value {
    let reply = app.login(user, password).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

fn assert_never_reached(b: &Backend, token: &str) {
    assert!(!b.socket.saw(token), "the JWT reached the backend");
    assert!(!b.socket.saw(token.rsplit('.').next().unwrap()));
}

/// Login, pushed event, ack; then logout ends the socket within a second.
async fn live_events_then_logout(app: &TestApp, b: &Backend, url: &str, query_token: bool) {
    let access = tokens(app, ALICE).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (in_event, in_query) = if query_token {
        ("", Some(access.as_str()))
    } else {
        (access.as_str(), None)
    };
    let mut js = JsClient::spawn(url, "alice", in_event, in_query);
    js.expect_logged_in().await;
    assert!(
        b.socket
            .wait_until(Duration::from_secs(2), |s| s.logged_in().len() == 1)
            .await
    );
    assert_eq!(
        b.socket.push(
            "queueMemberUpdate",
            &json!({"queue": "401", "member": "alice"})
        ),
        1
    );
    let event = js.expect_event("queueMemberUpdate").await;
    assert_eq!(event["args"], json!([{"queue": "401", "member": "alice"}]));

    let started = Instant::now();
    let out = app.send("POST", "/auth/logout", None, Some(&access)).await;
    assert_eq!(out.status, 204);
    let gone = js
        .expect("disconnect", Duration::from_secs(1), |v| {
            v["ev"] == "disconnect"
        })
        .await;
    let took = started.elapsed();
    eprintln!(
        "{url}: disconnected {took:?} after logout ({})",
        gone["reason"]
    );
    assert_eq!(gone["reason"], "io server disconnect");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_never_reached(b, &access);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_gets_live_events_and_is_closed_by_logout() {
    let b = backend().await;
    let app = b.app().start().await;
    let url = format!("http://{}", app.http_addr());
    live_events_then_logout(&app, &b, &url, false).await;
    // The token may come with the upgrade instead (here in the query).
    live_events_then_logout(&app, &b, &url, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_is_refused_every_bad_token() {
    let b = backend().await;
    let app = b.app().start().await;
    let url = format!("http://{}", app.http_addr());
    let alice = tokens(&app, ALICE).await;
    let access = alice["access_token"].as_str().unwrap().to_owned();
    let refresh = alice["refresh_token"].as_str().unwrap().to_owned();

    // Bob enrols 2FA: his password alone now gives a pre-OTP (MFA-pending) token.
    let bob = tokens(&app, BOB).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let enroll = app.send("POST", "/auth/2fa/enroll", None, Some(&bob)).await;
    let secret = enroll.body["secret"].as_str().unwrap().to_owned();
    let code = support::totp::totp(&secret, app.clock.now());
    let confirm = app
        .send(
            "POST",
            "/auth/2fa/confirm",
            Some(json!({"code": code})),
            Some(&bob),
        )
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.text);
    let pre_otp = tokens(&app, BOB).await["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let cases = [
        (
            "bad",
            "alice",
            "eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl".to_owned(),
        ),
        ("refresh", "alice", refresh),
        ("pre-OTP", "bob", pre_otp),
        ("other user", "bob", access.clone()),
        ("revoked by the 2FA enrolment", "bob", bob),
    ];
    for (what, user, token) in &cases {
        eprintln!("refused: {what}");
        let mut js = JsClient::spawn(&url, user, token, None);
        js.expect_refused().await;
        assert_never_reached(&b, token);
    }
    // Expired: the clock past the token's life and the leeway.
    app.clock.advance(15 * 60 + 31);
    let mut js = JsClient::spawn(&url, "alice", &access, None);
    js.expect_refused().await;
    assert_never_reached(&b, &access);
    assert!(b.socket.logged_in().is_empty());
    assert!(!b.socket.frames().iter().any(|f| f.contains("login")));
}

/// The shipped proxy config `kind` in front of authgate (system clock) and the simulator.
async fn through(kind: ProxyKind) {
    let b = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let [grpc, http] = authgate_sockets(dir.path());
    let app = b
        .app()
        .clock(Clock::system())
        .config(|c| {
            if kind.over_unix() {
                c.listen.grpc = ListenAddr::Unix(grpc);
                c.listen.http = ListenAddr::Unix(http);
            }
        })
        .start()
        .await;
    let ports = Ports::for_app(&app, b.sim.addr().port());
    let mut proxy = spawn_proxy(kind, &ports, dir.path()).await;
    let url = format!("http://{}", local(ports.proxy));
    live_events_then_logout(&app, &b, &url, false).await;
    live_events_then_logout(&app, &b, &url, true).await;
    let mut js = JsClient::spawn(&url, "alice", "x.y.z", None);
    js.expect_refused().await;
    // A bad token with the upgrade: no upgrade at all.
    let mut js = JsClient::spawn(&url, "alice", "", Some("x.y.z"));
    let failed = js
        .expect("connect_error", Duration::from_secs(5), |v| {
            v["ev"] == "connect_error"
        })
        .await;
    eprintln!("{}: bad upgrade token: {failed}", kind.name());
    proxy.ensure_running();
    proxy.stop();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_through_envoy_grpc() {
    through(ProxyKind::EnvoyGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_through_envoy_http() {
    through(ProxyKind::EnvoyHttp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_through_nginx() {
    through(ProxyKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_through_envoy_over_unix_sockets() {
    through(ProxyKind::EnvoyGrpcUnix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_through_nginx_over_unix_sockets() {
    through(ProxyKind::NginxUnix).await;
}
