//! Login flows end to end (in-process, manual clock): TOTP 2FA with recovery codes, refresh
//! rotation and reuse, revocation, lockout, restart, the nethcti backend through the legacy
//! simulator, and the security log with no secret in it. TOTP codes come from an RFC 6238
//! implementation written here, not from the code under test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::time::{Duration, Instant};

use authgate::config::Access;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use support::app::{ALICE_PASSWORD, TestApp, routes};
use support::logs::{log, log_text};
use support::nethcti_sim::NethctiSim;
use support::totp::totp;

fn assert_not_logged(secrets: &[&str]) {
    let text = log_text();
    for s in secrets {
        assert!(s.len() >= 6, "secret too short to check: {s:?}");
        assert!(!text.contains(s), "a secret appears in the log");
    }
}

fn assert_event(event: &str, user: &str) {
    let found = log_text().lines().any(|l| {
        let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
        v["target"] == "security"
            && v["event"] == event
            && v["user"] == user
            && v["client"].is_string()
    });
    assert!(found, "no {event} event for {user}");
}

#[test]
fn independent_totp_matches_rfc6238() {
    // RFC 6238 appendix B, SHA-1 seed "12345678901234567890" (base32 below), 8 -> 6 digits.
    let seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    assert_eq!(totp(seed, 59), "287082");
    assert_eq!(totp(seed, 1111111109), "081804");
    assert_eq!(totp(seed, 2000000000), "279037");
}

async fn start() -> TestApp {
    log();
    TestApp::start().await
}

