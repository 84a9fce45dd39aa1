//! The nethcti-middleware profile (SPEC 2.7) in process, against the legacy simulator: every
//! answer checked field by field as the NethVoice client reads it, and what the profile must
//! do better than the middleware (the OTP user is the token's, passwords guard recovery codes
//! and disabling, device tokens are revocable, a pre-OTP token opens nothing else).
//! Through the shipped Envoy and nginx configs: tests/nethvoice.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::app::{Reply, TestApp};
use support::hostile::jwt_part;
use support::nethcti_sim::NethctiSim;
use support::totp::totp;

const ALICE: (&str, &str) = ("alice", "alice secret");
const BOB: (&str, &str) = ("bob", "bob secret");
const DAY: u64 = 24 * 3600;

async fn sim() -> NethctiSim {
    NethctiSim::start(&[ALICE, BOB], Duration::from_secs(30 * DAY)).await
}

async fn profile(sim: &NethctiSim) -> TestApp {
    TestApp::builder()
        .nethcti(&sim.url(), Duration::from_secs(5))
        .config(|c| c.compat.nethcti_middleware = true)
        .start()
        .await
}

async fn login(app: &TestApp, (user, password): (&str, &str)) -> Reply {
    app.post(
        "/api/login",
        json!({"username": user, "password": password}),
    )
    .await
}

/// Logs in and returns the token the client keeps.
async fn token(app: &TestApp, who: (&str, &str)) -> String {
    let r = login(app, who).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["token"].as_str().expect("token").to_owned()
}

fn claims(token: &str) -> Value {
    jwt_part(token, 1)
}

/// `expire` as the client parses it, in unix seconds.
fn expire(value: &Value) -> u64 {
    let text = value.as_str().expect("expire is a string");
    humantime::parse_rfc3339(text)
        .expect("RFC 3339")
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_error(r: &Reply, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["code"], status, "{}", r.text);
    assert_eq!(r.body["message"], message, "{}", r.text);
    assert_eq!(r.body["data"], Value::Null, "{}", r.text);
    if status == 401 || status == 403 {
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with(r#"Bearer realm="nethcti""#),
            "{challenge}"
        );
    }
}

async fn verify_otp(app: &TestApp, bearer: &str, username: &str, otp: &str) -> Reply {
    app.send(
        "POST",
        "/api/2fa/verify-otp",
        Some(json!({"username": username, "otp": otp})),
        Some(bearer),
    )
    .await
}

