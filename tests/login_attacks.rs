//! Holes an attack review found in the login flows (issue 11), each as the attack itself,
//! end to end against the in-process service with a manual clock: logins under nethcti's
//! aliases (extension number, `user@domain`, case) must not dodge 2FA or the lockout;
//! backends handing back unusable user names; logins racing a user-wide revocation;
//! concurrent guesses past the lockout limit; and a browser's harmless double refresh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use authgate::config::{BackendConfig, RemoteBackendConfig};
use serde_json::{Value, json};
use support::app::{TestApp, TestAppBuilder};
use support::logs::{log, log_text};
use support::nethcti_sim::NethctiSim;
use support::redis::RedisServer;
use support::totp::totp;

const HOUR: Duration = Duration::from_secs(3600);

fn security_events() -> Vec<Value> {
    log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "security")
        .collect()
}

/// The app every test here starts from: the loopback peer is a trusted proxy, so the last
/// `X-Forwarded-For` hop names the client and each attempt can come from its own address.
fn app_builder() -> TestAppBuilder {
    log();
    let loopback = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    TestApp::builder().config(|c| c.listen.trusted_proxies = loopback.to_vec())
}

/// An app on the nethcti backend at `sim`.
fn nethcti_app(sim: &NethctiSim) -> TestAppBuilder {
    app_builder().nethcti(&sim.url(), Duration::from_secs(5))
}

/// An app on the `http` backend kind, pointed at the simulator's `/plain/login`.
fn http_app(sim: &NethctiSim) -> TestAppBuilder {
    let url = format!("{}/plain/login", sim.url());
    app_builder().config(|c| {
        c.backend = BackendConfig::Http(RemoteBackendConfig {
            url,
            timeout: Duration::from_secs(5),
            ws_url: None,
            ca_file: None,
        })
    })
}

/// The store of a test that runs on both: embedded, or the Redis at `redis`.
fn on_store(app: TestAppBuilder, redis: Option<&RedisServer>) -> TestAppBuilder {
    match redis {
        Some(server) => app.redis(&server.url()),
        None => app,
    }
}

/// One HTTP call from client address `ip` (the loopback peer is a trusted proxy, so the last
/// `X-Forwarded-For` hop is the client): status and JSON body.
async fn post_from(
    http: &reqwest::Client,
    base: &str,
    ip: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .post(format!("{base}{path}"))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn login_from(app: &TestApp, ip: &str, user: &str, password: &str) -> (u16, Value) {
    post_from(
        &app.http,
        &app.base,
        ip,
        "/auth/login",
        json!({"username": user, "password": password}),
    )
    .await
}

fn str_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_owned()
}

/// Enrolls and confirms 2FA with `access`; returns the TOTP secret.
async fn enable_2fa(app: &TestApp, access: &str) -> String {
    let e = app
        .send("POST", "/auth/2fa/enroll", None, Some(access))
        .await;
    assert_eq!(e.status, 200, "{}", e.body);
    let secret = str_of(&e.body, "secret");
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
    secret
}

// ---------------------------------------------------------------------------------------
// A. Aliases: one account, one 2FA record, one lockout bucket, one `sub`.

