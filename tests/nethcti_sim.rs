//! Tests of the nethcti-server simulator itself: if it drifted from SPEC 2.3, every backend
//! and proxy test built on it would pass against the wrong protocol.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use reqwest::StatusCode;
use support::nethcti_sim::{NethctiSim, legacy_token};

const VECTOR_NONCE: &str = "a4b888b2d096249ce5b5ad63413842d5df335f17";
const VECTOR_TOKEN: &str = "15372d36008c1fd11c4a362b373529f72bfeaca2";
const HOUR: Duration = Duration::from_secs(3600);

/// HMAC-SHA1 built by hand from RFC 2104 on top of a bare SHA-1, so the vector check does
/// not trust the HMAC code the simulator uses.
fn rfc2104_hmac_sha1_hex(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let sha1 = |data: &[u8]| digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        let hashed = sha1(key);
        k[..hashed.as_ref().len()].copy_from_slice(hashed.as_ref());
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(message);
    let inner_hash = sha1(&inner);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(inner_hash.as_ref());
    sha1(&outer)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn client() -> reqwest::Client {
    support::http_client_builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Logs in and returns the nonce from `WWW-Authenticate: Digest <nonce>`.
async fn login_nonce(sim: &NethctiSim, user: &str, password: &str) -> String {
    let resp = client()
        .post(format!("{}/authentication/login", sim.url()))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .expect("successful login carries WWW-Authenticate")
        .to_str()
        .unwrap();
    let nonce = challenge
        .strip_prefix("Digest ")
        .expect("challenge is `Digest <nonce>`");
    assert_eq!(nonce.len(), 40, "nonce {nonce:?}");
    assert!(
        nonce
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "nonce {nonce:?} is not lowercase hex"
    );
    nonce.to_owned()
}

/// Logs in and returns the full `Authorization` value `user:token`, computing the token with
/// the test's own HMAC.
async fn login(sim: &NethctiSim, user: &str, password: &str) -> String {
    let nonce = login_nonce(sim, user, password).await;
    let token = rfc2104_hmac_sha1_hex(
        password.as_bytes(),
        format!("{user}:{password}:{nonce}").as_bytes(),
    );
    format!("{user}:{token}")
}

async fn get_me(sim: &NethctiSim, credential: &str) -> reqwest::Response {
    client()
        .get(format!("{}/user/me", sim.url()))
        .header("authorization", credential)
        .send()
        .await
        .unwrap()
}

#[test]
fn spec_vector_from_simulator_function() {
    assert_eq!(legacy_token("alice", "secret", VECTOR_NONCE), VECTOR_TOKEN);
}

#[test]
fn spec_vector_from_independent_rfc2104_hmac() {
    let message = format!("alice:secret:{VECTOR_NONCE}");
    assert_eq!(
        rfc2104_hmac_sha1_hex(b"secret", message.as_bytes()),
        VECTOR_TOKEN
    );
    // The hand-made HMAC must also agree with RFC 2202 test case 2 and the long-key case 6,
    // or the check above would prove nothing.
    assert_eq!(
        rfc2104_hmac_sha1_hex(b"Jefe", b"what do ya want for nothing?"),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        rfc2104_hmac_sha1_hex(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        ),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
}

#[test]
fn spec_vector_from_python_when_available() {
    let script = "import hmac,hashlib,sys;\
                  print(hmac.new(b'secret', sys.argv[1].encode(), hashlib.sha1).hexdigest())";
    let output = match std::process::Command::new("python3")
        .args(["-c", script, &format!("alice:secret:{VECTOR_NONCE}")])
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("python3 not runnable ({e}); the RFC 2104 test covers the vector");
            return;
        }
    };
    assert!(output.status.success(), "python3 failed: {output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        VECTOR_TOKEN
    );
}

#[test]
fn simulator_agrees_with_independent_hmac_on_other_inputs() {
    for (user, password, nonce) in [
        (
            "bob",
            "pässwörd",
            "0000000000000000000000000000000000000000",
        ),
        ("x", "", "ffffffffffffffffffffffffffffffffffffffff"),
        ("carol", &"k".repeat(100), VECTOR_NONCE),
    ] {
        let message = format!("{user}:{password}:{nonce}");
        assert_eq!(
            legacy_token(user, password, nonce),
            rfc2104_hmac_sha1_hex(password.as_bytes(), message.as_bytes())
        );
    }
}

#[tokio::test]
async fn login_success_gives_a_working_token() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let credential = login(&sim, "alice", "secret").await;
    assert_eq!(sim.live_tokens(), 1);

    let resp = get_me(&sim, &credential).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let me: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(me["username"], "alice");
}

#[tokio::test]
async fn each_login_gets_a_fresh_nonce_and_its_own_session() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let a = login_nonce(&sim, "alice", "secret").await;
    let b = login_nonce(&sim, "alice", "secret").await;
    assert_ne!(a, b);
    assert_eq!(sim.live_tokens(), 2);
}

#[tokio::test]
async fn wrong_credentials_get_401_without_challenge() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    for (user, password) in [
        ("alice", "wrong"),
        ("mallory", "secret"),
        ("Alice", "secret"),
        ("alice ", "secret"),
    ] {
        let resp = client()
            .post(format!("{}/authentication/login", sim.url()))
            .json(&serde_json::json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{user:?}");
        assert!(resp.headers().get("www-authenticate").is_none(), "{user:?}");
    }
    assert_eq!(sim.live_tokens(), 0);
}