async fn tokens(app: &TestApp) -> (String, String) {
    let r = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    (
        r.body["access_token"].as_str().unwrap().to_owned(),
        r.body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Enrolls and confirms 2FA for alice; returns (secret, recovery codes).
async fn enable_2fa(app: &TestApp, access: &str) -> (String, Vec<String>) {
    let e = app
        .send("POST", "/auth/2fa/enroll", None, Some(access))
        .await;
    assert_eq!(e.status, 200, "{}", e.body);
    let secret = e.body["secret"].as_str().unwrap().to_owned();
    let url = e.body["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/"), "{url}");
    assert!(url.contains("issuer=NethVoice"), "{url}");
    assert!(e.body["qr_png_base64"].as_str().unwrap().len() > 100);
    // Not active before confirmation.
    let s = app
        .send("GET", "/auth/2fa/status", None, Some(access))
        .await;
    assert_eq!(s.body, json!({"enabled": false, "recovery_codes_left": 0}));
    let bad = app
        .send(
            "POST",
            "/auth/2fa/confirm",
            Some(json!({"code": "000000"})),
            Some(access),
        )
        .await;
    assert_eq!(bad.status, 401);
    let code = totp(&secret, app.clock.now());
    let c = app
        .send(
            "POST",
            "/auth/2fa/confirm",
            Some(json!({"code": code})),
            Some(access),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let codes: Vec<String> = c.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

/// Password then TOTP (one step later, so the code is fresh); returns the token response.
async fn otp_login(app: &TestApp, secret: &str) -> Value {
    let mfa = mfa_token(app).await;
    app.clock.advance(30);
    let code = totp(secret, app.clock.now());
    let r = app
        .post("/auth/login/otp", json!({"mfa_token": mfa, "code": code}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The MFA token a password login of alice answers with.
async fn mfa_token(app: &TestApp) -> String {
    app.login("alice", ALICE_PASSWORD).await.body["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn two_factor_enrollment_login_replay_and_recovery() {
    log();
    // This test makes more wrong-code attempts than the default lockout allows.
    let app = TestApp::builder()
        .config(|c| c.lockout.max_failures = 20)
        .start()
        .await;
    let (access, _) = tokens(&app).await;
    let (secret, codes) = enable_2fa(&app, &access).await;
    // Enabling 2FA revoked the password-only session.
    assert_eq!(app.authz("/api", Some(&access)).await.status, 401);

    let r = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["mfa_required"], true);
    assert_eq!(r.body["expires_in"], 300);
    assert!(r.body.get("access_token").is_none());
    let mfa = r.body["mfa_token"].as_str().unwrap().to_owned();
    // The MFA token is not an access token anywhere.
    assert_eq!(app.authz("/api", Some(&mfa)).await.status, 403);
    assert_eq!(
        app.send("GET", "/auth/me", None, Some(&mfa)).await.status,
        403
    );
    assert_eq!(
        app.send("POST", "/auth/2fa/enroll", None, Some(&mfa))
            .await
            .status,
        403
    );

    // The code used for confirmation is spent (replay), in the same step.
    let spent = totp(&secret, app.clock.now());
    let r = app
        .post("/auth/login/otp", json!({"mfa_token": mfa, "code": spent}))
        .await;
    assert_eq!(r.status, 401);
    app.clock.advance(30);
    let code = totp(&secret, app.clock.now());
    let r = app
        .post("/auth/login/otp", json!({"mfa_token": mfa, "code": code}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access2 = r.body["access_token"].as_str().unwrap().to_owned();
    let me = app.send("GET", "/auth/me", None, Some(&access2)).await;
    assert_eq!(me.body["amr"], json!(["pwd", "otp"]));
    assert_eq!(app.authz("/api", Some(&access2)).await.status, 200);
    // The MFA token opened one session only; the code cannot be replayed with a new one.
    let again = app
        .post("/auth/login/otp", json!({"mfa_token": mfa, "code": code}))
        .await;
    assert_eq!(again.status, 401);
    let mfa2 = mfa_token(&app).await;
    let replay = app
        .post("/auth/login/otp", json!({"mfa_token": mfa2, "code": code}))
        .await;
    assert_eq!(replay.status, 401);

    // A recovery code works once.
    let r = app
        .post(
            "/auth/login/otp",
            json!({"mfa_token": mfa2, "code": codes[0]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access3 = r.body["access_token"].as_str().unwrap().to_owned();
    let mfa3 = mfa_token(&app).await;
    let r = app
        .post(
            "/auth/login/otp",
            json!({"mfa_token": mfa3, "code": codes[0]}),
        )
        .await;
    assert_eq!(r.status, 401);
    let s = app
        .send("GET", "/auth/2fa/status", None, Some(&access3))
        .await;
    assert_eq!(s.body, json!({"enabled": true, "recovery_codes_left": 9}));

    // New recovery codes: the old ones die.
    app.clock.advance(30);
    let code = totp(&secret, app.clock.now());
    let r = app
        .send(
            "POST",
            "/auth/2fa/recovery-codes",
            Some(json!({"code": code})),
            Some(&access3),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh: Vec<String> = r.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fresh.len(), 10);
    let r = app
        .post(
            "/auth/login/otp",
            json!({"mfa_token": mfa3, "code": codes[1]}),
        )
        .await;
    assert_eq!(r.status, 401);

    // Disabling needs a code, and revokes every session.
    let r = app
        .send(
            "POST",
            "/auth/2fa/disable",
            Some(json!({"code": "123456"})),
            Some(&access3),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = app
        .send(
            "POST",
            "/auth/2fa/disable",
            Some(json!({"code": fresh[5]})),
            Some(&access3),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(app.authz("/api", Some(&access3)).await.status, 401);
    assert_eq!(app.authz("/api", Some(&access2)).await.status, 401);
    let r = app.login("alice", ALICE_PASSWORD).await;
    assert!(r.body["access_token"].is_string());

    for e in [
        "login_success",
        "mfa_success",
        "mfa_failure",
        "2fa_enabled",
        "2fa_disabled",
        "recovery_code_used",
        "revoked",
    ] {
        assert_event(e, "alice");
    }
    let mut secrets: Vec<&str> = vec![
        ALICE_PASSWORD,
        &secret,
        &access,
        &access2,
        &access3,
        &mfa,
        &mfa2,
        &code,
        &spent,
    ];
    secrets.extend(codes.iter().map(String::as_str));
    secrets.extend(fresh.iter().map(String::as_str));
    assert_not_logged(&secrets);
}

#[tokio::test]
async fn mfa_routes_need_the_second_factor() {
    log();
    let app = TestApp::builder()
        .config(|c| {
            c.policy.routes = routes(&[
                ("/admin", Access::Mfa),
                ("/auth/", Access::Public),
                ("/", Access::Token),
            ])
        })
        .start()
        .await;
    let (access, _) = tokens(&app).await;
    let denied = app.authz("/admin/x", Some(&access)).await;
    assert_eq!(denied.status, 403);
    assert!(
        denied.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    let (secret, _) = enable_2fa(&app, &access).await;
    let access = otp_login(&app, &secret).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.authz("/admin/x", Some(&access)).await.status, 200);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = start().await;
    let (access, refresh) = tokens(&app).await;
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    let access2 = r.body["access_token"].as_str().unwrap().to_owned();
    let refresh2 = r.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh, refresh2);
    // As `Authorization: Bearer` too (MikoPBX clients).
    let r = app
        .send("POST", "/auth/refresh", None, Some(&refresh2))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access3 = r.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.authz("/api", Some(&access3)).await.status, 200);
    // An access token is not a refresh token.
    assert_eq!(
        app.post("/auth/refresh", json!({"refresh_token": access3}))
            .await
            .status,
        401
    );
    // Reusing a spent refresh token kills the whole family at once.
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 401);
    for t in [&access, &access2, &access3] {
        assert_eq!(app.authz("/api", Some(t)).await.status, 401);
    }
    let latest = app.send("GET", "/auth/me", None, Some(&access3)).await;
    assert_eq!(latest.status, 401);
    assert_event("refresh_reuse", "alice");
    assert_event("refresh", "alice");
    // Bad input.
    assert_eq!(app.post("/auth/refresh", json!({})).await.status, 400);
    assert_eq!(
        app.post("/auth/refresh", json!({"refresh_token": "x y"}))
            .await
            .status,
        400
    );
    let r = app.send("POST", "/auth/refresh", None, None).await;
    assert_eq!(r.status, 400);
    assert_not_logged(&[&refresh, &refresh2, &access3]);
}

#[tokio::test]
async fn refresh_after_expiry_or_logout_fails() {
    let app = start().await;
    let (access, refresh) = tokens(&app).await;
    let r = app.send("POST", "/auth/logout", None, Some(&access)).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        app.post("/auth/refresh", json!({"refresh_token": refresh}))
            .await
            .status,
        401
    );
    // Still dead once the revocation entry itself has expired (the session record is gone).
    app.clock.advance(3600);
    assert_eq!(
        app.post("/auth/refresh", json!({"refresh_token": refresh}))
            .await
            .status,
        401
    );
    let (_, refresh) = tokens(&app).await;
    app.clock.advance(30 * 86400 + 31);
    assert_eq!(
        app.post("/auth/refresh", json!({"refresh_token": refresh}))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn lockout_per_user_and_per_address() {
    let app = start().await;
    for _ in 0..5 {
        assert_eq!(app.login("alice", "wrong password").await.status, 401);
    }
    let r = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    assert_event("lockout", "alice");
    // The address is locked too: other users from it are refused.
    assert_eq!(app.login("bob", "whatever").await.status, 429);
    app.clock.advance(901);
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn lockout_counts_the_address_across_users_and_trusts_only_proxies() {
    log();
    let loopback = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let app = TestApp::builder()
        .config(|c| c.listen.trusted_proxies = loopback.to_vec())
        .start()
        .await;
    let login_from = |ip: &'static str, user: &'static str| {
        let req = Request::post("/auth/login")
            .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"username": user, "password": "nope"}).to_string(),
            ))
            .unwrap();
        let app = &app;
        async move { app.call(req).await.status }
    };
    // The peer (loopback) is a trusted proxy: the last X-Forwarded-For hop is the client.
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        assert_eq!(login_from("198.51.100.1", user).await, 401);
    }
    assert_eq!(login_from("198.51.100.1", "u6").await, 429);
    // Another client address is not affected.
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status, 200);
    assert_eq!(login_from("198.51.100.2", "u7").await, 401);
}

/// By default nobody is a trusted proxy: a client's own X-Forwarded-For names no address, so
/// it neither escapes its lockout nor puts another address into one.
#[tokio::test]
async fn x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    let app = start().await;
    for i in 0..5 {
        let req = Request::post("/auth/login")
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"username": format!("u{i}"), "password": "nope"}).to_string(),
            ))
            .unwrap();
        assert_eq!(app.call(req).await.status, 401);
    }
    // All five came from the one peer: that address is locked, whatever the header said.
    assert_eq!(app.login("alice", ALICE_PASSWORD).await.status, 429);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let app = start().await;
    let (access, _) = tokens(&app).await;
    let (secret, _) = enable_2fa(&app, &access).await;
    let refresh = otp_login(&app, &secret).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = app.restart().await;
    // Enrollment survived: login needs the second factor.
    assert_eq!(
        app.login("alice", ALICE_PASSWORD).await.body["mfa_required"],
        true
    );
    // The revocation of the pre-2FA session survived.
    assert_eq!(app.authz("/api", Some(&access)).await.status, 401);
    // The refresh family survived, and rotation still detects reuse after a restart.
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let app = app.restart().await;
    // Past the reuse grace, in which a repeat would get the same pair again.
    app.clock.advance(11);
    assert_eq!(
        app.post("/auth/refresh", json!({"refresh_token": refresh}))
            .await
            .status,
        401
    );
}

async fn nethcti_app(sim: &NethctiSim, timeout: Duration) -> TestApp {
    log();
    TestApp::builder()
        .nethcti(&sim.url(), timeout)
        .start()
        .await
}

#[tokio::test]
async fn nethcti_backend_credential_is_sealed_and_injected() {
    let sim = NethctiSim::start(&[("alice", "secret")], Duration::from_secs(3600)).await;
    let app = nethcti_app(&sim, Duration::from_secs(2)).await;
    let r = app.login("alice", "wrong").await;
    assert_eq!(r.status, 401);
    let r = app.login("alice", "secret").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    let refresh = r.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(sim.live_tokens(), 1);
    // On allow, the legacy credential is handed upstream, and it is one the server accepts.
    let allow = app.authz("/api", Some(&access)).await;
    assert_eq!(allow.status, 200);
    let credential = allow.headers["authorization"].to_str().unwrap().to_owned();
    let (user, legacy) = credential.split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert_eq!(legacy.len(), 40);
    assert!(!access.contains(legacy), "legacy token visible in the JWT");
    let me = support::http_client()
        .get(format!("{}/user/me", sim.url()))
        .header("authorization", &credential)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // Refresh confirms the legacy session is alive (and the new token carries it too).
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access2 = r.body["access_token"].as_str().unwrap().to_owned();
    let refresh2 = r.body["refresh_token"].as_str().unwrap().to_owned();
    let allow = app.authz("/api", Some(&access2)).await;
    assert_eq!(allow.headers["authorization"].to_str().unwrap(), credential);
    // Backend down: login is 503, existing sessions keep working.
    sim.set_down(true);
    assert_eq!(app.login("alice", "secret").await.status, 503);
    assert_eq!(app.authz("/api", Some(&access2)).await.status, 200);
    sim.set_down(false);
    // The legacy session ends (idle expiry, admin): refresh notices and revokes.
    sim.kill_sessions_of("alice");
    assert_eq!(
        app.post("/auth/refresh", json!({"refresh_token": refresh2}))
            .await
            .status,
        401
    );
    assert_eq!(app.authz("/api", Some(&access2)).await.status, 401);
    // Logout also logs out of the backend.
    let r = app.login("alice", "secret").await;
    let access3 = r.body["access_token"].as_str().unwrap().to_owned();
    let before = sim.live_tokens();
    assert_eq!(
        app.send("POST", "/auth/logout", None, Some(&access3))
            .await
            .status,
        204
    );
    assert_eq!(sim.live_tokens(), before - 1);
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.path == "/authentication/logout"),
        "no logout reached the backend"
    );
    assert_not_logged(&[&credential, legacy, &access, &access2, &access3, &refresh]);
}

