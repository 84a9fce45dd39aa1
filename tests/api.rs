//! The whole service in-process on port 0 with a manual clock: login API, the check over
//! gRPC and HTTP (same decision for the same request), logout, health, drain and metrics.
//! HTTP requests go through the router in process (`TestApp::call`), except where the test is
//! about the listener itself; gRPC goes over the socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use authgate::config::Access;
use axum::body::Body;
use axum::http::Request;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::{Value, json};

mod support;
use support::app::{ALICE_PASSWORD, T0, TestApp, routes};
use support::hostile::{alg_none_token, jwt_part};

/// [`TestApp`] plus an ext_authz gRPC client.
struct ApiApp {
    app: TestApp,
    grpc: AuthorizationClient<tonic::transport::Channel>,
}

impl std::ops::Deref for ApiApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl ApiApp {
    /// The default [`TestApp`].
    async fn start() -> Self {
        Self::with(TestApp::start().await).await
    }

    async fn with(app: TestApp) -> Self {
        let grpc = AuthorizationClient::connect(format!("http://{}", app.grpc_addr()))
            .await
            .unwrap();
        Self { app, grpc }
    }

    async fn tokens(&self) -> Value {
        let reply = self.login("alice", ALICE_PASSWORD).await;
        assert_eq!(reply.status, 200);
        reply.body
    }

    /// The check over HTTP (Envoy HTTP style: original path under /authz).
    async fn authz(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/authz{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let reply = self.call(req.body(Body::empty()).unwrap()).await;
        let mut hs = HashMap::new();
        for (k, v) in &reply.headers {
            hs.insert(k.as_str().to_owned(), v.to_str().unwrap().to_owned());
        }
        Outcome::from_http(reply.status, hs, &reply.text)
    }

    /// The same check over gRPC, as Envoy sends it: in the `headers` map, or, when a header
    /// repeats, each field apart in the raw `header_map` (Envoy's `encode_raw_headers`).
    async fn check(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
        use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
        let repeats = headers
            .iter()
            .enumerate()
            .any(|(i, (k, _))| headers[..i].iter().any(|(j, _)| j == k));
        let (map, raw) = if repeats {
            let raw = headers.iter().map(|(k, v)| HeaderValue {
                key: (*k).to_owned(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            });
            (
                HashMap::new(),
                Some(HeaderMap {
                    headers: raw.collect(),
                }),
            )
        } else {
            let map = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
            (map.collect(), None)
        };
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        method: method.into(),
                        path: path.into(),
                        headers: map,
                        header_map: raw,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let resp = self.grpc.clone().check(req).await.unwrap().into_inner();
        Outcome::from_grpc(resp)
    }

    /// Both transports, asserting they agree.
    async fn both(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
        let h = self.authz(method, path, headers).await;
        let g = self.check(method, path, headers).await;
        assert_eq!(h, g, "gRPC and HTTP disagree on {method} {path}");
        h
    }
}

/// A decision as the client or upstream would see it, transport-independent.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: u16,
    www_authenticate: Option<String>,
    error: Option<String>,
    /// The denial's JSON body (Null on allow).
    body: Value,
    set: Vec<(String, String)>,
    remove: Vec<String>,
    remove_query: Vec<String>,
}

impl Outcome {
    fn from_http(status: u16, mut h: HashMap<String, String>, body: &str) -> Self {
        let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let error = body["error"].as_str().map(str::to_owned);
        let mut set: Vec<(String, String)> = ["x-auth-user", "x-auth-session", "authorization"]
            .iter()
            .filter_map(|k| h.remove(*k).map(|v| ((*k).to_owned(), v)))
            .collect();
        set.sort();
        let remove = h
            .remove("x-envoy-auth-headers-to-remove")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default();
        Self {
            status,
            www_authenticate: h.remove("www-authenticate"),
            error,
            body,
            set,
            remove,
            // HTTP ext_authz cannot edit the upstream query; compared separately.
            remove_query: Vec::new(),
        }
    }

