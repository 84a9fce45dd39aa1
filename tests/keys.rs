//! Key rotation as an operator meets it, in process with a manual clock (issue 11, item 7): a
//! leaked signing key after an ordinary rotation and after an emergency revocation, seen
//! through the check a proxy asks, and the sealing key rotated under TOTP enrollments that
//! are already stored. The finer signing-key rules are unit tests in `src/token/tests.rs`;
//! `rotate-keys --revoke-old` against a running binary is in `tests/cli.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use authgate::config::Algorithm;
use authgate::token::keys;
use serde_json::{Value, json};
use support::app::{ALICE_PASSWORD, TestApp};
use support::hostile::jwt_part;
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

/// `rotate-keys --sealing-key`, with the key file dated so that it seals from now on (a server
/// seals with a new key `rotation_grace` after its file arrived; the clock here is manual).
fn rotate_sealing_key(app: &TestApp) -> u32 {
    let path = &app.config.store.path;
    let id = keys::rotate_seal_key(path).unwrap();
    let file = keys::keys_dir(path).join(format!("seal-{id}.key"));
    let since = app.clock.now() - app.config.tokens.rotation_grace.as_secs();
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(since))
        .unwrap();
    id
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

/// What an attacker holding the private key of `kid` signs: `claims` with new times.
fn forge(app: &TestApp, kid: &str, claims: &Value, iat: u64, exp: u64) -> String {
    let file = keys::keys_dir(&app.config.store.path).join(format!("{kid}.json"));
    let key: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let private = key["private"].as_str().unwrap().as_bytes();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".to_owned());
    let mut claims = claims.clone();
    claims["iat"] = iat.into();
    claims["exp"] = exp.into();
    claims["jti"] = format!("forged{iat}").into();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(private).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn www_authenticate(reply: &support::app::Reply) -> String {
    reply
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A signing key leaks. After `rotate-keys` the attacker's fresh tokens are refused while the
/// users' tokens and a back-dated forgery (bounded by access_ttl) still pass; after
/// `rotate-keys --revoke-old` everything the key signed is refused and new logins work.
#[tokio::test]
async fn a_leaked_signing_key_after_rotation_and_after_revocation() {
    let app = TestApp::start().await;
    assert_eq!(app.config.tokens.algorithm, Algorithm::EdDSA);
    let access = access_token(&app).await;
    let kid = jwt_part(&access, 0)["kid"].as_str().unwrap().to_owned();
    let claims = jwt_part(&access, 1);
    let path = app.config.store.path.clone();

    app.clock.advance(60);
    let retired = app.clock.now();
    keys::rotate(&path, Algorithm::EdDSA, retired).unwrap();
    let app = app.restart().await;
    let grace = app.config.tokens.rotation_grace.as_secs() + app.config.tokens.leeway.as_secs();
    app.clock.advance(grace + 1);
    let now = app.clock.now();
    let fresh = forge(&app, &kid, &claims, now, now + 900);
    let r = app.authz("/api", Some(&fresh)).await;
    assert_eq!(r.status, 401);
    assert!(
        www_authenticate(&r).contains("signing key retired"),
        "{}",
        www_authenticate(&r)
    );
    let backdated = forge(&app, &kid, &claims, retired - 1, retired + 86_400);
    assert_eq!(app.authz("/api", Some(&backdated)).await.status, 200);
    assert_eq!(app.authz("/api", Some(&access)).await.status, 200);

    keys::rotate_and_revoke(&path, Algorithm::EdDSA, app.clock.now()).unwrap();
    let app = app.restart().await;
    for token in [&access, &backdated, &fresh] {
        let r = app.authz("/api", Some(token)).await;
        assert_eq!(r.status, 401);
        assert!(www_authenticate(&r).contains("unknown signing key"));
    }
    let new = access_token(&app).await;
    assert_eq!(app.authz("/api", Some(&new)).await.status, 200);
}