/// Enrolls alice's second factor the way the client does (status, qr-code, verify-otp,
/// recovery-codes); returns the TOTP secret, the token after enrollment and the codes.
async fn enroll(app: &TestApp, token: &str) -> (String, String, Vec<String>) {
    let r = app.send("GET", "/api/2fa/status", None, Some(token)).await;
    assert_eq!((r.status, &r.body), (200, &json!({"status": false})));
    let qr = app.send("GET", "/api/2fa/qr-code", None, Some(token)).await;
    assert_eq!(qr.status, 200, "{}", qr.text);
    assert_eq!(qr.body["code"], 200);
    assert_eq!(qr.body["message"], "QR code string");
    let key = qr.body["data"]["key"].as_str().unwrap().to_owned();
    assert_eq!(
        qr.body["data"]["url"],
        format!("otpauth://totp/NethVoice:alice?algorithm=SHA1&digits=6&period=30&secret={key}")
    );
    // The same pending secret until it is confirmed.
    let again = app.send("GET", "/api/2fa/qr-code", None, Some(token)).await;
    assert_eq!(again.body["data"]["key"], key.as_str());

    let wrong = verify_otp(app, token, "alice", "000000").await;
    assert_error(&wrong, 400, "invalid_otp");
    let r = verify_otp(app, token, "alice", &totp(&key, app.clock.now())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["code"], 200);
    assert_eq!(r.body["message"], "OTP verified");
    let enrolled = r.body["data"]["token"].as_str().unwrap().to_owned();
    let c = claims(&enrolled);
    assert_eq!(
        (c["2fa"].clone(), c["otp_verified"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        expire(&r.body["data"]["expire"]),
        c["exp"].as_u64().unwrap()
    );
    // Enrollment revoked every other session, the caller's too.
    assert_eq!(app.authz("/api/user/me", Some(token)).await.status, 401);

    let codes = app
        .send(
            "POST",
            "/api/2fa/recovery-codes",
            Some(json!({"password": ALICE.1})),
            Some(&enrolled),
        )
        .await;
    assert_eq!(codes.status, 200, "{}", codes.text);
    let codes: Vec<String> = serde_json::from_value(codes.body["codes"].clone()).unwrap();
    (key, enrolled, codes)
}

#[tokio::test]
async fn the_clients_sequence_login_enrolment_second_factor_disable_logout() {
    let sim = sim().await;
    let app = profile(&sim).await;

    // Login without 2FA: the token the client stores and decodes.
    let r = login(&app, ALICE).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["code"], 200);
    let first = r.body["token"].as_str().unwrap().to_owned();
    let c = claims(&first);
    assert_eq!(c["id"], "alice");
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["2fa"], false);
    assert_eq!(c["otp_verified"], false);
    assert_eq!(c["amr"], json!(["pwd"]));
    assert!(c["sid"].is_string());
    let exp = c["exp"].as_u64().unwrap();
    assert_eq!(exp - c["iat"].as_u64().unwrap(), 14 * DAY);
    assert_eq!(expire(&r.body["expire"]), exp);
    // Every other /api/... request is checked and gets the legacy credential.
    let allowed = app.authz("/api/user/me", Some(&first)).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    let legacy = allowed.headers["authorization"].to_str().unwrap();
    assert!(legacy.starts_with("alice:"), "{legacy}");
    assert!(sim.credential_check()(legacy));

    let (key, enrolled, codes) = enroll(&app, &first).await;
    assert_eq!(codes.len(), 10);
    for code in &codes {
        assert!(
            code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
            "{code}"
        );
    }
    let r = app
        .send("GET", "/api/2fa/status", None, Some(&enrolled))
        .await;
    assert_eq!(r.body, json!({"status": true}));
    // The pending secret is never shown again.
    let r = app
        .send("GET", "/api/2fa/qr-code", None, Some(&enrolled))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);

    // Login with 2FA: a pre-OTP token, good for verify-otp and logout only.
    let pre = token(&app, ALICE).await;
    let c = claims(&pre);
    assert_eq!(
        (c["2fa"].clone(), c["otp_verified"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
    assert_error(
        &app.authz("/api/user/me", Some(&pre)).await,
        403,
        "not an access token",
    );
    for (method, path) in [
        ("GET", "/api/2fa/status"),
        ("GET", "/api/2fa/qr-code"),
        ("POST", "/api/tokens/persistent/phone-island"),
    ] {
        let r = app.send(method, path, None, Some(&pre)).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text);
    }
    // The OTP user is the token's: someone else's name in the body is refused.
    app.clock.advance(30);
    let code = totp(&key, app.clock.now());
    let r = verify_otp(&app, &pre, "bob", &code).await;
    assert_error(&r, 400, "username does not match the token");
    let r = verify_otp(&app, &pre, "alice", &code).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let full = r.body["data"]["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&full)["otp_verified"], true);
    assert_eq!(claims(&full)["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims(&full)["sid"], claims(&pre)["sid"]);
    assert_eq!(app.authz("/api/user/me", Some(&full)).await.status, 200);
    // The pre-OTP token is spent.
    app.clock.advance(30);
    let r = verify_otp(&app, &pre, "alice", &totp(&key, app.clock.now())).await;
    assert_eq!(r.status, 401, "{}", r.text);

    // A recovery code finishes a login once.
    let pre = token(&app, ALICE).await;
    let r = verify_otp(&app, &pre, "alice", &codes[3]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let pre = token(&app, ALICE).await;
    assert_error(
        &verify_otp(&app, &pre, "alice", &codes[3]).await,
        400,
        "invalid_otp",
    );

    // New recovery codes and disabling need the password, checked by the backend.
    for path in ["/api/2fa/recovery-codes", "/api/2fa/disable"] {
        let r = app
            .send(
                "POST",
                path,
                Some(json!({"password": "guess"})),
                Some(&full),
            )
            .await;
        assert_error(&r, 401, "incorrect Username or Password");
    }
    let r = app
        .send(
            "POST",
            "/api/2fa/disable",
            Some(json!({"password": ALICE.1})),
            Some(&full),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["code"], 200);
    assert_eq!(r.body["data"], json!({"must_relogin": true}));
    assert_eq!(app.authz("/api/user/me", Some(&full)).await.status, 401);

    // Logout: 200 {"code":200}, the session is revoked at once.
    let last = token(&app, ALICE).await;
    assert_eq!(claims(&last)["2fa"], false);
    let r = app.send("POST", "/api/logout", None, Some(&last)).await;
    assert_eq!((r.status, &r.body), (200, &json!({"code": 200})));
    assert_error(
        &app.authz("/api/user/me", Some(&last)).await,
        401,
        "token revoked",
    );
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn login_failures_answer_as_the_middleware_and_count_towards_the_lockout() {
    let sim = sim().await;
    let app = profile(&sim).await;
    assert_error(
        &login(&app, ("alice", "wrong")).await,
        401,
        "incorrect Username or Password",
    );
    for body in [
        json!({"username": "alice"}),
        json!({"password": "x"}),
        json!({"username": "", "password": "x"}),
        json!({"username": 7, "password": "x"}),
    ] {
        let r = app.post("/api/login", body.clone()).await;
        assert_error(&r, 401, "missing Username or Password");
    }
    let r = app.send("POST", "/api/login", None, None).await;
    assert_error(&r, 401, "missing Username or Password");
    for _ in 0..4 {
        login(&app, ("alice", "wrong")).await;
    }
    let r = login(&app, ALICE).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["code"], 429);
    assert!(r.headers.contains_key("retry-after"));
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn wrong_otp_codes_count_towards_the_lockout() {
    let sim = sim().await;
    let app = profile(&sim).await;
    let first = token(&app, ALICE).await;
    let (key, _, _) = enroll(&app, &first).await; // one wrong code already
    let pre = token(&app, ALICE).await;
    for _ in 0..4 {
        assert_error(
            &verify_otp(&app, &pre, "alice", "123456").await,
            400,
            "invalid_otp",
        );
    }
    app.clock.advance(30);
    let r = verify_otp(&app, &pre, "alice", &totp(&key, app.clock.now())).await;
    assert_eq!(r.status, 429, "{}", r.text);
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn check_denials_under_the_prefix_speak_the_clients_dialect() {
    let sim = sim().await;
    let app = profile(&sim).await;
    let r = app.authz("/api/user/me", None).await;
    assert_error(&r, 401, "a bearer token is required");
    assert_eq!(r.body["error"], "unauthorized");
    let r = app.authz("/api/%75ser/me", Some("not.a.jwt")).await;
    assert_eq!(r.body["code"], 401, "{}", r.text);
    // Outside the prefix: authgate's own shape.
    let r = app.authz("/other", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "unauthorized");
    assert_eq!(r.body.get("code"), None);
    assert_eq!(
        r.headers["www-authenticate"].to_str().unwrap(),
        r#"Bearer realm="authgate""#
    );
    // The static files are public; the legacy login behind the prefix is closed.
    assert_eq!(app.authz("/api/static/logo.png", None).await.status, 200);
    let t = token(&app, ALICE).await;
    for path in [
        "/api/authentication/login",
        "/API/Authentication/login",
        "/api/static/../authentication/login",
        "/api//authentication/logout",
    ] {
        let r = app.authz(path, Some(&t)).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
    // The gRPC check renders the same denial.
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn device_tokens_are_sessions_one_per_device_revoked_with_the_user() {
    let sim = sim().await;
    let app = profile(&sim).await;
    let t = token(&app, ALICE).await;
    let path = "/api/tokens/persistent/phone-island";
    let r = app.send("GET", path, None, Some(&t)).await;
    assert_eq!((r.status, &r.body), (200, &json!({"exists": false})));
    let r = app.send("POST", path, None, Some(&t)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let device = r.body["token"].as_str().unwrap().to_owned();
    let c = claims(&device);
    assert_eq!(c["aud"], "phone-island");
    assert_eq!(c["id"], "alice");
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        365 * DAY
    );
    assert_ne!(c["sid"], claims(&t)["sid"]);
    // It carries the caller's legacy credential.
    let via_device = app.authz("/api/user/me", Some(&device)).await;
    let via_login = app.authz("/api/user/me", Some(&t)).await;
    assert_eq!(via_device.status, 200);
    assert_eq!(
        via_device.headers["authorization"],
        via_login.headers["authorization"]
    );
    let r = app.send("GET", path, None, Some(&t)).await;
    assert_eq!(r.body, json!({"exists": true}));
    // Operators see it among alice's sessions.
    let (listed, _) = app
        .running()
        .state
        .login
        .list_sessions("alice")
        .await
        .unwrap();
    let devices: Vec<Option<&str>> = listed.iter().map(|s| s.device.as_deref()).collect();
    assert_eq!(devices, [None, Some("phone-island")]);

    // A new one replaces the old.
    let r = app.send("POST", path, None, Some(&t)).await;
    let second = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(app.authz("/api/user/me", Some(&device)).await.status, 401);
    assert_eq!(app.authz("/api/user/me", Some(&second)).await.status, 200);

    // Another device name is refused.
    let r = app
        .send("POST", "/api/tokens/persistent/desktop", None, Some(&t))
        .await;
    assert_error(&r, 400, "invalid audience");

    // DELETE revokes it.
    let r = app.send("DELETE", path, None, Some(&t)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(app.authz("/api/user/me", Some(&second)).await.status, 401);
    let r = app.send("GET", path, None, Some(&t)).await;
    assert_eq!(r.body, json!({"exists": false}));

    // An operator's user-wide revocation takes device tokens too, for their whole life.
    let r = app
        .send("POST", "/api/tokens/persistent/nethlink", None, Some(&t))
        .await;
    let nethlink = r.body["token"].as_str().unwrap().to_owned();
    let revoked = app
        .running()
        .state
        .login
        .admin_revoke_user("alice", "test")
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    assert_eq!(app.authz("/api/user/me", Some(&nethlink)).await.status, 401);
    app.clock.advance(200 * DAY);
    app.running().state.checker.revocations.prune();
    assert_eq!(app.authz("/api/user/me", Some(&nethlink)).await.status, 401);
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn a_2fa_change_ends_device_tokens() {
    let sim = sim().await;
    let app = profile(&sim).await;
    let t = token(&app, ALICE).await;
    let r = app
        .send("POST", "/api/tokens/persistent/mobile-app", None, Some(&t))
        .await;
    let device = r.body["token"].as_str().unwrap().to_owned();
    enroll(&app, &t).await;
    assert_eq!(app.authz("/api/user/me", Some(&device)).await.status, 401);
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn logout_keeps_the_legacy_session_a_device_token_still_uses() {
    let sim = sim().await;
    let app = profile(&sim).await;
    let t = token(&app, ALICE).await;
    let r = app
        .send(
            "POST",
            "/api/tokens/persistent/phone-island",
            None,
            Some(&t),
        )
        .await;
    let device = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(sim.live_tokens(), 1);
    let r = app.send("POST", "/api/logout", None, Some(&t)).await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.live_tokens(), 1, "the device token still uses it");
    let r = app.authz("/api/user/me", Some(&device)).await;
    assert_eq!(r.status, 200);
    assert!(sim.credential_check()(
        r.headers["authorization"].to_str().unwrap()
    ));
    // The last session of that credential logs out of the backend.
    let r = app.send("POST", "/api/logout", None, Some(&device)).await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.live_tokens(), 0);
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn revocation_lasts_as_long_as_the_long_lived_token() {
    let sim = sim().await;
    let app = profile(&sim).await;
    let t = token(&app, ALICE).await;
    app.clock.advance(10 * DAY);
    assert_eq!(app.authz("/api/user/me", Some(&t)).await.status, 200);
    let r = app.send("POST", "/api/logout", None, Some(&t)).await;
    assert_eq!(r.status, 200);
    // Long after an ordinary access token's revocation would have been swept.
    app.clock.advance(3 * DAY);
    app.running().state.checker.revocations.prune();
    assert_error(
        &app.authz("/api/user/me", Some(&t)).await,
        401,
        "token revoked",
    );
    app.clock.advance(2 * DAY);
    assert_error(
        &app.authz("/api/user/me", Some(&t)).await,
        401,
        "token expired",
    );
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn lockdown_refuses_the_profiles_login_and_verify_otp() {
    let sim = sim().await;
    let app = profile(&sim).await;
    let t = token(&app, ALICE).await;
    let login_service = &app.running().state.login;
    login_service
        .set_lockdown(true, false, "test")
        .await
        .unwrap();
    let r = login(&app, BOB).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"], "temporarily_unavailable");
    assert_eq!(r.body["code"], 503);
    let r = verify_otp(&app, &t, "alice", "123456").await;
    assert_eq!(r.status, 503, "{}", r.text);
    // Existing sessions keep working.
    assert_eq!(app.authz("/api/user/me", Some(&t)).await.status, 200);
    app.shutdown().await;
    sim.stop().await;
}

#[tokio::test]
async fn without_the_profile_its_routes_do_not_exist() {
    let app = TestApp::start().await;
    for (method, path) in [
        ("POST", "/api/login"),
        ("POST", "/api/2fa/verify-otp"),
        ("GET", "/api/ws/?EIO=4&transport=websocket"),
    ] {
        let r = app.send(method, path, None, None).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
    }
    // And check denials keep authgate's own shape everywhere.
    let r = app.authz("/api/user/me", None).await;
    assert_eq!(r.body["error"], "unauthorized");
    assert_eq!(r.body.get("code"), None);
    app.shutdown().await;
}
