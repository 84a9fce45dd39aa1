//! NethVoice CTI with authgate in place of nethcti-middleware, through the real Envoy and
//! nginx running exactly `deploy/nethvoice/envoy.yaml` and `deploy/nethvoice/nginx.conf`
//! (ports templated), in front of an in-process authgate and the nethcti simulator with its
//! socket.io server.
//!
//! - Routing (any authgate with the nethcti backend): `/api/...` is checked and reaches
//!   nethcti-server without `/api`, with the legacy credential and never the bearer token;
//!   `/api/static/` is public; `/api/authentication/` is closed however it is spelled;
//!   `/api/ws` is the socket.io relay as phone-island opens it; other paths go nowhere.
//! - The client's sequence (authgate from `deploy/nethvoice/authgate.toml`, the
//!   nethcti-middleware profile of SPEC 2.7): login, 2FA enrolment, login with 2FA, device
//!   tokens, disable, logout, each answer read field by field as the client reads it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use anyhow::{Context as _, ensure};
use authgate::clock::Clock;
use serde_json::{Value, json};

use support::app::TestApp;
use support::client::{HttpResponse, request};
use support::js_client::JsClient;
use support::nethcti_socket::Backend;
use support::nethvoice::{ALICE, BOB, NvStack, jwt_payload, rfc3339_unix, shipped_authgate_config};
use support::proxy::{ProxyKind, access_log_path, expect_access_log};

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

/// authgate with the nethcti backend and the nethcti-middleware profile (which also serves
/// `/api/ws/`), on the system clock, behind `kind`. Tokens come from its own login API
/// (`/auth/login`).
async fn routing_stack(kind: ProxyKind) -> NvStack {
    let backend = Backend::start(&[ALICE, BOB]).await;
    let app = backend
        .app()
        .clock(Clock::system())
        .config(|c| c.compat.nethcti_middleware = true)
        .start()
        .await;
    NvStack::start(kind, backend, app).await
}

/// An access token for `user`, from authgate directly (not through the proxy).
async fn access_token(s: &NvStack, (user, password): (&str, &str)) -> anyhow::Result<String> {
    let reply = s.app.login(user, password).await;
    ensure!(reply.status == 200, "login {user}: {}", reply.text);
    reply.body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("access_token")
}

/// `Authorization: alice:<40 hex>`: the legacy credential, nothing else.
fn expect_legacy_credential(
    what: &str,
    seen: &support::nethcti_sim::RecordedRequest,
    user: &str,
) -> anyhow::Result<()> {
    let auth = seen.header_all("authorization");
    ensure!(
        auth.len() == 1,
        "{what}: Authorization headers upstream: {auth:?}"
    );
    let (name, token) = auth[0].split_once(':').context("user:token")?;
    ensure!(
        name == user && token.len() == 40 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{what}: upstream Authorization {:?} is not {user}:<legacy token>",
        auth[0]
    );
    Ok(())
}

/// No JWT and no bearer scheme anywhere in what reached nethcti-server.
fn expect_no_jwt(
    what: &str,
    seen: &support::nethcti_sim::RecordedRequest,
    jwt: &str,
) -> anyhow::Result<()> {
    let signature = jwt.rsplit('.').next().unwrap_or(jwt);
    for (name, value) in &seen.headers {
        ensure!(
            !value.contains(signature) && !value.to_ascii_lowercase().contains("bearer"),
            "{what}: the client's token reached nethcti-server in {name}: {value}"
        );
    }
    ensure!(
        !seen.query.as_deref().unwrap_or("").contains(signature),
        "{what}: the token reached nethcti-server in the query {:?}",
        seen.query
    );
    Ok(())
}

/// A denial as authgate answers it: `status`, one `WWW-Authenticate: Bearer realm=...`, and
/// authgate's JSON body (not a proxy's error page), nothing upstream.
fn expect_authgate_denial(what: &str, resp: &HttpResponse, status: u16) -> anyhow::Result<()> {
    ensure!(
        resp.status == status,
        "{what}: expected {status}, got {}",
        resp.describe()
    );
    let challenges: Vec<&str> = resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.as_str())
        .collect();
    ensure!(
        challenges.len() == 1 && challenges[0].starts_with("Bearer realm=\""),
        "{what}: expected one Bearer challenge, got {challenges:?}"
    );
    let body = resp.json().with_context(|| what.to_owned())?;
    ensure!(
        body.get("error").is_some_and(Value::is_string)
            || body.get("code").is_some_and(Value::is_u64),
        "{what}: not authgate's error body: {body}"
    );
    Ok(())
}