#[tokio::test]
async fn alias_login_of_a_2fa_user_needs_the_second_factor_and_sub_is_canonical() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    sim.set_extension("alice", "201");
    let app = nethcti_app(&sim).start().await;

    // Logging in by extension number gives alice's session, under alice's name.
    let r = app.login("201", "secret").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access = str_of(&r.body, "access_token");
    let me = app.send("GET", "/auth/me", None, Some(&access)).await;
    assert_eq!(me.body["sub"], "alice", "{}", me.body);
    let allow = app.authz("/api", Some(&access)).await;
    assert_eq!(allow.status, 200);
    assert_eq!(allow.headers["x-auth-user"], "alice");
    // The legacy credential is one the server accepts (it keys grants on the login name).
    let credential = allow.headers["authorization"].to_str().unwrap().to_owned();
    let me = support::http_client()
        .get(format!("{}/user/me", sim.url()))
        .header("authorization", &credential)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // alice turns 2FA on (from the session opened by extension number) ...
    let secret = enable_2fa(&app, &access).await;
    // ... and no alias gets tokens without the second factor.
    for alias in ["alice", "201", "alice@example.org", "alice@nethvoice.local"] {
        let r = app.login(alias, "secret").await;
        assert_eq!(r.status, 200, "{alias}: {}", r.body);
        assert_eq!(r.body["mfa_required"], true, "{alias}: {}", r.body);
        assert!(r.body.get("access_token").is_none(), "{alias}");
    }
    // The second factor after an alias login opens a session of alice.
    let mfa = str_of(
        &app.login("alice@example.org", "secret").await.body,
        "mfa_token",
    );
    app.clock.advance(30);
    let code = totp(&secret, app.clock.now());
    let r = app
        .post("/auth/login/otp", json!({"mfa_token": mfa, "code": code}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access = str_of(&r.body, "access_token");
    let me = app.send("GET", "/auth/me", None, Some(&access)).await;
    assert_eq!(me.body["sub"], "alice");
    assert_eq!(me.body["amr"], json!(["pwd", "otp"]));
}

#[tokio::test]
async fn failures_under_aliases_share_one_lockout_bucket() {
    let sim = NethctiSim::start(&[("alice", "secret"), ("bob", "pw")], HOUR).await;
    sim.set_extension("alice", "201");
    let app = nethcti_app(&sim).start().await;
    // Five wrong passwords, each under another spelling and from another address (so the
    // per-address counter stays out of it).
    let spellings = [
        "alice",
        "ALICE",
        "alice@example.org",
        "Alice@Other.Domain",
        "aLiCe",
    ];
    for (i, name) in spellings.iter().enumerate() {
        let (status, _) = login_from(&app, &format!("198.51.100.{i}"), name, "wrong").await;
        assert_eq!(status, 401, "{name}");
    }
    // alice is locked out under every name, the extension number included, even with the
    // right password.
    for (i, name) in ["alice", "alice@example.org", "201"].iter().enumerate() {
        let (status, body) = login_from(&app, &format!("203.0.113.{i}"), name, "secret").await;
        assert_eq!(status, 429, "{name}: {body}");
    }
    // It is alice's counter, not the addresses': bob from one of them is let in.
    assert_eq!(login_from(&app, "198.51.100.0", "bob", "pw").await.0, 200);
    app.clock.advance(901);
    let (status, body) = login_from(&app, "203.0.113.50", "201", "secret").await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------------------
// B. User names a backend hands back are checked before anything is minted for them.

#[tokio::test]
async fn unusable_user_names_from_a_backend_are_refused() {
    let long = "x".repeat(300);
    let sim = NethctiSim::start(
        &[("ev\u{7f}il", "pw"), ("bad\u{1}name", "pw"), (&long, "pw")],
        HOUR,
    )
    .await;
    // The `http` backend accepts the name as typed.
    let app = http_app(&sim)
        .config(|c| c.lockout.max_failures = 50)
        .start()
        .await;
    let ok = app.login("nobody", "pw").await;
    let r = app.login("ev\u{7f}il", "pw").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body, ok.body);
    // nethcti: the canonical name comes from /user/me after an alias login.
    sim.set_extension("bad\u{1}name", "301");
    sim.set_extension(&long, "302");
    let app = nethcti_app(&sim)
        .config(|c| c.lockout.max_failures = 50)
        .start()
        .await;
    for ext in ["301", "302"] {
        let r = app.login(ext, "pw").await;
        assert_eq!(r.status, 401, "{ext}: {}", r.body);
        assert_eq!(r.body, ok.body);
    }
    let refused = security_events()
        .into_iter()
        .filter(|e| e["event"] == "login_failure" && e["reason"] == "invalid_username")
        .count();
    assert!(
        refused >= 3,
        "{refused} login_failure events with reason invalid_username"
    );
    let text = log_text();
    for raw in ["ev\u{7f}il", "bad\\u0001name", "bad\u{1}name"] {
        assert!(!text.contains(raw), "raw name {raw:?} logged");
    }
}

// ---------------------------------------------------------------------------------------
// C. Logins racing a user-wide revocation leave no password-only session behind.

/// Users of the race: each runs it once, so a window that only some rounds hit still shows.
const RACERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

async fn logins_racing_confirm_leave_no_password_only_session(redis: Option<&RedisServer>) {
    let users: Vec<(&str, &str)> = RACERS.iter().map(|u| (*u, "secret")).collect();
    let sim = NethctiSim::start(&users, HOUR).await;
    // Attempts in flight count towards the lockout limit: room for the whole burst.
    let app = on_store(http_app(&sim), redis)
        .config(|c| c.lockout.max_failures = 100)
        .start()
        .await;
    let (mut sessions, mut mfa) = (Vec::new(), 0);
    for (round, user) in RACERS.iter().enumerate() {
        let (s, m) = race_confirm(&app, user, round).await;
        sessions.extend(s);
        mfa += m;
    }
    assert!(
        mfa > 0,
        "no login came after a confirm; the race was not exercised"
    );
    let mut survivors = Vec::new();
    for (access, refresh) in &sessions {
        let check = app.authz("/api", Some(access)).await.status;
        let r = app
            .post("/auth/refresh", json!({"refresh_token": refresh}))
            .await
            .status;
        if check != 401 || r != 401 {
            survivors.push((check, r));
        }
    }
    assert!(
        survivors.is_empty(),
        "{} of {} password-only sessions survived 2FA being enabled: {survivors:?}",
        survivors.len(),
        sessions.len()
    );
}

/// One round for `user`: password-only sessions to revoke, then logins back to back on a few
/// connections from before `2fa/confirm` until after it has answered, so some fall into every
/// part of it. Returns the password-only sessions handed out and how many logins got
/// `mfa_required` instead.
async fn race_confirm(app: &TestApp, user: &str, round: usize) -> (Vec<(String, String)>, usize) {
    let access = str_of(&app.login(user, "secret").await.body, "access_token");
    let e = app
        .send("POST", "/auth/2fa/enroll", None, Some(&access))
        .await;
    let code = totp(&str_of(&e.body, "secret"), app.clock.now());
    // Revoking these takes the confirm a while: a window for the logins to slip through.
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let r = app.login(user, "secret").await;
        sessions.push((
            str_of(&r.body, "access_token"),
            str_of(&r.body, "refresh_token"),
        ));
    }
    const WORKERS: usize = 6;
    let confirmed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (http, base, confirmed) = (app.http.clone(), app.base.clone(), confirmed.clone());
        let body = json!({"username": user, "password": "secret"});
        let ip = format!("192.0.{round}.{}", w + 1);
        tasks.spawn(async move {
            let mut replies = Vec::new();
            let mut after = 0;
            while after < 3 {
                if confirmed.load(std::sync::atomic::Ordering::SeqCst) {
                    after += 1;
                }
                replies.push(post_from(&http, &base, &ip, "/auth/login", body.clone()).await);
            }
            replies
        });
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = app
        .send(
            "POST",
            "/auth/2fa/confirm",
            Some(json!({"code": code})),
            Some(&access),
        )
        .await;
    confirmed.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(c.status, 200, "{}", c.body);
    let mut mfa = 0;
    while let Some(r) = tasks.join_next().await {
        for (status, body) in r.unwrap() {
            assert_eq!(status, 200, "{body}");
            if body["mfa_required"] == true {
                mfa += 1;
            } else {
                sessions.push((
                    str_of(&body, "access_token"),
                    str_of(&body, "refresh_token"),
                ));
            }
        }
    }
    (sessions, mfa)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_racing_confirm_embedded() {
    logins_racing_confirm_leave_no_password_only_session(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_racing_confirm_redis() {
    let redis = RedisServer::start();
    logins_racing_confirm_leave_no_password_only_session(Some(&redis)).await;
}

// ---------------------------------------------------------------------------------------
// D. Concurrent guesses cannot overrun the lockout.

async fn concurrent_password_guesses_stop_at_the_limit(redis: Option<&RedisServer>) {
    let sim = NethctiSim::start(&[("alice", "secret"), ("bob", "pw")], HOUR).await;
    // Every backend answer takes a while, so the whole burst is in flight at once.
    sim.set_delay(Duration::from_millis(300));
    let app = on_store(nethcti_app(&sim), redis)
        .config(|c| c.lockout.max_failures = 5)
        .start()
        .await;
    const GUESSES: usize = 50;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..GUESSES {
        let (http, base) = (app.http.clone(), app.base.clone());
        // Each from its own address: this is about the per-user counter.
        let ip = format!("198.51.{}.{}", i / 200, i % 200 + 1);
        tasks.spawn(async move {
            let body = json!({"username": "alice", "password": format!("guess {i}")});
            post_from(&http, &base, &ip, "/auth/login", body).await.0
        });
    }
    // Once the limit's worth of guesses has reached the backend, the right password arrives.
    let started = std::time::Instant::now();
    while sim.login_attempts() < 5 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = login_from(&app, "203.0.113.7", "alice", "secret").await;
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.unwrap());
    }
    let reached = sim.login_attempts();
    assert!(
        reached <= 5,
        "{reached} of {GUESSES} concurrent guesses reached the backend"
    );
    assert_eq!(status, 429, "right password inside the burst: {body}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), reached);
    // It is alice's counter, not the addresses': bob from one of the burst's is let in.
    assert_eq!(login_from(&app, "198.51.0.1", "bob", "pw").await.0, 200);
    // The lock holds afterwards, and lifts after lock_for.
    assert_eq!(
        login_from(&app, "203.0.113.8", "alice", "secret").await.0,
        429
    );
    app.clock.advance(901);
    assert_eq!(
        login_from(&app, "203.0.113.9", "alice", "secret").await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_password_guesses_stop_at_the_limit_embedded() {
    concurrent_password_guesses_stop_at_the_limit(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_password_guesses_stop_at_the_limit_redis() {
    let redis = RedisServer::start();
    concurrent_password_guesses_stop_at_the_limit(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_otp_guesses_stop_at_the_limit() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let app = http_app(&sim)
        .config(|c| c.lockout.max_failures = 5)
        .start()
        .await;
    let access = str_of(&app.login("alice", "secret").await.body, "access_token");
    let secret = enable_2fa(&app, &access).await;
    app.clock.advance(30);
    let mfa = str_of(&app.login("alice", "secret").await.body, "mfa_token");
    let right = totp(&secret, app.clock.now());
    const GUESSES: usize = 50;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..GUESSES {
        let (http, base, mfa) = (app.http.clone(), app.base.clone(), mfa.clone());
        let ip = format!("198.51.{}.{}", i / 200, i % 200 + 1);
        let mut code = format!("{:06}", 100_000 + i * 7919 % 900_000);
        if code == right {
            code = "000000".into();
        }
        tasks.spawn(async move {
            let body = json!({"mfa_token": mfa, "code": code});
            post_from(&http, &base, &ip, "/auth/login/otp", body)
                .await
                .0
        });
    }
    let mut statuses = Vec::new();
    while let Some(s) = tasks.join_next().await {
        statuses.push(s.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 5,
        "{checked} of {GUESSES} concurrent codes were checked: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let (status, body) = post_from(
        &app.http,
        &app.base,
        "203.0.113.7",
        "/auth/login/otp",
        json!({"mfa_token": mfa, "code": right}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
}

// ---------------------------------------------------------------------------------------
// E. A double refresh inside the grace is harmless; reuse after it still revokes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_within_the_grace_get_the_same_pair() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let app = http_app(&sim).start().await;
    let refresh = str_of(&app.login("alice", "secret").await.body, "refresh_token");
    const REFRESHES: usize = 5;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REFRESHES {
        let (http, base, refresh) = (app.http.clone(), app.base.clone(), refresh.clone());
        tasks.spawn(async move {
            let body = json!({"refresh_token": refresh});
            post_from(&http, &base, "192.0.2.1", "/auth/refresh", body).await
        });
    }
    let mut pairs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (status, body) = r.unwrap();
        assert_eq!(status, 200, "{body}");
        pairs.push((
            str_of(&body, "access_token"),
            str_of(&body, "refresh_token"),
        ));
    }
    assert!(
        pairs.iter().all(|p| *p == pairs[0]),
        "different pairs handed out"
    );
    let (access2, refresh2) = pairs[0].clone();
    assert_eq!(app.authz("/api", Some(&access2)).await.status, 200);
    // Presented once more, later but inside the grace: the same pair again.
    app.clock.advance(9);
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(str_of(&r.body, "refresh_token"), refresh2);
    // The new refresh token goes on working.
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh2}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access3 = str_of(&r.body, "access_token");
    // The first token is no longer the one just rotated: presenting it now is reuse.
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(app.authz("/api", Some(&access3)).await.status, 401);
    // The sealed pair is never kept in plaintext, nor logged.
    assert!(!log_text().contains(&refresh2));
}

#[tokio::test]
async fn reuse_after_the_grace_revokes_the_session() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let app = http_app(&sim).start().await;
    let refresh = str_of(&app.login("alice", "secret").await.body, "refresh_token");
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 200);
    let access2 = str_of(&r.body, "access_token");
    let sid = app.send("GET", "/auth/me", None, Some(&access2)).await.body["sid"].clone();
    app.clock.advance(11);
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(app.authz("/api", Some(&access2)).await.status, 401);
    assert!(
        security_events()
            .iter()
            .any(|e| e["event"] == "refresh_reuse" && e["sid"] == sid),
        "no refresh_reuse for {sid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grace_a_double_refresh_is_reuse() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let app = http_app(&sim)
        .config(|c| c.tokens.refresh_reuse_grace = Duration::ZERO)
        .start()
        .await;
    let refresh = str_of(&app.login("alice", "secret").await.body, "refresh_token");
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 200);
    let access2 = str_of(&r.body, "access_token");
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(app.authz("/api", Some(&access2)).await.status, 401);
}

/// A session kept alive by refreshes outlives the refresh lifetime it was opened with; a
/// user-wide revocation must still find it.
#[tokio::test]
async fn a_long_refreshed_session_is_still_revoked_with_the_user() {
    let sim = NethctiSim::start(&[("alice", "secret")], HOUR).await;
    let app = http_app(&sim).start().await;
    let refresh = str_of(&app.login("alice", "secret").await.body, "refresh_token");
    app.clock.advance(20 * 86400);
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Past the first 30 days: the session lives on thanks to the refresh.
    app.clock.advance(15 * 86400);
    let r = app
        .post(
            "/auth/refresh",
            json!({"refresh_token": str_of(&r.body, "refresh_token")}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (access, refresh) = (
        str_of(&r.body, "access_token"),
        str_of(&r.body, "refresh_token"),
    );
    enable_2fa(&app, &access).await;
    assert_eq!(app.authz("/api", Some(&access)).await.status, 401);
    let r = app
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
}