#[tokio::test]
async fn malformed_login_body_is_400() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    for body in [
        "",
        "{",
        r#"{"username":"alice"}"#,
        r#"{"username":1,"password":"x"}"#,
    ] {
        let resp = client()
            .post(format!("{}/authentication/login", sim.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body:?}");
    }
}

#[tokio::test]
async fn not_ready_answers_503_then_recovers() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    sim.set_down(true);
    let resp = client()
        .post(format!("{}/authentication/login", sim.url()))
        .json(&serde_json::json!({"username": "alice", "password": "secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("www-authenticate").is_none());
    assert_eq!(sim.live_tokens(), 0);

    sim.set_down(false);
    login(&sim, "alice", "secret").await;
    assert_eq!(sim.live_tokens(), 1);
}

#[tokio::test]
async fn idle_token_expires_and_use_slides_the_expiry() {
    let sim = NethctiSim::start(&[("alice", "secret")], Duration::from_millis(300)).await;
    let credential = login(&sim, "alice", "secret").await;

    // Used every 200 ms, the token outlives several idle timeouts.
    for _ in 0..4 {
        sim.advance(Duration::from_millis(200));
        assert_eq!(get_me(&sim, &credential).await.status(), StatusCode::OK);
    }
    // Left alone past the timeout, it dies.
    sim.advance(Duration::from_millis(301));
    assert_eq!(sim.live_tokens(), 0);
    assert_eq!(
        get_me(&sim, &credential).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logout_kills_the_token() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let credential = login(&sim, "alice", "secret").await;
    let other = login(&sim, "alice", "secret").await;
    let logout = || {
        client()
            .post(format!("{}/authentication/logout", sim.url()))
            .header("authorization", &credential)
            .send()
    };
    assert_eq!(logout().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get_me(&sim, &credential).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(logout().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // Only that session ended.
    assert_eq!(get_me(&sim, &other).await.status(), StatusCode::OK);
    assert_eq!(sim.live_tokens(), 1);
}

#[tokio::test]
async fn bad_authorization_values_are_401() {
    let sim = NethctiSim::start(&[("alice", "secret"), ("bob", "pw")], HOUR).await;
    let credential = login(&sim, "alice", "secret").await;
    let token = credential.strip_prefix("alice:").unwrap();
    for bad in [
        format!("bob:{token}"),
        format!("Bearer {credential}"),
        token.to_owned(),
        format!("alice:{}", token.to_uppercase()),
        "alice:".to_owned(),
    ] {
        assert_eq!(
            get_me(&sim, &bad).await.status(),
            StatusCode::UNAUTHORIZED,
            "{bad:?}"
        );
    }
    let resp = client()
        .get(format!("{}/user/me", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn other_paths_echo_with_a_live_token_and_refuse_without() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let credential = login(&sim, "alice", "secret").await;
    let resp = client()
        .put(format!("{}/astproxy/op/calls?x=1&y=2", sim.url()))
        .header("authorization", &credential)
        .header("x-extra", "one")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/astproxy/op/calls");
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(echo["headers"]["authorization"], credential.as_str());
    assert_eq!(echo["headers"]["x-extra"], "one");

    let resp = client()
        .get(format!("{}/astproxy/op/calls", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn request_log_records_what_arrived() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    client()
        .get(format!("{}/some/where?q=v", sim.url()))
        .header("x-auth-user", "spoofed")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .send()
        .await
        .unwrap();
    let log = sim.requests();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/some/where");
    assert_eq!(r.query.as_deref(), Some("q=v"));
    assert_eq!(r.header("X-Auth-User"), Some("spoofed"));
    assert_eq!(r.header_all("x-multi"), vec!["a", "b"]);
    assert_eq!(r.header("authorization"), None);

    sim.clear_requests();
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn delay_slows_every_answer() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    sim.set_delay(Duration::from_millis(250));
    let started = Instant::now();
    let resp = client()
        .get(format!("{}/user/me", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The request is logged on arrival, before the delay.
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn forced_status_and_broken_challenge_for_client_tests() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let post_login = || {
        client()
            .post(format!("{}/authentication/login", sim.url()))
            .json(&serde_json::json!({"username": "alice", "password": "secret"}))
            .send()
    };
    sim.set_forced_status(Some(500));
    assert_eq!(
        post_login().await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    sim.set_forced_status(None);

    sim.set_login_challenge(Some("Digest NOT-HEX"));
    let resp = post_login().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Digest NOT-HEX");
    assert_eq!(sim.live_tokens(), 0);
}

#[tokio::test]
async fn plain_login_for_the_http_backend_kind() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let post = |password: &'static str| {
        client()
            .post(format!("{}/plain/login", sim.url()))
            .json(&serde_json::json!({"username": "alice", "password": password}))
            .send()
    };
    assert_eq!(post("secret").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        post("nope").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    sim.set_down(true);
    assert_eq!(
        post("secret").await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn kill_sessions_of_ends_only_that_user() {
    let sim = NethctiSim::start(&[("alice", "secret"), ("bob", "pw")], HOUR).await;
    let alice = login(&sim, "alice", "secret").await;
    let bob = login(&sim, "bob", "pw").await;
    sim.kill_sessions_of("alice");
    assert_eq!(
        get_me(&sim, &alice).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get_me(&sim, &bob).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn stopping_the_simulator_closes_the_port() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let url = sim.url();
    sim.stop().await;
    let err = client()
        .get(format!("{url}/user/me"))
        .send()
        .await
        .expect_err("nothing listens any more");
    assert!(err.is_connect(), "{err:?}");
}