async fn check_api_reaches_backend_stripped(s: &NvStack) -> anyhow::Result<()> {
    let jwt = access_token(s, ALICE).await?;
    let before = s.upstream_count();
    let resp = request(
        s.addr,
        "GET",
        "/api/user/me",
        &[
            ("Authorization", &format!("Bearer {jwt}")),
            ("X-Auth-User", "root"),
        ],
        None,
    )
    .await?;
    ensure!(resp.status == 200, "GET /api/user/me: {}", resp.describe());
    ensure!(
        resp.json()?["username"] == "alice",
        "nethcti-server's /user/me answer did not come back: {}",
        resp.describe()
    );
    let seen = s.expect_one_upstream("GET /api/user/me", before)?;
    ensure!(
        seen.method == "GET" && seen.path == "/user/me",
        "upstream got {} {}",
        seen.method,
        seen.path
    );
    expect_legacy_credential("GET /api/user/me", &seen, "alice")?;
    expect_no_jwt("GET /api/user/me", &seen, &jwt)?;
    ensure!(
        seen.header_all("x-auth-user") == ["alice"],
        "X-Auth-User upstream: {:?}",
        seen.header_all("x-auth-user")
    );

    // A token in the query is taken off before nethcti-server; the rest of the query stays.
    let before = s.upstream_count();
    let resp = s
        .send(
            "GET",
            &format!("/api/astproxy/extensions?access_token={jwt}&x=1"),
            None,
            None,
        )
        .await?;
    ensure!(resp.status == 200, "query token: {}", resp.describe());
    let seen = s.expect_one_upstream("query token", before)?;
    ensure!(
        seen.path == "/astproxy/extensions" && seen.query.as_deref() == Some("x=1"),
        "query token: upstream got {} ? {:?}",
        seen.path,
        seen.query
    );
    expect_legacy_credential("query token", &seen, "alice")?;
    expect_no_jwt("query token", &seen, &jwt)
}

async fn check_api_needs_a_token(s: &NvStack) -> anyhow::Result<()> {
    let reply = s.app.login(ALICE.0, ALICE.1).await;
    let refresh = reply.body["refresh_token"]
        .as_str()
        .context("refresh_token")?
        .to_owned();
    let before = s.upstream_count();
    for method in ["GET", "POST", "DELETE"] {
        let resp = s.send(method, "/api/user/me", None, None).await?;
        expect_authgate_denial(
            &format!("{method} /api/user/me without a token"),
            &resp,
            401,
        )?;
    }
    let resp = s.send("GET", "/api/user/me", Some("x.y.z"), None).await?;
    expect_authgate_denial("a bad token", &resp, 401)?;
    // A genuine token of the wrong kind: authgate's 403, its challenge and body intact.
    let resp = s.send("GET", "/api/user/me", Some(&refresh), None).await?;
    expect_authgate_denial("a refresh token", &resp, 403)?;
    ensure!(
        resp.header("www-authenticate")
            .is_some_and(|c| c.contains("insufficient_scope")),
        "a refresh token: {}",
        resp.describe()
    );
    // A forged legacy credential is no token either.
    let resp = request(
        s.addr,
        "GET",
        "/api/user/me",
        &[("Authorization", "alice:0123")],
        None,
    )
    .await?;
    expect_authgate_denial("a legacy credential from the client", &resp, 401)?;
    s.expect_nothing_upstream("requests without a good token", before)
}

/// nethcti-server's own refusal reaches the client as it is: the proxy does not take it for
/// a denial of the check.
async fn check_backend_refusal_passes(s: &NvStack) -> anyhow::Result<()> {
    let jwt = access_token(s, BOB).await?;
    let refusal = r#"{"message":"not allowed by nethcti-server"}"#;
    s.backend.sim.set_me_answer(Some((401, refusal.to_owned())));
    let before = s.upstream_count();
    let resp = s.send("GET", "/api/user/me", Some(&jwt), None).await;
    s.backend.sim.set_me_answer(None);
    let resp = resp?;
    ensure!(
        resp.status == 401 && resp.header("www-authenticate").is_none() && resp.text() == refusal,
        "nethcti-server's 401: {}",
        resp.describe()
    );
    let seen = s.expect_one_upstream("nethcti-server's 401", before)?;
    expect_legacy_credential("nethcti-server's 401", &seen, BOB.0)
}

