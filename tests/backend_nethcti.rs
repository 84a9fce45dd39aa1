//! The `nethcti` and `http` backend clients against the simulator: what a login turns into,
//! and how a wrong password, a server that is down, slow or broken, and a logout look to the
//! rest of authgate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use authgate::backend::http_post::HttpPostBackend;
use authgate::backend::nethcti::{NethctiBackend, legacy_token};
use authgate::backend::{BackendError, Verdict};
use secrecy::{ExposeSecret, SecretString};
use support::nethcti_sim::NethctiSim;

const HOUR: Duration = Duration::from_secs(3600);
const TIMEOUT: Duration = Duration::from_secs(5);

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

async fn sim() -> NethctiSim {
    NethctiSim::start(&[("alice", "secret"), ("zoë", "pä:ss word")], HOUR).await
}

fn backend(sim: &NethctiSim) -> NethctiBackend {
    NethctiBackend::new(&sim.url(), TIMEOUT).unwrap()
}

/// Logs in and returns the credential, failing the test on anything but Accepted.
async fn login(backend: &NethctiBackend, user: &str, password: &str) -> SecretString {
    login_as(backend, user, password).await.1
}

/// Logs in; the canonical user name and the credential.
async fn login_as(backend: &NethctiBackend, user: &str, password: &str) -> (String, SecretString) {
    match backend.authenticate(user, &secret(password)).await {
        Ok(Verdict::Accepted {
            user,
            credential: Some(c),
        }) => (user, c),
        Ok(Verdict::Accepted {
            credential: None, ..
        }) => panic!("accepted without credential"),
        Ok(Verdict::Rejected) => panic!("rejected"),
        Err(e) => panic!("error: {e}"),
    }
}

/// The error of a login that must fail (`Verdict` need not implement `Debug`).
fn login_error(result: Result<Verdict, BackendError>) -> BackendError {
    match result {
        Ok(Verdict::Accepted { .. }) => panic!("expected an error, got Accepted"),
        Ok(Verdict::Rejected) => panic!("expected an error, got Rejected"),
        Err(e) => e,
    }
}

/// What the simulator answers on `/user/me` for this credential, asked directly.
async fn sim_me_status(sim: &NethctiSim, credential: &SecretString) -> u16 {
    support::http_client_builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/user/me", sim.url()))
        .header("authorization", credential.expose_secret())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn crate_token_function_matches_spec_vector() {
    let token = legacy_token(
        "alice",
        &secret("secret"),
        "a4b888b2d096249ce5b5ad63413842d5df335f17",
    );
    assert_eq!(
        token.expose_secret(),
        "15372d36008c1fd11c4a362b373529f72bfeaca2"
    );
    // And agrees with the simulator, which has its own implementation.
    let nonce = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(
        legacy_token("zoë", &secret("pä:ss word"), nonce).expose_secret(),
        support::nethcti_sim::legacy_token("zoë", "pä:ss word", nonce)
    );
}

#[tokio::test]
async fn login_gives_a_credential_the_server_accepts() {
    let sim = sim().await;
    let backend = backend(&sim);
    let credential = login(&backend, "alice", "secret").await;

    let value = credential.expose_secret();
    let token = value
        .strip_prefix("alice:")
        .expect("credential is user:token");
    assert_eq!(token.len(), 40);
    assert!(
        token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );

    assert_eq!(sim_me_status(&sim, &credential).await, 200);
    assert!(backend.session_alive(&credential).await.unwrap());
    assert_eq!(sim.live_tokens(), 1);

    // What reached the server: one JSON login with the username and password as given.
    let log = sim.requests();
    let login = &log[0];
    assert_eq!(
        (login.method.as_str(), login.path.as_str()),
        ("POST", "/authentication/login")
    );
    assert!(
        login
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&login.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"username": "alice", "password": "secret"})
    );
}