#[tokio::test]
async fn slow_backend_gives_503_within_the_timeout() {
    let sim = NethctiSim::start(&[("alice", "secret")], Duration::from_secs(3600)).await;
    let app = nethcti_app(&sim, Duration::from_millis(500)).await;
    let access = app.login("alice", "secret").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.set_delay(Duration::from_secs(5));
    let started = Instant::now();
    let r = app.login("alice", "secret").await;
    assert_eq!(r.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.authz("/api", Some(&access)).await.status, 200);
}

/// What the store keeps of recovery codes is a keyed digest: a copy of the store (here the
/// raw value in Redis) holds neither a code nor the plain SHA-256 an attacker with the copy
/// could rebuild for every code (a million of them for the profile's six digits).
#[tokio::test]
async fn the_store_keeps_recovery_codes_only_as_keyed_digests() {
    let redis = support::redis::RedisServer::start();
    let app = TestApp::builder().redis(&redis.url()).start().await;
    let (access, _) = tokens(&app).await;
    let (_, codes) = enable_2fa(&app, &access).await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Vec<u8> = redis::cmd("GET")
        .arg("authgate:mfa:alice")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored = String::from_utf8_lossy(&stored);
    assert_eq!(stored.matches("\"k0.").count(), 10, "{stored}");
    for code in &codes {
        let normal: String = code.chars().filter(char::is_ascii_alphanumeric).collect();
        let plain = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("authgate-recovery\0alice\0{normal}").as_bytes(),
        );
        let plain: String = plain.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!stored.contains(&plain), "a plain digest in the store");
        assert!(!stored.contains(code.as_str()) && !stored.contains(&normal));
    }
    // And a code still finishes a login.
    let mfa = mfa_token(&app).await;
    let r = app
        .post(
            "/auth/login/otp",
            json!({"mfa_token": mfa, "code": codes[0]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