    fn from_grpc(resp: envoy_types::ext_authz::v3::pb::CheckResponse) -> Self {
        match resp.http_response.unwrap() {
            HttpResponse::OkResponse(ok) => {
                assert_eq!(resp.status.unwrap().code, 0);
                let mut set: Vec<(String, String)> = ok
                    .headers
                    .into_iter()
                    .map(|h| {
                        let h = h.header.unwrap();
                        (h.key, h.value)
                    })
                    .collect();
                set.sort();
                Self {
                    status: 200,
                    www_authenticate: None,
                    error: None,
                    body: Value::Null,
                    set,
                    remove: ok.headers_to_remove,
                    remove_query: Vec::new(),
                }
            }
            HttpResponse::DeniedResponse(d) => {
                assert_ne!(resp.status.unwrap().code, 0);
                let www = d
                    .headers
                    .iter()
                    .filter_map(|h| h.header.as_ref())
                    .find(|h| h.key == "www-authenticate")
                    .map(|h| h.value.clone());
                let body: Value = serde_json::from_str(&d.body).unwrap_or(Value::Null);
                let error = body["error"].as_str().map(str::to_owned);
                Self {
                    status: d.status.unwrap().code as u16,
                    www_authenticate: www,
                    error,
                    body,
                    set: Vec::new(),
                    remove: Vec::new(),
                    remove_query: Vec::new(),
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn login_returns_rfc6749_tokens() {
    let app = ApiApp::start().await;
    let resp = app.login("alice", ALICE_PASSWORD).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["cache-control"], "no-store");
    let body = resp.body;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["refresh_expires_in"], 30 * 86400);
    let access = body["access_token"].as_str().unwrap();
    let header = jwt_part(access, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    let claims = jwt_part(access, 1);
    for claim in ["iss", "aud", "sub", "iat", "exp", "jti", "sid", "amr"] {
        assert!(!claims[claim].is_null(), "missing {claim}");
    }
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["exp"], T0 + 900);
    // The key that signed it is published.
    let jwks = app
        .send("GET", "/.well-known/jwks.json", None, None)
        .await
        .body;
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
}

#[tokio::test]
async fn wrong_user_and_wrong_password_look_the_same() {
    let app = ApiApp::start().await;
    let a = app.login("alice", "nope").await;
    let (sa, ba) = (a.status, a.body);
    let b = app.login("mallory", "nope").await;
    let (sb, bb) = (b.status, b.body);
    assert_eq!(sa, 401);
    assert_eq!((sa, &ba), (sb, &bb));
}

#[tokio::test]
async fn bad_login_input_is_a_clear_400_or_413() {
    let app = ApiApp::start().await;
    let cases: Vec<(Option<&str>, String, u16)> = vec![
        (None, r#"{"username":"alice","password":"x"}"#.into(), 400),
        (
            Some("text/plain"),
            r#"{"username":"alice","password":"x"}"#.into(),
            400,
        ),
        (Some("application/json"), "{not json".into(), 400),
        (
            Some("application/json"),
            r#"{"username":1,"password":"x"}"#.into(),
            400,
        ),
        (
            Some("application/json"),
            r#"{"username":"alice"}"#.into(),
            400,
        ),
        (
            Some("application/json"),
            r#"{"username":"","password":""}"#.into(),
            400,
        ),
        (Some("application/json"), r#"[]"#.into(), 400),
        (
            Some("application/json"),
            format!(
                r#"{{"username":"{}","password":"x"}}"#,
                "a".repeat(64 * 1024)
            ),
            413,
        ),
    ];
    for (ct, body, want) in cases {
        let mut req = Request::post("/auth/login");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let resp = app.call(req.body(Body::from(body.clone())).unwrap()).await;
        assert_eq!(resp.status, want, "{ct:?} {}", &body[..body.len().min(60)]);
        let v = resp.body;
        assert!(v["error"].is_string() && v["error_description"].is_string());
    }
}

#[tokio::test]
async fn grpc_and_http_deny_in_the_nethcti_dialect_under_the_profiles_prefix() {
    let app = ApiApp::with(
        TestApp::builder()
            .config(|c| c.compat.nethcti_middleware = true)
            .start()
            .await,
    )
    .await;
    let t = app.tokens().await;
    let refresh = format!("Bearer {}", t["refresh_token"].as_str().unwrap());
    for (path, headers, status) in [
        ("/api/user/me", vec![], 401),
        ("/api/user/me", vec![("authorization", "Bearer x.y.z")], 401),
        (
            "/api/user/me",
            vec![("authorization", refresh.as_str())],
            403,
        ),
        ("/api/authentication/login", vec![], 403),
    ] {
        let o = app.both("GET", path, &headers).await;
        assert_eq!(o.status, status, "{path}");
        let body = &o.body;
        assert_eq!(body["code"], status, "{path}: {body}");
        assert!(body["message"].is_string(), "{path}: {body}");
        assert_eq!(body["data"], Value::Null, "{path}: {body}");
        if status == 401 {
            let challenge = o.www_authenticate.unwrap();
            assert!(
                challenge.starts_with(r#"Bearer realm="nethcti""#),
                "{challenge}"
            );
        }
    }
    // Outside the prefix, authgate's own shape on both.
    let o = app.both("GET", "/other", &[]).await;
    assert_eq!(o.body["error"], "unauthorized");
    assert_eq!(o.body.get("code"), None);
}

#[tokio::test]
async fn grpc_and_http_agree_on_every_case() {
    let app = ApiApp::with(
        TestApp::builder()
            .config(|c| {
                c.policy.routes = routes(&[
                    ("/admin", Access::Mfa),
                    ("/auth/", Access::Public),
                    ("/", Access::Token),
                ])
            })
            .start()
            .await,
    )
    .await;
    let t = app.tokens().await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    let bearer = |tok: &str| format!("Bearer {tok}");
    let none_alg = alg_none_token(
        &json!({"iss":"authgate","aud":"authgate","sub":"alice","iat":T0,"exp":T0+900,"jti":"j","sid":"s","amr":["pwd"]}),
    );

    // No token.
    let o = app.both("GET", "/api/x", &[]).await;
    assert_eq!(o.status, 401);
    assert_eq!(
        o.www_authenticate.as_deref(),
        Some(r#"Bearer realm="authgate""#)
    );
    // Spoofed identity without token.
    let o = app.both("GET", "/api/x", &[("x-auth-user", "alice")]).await;
    assert_eq!(o.status, 401);
    // Garbage, alg none, oversized.
    let big = "A".repeat(9000);
    for tok in ["garbage", none_alg.as_str(), "a.b.c", big.as_str()] {
        let o = app
            .both("GET", "/api/x", &[("authorization", &bearer(tok))])
            .await;
        assert_eq!(o.status, 401, "{}", &tok[..tok.len().min(40)]);
        let www = o.www_authenticate.unwrap();
        assert!(
            www.contains(r#"error="invalid_token""#) || www.contains(r#"error="invalid_request""#),
            "{www}"
        );
        assert!(o.error.is_some());
    }
    // Two Authorization fields, the first one good: malformed on both transports, on a
    // protected and on a public route alike.
    for path in ["/api/x", "/auth/login"] {
        let twice = [
            ("authorization", bearer(&access)),
            ("authorization", bearer("x.y.z")),
        ];
        let twice: Vec<(&str, &str)> = twice.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let o = app.both("GET", path, &twice).await;
        assert_eq!(o.status, 401, "{path}");
        assert!(
            o.www_authenticate
                .unwrap()
                .contains(r#"error="invalid_request""#)
        );
    }
    // Refresh token as access token.
    let o = app
        .both("GET", "/api/x", &[("authorization", &bearer(&refresh))])
        .await;
    assert_eq!(o.status, 403);
    assert!(
        o.www_authenticate
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );
    // Valid token: identity set, bearer removed, client copies replaced.
    let o = app
        .both(
            "GET",
            "/api/x",
            &[
                ("authorization", &bearer(&access)),
                ("x-auth-user", "mallory"),
            ],
        )
        .await;
    assert_eq!(o.status, 200);
    assert!(
        o.set.contains(&("x-auth-user".into(), "alice".into())),
        "{o:?}"
    );
    assert!(
        o.set
            .iter()
            .any(|(k, v)| k == "x-auth-session" && !v.is_empty())
    );
    assert_eq!(o.remove, vec!["authorization".to_owned()]);
    // MFA route with a password-only token.
    let o = app
        .both(
            "GET",
            "/admin/users",
            &[("authorization", &bearer(&access))],
        )
        .await;
    assert_eq!(o.status, 403);
    // Path tricks stay protected.
    for p in [
        "/auth/../admin",
        "/auth/%2e%2e/api",
        "/auth/..%2Fapi",
        "/api?x=/auth/login",
        "//auth/../api",
    ] {
        assert_eq!(app.both("GET", p, &[]).await.status, 401, "{p}");
    }
    // Public route passes without a token and strips identity headers.
    let o = app
        .both("POST", "/auth/login", &[("x-auth-user", "mallory")])
        .await;
    assert_eq!(o.status, 200);
    assert!(o.set.is_empty());
    assert_eq!(
        o.remove,
        vec!["x-auth-user".to_owned(), "x-auth-session".to_owned()]
    );
    // Expiry follows the clock, cached or not.
    app.clock.advance(900 + 31);
    let o = app
        .both("GET", "/api/x", &[("authorization", &bearer(&access))])
        .await;
    assert_eq!(o.status, 401);
    assert!(o.www_authenticate.unwrap().contains("token expired"));
}

#[tokio::test]
async fn query_token_is_accepted_and_stripped_over_grpc() {
    let app = ApiApp::start().await;
    let t = app.tokens().await;
    let access = t["access_token"].as_str().unwrap();
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: format!("/events?a=1&access_token={access}&b=2"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let resp = app.grpc.clone().check(req).await.unwrap().into_inner();
    let Some(HttpResponse::OkResponse(ok)) = resp.http_response else {
        panic!("not allowed: {resp:?}");
    };
    assert_eq!(
        ok.query_parameters_to_remove,
        vec!["access_token".to_owned()]
    );
}

/// Envoy with `encode_raw_headers` sends headers in `header_map` (name case as received,
/// values possibly in `raw_value`) instead of the `headers` map; the check reads either.
#[tokio::test]
async fn raw_header_map_is_read_over_grpc() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let app = ApiApp::start().await;
    let t = app.tokens().await;
    let access = t["access_token"].as_str().unwrap();
    let check = |value: Vec<u8>| CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/api".into(),
                    header_map: Some(HeaderMap {
                        headers: vec![HeaderValue {
                            key: "Authorization".into(),
                            raw_value: value,
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let allowed = |resp: envoy_types::ext_authz::v3::pb::CheckResponse| {
        matches!(resp.http_response, Some(HttpResponse::OkResponse(_)))
    };
    let good = check(format!("Bearer {access}").into_bytes());
    let resp = app.grpc.clone().check(good).await.unwrap().into_inner();
    assert!(allowed(resp));
    let forged = check(format!("Bearer {access}x").into_bytes());
    let resp = app.grpc.clone().check(forged).await.unwrap().into_inner();
    assert!(!allowed(resp));
}

/// A call without `attributes.request.http` is a broken proxy setup, not a client to deny:
/// INVALID_ARGUMENT, which Envoy turns into its failure mode (closed in the shipped configs).
#[tokio::test]
async fn a_check_without_http_attributes_is_an_invalid_argument() {
    let app = ApiApp::start().await;
    let err = app
        .grpc
        .clone()
        .check(CheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn logout_revokes_the_session_on_every_path_at_once() {
    let app = ApiApp::start().await;
    let t = app.tokens().await;
    let access = t["access_token"].as_str().unwrap();
    let auth = format!("Bearer {access}");
    assert_eq!(
        app.both("GET", "/api", &[("authorization", &auth)])
            .await
            .status,
        200
    );
    let me = app.send("GET", "/auth/me", None, Some(access)).await.body;
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["amr"], json!(["pwd"]));
    let logout = app.send("POST", "/auth/logout", None, Some(access)).await;
    assert_eq!(logout.status, 204);
    let o = app.both("GET", "/api", &[("authorization", &auth)]).await;
    assert_eq!(o.status, 401);
    assert!(o.www_authenticate.unwrap().contains("token revoked"));
    let me = app.send("GET", "/auth/me", None, Some(access)).await;
    assert_eq!(me.status, 401);
}

#[tokio::test]
async fn api_routes_refuse_wrong_token_kinds() {
    let app = ApiApp::start().await;
    let t = app.tokens().await;
    let refresh = t["refresh_token"].as_str().unwrap();
    let resp = app.send("GET", "/auth/me", None, Some(refresh)).await;
    assert_eq!(resp.status, 403);
    let resp = app.send("GET", "/auth/me", None, None).await;
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.headers["www-authenticate"],
        r#"Bearer realm="authgate""#
    );
}

#[tokio::test]
async fn health_readiness_and_drain() {
    let app = ApiApp::start().await;
    let get = |p: &'static str| {
        let app = &app;
        async move { app.send("GET", p, None, None).await.status }
    };
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/readyz").await, 200);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = |s: &str| tonic_health::pb::HealthCheckRequest { service: s.into() };
    let status = |r: tonic_health::pb::HealthCheckResponse| r.status;
    let up = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let down = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(
        status(health.check(serving("")).await.unwrap().into_inner()),
        up
    );
    assert_eq!(
        status(
            health
                .check(serving("envoy.service.auth.v3.Authorization"))
                .await
                .unwrap()
                .into_inner()
        ),
        up
    );
    app.running().set_draining().await;
    assert_eq!(get("/readyz").await, 503);
    assert_eq!(
        status(health.check(serving("")).await.unwrap().into_inner()),
        down
    );
    // Still answering checks while draining.
    assert_eq!(app.both("GET", "/api", &[]).await.status, 401);
}

#[tokio::test]
async fn shutdown_finishes_and_frees_the_ports() {
    let mut app = ApiApp::start().await;
    let running = app.app.running.take().unwrap();
    let addr = running.http_addr.tcp().unwrap();
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn metrics_count_decisions_by_transport() {
    let app = ApiApp::start().await;
    app.both("GET", "/api", &[]).await;
    let text = app.send("GET", "/metrics", None, None).await.text;
    assert!(
        text.contains(r#"authgate_checks_total{transport="grpc",outcome="no_token"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"authgate_checks_total{transport="http",outcome="no_token"} 1"#),
        "{text}"
    );
    assert!(text.contains("authgate_check_duration_seconds_count"));
}

#[tokio::test]
async fn original_uri_is_believed_only_from_the_nginx_form() {
    let app = ApiApp::start().await;
    let ask = |path: &'static str| {
        let req = Request::get(path)
            .header("x-original-uri", "/auth/login")
            .header("x-original-method", "POST")
            .body(Body::empty())
            .unwrap();
        let app = &app;
        async move { app.call(req).await.status }
    };
    // nginx form: exactly /authz, the request is named by the headers.
    assert_eq!(ask("/authz").await, 200);
    // Envoy form: the path under the prefix decides; a smuggled header changes nothing.
    assert_eq!(ask("/authz/admin").await, 401);
    assert_eq!(ask("/authz/").await, 401);
}

/// Over the socket: what a client gets when the server's HTTP layer and the API both see the
/// headers.
#[tokio::test]
async fn oversized_headers_are_431_on_the_api_and_401_on_the_check() {
    let app = ApiApp::start().await;
    let big = "x".repeat(64 * 1024);
    let r = app
        .http
        .post(format!("{}/auth/login", app.base))
        .header("x-padding", &big)
        .json(&json!({"username": "alice", "password": ALICE_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = app
        .http
        .get(format!("{}/authz/api", app.base))
        .header("authorization", format!("Bearer {big}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_request""#)
    );
}

/// Garbage of every shape into every body-taking route: a clear 4xx, never a 5xx, and the
/// service still works afterwards.
#[tokio::test]
async fn garbage_bodies_get_4xx_and_change_nothing() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let app = ApiApp::start().await;
    let t = app.tokens().await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    let mut runner = TestRunner::deterministic();
    let bodies = proptest::prop_oneof![
        proptest::string::string_regex(".{0,200}").unwrap(),
        proptest::string::string_regex(
            r#"\{("[a-z_]{1,12}":("[^"]{0,20}"|[0-9]{1,5}|null|\[\]|\{\}),?){0,4}\}"#
        )
        .unwrap(),
    ];
    for _ in 0..64 {
        let body = bodies.new_tree(&mut runner).unwrap().current();
        for path in [
            "/auth/login",
            "/auth/login/otp",
            "/auth/refresh",
            "/auth/2fa/confirm",
            "/auth/2fa/disable",
            "/auth/2fa/recovery-codes",
        ] {
            let req = Request::post(path)
                .header("authorization", format!("Bearer {access}"))
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let status = app.call(req).await.status;
            assert!((400..500).contains(&status), "{path} {body:?} -> {status}");
        }
    }
    assert_eq!(app.app.authz("/api", Some(&access)).await.status, 200);
    assert_eq!(
        app.send("GET", "/auth/2fa/status", None, Some(&access))
            .await
            .body["enabled"],
        false
    );
}

/// With the nethcti backend, its own login API is closed by default (a client there could
/// guess passwords outside lockout and 2FA), whatever the token, however spelled.
#[tokio::test]
async fn the_nethcti_login_api_is_closed_by_default() {
    use support::nethcti_sim::NethctiSim;
    let sim = NethctiSim::start(&[("alice", "secret")], Duration::from_secs(3600)).await;
    let app = TestApp::builder()
        .nethcti(&sim.url(), Duration::from_secs(2))
        .start()
        .await;
    let r = app.login("alice", "secret").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    for path in [
        "/authentication/login",
        "/authentication/logout",
        "/Authentication/login",
        "/x/../authentication/login",
        "/authentication%2Flogin",
    ] {
        for token in [None, Some(access.as_str())] {
            let r = app.authz(path, token).await;
            assert_eq!(r.status, 403, "{path}");
            assert_eq!(r.body["error"], "access_denied", "{path}");
            assert!(!r.headers.contains_key("www-authenticate"), "{path}");
        }
    }
    assert_eq!(app.authz("/api/user/me", Some(&access)).await.status, 200);
}

/// `GET /status` (SPEC 2, HTTP listener): the replica's state for operators, 200 even while
/// draining, with the kids the JWKS publishes and this build's version.
#[tokio::test]
async fn status_reports_readiness_store_backend_keys_and_version() {
    let app = ApiApp::start().await;
    let status = app.send("GET", "/status", None, None).await;
    assert_eq!(status.status, 200, "{}", status.text);
    let jwks = app.send("GET", "/.well-known/jwks.json", None, None).await;
    let mut kids: Vec<Value> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    kids.sort_by_key(|k| k.to_string());
    assert!(!kids.is_empty());
    assert_eq!(
        status.body,
        json!({
            "ready": true,
            "store": {"up": true},
            "backend": {"up": true},
            "lockdown": false,
            "keys": kids,
            "version": env!("CARGO_PKG_VERSION"),
        })
    );
    app.running().set_draining().await;
    let status = app.send("GET", "/status", None, None).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.body["ready"], false, "{}", status.text);
}

/// A backend that does not answer fails logins (503) but not readiness: checks still work.
/// `/status` shows it down; the call and the login step are timed in the histograms.
#[tokio::test]
async fn backend_outage_shows_on_status_not_on_readiness() {
    let closed = support::process::free_port();
    let app = TestApp::builder()
        .nethcti(
            &format!("http://127.0.0.1:{closed}"),
            Duration::from_secs(2),
        )
        .start()
        .await;
    assert_eq!(
        app.send("GET", "/status", None, None).await.body["backend"]["up"],
        true,
        "before any call"
    );
    assert_eq!(app.login("alice", "secret").await.status, 503);
    let status = app.send("GET", "/status", None, None).await;
    assert_eq!(status.body["backend"]["up"], false, "{}", status.text);
    assert_eq!(status.body["ready"], true, "{}", status.text);
    assert_eq!(app.send("GET", "/readyz", None, None).await.status, 200);
    let text = app.send("GET", "/metrics", None, None).await.text;
    for line in [
        "\nauthgate_backend_up 0\n",
        "\nauthgate_store_up 1\n",
        "\nauthgate_backend_request_duration_seconds_count{operation=\"authenticate\"} 1\n",
        "\nauthgate_login_duration_seconds_count{step=\"password\"} 1\n",
        "\nauthgate_login_duration_seconds_count{step=\"otp\"} 0\n",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
}