#[tokio::test]
async fn aliases_give_the_canonical_name_and_a_credential_for_the_name_typed() {
    let sim = sim().await;
    sim.set_extension("alice", "201");
    let backend = backend(&sim);
    for alias in ["alice", "201", "alice@example.org"] {
        let (user, credential) = login_as(&backend, alias, "secret").await;
        assert_eq!(user, "alice", "{alias}");
        // The server keys the token on the login name: the credential carries that name.
        assert!(
            credential.expose_secret().starts_with(&format!("{alias}:")),
            "{alias}"
        );
        assert_eq!(sim_me_status(&sim, &credential).await, 200, "{alias}");
    }
    assert!(matches!(
        backend.authenticate("202", &secret("secret")).await,
        Ok(Verdict::Rejected)
    ));
}

#[tokio::test]
async fn a_login_whose_user_me_fails_is_unavailable_and_logged_out() {
    let sim = sim().await;
    let backend = backend(&sim);
    for broken in [
        Some(serde_json::json!({"name": "alice"})),
        Some(serde_json::json!({"username": 42})),
        None,
    ] {
        sim.set_me_answer(Some(match &broken {
            Some(body) => (200, body.to_string()),
            None => (500, String::new()),
        }));
        let err = login_error(backend.authenticate("alice", &secret("secret")).await);
        assert!(
            matches!(err, BackendError::Unavailable(_)),
            "{broken:?}: {err}"
        );
        // The legacy session the login opened is not left behind.
        assert_eq!(sim.live_tokens(), 0, "{broken:?}");
    }
    sim.set_me_answer(None);
    let (user, _) = login_as(&backend, "alice", "secret").await;
    assert_eq!(user, "alice");
}

#[tokio::test]
async fn non_ascii_user_and_password_with_colon_work() {
    let sim = sim().await;
    let backend = backend(&sim);
    let credential = login(&backend, "zoë", "pä:ss word").await;
    assert!(credential.expose_secret().starts_with("zoë:"));
    assert!(backend.session_alive(&credential).await.unwrap());
}

#[tokio::test]
async fn base_url_with_trailing_slash_or_path_prefix() {
    let sim = sim().await;
    let slash = NethctiBackend::new(&format!("{}/", sim.url()), TIMEOUT).unwrap();
    login(&slash, "alice", "secret").await;
    let prefixed = NethctiBackend::new(&format!("{}/webrest/", sim.url()), TIMEOUT).unwrap();
    // The simulator has no /webrest prefix (it answers 401 there); the path it saw is the point.
    let _ = prefixed.authenticate("alice", &secret("secret")).await;
    let paths: Vec<String> = sim.requests().into_iter().map(|r| r.path).collect();
    // The canonical name is asked for under the same base, right after the login.
    assert_eq!(
        paths,
        [
            "/authentication/login",
            "/user/me",
            "/webrest/authentication/login"
        ]
    );
}

