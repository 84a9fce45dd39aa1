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

use support::client::{HttpResponse, request};
use support::js_client::JsClient;
use support::nethcti_socket::Backend;
use support::nethvoice::{ALICE, BOB, NvStack};
use support::proxy::ProxyKind;

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

/// authgate with the nethcti backend and its own login API (`/auth/login`), on the system
/// clock, behind `kind`.
async fn routing_stack(kind: ProxyKind) -> NvStack {
    let backend = Backend::start(&[ALICE, BOB]).await;
    let app = backend.app().clock(Clock::system()).start().await;
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

async fn routing(kind: ProxyKind) {
    let mut s = routing_stack(kind).await;
    let outcome = check_api_reaches_backend_stripped(&s).await;
    s.record(
        "/api/... reaches nethcti-server stripped, legacy credential",
        outcome,
    );
    let outcome = check_api_needs_a_token(&s).await;
    s.record("/api/... without a good token: authgate's 401", outcome);
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
