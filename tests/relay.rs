//! The socket.io relay (SPEC 2.4) against the nethcti simulator's socket.io server, with a
//! raw WebSocket client that sees every frame and close code: login with the JWT in the
//! `login` event, events and acks both ways, every refused token answered `401` without
//! reaching the backend, what may go upstream before a login, revocation closing the socket
//! (on one replica and across two on Redis), the limits, the drain, the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use authgate::token::Kind;
use secrecy::SecretString;
use serde_json::json;
use support::app::TestApp;
use support::nethcti_sim::NethctiSim;
use support::nethcti_socket::Backend;
use support::socket_client::{Seen, SocketClient, payload};

const ALICE: (&str, &str) = ("alice", "alice secret");
const BOB: (&str, &str) = ("bob", "bob secret");

async fn backend() -> Backend {
    Backend::start(&[ALICE, BOB]).await
}

async fn access_token(app: &TestApp, (user, password): (&str, &str)) -> String {
    let reply = app.login(user, password).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["access_token"].as_str().unwrap().to_owned()
}

/// No JWT and none of its parts reached the backend (frames, query, headers).
fn assert_never_reached(b: &Backend, token: &str) {
    let signature = token.rsplit('.').next().unwrap();
    assert!(!b.socket.saw(token), "the JWT reached the backend");
    assert!(
        !b.socket.saw(signature),
        "the JWT's signature reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_event_relays_events_and_acks_and_the_jwt_stays_out() {
    let b = backend().await;
    let app = b.app().start().await;
    let token = access_token(&app, ALICE).await;
    let mut c = SocketClient::open(app.http_addr()).await;
    c.login_ok("alice", &token).await;
    assert_eq!(b.socket.logged_in(), vec!["alice".to_owned()]);

    // The backend got the login with the legacy token it issued, every other field kept.
    let login = b
        .socket
        .frames()
        .into_iter()
        .find(|f| f.contains("login"))
        .unwrap();
    let login = payload(&login);
    assert_eq!(login[1]["accessKeyId"], "alice");
    assert_eq!(login[1]["uaType"], "desktop");
    let legacy = login[1]["token"].as_str().unwrap();
    assert_eq!(legacy.len(), 40, "a legacy token: {legacy}");

    // A pushed event arrives; an event with an ack id is acknowledged through the relay.
    assert_eq!(
        b.socket
            .push("extenUpdate", &json!({"exten": "201", "status": "busy"})),
        1
    );
    let Seen::Text(event) = c.next().await else {
        panic!("no pushed event")
    };
    assert_eq!(
        payload(&event),
        json!(["extenUpdate", {"exten": "201", "status": "busy"}])
    );
    c.send(r#"427["echo",{"n":1},"two"]"#).await;
    assert_eq!(c.next().await, Seen::Text(r#"437[{"n":1},"two"]"#.into()));
    // Binary frames pass untouched once logged in.
    c.send_binary(vec![0, 1, 2, 255]).await;
    assert!(
        b.socket
            .wait_until(Duration::from_secs(2), |s| s.binary_frames()
                == vec![vec![0, 1, 2, 255]])
            .await
    );

    // The upgrade request itself carried nothing of the client's.
    let handshake = &b.socket.handshakes()[0];
    assert!(
        handshake
            .target
            .starts_with("/socket.io/?EIO=4&transport=websocket"),
        "{handshake:?}"
    );
    assert!(
        !handshake
            .headers
            .iter()
            .any(|(k, _)| k == "authorization" || k == "cookie"),
        "{handshake:?}"
    );
    assert_never_reached(&b, &token);

    let metrics = app.send("GET", "/metrics", None, None).await.text;
    assert!(metrics.contains("authgate_relay_sockets 1"), "{metrics}");
    assert!(
        metrics.contains(r#"authgate_relay_frames_total{to="client"}"#),
        "{metrics}"
    );
    c.close().await;
    assert!(
        b.socket
            .wait_until(Duration::from_secs(2), |s| s.open() == 0)
            .await,
        "the backend socket stayed open after the client left"
    );
    let metrics = app.send("GET", "/metrics", None, None).await.text;
    assert!(metrics.contains("authgate_relay_sockets 0"), "{metrics}");
    assert!(
        metrics.contains(r#"authgate_relay_closes_total{reason="client"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_gets_401_and_never_reaches_the_backend() {
    let b = backend().await;
    let app = b.app().start().await;
    let alice = access_token(&app, ALICE).await;
    let login = app.login(ALICE.0, ALICE.1).await;
    let refresh = login.body["refresh_token"].as_str().unwrap().to_owned();
    let tokens = &app.running().state.tokens;
    let cred = SecretString::from("alice:0000000000000000000000000000000000000000".to_owned());
    let forged = {
        let mut t = alice.clone();
        t.pop();
        t.push(if alice.ends_with('A') { 'B' } else { 'A' });
        t
    };
    let (mfa_kind, _) = tokens
        .mint(Kind::Mfa, "alice", "sid-mfa", &["pwd"], 300, Some(&cred))
        .unwrap();

    let cases: Vec<(&str, &str, String)> = vec![
        ("garbage", "alice", "not-a-jwt".to_owned()),
        ("forged signature", "alice", forged),
        ("refresh token", "alice", refresh),
        ("MFA-pending token", "alice", mfa_kind),
        ("other user's accessKeyId", "bob", alice.clone()),
        ("no token", "alice", String::new()),
    ];
    for (what, user, token) in &cases {
        let mut c = SocketClient::open(app.http_addr()).await;
        c.login(user, token).await;
        eprintln!("{what}");
        c.expect_refused().await;
        if !token.is_empty() {
            assert_never_reached(&b, token);
        }
    }

    // A password-only token of a user who has enrolled 2FA since (its revocation lost, say).
    let enroll = app
        .send("POST", "/auth/2fa/enroll", None, Some(&alice))
        .await;
    let secret = enroll.body["secret"].as_str().unwrap().to_owned();
    let code = support::totp::totp(&secret, app.clock.now());
    let confirm = app
        .send(
            "POST",
            "/auth/2fa/confirm",
            Some(json!({"code": code})),
            Some(&alice),
        )
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.text);
    let (pwd_only, _) = tokens
        .mint(Kind::Access, "alice", "sid-pwd", &["pwd"], 900, Some(&cred))
        .unwrap();
    // And the token of before the enrolment, revoked by it.
    for token in [&pwd_only, &alice] {
        let mut c = SocketClient::open(app.http_addr()).await;
        c.login("alice", token).await;
        c.expect_refused().await;
        assert_never_reached(&b, token);
    }
    // The MFA token of a real 2FA login is no access token either.
    let step1 = app.login(ALICE.0, ALICE.1).await;
    let mfa = step1.body["mfa_token"].as_str().unwrap().to_owned();
    let mut c = SocketClient::open(app.http_addr()).await;
    c.login("alice", &mfa).await;
    c.expect_refused().await;
    assert_never_reached(&b, &mfa);

    // Expired: bob's token once the clock has moved past its life and the leeway.
    let bob = access_token(&app, BOB).await;
    app.clock.advance(15 * 60 + 31);
    let mut c = SocketClient::open(app.http_addr()).await;
    c.login("bob", &bob).await;
    c.expect_refused().await;
    assert_never_reached(&b, &bob);

    assert!(b.socket.logged_in().is_empty());
    assert!(
        !b.socket.frames().iter().any(|f| f.contains("login")),
        "a refused login reached the backend: {:?}",
        b.socket.frames()
    );
    let metrics = app.send("GET", "/metrics", None, None).await.text;
    assert!(
        metrics.contains(r#"authgate_relay_closes_total{reason="login_refused"} 10"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_login_only_engine_io_and_connect_go_upstream_and_no_login_closes() {
    let b = backend().await;
    let app = b
        .app()
        .config(|c| c.relay.login_timeout = Duration::from_secs(1))
        .start()
        .await;
    let token = access_token(&app, ALICE).await;
    let mut c = SocketClient::connect(
        app.http_addr(),
        "/socket.io/?EIO=4&transport=websocket",
        &[],
    )
    .await
    .unwrap();
    assert!(matches!(c.next().await, Seen::Text(t) if t.starts_with("0{")));
    c.send(&format!(r#"40{{"token":"{token}"}}"#)).await;
    assert!(matches!(c.next().await, Seen::Text(t) if t.starts_with("40{")));
    c.send(r#"42["hello","before login"]"#).await;
    c.send(r#"421["echo","x"]"#).await;
    c.send_binary(vec![1, 2, 3]).await;
    c.send("3").await;
    // Nothing answers the dropped events, and after the timeout the socket closes.
    let started = Instant::now();
    assert_eq!(c.next().await, Seen::Closed(1008));
    assert!(started.elapsed() < Duration::from_millis(1500));
    let frames = b.socket.frames();
    assert_eq!(frames, vec!["40".to_owned(), "3".to_owned()], "{frames:?}");
    assert!(b.socket.binary_frames().is_empty());
    assert_never_reached(&b, &token);
    let metrics = app.send("GET", "/metrics", None, None).await.text;
    assert!(
        metrics.contains(r#"authgate_relay_closes_total{reason="login_timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_the_socket_within_a_second() {
    let b = backend().await;
    let app = b.app().start().await;
    let token = access_token(&app, ALICE).await;
    let other = access_token(&app, ALICE).await;
    let mut c = SocketClient::open(app.http_addr()).await;
    c.login_ok("alice", &token).await;
    let mut d = SocketClient::open(app.http_addr()).await;
    d.login_ok("alice", &other).await;

    let started = Instant::now();
    let out = app.send("POST", "/auth/logout", None, Some(&token)).await;
    assert_eq!(out.status, 204);
    assert_eq!(
        c.next_within(Duration::from_secs(1)).await,
        Seen::Text("41".into())
    );
    assert_eq!(
        c.next_within(Duration::from_secs(1)).await,
        Seen::Closed(1008)
    );
    let took = started.elapsed();
    eprintln!("socket closed {took:?} after logout");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The other session's socket lives on.
    assert_eq!(b.socket.push("ping", &json!(1)), 1);
    assert!(matches!(d.next().await, Seen::Text(t) if t.contains("ping")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_at_upgrade_is_checked_there_and_never_dialled() {
    let b = backend().await;
    let app = b.app().start().await;
    let token = access_token(&app, ALICE).await;
    let addr = app.http_addr();
    // Bad tokens: no upgrade at all, and the backend never dialled.
    for (path, headers) in [
        (
            "/socket.io/?EIO=4&transport=websocket".to_owned(),
            vec![("authorization", "Bearer x.y.z".to_owned())],
        ),
        (
            "/socket.io/?EIO=4&transport=websocket&access_token=x.y.z".to_owned(),
            vec![],
        ),
        (
            "/socket.io/?EIO=4&transport=websocket".to_owned(),
            vec![("cookie", "authgate_access=x.y.z".to_owned())],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let refused = SocketClient::connect(addr, &path, &headers).await.err();
        assert_eq!(refused, Some(401), "{path} {headers:?}");
    }
    assert!(b.socket.handshakes().is_empty());
    // Long-polling is not relayed: Engine.IO's own "Transport unknown".
    let poll = app
        .send("GET", "/socket.io/?EIO=4&transport=polling", None, None)
        .await;
    assert_eq!((poll.status, poll.body["code"].clone()), (400, json!(0)));

    // A good token in the query: upgraded, the parameter dropped before the backend, and the
    // login event may then leave its token empty.
    let mut c = SocketClient::connect(
        addr,
        &format!("/socket.io/?EIO=4&access_token={token}&transport=websocket&Token=x"),
        &[],
    )
    .await
    .unwrap();
    c.handshake().await;
    c.login_ok("alice", "").await;
    let target = b.socket.handshakes()[0].target.clone();
    assert_eq!(target, "/socket.io/?EIO=4&transport=websocket");
    assert_never_reached(&b, &token);
    // Another session's token cannot take over a socket bound at upgrade.
    let other = access_token(&app, ALICE).await;
    c.login("alice", &other).await;
    c.expect_refused().await;

    // Bearer header, and a login naming another user is refused.
    let mut c = SocketClient::connect(
        addr,
        "/socket.io/?EIO=4&transport=websocket",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    c.handshake().await;
    c.login("bob", "").await;
    c.expect_refused().await;
    // An upgrade token of a revoked session: 401.
    app.send("POST", "/auth/logout", None, Some(&token)).await;
    let refused = SocketClient::connect(
        addr,
        "/socket.io/?EIO=4&transport=websocket",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .err();
    assert_eq!(refused, Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sockets_and_message_size_are_bounded() {
    let b = backend().await;
    let app = b
        .app()
        .config(|c| {
            c.relay.max_sockets = 2;
            c.relay.max_frame_bytes = 4096;
        })
        .start()
        .await;
    let token = access_token(&app, ALICE).await;
    let mut one = SocketClient::open(app.http_addr()).await;
    let _two = SocketClient::open(app.http_addr()).await;
    let full = SocketClient::connect(
        app.http_addr(),
        "/socket.io/?EIO=4&transport=websocket",
        &[],
    )
    .await
    .err();
    assert_eq!(full, Some(503));

    one.login_ok("alice", &token).await;
    one.send(&format!(r#"42["big","{}"]"#, "x".repeat(5000)))
        .await;
    assert_eq!(one.next().await, Seen::Closed(1009));
    assert!(!b.socket.frames().iter().any(|f| f.contains("big")));
    // Its place is free again.
    let mut three = SocketClient::connect(
        app.http_addr(),
        "/socket.io/?EIO=4&transport=websocket",
        &[],
    )
    .await
    .expect("a place freed by the closed socket");
    three.handshake().await;
    // A too-big message from the backend closes too.
    three.login_ok("alice", &token).await;
    b.socket.push("big", &json!("y".repeat(5000)));
    assert_eq!(three.next().await, Seen::Closed(1009));
    let metrics = app.send("GET", "/metrics", None, None).await.text;
    assert!(
        metrics.contains(r#"authgate_relay_closes_total{reason="full"} 1"#)
            && metrics.contains(r#"authgate_relay_closes_total{reason="too_large"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001_after_frames_in_flight() {
    let b = backend().await;
    let mut app = b.app().start().await;
    let token = access_token(&app, ALICE).await;
    let mut c = SocketClient::open(app.http_addr()).await;
    c.login_ok("alice", &token).await;
    b.socket.push("last", &json!("words"));
    // Let the pushed frame reach the relay before the drain starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stop = tokio::spawn(async move {
        app.stop().await;
        app
    });
    assert!(matches!(c.next().await, Seen::Text(t) if t.contains("last")));
    assert_eq!(c.next().await, Seen::Closed(1001));
    let _app = stop.await.unwrap();
    assert!(
        b.socket
            .wait_until(Duration::from_secs(2), |s| s.open() == 0)
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_relay_without_the_nethcti_backend() {
    let app = TestApp::start().await;
    let reply = app
        .send("GET", "/socket.io/?EIO=4&transport=websocket", None, None)
        .await;
    assert_eq!(reply.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_unreachable_is_a_502_without_upgrade() {
    let sim = NethctiSim::start(&[ALICE], Duration::from_secs(3600)).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = TestApp::builder()
        .nethcti(&sim.url(), Duration::from_secs(1))
        .nethcti_ws(&url)
        .start()
        .await;
    let refused = SocketClient::connect(
        app.http_addr(),
        "/socket.io/?EIO=4&transport=websocket",
        &[],
    )
    .await
    .err();
    assert_eq!(refused, Some(502));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_replica_closes_the_socket_held_by_the_other() {
    let redis = support::redis::RedisServer::start();
    let b = backend().await;
    let a = b.app().redis(&redis.url()).start().await;
    let other = b.app().redis(&redis.url()).keys_from(&a).start().await;
    let token = access_token(&a, ALICE).await;
    let mut c = SocketClient::open(other.http_addr()).await;
    c.login_ok("alice", &token).await;
    let started = Instant::now();
    assert_eq!(
        a.send("POST", "/auth/logout", None, Some(&token))
            .await
            .status,
        204
    );
    assert_eq!(
        c.next_within(Duration::from_millis(1500)).await,
        Seen::Text("41".into())
    );
    assert_eq!(c.next().await, Seen::Closed(1008));
    let took = started.elapsed();
    eprintln!("the other replica closed the socket {took:?} after logout");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fails_closed_for_a_token_without_second_factor() {
    let mut redis = support::redis::RedisServer::start();
    let b = backend().await;
    let app = b.app().redis(&redis.url()).start().await;
    let token = access_token(&app, ALICE).await;
    redis.kill();
    // Whether alice has 2FA cannot be known: no upgrade (503), no login (1013, try again).
    let refused = SocketClient::connect(
        app.http_addr(),
        "/socket.io/?EIO=4&transport=websocket",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .err();
    assert_eq!(refused, Some(503));
    let mut c = SocketClient::open(app.http_addr()).await;
    c.login("alice", &token).await;
    assert_eq!(
        c.next_within(Duration::from_secs(10)).await,
        Seen::Closed(1013)
    );
    assert!(b.socket.logged_in().is_empty());
    assert_never_reached(&b, &token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_alone_does_not_close_and_api_ws_relays_too() {
    let b = backend().await;
    let app = b
        .app()
        .config(|c| c.compat.nethcti_middleware = true)
        .start()
        .await;
    let token = access_token(&app, ALICE).await;
    // The nethcti-middleware profile's path reaches the same socket.io server.
    let mut c = SocketClient::connect(app.http_addr(), "/api/ws/?EIO=4&transport=websocket", &[])
        .await
        .unwrap();
    c.handshake().await;
    c.login_ok("alice", &token).await;
    assert!(b.socket.handshakes()[0].target.starts_with("/socket.io/?"));
    // The access token expires; the session has not ended, so the socket stays.
    app.clock.advance(3600);
    let late = app.authz("/api", Some(&token)).await;
    assert_eq!(late.status, 401, "the token itself is expired");
    assert_eq!(b.socket.push("still", &json!("here")), 1);
    assert!(matches!(c.next().await, Seen::Text(t) if t.contains("still")));
}