#[tokio::test]
async fn wrong_password_or_unknown_user_is_rejected() {
    let sim = sim().await;
    let backend = backend(&sim);
    for (user, password) in [("alice", "wrong"), ("bob", "secret"), ("alice ", "secret")] {
        assert!(
            matches!(
                backend.authenticate(user, &secret(password)).await,
                Ok(Verdict::Rejected)
            ),
            "{user:?}"
        );
    }
    // Usernames go out exactly as given, trailing space included.
    let sent: Vec<String> = sim
        .requests()
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["username"].to_string()
        })
        .collect();
    assert_eq!(sent, [r#""alice""#, r#""bob""#, r#""alice ""#]);
    assert_eq!(sim.live_tokens(), 0);
}

#[tokio::test]
async fn usernames_that_would_break_the_header_never_reach_the_server() {
    let sim = sim().await;
    let backend = backend(&sim);
    for user in ["", "alice:x", ":", "alice\n", "al\u{0}ice", "a\u{7f}"] {
        assert!(
            matches!(
                backend.authenticate(user, &secret("secret")).await,
                Ok(Verdict::Rejected)
            ),
            "{user:?}"
        );
    }
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn server_not_ready_is_unavailable() {
    let sim = sim().await;
    sim.set_down(true);
    let err = login_error(backend(&sim).authenticate("alice", &secret("secret")).await);
    assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let sim = sim().await;
    let backend = backend(&sim);
    sim.stop().await;
    let err = login_error(backend.authenticate("alice", &secret("secret")).await);
    assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn slow_server_times_out_within_the_timeout() {
    let sim = sim().await;
    sim.set_delay(Duration::from_secs(3));
    let timeout = Duration::from_millis(300);
    let backend = NethctiBackend::new(&sim.url(), timeout).unwrap();
    let started = Instant::now();
    let err = login_error(backend.authenticate("alice", &secret("secret")).await);
    let elapsed = started.elapsed();
    assert!(matches!(err, BackendError::Timeout), "{err:?}");
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_millis(700),
        "{elapsed:?}"
    );

    // The session probe and logout are bounded the same way.
    let credential = secret("alice:0000000000000000000000000000000000000000");
    assert!(matches!(
        backend.session_alive(&credential).await,
        Err(BackendError::Timeout)
    ));
    assert!(matches!(
        backend.logout(&credential).await,
        Err(BackendError::Timeout)
    ));
}

#[tokio::test]
async fn malformed_challenges_are_unavailable_not_accepted() {
    let sim = sim().await;
    let backend = backend(&sim);
    let nonce = "a4b888b2d096249ce5b5ad63413842d5df335f17";
    for challenge in [
        "Digest".to_owned(),
        "Digest not-hex".to_owned(),
        format!("Digest {}", nonce.to_uppercase()),
        format!("Digest {nonce}00"),
        format!("Digest {}", &nonce[1..]),
        format!("Basic {nonce}"),
        format!("Digest {nonce} trailing"),
    ] {
        sim.set_login_challenge(Some(&challenge));
        let result = backend.authenticate("alice", &secret("secret")).await;
        match result {
            Err(BackendError::Unavailable(message)) => {
                assert!(!message.contains("secret"), "{message}");
            }
            other => panic!("{challenge:?} gave {:?}", other.map(|_| "a verdict")),
        }
    }
}

#[tokio::test]
async fn unexpected_statuses_are_unavailable() {
    let sim = sim().await;
    let backend = backend(&sim);
    for status in [200, 204, 302, 400, 403, 404, 500] {
        sim.set_forced_status(Some(status));
        assert!(
            matches!(
                backend.authenticate("alice", &secret("secret")).await,
                Err(BackendError::Unavailable(_))
            ),
            "{status}"
        );
    }
    sim.set_forced_status(Some(500));
    let credential = secret("alice:0000000000000000000000000000000000000000");
    assert!(matches!(
        backend.session_alive(&credential).await,
        Err(BackendError::Unavailable(_))
    ));
    assert!(matches!(
        backend.logout(&credential).await,
        Err(BackendError::Unavailable(_))
    ));
}

#[tokio::test]
async fn logout_kills_the_session() {
    let sim = sim().await;
    let backend = backend(&sim);
    let credential = login(&backend, "alice", "secret").await;
    let other = login(&backend, "alice", "secret").await;

    backend.logout(&credential).await.unwrap();
    assert_eq!(sim_me_status(&sim, &credential).await, 401);
    assert!(!backend.session_alive(&credential).await.unwrap());
    // The other session of the same user lives on.
    assert!(backend.session_alive(&other).await.unwrap());

    let logout = sim
        .requests()
        .into_iter()
        .find(|r| r.path == "/authentication/logout")
        .unwrap();
    assert_eq!(logout.method, "POST");
    assert_eq!(
        logout.header("authorization"),
        Some(credential.expose_secret())
    );

    // Logging out twice is not an error: the session is dead either way.
    backend.logout(&credential).await.unwrap();
}

#[tokio::test]
async fn session_alive_follows_server_side_expiry() {
    let sim = NethctiSim::start(&[("alice", "secret")], Duration::from_millis(300)).await;
    let backend = backend(&sim);
    let credential = login(&backend, "alice", "secret").await;
    sim.advance(Duration::from_millis(200));
    assert!(backend.session_alive(&credential).await.unwrap());
    sim.advance(Duration::from_millis(200));
    // The probe above slid the expiry.
    assert!(backend.session_alive(&credential).await.unwrap());
    sim.advance(Duration::from_millis(301));
    assert!(!backend.session_alive(&credential).await.unwrap());
}

#[tokio::test]
async fn credential_that_is_not_a_header_value_is_simply_dead() {
    let sim = sim().await;
    let backend = backend(&sim);
    let bogus = secret("alice:\nx");
    assert!(!backend.session_alive(&bogus).await.unwrap());
    backend.logout(&bogus).await.unwrap();
    assert!(sim.requests().is_empty());
}

#[test]
fn bad_configuration_is_an_error_not_a_panic() {
    for url in [
        "",
        "not a url",
        "ftp://127.0.0.1/",
        "http://user:pw@127.0.0.1/",
        "http://127.0.0.1/?a=b",
        "http://127.0.0.1/#frag",
    ] {
        assert!(
            matches!(
                NethctiBackend::new(url, TIMEOUT),
                Err(BackendError::Unavailable(_))
            ),
            "{url:?}"
        );
    }
    assert!(NethctiBackend::new("http://127.0.0.1:1", Duration::ZERO).is_err());
    assert!(HttpPostBackend::new("http://user:pw@127.0.0.1/", TIMEOUT).is_err());
    assert!(HttpPostBackend::new("http://127.0.0.1:1", Duration::ZERO).is_err());
}

#[tokio::test]
async fn http_backend_verdicts() {
    let sim = sim().await;
    let backend = HttpPostBackend::new(&format!("{}/plain/login", sim.url()), TIMEOUT).unwrap();
    assert!(matches!(
        backend.authenticate("alice", &secret("secret")).await,
        Ok(Verdict::Accepted { ref user, credential: None }) if user == "alice"
    ));
    assert!(matches!(
        backend.authenticate("alice", &secret("wrong")).await,
        Ok(Verdict::Rejected)
    ));
    let body: serde_json::Value = serde_json::from_str(&sim.requests()[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"username": "alice", "password": "secret"})
    );

    sim.set_forced_status(Some(403));
    assert!(matches!(
        backend.authenticate("alice", &secret("secret")).await,
        Ok(Verdict::Rejected)
    ));
    for status in [302, 400, 404, 500] {
        sim.set_forced_status(Some(status));
        assert!(
            matches!(
                backend.authenticate("alice", &secret("secret")).await,
                Err(BackendError::Unavailable(_))
            ),
            "{status}"
        );
    }
    sim.set_forced_status(None);
    sim.set_down(true);
    assert!(matches!(
        backend.authenticate("alice", &secret("secret")).await,
        Err(BackendError::Unavailable(_))
    ));
}

#[tokio::test]
async fn http_backend_timeout_and_connection_failure() {
    let sim = sim().await;
    sim.set_delay(Duration::from_secs(3));
    let url = format!("{}/plain/login", sim.url());
    let backend = HttpPostBackend::new(&url, Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    assert!(matches!(
        backend.authenticate("alice", &secret("secret")).await,
        Err(BackendError::Timeout)
    ));
    assert!(started.elapsed() < Duration::from_secs(1));

    sim.stop().await;
    assert!(matches!(
        backend.authenticate("alice", &secret("secret")).await,
        Err(BackendError::Unavailable(_))
    ));
}

#[tokio::test]
async fn errors_never_carry_the_password() {
    let password = "hunter2-very-secret";
    let sim = NethctiSim::start(&[("alice", password)], HOUR).await;
    let backend = backend(&sim);
    sim.set_forced_status(Some(500));
    let e1 = login_error(backend.authenticate("alice", &secret(password)).await);
    sim.set_forced_status(None);
    sim.set_login_challenge(Some("Digest zz"));
    let e2 = login_error(backend.authenticate("alice", &secret(password)).await);
    sim.stop().await;
    let e3 = login_error(backend.authenticate("alice", &secret(password)).await);
    for e in [e1, e2, e3] {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(password), "{shown}");
    }
    // Nor does the backend's Debug.
    assert!(!format!("{backend:?}").contains(password));
}