async fn check_static_is_public(s: &NvStack) -> anyhow::Result<()> {
    let jwt = access_token(s, ALICE).await?;
    for (what, headers) in [
        ("no token", vec![]),
        (
            "a bearer token and a forged identity",
            vec![
                ("Authorization".to_owned(), format!("Bearer {jwt}")),
                ("X-Auth-User".to_owned(), "root".to_owned()),
                ("X-Auth-Session".to_owned(), "s-root".to_owned()),
            ],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let before = s.upstream_count();
        let resp = request(
            s.addr,
            "GET",
            "/api/static/img/logo.png?v=2",
            &headers,
            None,
        )
        .await?;
        // The simulator answers 401 to a request without its credential: what counts is
        // that the request got there, and how.
        ensure!(
            resp.status == 401 && resp.header("www-authenticate").is_none(),
            "/api/static/ with {what}: expected nethcti-server's own answer, got {}",
            resp.describe()
        );
        let seen = s.expect_one_upstream(&format!("/api/static/ with {what}"), before)?;
        ensure!(
            seen.path == "/static/img/logo.png" && seen.query.as_deref() == Some("v=2"),
            "/api/static/ with {what}: upstream got {} ? {:?}",
            seen.path,
            seen.query
        );
        for header in ["authorization", "x-auth-user", "x-auth-session"] {
            ensure!(
                seen.header(header).is_none(),
                "/api/static/ with {what}: {header} reached nethcti-server: {:?}",
                seen.header(header)
            );
        }
    }
    Ok(())
}

async fn check_backend_login_closed(s: &NvStack) -> anyhow::Result<()> {
    let jwt = access_token(s, ALICE).await?;
    let bearer = format!("Bearer {jwt}");
    let body = br#"{"username":"alice","password":"guess"}"#;
    let before = s.upstream_count();
    let mut failed = Vec::new();
    // 403 where the path is nethcti-server's login under /api/; a path outside /api/
    // (/authentication/...) is nobody's here: 404.
    let mut cases: Vec<(&str, u16)> = [
        "/api/authentication/login",
        "/api/authentication/logout",
        "/api/authentication",
        "/api/authentication/",
        "/api/Authentication/login",
        "/api/AUTHENTICATION/LOGIN",
        "/api/x/../authentication/login",
        "/api/static/../authentication/login",
        "/api/./authentication/login",
        "/api/static/%2e%2e/authentication/login",
        "/api//authentication//login",
        "//api/authentication/login",
        "/api/authentication%2Flogin",
        "/api%2Fauthentication/login",
        "/api/%61uthentication/login",
        "/%61pi/authentication/login",
        "/api/authentication/login?x=/api/user/me",
    ]
    .into_iter()
    .map(|p| (p, 403))
    .collect();
    cases.extend([
        ("/authentication/login", 404),
        ("/x/../authentication/login", 404),
    ]);
    for (path, expected) in cases {
        for auth in [None, Some(bearer.as_str())] {
            let mut headers = vec![("Content-Type", "application/json")];
            headers.extend(auth.map(|a| ("Authorization", a)));
            let resp = request(s.addr, "POST", path, &headers, Some(body)).await?;
            if resp.status != expected {
                failed.push(format!(
                    "POST {path} ({} token): expected {expected}, got {}",
                    if auth.is_some() { "with" } else { "no" },
                    resp.status
                ));
            }
        }
    }
    ensure!(failed.is_empty(), "{}", failed.join("\n    "));
    s.expect_nothing_upstream("nethcti-server's own login API", before)
}

async fn check_other_paths_go_nowhere(s: &NvStack) -> anyhow::Result<()> {
    let jwt = access_token(s, ALICE).await?;
    let before = s.upstream_count();
    for path in [
        "/",
        "/user/me",
        "/webrest/user/me",
        "/apix/user/me",
        "/api",
        "/static/x",
    ] {
        let resp = s.send("GET", path, Some(&jwt), None).await?;
        ensure!(
            resp.status == 404,
            "GET {path}: expected 404, got {}",
            resp.describe()
        );
    }
    s.expect_nothing_upstream("paths outside /api/", before)
}

/// The middleware API paths go to authgate, never to nethcti-server, whatever authgate
/// answers there.
async fn check_middleware_api_is_authgates(s: &NvStack) -> anyhow::Result<()> {
    let jwt = access_token(s, ALICE).await?;
    let before = s.upstream_count();
    for (method, path) in [
        ("POST", "/api/logout"),
        ("GET", "/api/2fa/status"),
        ("GET", "/api/2fa/qr-code"),
        ("POST", "/api/2fa/verify-otp"),
        ("POST", "/api/2fa/recovery-codes"),
        ("POST", "/api/2fa/disable"),
        ("GET", "/api/tokens/persistent/phone-island"),
    ] {
        // A body the profile would refuse (no code, no password): nothing changes.
        let resp = s.send(method, path, Some(&jwt), Some(&json!({}))).await?;
        ensure!(
            resp.status != 502 && resp.status != 503,
            "{method} {path}: {}",
            resp.describe()
        );
    }
    // Login last: with the profile off it is authgate's 404; with it on, a refused login.
    let resp = s
        .send(
            "POST",
            "/api/login",
            None,
            Some(&json!({"username": "alice", "password": "guess"})),
        )
        .await?;
    ensure!(
        resp.status != 502 && resp.status != 503,
        "POST /api/login: {}",
        resp.describe()
    );
    let reached: Vec<String> = s
        .upstream_since(before)
        .into_iter()
        .filter(|r| !r.path.starts_with("/authentication/") && r.path != "/user/me")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    ensure!(
        reached.is_empty(),
        "the middleware API was forwarded to nethcti-server: {reached:?}"
    );
    Ok(())
}

/// phone-island's socket: `io(url, {path: "/api/ws"})`, the JWT in the `login` event.
async fn check_phone_island_socket(s: &NvStack) -> anyhow::Result<()> {
    let jwt = access_token(s, ALICE).await?;
    for path in ["/api/ws", "/socket.io/"] {
        let mut js = JsClient::spawn_at(&s.url(), path, "alice", &jwt, None);
        js.expect_logged_in().await;
        let logged_in = s
            .backend
            .socket
            .wait_until(Duration::from_secs(2), |b| b.logged_in().len() == 1)
            .await;
        ensure!(
            logged_in,
            "{path}: the socket did not log in at nethcti-server"
        );
        let reached = s
            .backend
            .socket
            .push("extenUpdate", &json!({"exten": "201", "status": "busy"}));
        ensure!(reached == 1, "{path}: pushed to {reached} sockets");
        let event = js.expect_event("extenUpdate").await;
        ensure!(
            event["args"] == json!([{"exten": "201", "status": "busy"}]),
            "{path}: {event}"
        );
        drop(js);
        let closed = s
            .backend
            .socket
            .wait_until(Duration::from_secs(5), |b| {
                b.logged_in().is_empty() && b.open() == 0
            })
            .await;
        ensure!(closed, "{path}: the backend socket outlived the client");
    }
    let signature = jwt.rsplit('.').next().unwrap_or_default();
    ensure!(
        !s.backend.socket.saw(signature),
        "the JWT reached nethcti-server's socket.io"
    );
    // A bad token in the login event: refused as nethcti-server refuses, at /api/ws too.
    let mut js = JsClient::spawn_at(&s.url(), "/api/ws", "alice", "x.y.z", None);
    js.expect_refused().await;
    Ok(())
}

/// The access log says who was let in (user, session, amr from authgate's answer) and why a
/// request was refused, under the path the client asked for, and never holds a token.
async fn check_access_log(s: &NvStack) -> anyhow::Result<()> {
    let jwt = access_token(s, ALICE).await?;
    let claims = jwt_payload(&jwt);
    let sid = claims["sid"].as_str().context("sid")?;
    let run: String = sid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let allowed = format!("/api/astproxy/log-allowed-{run}");
    let resp = s
        .send("GET", &format!("{allowed}?access_token={jwt}"), None, None)
        .await?;
    ensure!(
        ![401, 403].contains(&resp.status),
        "allowed: {}",
        resp.describe()
    );
    let denied = format!("/api/astproxy/log-denied-{run}");
    let resp = s.send("GET", &denied, None, None).await?;
    ensure!(resp.status == 401, "no token: {}", resp.describe());

    let (kind, dir) = (s.kind, s.dir.path());
    let allowed_fields = [
        ("user", "alice"),
        ("session", sid),
        ("amr", "pwd"),
        ("reason", ""),
    ];
    expect_access_log(kind, dir, &allowed, &allowed_fields).await?;
    expect_access_log(kind, dir, &denied, &[("user", ""), ("reason", "no_token")]).await?;
    let text = std::fs::read_to_string(access_log_path(s.kind, s.dir.path()))?;
    ensure!(!text.contains(&jwt[..40]), "the access log holds the token");
    Ok(())
}

async fn routing(kind: ProxyKind) {
    let mut s = routing_stack(kind).await;
    let outcome = check_api_reaches_backend_stripped(&s).await;
    s.record(
        "/api/... reaches nethcti-server stripped, legacy credential",
        outcome,
    );
    let outcome = check_api_needs_a_token(&s).await;
    s.record("/api/... without a good token: authgate's 401", outcome);
    let outcome = check_backend_refusal_passes(&s).await;
    s.record("nethcti-server's own 401 passes as it is", outcome);
    let outcome = check_static_is_public(&s).await;
    s.record("/api/static/ public, credentials taken off", outcome);
    let outcome = check_backend_login_closed(&s).await;
    s.record("/api/authentication/ closed in every spelling", outcome);
    let outcome = check_other_paths_go_nowhere(&s).await;
    s.record("paths outside /api/: 404", outcome);
    let outcome = check_middleware_api_is_authgates(&s).await;
    s.record("the middleware API goes to authgate", outcome);
    let outcome = check_phone_island_socket(&s).await;
    s.record("phone-island's socket at /api/ws", outcome);
    let outcome = check_access_log(&s).await;
    s.record("the access log: who, why, no token", outcome);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_nethvoice() {
    routing(ProxyKind::EnvoyGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_routes_nethvoice() {
    routing(ProxyKind::Nginx).await;
}

// ---------------------------------------------------------------------------------------------
// The NethVoice client's sequence, nethcti-middleware profile (SPEC 2.7)
// ---------------------------------------------------------------------------------------------

const FOURTEEN_DAYS: i64 = 14 * 86_400;
const ONE_YEAR: i64 = 365 * 86_400;

/// authgate from `deploy/nethvoice/authgate.toml` (addresses and store moved, plus `env`
/// overrides), behind `kind`.
async fn profile_stack(kind: ProxyKind, env: &[(&str, &str)]) -> NvStack {
    let backend = Backend::start(&[ALICE, BOB]).await;
    let (sim, ws) = (backend.sim.url(), backend.socket.ws_url());
    let extra: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let app = TestApp::builder()
        .clock(Clock::system())
        .config(move |c| {
            *c = shipped_authgate_config(&sim, &ws, &c.store.path, extra)
                .unwrap_or_else(|e| panic!("{e:#}"));
        })
        .start()
        .await;
    NvStack::start(kind, backend, app).await
}

/// Unix seconds, from the clock the proxied authgate runs on.
fn now() -> i64 {
    i64::try_from(Clock::system().now()).unwrap()
}

fn int(v: &Value, what: &str) -> anyhow::Result<i64> {
    v.as_i64()
        .with_context(|| format!("{what} is not an integer: {v}"))
}

/// An error as the profile answers under `/api/`: `{"code":status,"message","data":null}`,
/// and on 401/403 exactly one `WWW-Authenticate: Bearer realm="nethcti"`.
fn expect_profile_error(
    what: &str,
    resp: &HttpResponse,
    status: u16,
    message: Option<&str>,
) -> anyhow::Result<()> {
    ensure!(
        resp.status == status,
        "{what}: expected {status}, got {}",
        resp.describe()
    );
    let body = resp.json().with_context(|| what.to_owned())?;
    ensure!(
        body["code"] == json!(status) && body["message"].is_string() && body["data"].is_null(),
        "{what}: not {{\"code\":{status},\"message\",\"data\":null}}: {body}"
    );
    ensure!(
        body.as_object().is_some_and(|o| o.contains_key("data")),
        "{what}: \"data\" is missing (the client expects null): {body}"
    );
    if let Some(m) = message {
        ensure!(
            body["message"] == m,
            "{what}: message {} is not {m:?}",
            body["message"]
        );
    }
    if matches!(status, 401 | 403) {
        let challenges: Vec<&str> = resp
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
            .map(|(_, v)| v.as_str())
            .collect();
        ensure!(
            challenges.len() == 1 && challenges[0].starts_with("Bearer realm=\"nethcti\""),
            "{what}: expected one Bearer realm=\"nethcti\" challenge, got {challenges:?}"
        );
    }
    Ok(())
}

/// The client's reading of a token: `id`, `2fa`, `otp_verified`, `exp`, `iat`, besides
/// authgate's own `sub` and `sid`.
fn expect_claims(
    what: &str,
    token: &str,
    user: &str,
    two_fa: bool,
    otp_verified: bool,
) -> anyhow::Result<Value> {
    let claims = jwt_payload(token);
    ensure!(
        claims["id"] == user && claims["sub"] == user,
        "{what}: id/sub are not {user:?}: {claims}"
    );
    ensure!(
        claims["2fa"] == json!(two_fa) && claims["otp_verified"] == json!(otp_verified),
        "{what}: expected 2fa {two_fa}, otp_verified {otp_verified}: {claims}"
    );
    ensure!(claims["sid"].is_string(), "{what}: no sid: {claims}");
    let (iat, exp) = (int(&claims["iat"], "iat")?, int(&claims["exp"], "exp")?);
    ensure!(
        (iat - now()).abs() <= 60 && exp > iat,
        "{what}: iat {iat} / exp {exp} against now {}",
        now()
    );
    Ok(claims)
}

/// `expire` (RFC 3339, or seconds) says the token's `exp`.
fn expect_expire(what: &str, expire: &Value, token: &str) -> anyhow::Result<()> {
    let exp = int(&jwt_payload(token)["exp"], "exp")?;
    let said = match expire {
        Value::String(s) => rfc3339_unix(s).with_context(|| format!("{what}: expire"))?,
        other => int(other, "expire")?,
    };
    ensure!(
        said == exp,
        "{what}: expire {expire} is not the token's exp {exp}"
    );
    Ok(())
}

/// `POST /api/login`: 200 `{"code":200,"expire","token"}`; the token.
async fn api_login(s: &NvStack, (user, password): (&str, &str)) -> anyhow::Result<String> {
    let resp = s
        .send(
            "POST",
            "/api/login",
            None,
            Some(&json!({"username": user, "password": password})),
        )
        .await?;
    ensure!(resp.status == 200, "POST /api/login: {}", resp.describe());
    let body = resp.json()?;
    ensure!(body["code"] == 200, "login: code: {body}");
    let token = body["token"].as_str().context("login: token")?.to_owned();
    expect_expire("login", &body["expire"], &token)?;
    Ok(token)
}

/// `POST /api/2fa/verify-otp`: 200 `{"code":200,"message":"OTP verified","data":{"token",
/// "expire"}}`; the new token.
async fn verify_otp(s: &NvStack, bearer: &str, user: &str, otp: &str) -> anyhow::Result<String> {
    let resp = s
        .send(
            "POST",
            "/api/2fa/verify-otp",
            Some(bearer),
            Some(&json!({"username": user, "otp": otp})),
        )
        .await?;
    ensure!(resp.status == 200, "verify-otp: {}", resp.describe());
    let body = resp.json()?;
    ensure!(
        body["code"] == 200 && body["message"] == "OTP verified",
        "verify-otp: {body}"
    );
    let token = body["data"]["token"]
        .as_str()
        .context("verify-otp: data.token")?
        .to_owned();
    expect_expire("verify-otp", &body["data"]["expire"], &token)?;
    expect_claims("the OTP-verified token", &token, user, true, true)?;
    Ok(token)
}

/// `GET /api/user/me` with `token` reaches nethcti-server as `/user/me` with the legacy
/// credential and without the token.
async fn expect_proxied(s: &NvStack, what: &str, token: &str, user: &str) -> anyhow::Result<()> {
    let before = s.upstream_count();
    let resp = s.send("GET", "/api/user/me", Some(token), None).await?;
    ensure!(
        resp.status == 200 && resp.json()?["username"] == user,
        "{what}: GET /api/user/me: {}",
        resp.describe()
    );
    let seen = s.expect_one_upstream(what, before)?;
    ensure!(
        seen.path == "/user/me",
        "{what}: upstream got {}",
        seen.path
    );
    expect_legacy_credential(what, &seen, user)?;
    expect_no_jwt(what, &seen, token)
}

/// `token` no longer opens anything: the profile's 401, nothing upstream.
async fn expect_dead(s: &NvStack, what: &str, token: &str) -> anyhow::Result<()> {
    let before = s.upstream_count();
    let resp = s.send("GET", "/api/user/me", Some(token), None).await?;
    expect_profile_error(what, &resp, 401, None)?;
    s.expect_nothing_upstream(what, before)
}

async fn two_fa_status(s: &NvStack, token: &str) -> anyhow::Result<bool> {
    let resp = s.send("GET", "/api/2fa/status", Some(token), None).await?;
    ensure!(
        resp.status == 200,
        "GET /api/2fa/status: {}",
        resp.describe()
    );
    resp.json()?["status"]
        .as_bool()
        .with_context(|| format!("2fa/status: {}", resp.text()))
}

/// `GET /api/2fa/qr-code`: the pending secret, as the client shows it.
async fn qr_code(s: &NvStack, token: &str, user: &str) -> anyhow::Result<String> {
    let resp = s.send("GET", "/api/2fa/qr-code", Some(token), None).await?;
    ensure!(
        resp.status == 200,
        "GET /api/2fa/qr-code: {}",
        resp.describe()
    );
    let body = resp.json()?;
    ensure!(
        body["code"] == 200 && body["message"] == "QR code string",
        "qr-code: {body}"
    );
    let key = body["data"]["key"].as_str().context("qr-code: data.key")?;
    let url = body["data"]["url"].as_str().context("qr-code: data.url")?;
    ensure!(
        key.len() >= 16
            && key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
        "qr-code: key {key:?} is not base32"
    );
    let (label, query) = url
        .strip_prefix("otpauth://totp/")
        .and_then(|rest| rest.split_once('?'))
        .with_context(|| format!("qr-code: url {url:?}"))?;
    ensure!(
        label == format!("NethVoice:{user}"),
        "qr-code: label {label:?}"
    );
    let mut params: Vec<&str> = query.split('&').collect();
    params.sort_unstable();
    let secret = format!("secret={key}");
    let mut want = vec!["algorithm=SHA1", "digits=6", "period=30", secret.as_str()];
    want.sort_unstable();
    ensure!(params == want, "qr-code: url parameters {params:?}");
    Ok(key.to_owned())
}

/// `POST /api/2fa/recovery-codes`: 10 distinct codes of 6 digits.
async fn recovery_codes(s: &NvStack, token: &str, password: &str) -> anyhow::Result<Vec<String>> {
    let resp = s
        .send(
            "POST",
            "/api/2fa/recovery-codes",
            Some(token),
            Some(&json!({"password": password})),
        )
        .await?;
    ensure!(resp.status == 200, "recovery-codes: {}", resp.describe());
    let codes: Vec<String> = resp.json()?["codes"]
        .as_array()
        .context("recovery-codes: codes")?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = codes.iter().collect();
    ensure!(
        codes.len() == 10
            && distinct.len() == 10
            && codes
                .iter()
                .all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())),
        "recovery-codes: {codes:?}"
    );
    Ok(codes)
}

/// `POST /api/tokens/persistent/{audience}`: the device token.
async fn device_token(s: &NvStack, bearer: &str, audience: &str) -> anyhow::Result<String> {
    let path = format!("/api/tokens/persistent/{audience}");
    let resp = s.send("POST", &path, Some(bearer), None).await?;
    ensure!(resp.status == 200, "POST {path}: {}", resp.describe());
    let token = resp.json()?["token"]
        .as_str()
        .with_context(|| format!("POST {path}: {}", resp.text()))?
        .to_owned();
    let claims = jwt_payload(&token);
    ensure!(
        claims["aud"] == audience || claims["aud"] == json!([audience]),
        "{path}: aud {}",
        claims["aud"]
    );
    let life = int(&claims["exp"], "exp")? - int(&claims["iat"], "iat")?;
    ensure!(
        (life - ONE_YEAR).abs() <= 60,
        "{path}: lives {life} s, not device_token_ttl (365 days)"
    );
    Ok(token)
}

async fn device_token_exists(s: &NvStack, bearer: &str, audience: &str) -> anyhow::Result<bool> {
    let path = format!("/api/tokens/persistent/{audience}");
    let resp = s.send("GET", &path, Some(bearer), None).await?;
    ensure!(resp.status == 200, "GET {path}: {}", resp.describe());
    resp.json()?["exists"]
        .as_bool()
        .with_context(|| format!("GET {path}: {}", resp.text()))
}

/// A TOTP code that is none of the codes of the steps around now.
fn wrong_code(key: &str) -> String {
    let t = u64::try_from(now()).unwrap();
    let near: Vec<String> = [t - 30, t, t + 30]
        .iter()
        .map(|&at| support::totp::totp(key, at))
        .collect();
    ["123456", "654321", "111111", "999999"]
        .iter()
        .find(|c| !near.iter().any(|n| n == *c))
        .unwrap()
        .to_string()
}

/// What the client does, from a first login to logout, each answer read as it reads it. The
/// shipped `deploy/nethvoice/authgate.toml`, untouched but for addresses.
async fn client_sequence(s: &NvStack) -> anyhow::Result<()> {
    let (user, password) = ALICE;
    let now_u64 = || u64::try_from(now()).unwrap();

    // Login without 2FA: a token for 14 days, good everywhere.
    let t1 = api_login(s, ALICE).await.context("first login")?;
    let claims = expect_claims("first login", &t1, user, false, false)?;
    let life = int(&claims["exp"], "exp")? - int(&claims["iat"], "iat")?;
    ensure!(
        (life - FOURTEEN_DAYS).abs() <= 60,
        "the login token lives {life} s, not token_ttl (14 days)"
    );
    expect_proxied(s, "first login's token", &t1, user).await?;
    let before = s.upstream_count();
    let resp = s.send("GET", "/api/user/me", None, None).await?;
    expect_profile_error("no token", &resp, 401, None)?;
    s.expect_nothing_upstream("no token", before)?;
    let other_session = api_login(s, ALICE).await.context("second login")?;

    // A device token: its own session, with the caller's legacy credential.
    let island = device_token(s, &t1, "phone-island").await?;
    ensure!(device_token_exists(s, &t1, "phone-island").await?);
    expect_proxied(s, "phone-island's device token", &island, user).await?;

    // Enrolment: status, the QR code (the same pending secret twice), verify-otp.
    ensure!(!two_fa_status(s, &t1).await?, "2FA on before enrolment");
    let key = qr_code(s, &t1, user).await?;
    ensure!(
        qr_code(s, &t1, user).await? == key,
        "a second qr-code call changed the pending secret"
    );
    let t2 = verify_otp(s, &t1, user, &support::totp::totp(&key, now_u64()))
        .await
        .context("verify-otp finishing the enrolment")?;
    // Enrolling ends every other session of the user, the caller's token and the device
    // token included.
    expect_dead(s, "the enrolling token after verify-otp", &t1).await?;
    expect_dead(s, "another session after the enrolment", &other_session).await?;
    expect_dead(s, "the device token after the enrolment", &island).await?;
    ensure!(two_fa_status(s, &t2).await?, "2FA off after enrolment");
    expect_proxied(s, "the OTP-verified token", &t2, user).await?;
    let codes = recovery_codes(s, &t2, password).await?;

    // Login with 2FA: a pre-OTP token, good only for verify-otp (and logout), 5 minutes.
    let pre = api_login(s, ALICE).await.context("login with 2FA")?;
    let claims = expect_claims("the pre-OTP token", &pre, user, true, false)?;
    let life = int(&claims["exp"], "exp")? - int(&claims["iat"], "iat")?;
    ensure!(
        life <= 300,
        "the pre-OTP token lives {life} s (more than 5 minutes)"
    );
    for (method, path) in [
        ("GET", "/api/user/me"),
        ("POST", "/api/astproxy/call"),
        ("GET", "/api/2fa/status"),
        ("POST", "/api/tokens/persistent/phone-island"),
    ] {
        let before = s.upstream_count();
        let resp = s.send(method, path, Some(&pre), None).await?;
        expect_profile_error(
            &format!("pre-OTP token at {method} {path}"),
            &resp,
            403,
            None,
        )?;
        s.expect_nothing_upstream("pre-OTP token", before)?;
    }
    let mut js = JsClient::spawn_at(&s.url(), "/api/ws", user, &pre, None);
    js.expect_refused().await;
    drop(js);
    let t3 = verify_otp(s, &pre, user, &codes[0])
        .await
        .context("verify-otp with a recovery code")?;
    expect_proxied(s, "the token after login with 2FA", &t3, user).await?;

    // Live events with it, at /api/ws as phone-island opens it.
    let mut js = JsClient::spawn_at(&s.url(), "/api/ws", user, &t3, None);
    js.expect_logged_in().await;
    ensure!(
        s.backend
            .socket
            .wait_until(Duration::from_secs(2), |b| b.logged_in() == ["alice"])
            .await,
        "the socket did not log in at nethcti-server"
    );
    ensure!(
        s.backend
            .socket
            .push("userPresenceUpdate", &json!({"alice": "busy"}))
            == 1
    );
    let event = js.expect_event("userPresenceUpdate").await;
    ensure!(event["args"] == json!([{"alice": "busy"}]), "{event}");
    drop(js);

    // Device tokens: create, exists, delete.
    let mobile = device_token(s, &t3, "mobile-app").await?;
    ensure!(device_token_exists(s, &t3, "mobile-app").await?);
    expect_proxied(s, "the mobile app's device token", &mobile, user).await?;
    let resp = s
        .send(
            "DELETE",
            "/api/tokens/persistent/mobile-app",
            Some(&t3),
            None,
        )
        .await?;
    ensure!(
        resp.status == 204,
        "DELETE persistent token: {}",
        resp.describe()
    );
    ensure!(!device_token_exists(s, &t3, "mobile-app").await?);
    expect_dead(s, "a deleted device token", &mobile).await?;

    // Disable: every session ends, the client must log in again, without 2FA now.
    let resp = s
        .send(
            "POST",
            "/api/2fa/disable",
            Some(&t3),
            Some(&json!({"password": password})),
        )
        .await?;
    ensure!(resp.status == 200, "2fa/disable: {}", resp.describe());
    let body = resp.json()?;
    ensure!(
        body["code"] == 200
            && body["message"].is_string()
            && body["data"] == json!({"must_relogin": true}),
        "2fa/disable: {body}"
    );
    expect_dead(s, "the token after 2fa/disable", &t3).await?;
    expect_dead(s, "the enrolment's token after 2fa/disable", &t2).await?;
    let t4 = api_login(s, ALICE).await.context("login after disable")?;
    expect_claims("login after disable", &t4, user, false, false)?;
    ensure!(!two_fa_status(s, &t4).await?, "2FA still on after disable");

    // Logout.
    let resp = s.send("POST", "/api/logout", Some(&t4), None).await?;
    ensure!(resp.status == 200, "logout: {}", resp.describe());
    ensure!(resp.json()?["code"] == 200, "logout: {}", resp.text());
    expect_dead(s, "the token after logout", &t4).await?;
    // The pre-OTP token names the session 2fa/disable ended: not even logout takes it.
    let resp = s.send("POST", "/api/logout", Some(&pre), None).await?;
    expect_profile_error(
        "logout with the pre-OTP token of an ended session",
        &resp,
        401,
        None,
    )
}

/// The profile's refusals as the client reads them (lockout raised: the point here is each
/// answer, not the lockout, which counts every one of them).
async fn client_errors(s: &NvStack) -> anyhow::Result<()> {
    let (user, password) = ALICE;
    for (what, body) in [
        (
            "wrong password",
            json!({"username": user, "password": "guess"}),
        ),
        (
            "unknown user",
            json!({"username": "nobody", "password": "guess"}),
        ),
    ] {
        let resp = s.send("POST", "/api/login", None, Some(&body)).await?;
        expect_profile_error(what, &resp, 401, Some("incorrect Username or Password"))?;
    }
    for (what, body) in [
        ("no password", json!({"username": user})),
        ("no username", json!({"password": password})),
        ("empty password", json!({"username": user, "password": ""})),
    ] {
        let resp = s.send("POST", "/api/login", None, Some(&body)).await?;
        expect_profile_error(what, &resp, 401, Some("missing Username or Password"))?;
    }

    let t1 = api_login(s, ALICE).await?;
    let resp = s
        .send("POST", "/api/tokens/persistent/desk-phone", Some(&t1), None)
        .await?;
    ensure!(resp.status == 400, "another audience: {}", resp.describe());
    ensure!(
        resp.json()?["message"] == "invalid audience",
        "another audience: {}",
        resp.text()
    );

    let key = qr_code(s, &t1, user).await?;
    let resp = s
        .send(
            "POST",
            "/api/2fa/verify-otp",
            Some(&t1),
            Some(&json!({"username": user, "otp": wrong_code(&key)})),
        )
        .await?;
    expect_profile_error("a wrong OTP", &resp, 400, Some("invalid_otp"))?;
    let now_u64 = u64::try_from(now()).unwrap();
    let t2 = verify_otp(s, &t1, user, &support::totp::totp(&key, now_u64)).await?;

    for path in ["/api/2fa/recovery-codes", "/api/2fa/disable"] {
        let resp = s
            .send("POST", path, Some(&t2), Some(&json!({"password": "guess"})))
            .await?;
        ensure!(
            resp.status == 401,
            "{path} with a wrong password: {}",
            resp.describe()
        );
    }
    ensure!(
        two_fa_status(s, &t2).await?,
        "a wrong password turned 2FA off"
    );
    let codes = recovery_codes(s, &t2, password).await?;

    // verify-otp is for the token's user: another name in the body is refused, even with a
    // code that is good for the token's user (the next step's, within the skew).
    let pre = api_login(s, ALICE).await?;
    let next = support::totp::totp(&key, now_u64 + 30);
    let resp = s
        .send(
            "POST",
            "/api/2fa/verify-otp",
            Some(&pre),
            Some(&json!({"username": "bob", "otp": next})),
        )
        .await?;
    ensure!(
        (400..500).contains(&resp.status)
            && resp.json().map_or(true, |b| b["data"]["token"].is_null()),
        "verify-otp naming another user: {}",
        resp.describe()
    );
    // A recovery code works once.
    verify_otp(s, &pre, user, &codes[0]).await?;
    let pre2 = api_login(s, ALICE).await?;
    let resp = s
        .send(
            "POST",
            "/api/2fa/verify-otp",
            Some(&pre2),
            Some(&json!({"username": user, "otp": codes[0]})),
        )
        .await?;
    expect_profile_error(
        "a recovery code used twice",
        &resp,
        400,
        Some("invalid_otp"),
    )?;
    verify_otp(s, &pre2, user, &codes[1]).await?;
    Ok(())
}

async fn profile(kind: ProxyKind) {
    let mut s = profile_stack(kind, &[]).await;
    let outcome = client_sequence(&s).await;
    s.record(
        "the client's sequence (deploy/nethvoice/authgate.toml)",
        outcome,
    );
    s.finish().await;
    let mut s = profile_stack(kind, &[("AUTHGATE_LOCKOUT__MAX_FAILURES", "100")]).await;
    let outcome = client_errors(&s).await;
    s.record("the profile's refusals", outcome);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_carries_the_nethvoice_client() {
    profile(ProxyKind::EnvoyGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_carries_the_nethvoice_client() {
    profile(ProxyKind::Nginx).await;
}

#[test]
fn rfc3339_reading() {
    assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z").unwrap(), 0);
    assert_eq!(rfc3339_unix("2000-02-29T12:00:00Z").unwrap(), 951_825_600);
    assert_eq!(rfc3339_unix("2027-01-15T08:00:00Z").unwrap(), 1_800_000_000);
    assert_eq!(
        rfc3339_unix("2027-01-15T09:00:00.250+01:00").unwrap(),
        1_800_000_000
    );
    assert!(rfc3339_unix("2027-01-15 08:00:00").is_err());
    assert!(rfc3339_unix("1800000000").is_err());
}
