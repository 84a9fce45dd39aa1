//! Key rotation as an operator meets it, in process with a manual clock: the sealing key
//! rotated under TOTP enrollments that are already stored (issue 11, item 7). The signing-key
//! rules themselves are unit tests in `src/token/tests.rs`; `rotate-keys --revoke-old` against
//! a running binary is in `tests/cli.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::app::{ALICE_PASSWORD, TestApp};
use support::totp::totp;

async fn access_token(app: &TestApp) -> String {
    let r = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_owned()
}

/// Enrolls and confirms 2FA for alice; returns the secret.
async fn enable_2fa(app: &TestApp, access: &str) -> String {
    let e = app
        .send("POST", "/auth/2fa/enroll", None, Some(access))
        .await;
    assert_eq!(e.status, 200, "{}", e.body);
    let secret = e.body["secret"].as_str().unwrap().to_owned();
    app.clock.advance(30);
    let c = app
        .send(
            "POST",
            "/auth/2fa/confirm",
            Some(json!({"code": totp(&secret, app.clock.now())})),
            Some(access),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    secret
}

/// Password, then a fresh TOTP code: the second step has to open the stored secret.
async fn otp_login(app: &TestApp, secret: &str) -> Value {
    let r = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(r.body["mfa_required"], true, "{}", r.body);
    let mfa = r.body["mfa_token"].as_str().unwrap().to_owned();
    app.clock.advance(30);
    let code = totp(secret, app.clock.now());
    let r = app
        .post("/auth/login/otp", json!({"mfa_token": mfa, "code": code}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn rotate_sealing_key(app: &TestApp) -> u32 {
    authgate::token::keys::rotate_seal_key(&app.config.store.path).unwrap()
}

/// A TOTP secret sealed and stored under the first sealing key opens after the sealing key
/// rotated (and the server restarted); one enrolled after the rotation is sealed with the new
/// key and opens after a further rotation too.
#[tokio::test]
async fn stored_totp_secrets_open_after_sealing_key_rotations() {
    let app = TestApp::start().await;
    let access = access_token(&app).await;
    let secret = enable_2fa(&app, &access).await;
    assert_eq!(rotate_sealing_key(&app), 1);
    let app = app.restart().await;
    let tokens = otp_login(&app, &secret).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.authz("/api", Some(&access)).await.status, 200);

    // Enroll again: now sealed with key 1; a second rotation must not lose it.
    app.clock.advance(30);
    let disabled = app
        .send(
            "POST",
            "/auth/2fa/disable",
            Some(json!({"code": totp(&secret, app.clock.now())})),
            Some(&access),
        )
        .await;
    assert_eq!(disabled.status, 204, "{}", disabled.body);
    let access = access_token(&app).await;
    let secret = enable_2fa(&app, &access).await;
    assert_eq!(rotate_sealing_key(&app), 2);
    let app = app.restart().await;
    otp_login(&app, &secret).await;
}
