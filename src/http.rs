//! HTTP adapter: the `/authz` check for nginx `auth_request` and Envoy's HTTP ext_authz, the
//! login API, JWKS, health and metrics. Handlers translate; decisions live in `decision` and
//! `login`. Every error is JSON `{"error","error_description"}` with a 4xx for bad input
//! (never axum's default 415/422 rejections), and `/authz` answers only 200, 401 or 403.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::decision::{self, Checker, Decision, Denial};
use crate::login::{LoginError, LoginService};
use crate::metrics::{Metrics, Transport};
use crate::policy::{self, Found, Headers};
use crate::readiness::Readiness;
use crate::token::{Kind, TokenService, Verified};

/// Largest request body the login API reads.
const MAX_BODY: usize = 16 * 1024;

/// Shared state of every handler.
pub struct AppState {
    pub checker: Arc<Checker>,
    pub tokens: Arc<TokenService>,
    pub login: Arc<LoginService>,
    pub metrics: Arc<Metrics>,
    /// Keys loaded and not draining, shared with gRPC health (the store is asked on each
    /// /readyz).
    pub ready: Arc<Readiness>,
    pub trusted_proxies: Vec<IpAddr>,
}

pub fn app(state: Arc<AppState>) -> Router {
    // The check answers only 200/401/403 (oversized credentials are a 401 there), so the
    // header bound applies to the API alone.
    let check = Router::new()
        .route("/authz", any(authz))
        .route("/authz/", any(authz))
        .route("/authz/{*path}", any(authz));
    let api = Router::new()
        .route("/auth/login", post(login))
        .route("/auth/login/otp", post(login_otp))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/auth/2fa/enroll", post(enroll))
        .route("/auth/2fa/confirm", post(confirm))
        .route("/auth/2fa/disable", post(disable))
        .route("/auth/2fa/status", get(status))
        .route("/auth/2fa/recovery-codes", post(recovery_codes))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(limit_headers));
    // No layer on the check: each one costs an extension insert or a boxed future per request.
    check.merge(api).with_state(state)
}

/// Largest total of request header names and values the API reads.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// 431 for requests whose headers are larger than any legitimate client sends.
async fn limit_headers(request: Request, next: axum::middleware::Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request",
            "request headers too large",
        )
        .into_response();
    }
    next.run(request).await
}

/// An error of the login API, rendered as RFC 6749-style JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
    www_authenticate: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        Self {
            status,
            code,
            description,
            www_authenticate: None,
            retry_after: None,
        }
    }

    fn bad_request(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        Self {
            status: StatusCode::from_u16(d.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            code: d.error_code().unwrap_or("unauthorized"),
            description: d.description(),
            www_authenticate: Some(d.www_authenticate()),
            retry_after: None,
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        let unavailable = |what| {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                what,
            )
        };
        match e {
            LoginError::BadRequest(why) => Self::bad_request(why),
            LoginError::BadCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "invalid username or password",
            ),
            LoginError::InvalidGrant(why) => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_grant", why)
            }
            LoginError::Locked { retry_after } => Self {
                retry_after: Some(retry_after.max(1)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "locked_out",
                    "too many failed attempts; try again later",
                )
            },
            LoginError::Conflict(why) => Self::new(StatusCode::CONFLICT, "conflict", why),
            LoginError::BackendUnavailable(_) => unavailable("authentication backend unavailable"),
            LoginError::StoreUnavailable(e) => {
                tracing::error!(error = %e, "state store failed");
                unavailable("state store unavailable")
            }
            LoginError::Internal(e) => {
                tracing::error!(error = %e, "minting tokens failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "error_description": self.description});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(v) = self
            .www_authenticate
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// A JSON body whose every failure is a 400 (or 413 when too large), never 415/422.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::bad_request(
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    "request body too large",
                )
            } else {
                ApiError::bad_request("unreadable request body")
            }
        })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|_| {
            ApiError::bad_request("body must be a JSON object with the documented string fields")
        })
    }
}

/// `http::HeaderMap` seen through the decision's header lookup.
impl Headers for HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        // The names every check asks for, as constants: a lookup by `&str` parses the name.
        let value = match name {
            decision::AUTHORIZATION => HeaderMap::get(self, header::AUTHORIZATION),
            decision::COOKIE => HeaderMap::get(self, header::COOKIE),
            _ => HeaderMap::get(self, name),
        };
        value.and_then(|v| v.to_str().ok())
    }
}

static X_ENVOY_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// The check endpoint. nginx passes the original request in `X-Original-URI` and
/// `X-Original-Method`; Envoy's HTTP ext_authz sends it under the `/authz` prefix.
async fn authz(State(state): State<Arc<AppState>>, request: Request) -> Response {
    // The request itself, not the HeaderMap/Uri extractors: those clone on every check.
    let (method, uri, headers) = (request.method(), request.uri(), request.headers());
    let started = Instant::now();
    // nginx asks exactly `/authz` and names the request in X-Original-URI; Envoy's HTTP mode
    // puts the request path under the prefix, and then a client-sent X-Original-URI (should
    // the proxy forward one) is ignored.
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let under_prefix = path_and_query.strip_prefix("/authz").unwrap_or("");
    let original = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (method, path) = if under_prefix.starts_with('/') {
        (method.as_str(), under_prefix)
    } else {
        (
            original("x-original-method").unwrap_or(method.as_str()),
            original("x-original-uri").unwrap_or("/"),
        )
    };
    let decision = if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        Decision::Deny(Denial::Malformed)
    } else {
        state.checker.check(&decision::Request {
            method,
            path,
            headers,
        })
    };
    state
        .metrics
        .record_check(Transport::Http, &decision, started.elapsed());
    authz_response(decision)
}

fn authz_response(decision: Decision) -> Response {
    match decision {
        Decision::Allow(allow) => {
            let mut resp = StatusCode::OK.into_response();
            let h = resp.headers_mut();
            for (name, value) in allow.set_headers {
                // From the `String` itself: its buffer becomes the value, no copy.
                if let Ok(v) = HeaderValue::try_from(value) {
                    h.insert(name, v);
                }
            }
            let remove = match allow.remove_headers.as_slice() {
                [] => None,
                [one] => Some(HeaderValue::from_static(one)),
                many => HeaderValue::from_str(&many.join(",")).ok(),
            };
            if let Some(v) = remove {
                h.insert(X_ENVOY_REMOVE.clone(), v);
            }
            resp
        }
        Decision::Deny(denial) => {
            let mut resp = Response::new(Body::from(denial.json_body()));
            *resp.status_mut() =
                StatusCode::from_u16(denial.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&denial.www_authenticate()) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
    }
}

/// The bearer token of an API call (`Authorization: Bearer` only; no cookie, no query).
fn bearer_token(headers: &HeaderMap) -> Found<'_> {
    static HEADER_ONLY: std::sync::LazyLock<crate::config::TokenSources> =
        std::sync::LazyLock::new(|| crate::config::TokenSources {
            header: true,
            query: Vec::new(),
            cookie: String::new(),
        });
    policy::find_token(&HEADER_ONLY, headers, "")
}

/// The verified, unrevoked access token of an API call.
fn access_token(state: &AppState, headers: &HeaderMap) -> Result<Arc<Verified>, ApiError> {
    let token = match bearer_token(headers) {
        Found::Token(t, _) => t,
        Found::None => return Err(Denial::NoToken.into()),
        Found::Malformed => return Err(Denial::Malformed.into()),
    };
    let verified = state.tokens.verify(&token).map_err(Denial::from)?;
    if verified.kind != Kind::Access {
        return Err(Denial::NotAccessToken.into());
    }
    if state.checker.revocations.is_revoked(&verified.sid) {
        return Err(Denial::InvalidToken("token revoked").into());
    }
    Ok(verified)
}

/// The client address: the peer, or the last `X-Forwarded-For` hop when the peer is a
/// trusted proxy (the entry that proxy appended itself).
fn client_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if !state.trusted_proxies.contains(&peer.ip()) {
        return peer.ip();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|ip| ip.trim().parse().ok())
        .unwrap_or(peer.ip())
}

fn no_store(body: impl serde::Serialize) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let password = SecretString::from(body.password);
    let outcome = state.login.login(&body.username, &password, client).await?;
    Ok(no_store(outcome))
}

#[derive(Deserialize)]
struct OtpBody {
    mfa_token: String,
    code: String,
}

async fn login_otp(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<OtpBody>,
) -> Result<Response, ApiError> {
    let pair = state
        .login
        .login_otp(&body.mfa_token, &body.code, client)
        .await?;
    Ok(no_store(pair))
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// Refresh token in `Authorization: Bearer` (as MikoPBX clients send it) or a JSON body.
async fn refresh(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    request: Request,
) -> Result<Response, ApiError> {
    let bearer = match bearer_token(request.headers()) {
        Found::Token(t, _) => Some(t.into_owned()),
        Found::Malformed => return Err(Denial::Malformed.into()),
        Found::None => None,
    };
    let token = match bearer {
        Some(t) => t,
        None => {
            let ApiJson(body) = ApiJson::<RefreshBody>::from_request(request, &()).await?;
            body.refresh_token
        }
    };
    let pair = state.login.refresh(&token, client).await?;
    Ok(no_store(pair))
}

/// The authenticated caller of an API route: a verified, unrevoked access token, and the
/// client address (see [`client_ip`]).
struct Caller {
    token: Arc<Verified>,
    client: IpAddr,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = access_token(state, &parts.headers)?;
        let ClientAddr(client) = ClientAddr::from_request_parts(parts, state).await?;
        Ok(Self { token, client })
    }
}

/// The client address of a request (see [`client_ip`]).
struct ClientAddr(IpAddr);

impl FromRequestParts<Arc<AppState>> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        Ok(Self(client_ip(state, peer, &parts.headers)))
    }
}

async fn logout(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    state.login.logout(&caller.token, caller.client).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(caller: Caller) -> Response {
    let t = caller.token;
    axum::Json(serde_json::json!({
        "sub": &*t.sub, "sid": &*t.sid, "amr": t.amr, "exp": t.exp, "iat": t.iat,
    }))
    .into_response()
}

async fn enroll(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    Ok(no_store(state.login.enroll(&caller.token).await?))
}

#[derive(Deserialize)]
struct CodeBody {
    code: String,
}

async fn confirm(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Response, ApiError> {
    let codes = state
        .login
        .confirm(&caller.token, &body.code, caller.client)
        .await?;
    Ok(no_store(serde_json::json!({ "recovery_codes": codes })))
}

async fn disable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<StatusCode, ApiError> {
    state
        .login
        .disable(&caller.token, &body.code, caller.client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    let (enabled, left) = state.login.status(&caller.token).await?;
    Ok(no_store(
        serde_json::json!({ "enabled": enabled, "recovery_codes_left": left }),
    ))
}

async fn recovery_codes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Response, ApiError> {
    let codes = state
        .login
        .regenerate_codes(&caller.token, &body.code, caller.client)
        .await?;
    Ok(no_store(serde_json::json!({ "recovery_codes": codes })))
}

async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = Response::new(Body::from(Bytes::copy_from_slice(&state.tokens.jwks())));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.is_ready() && state.login.store_ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state
        .metrics
        .cached_tokens
        .set(state.tokens.cache_entries() as i64);
    state
        .metrics
        .revoked_sessions
        .set(state.checker.revocations.len() as i64);
    let mut resp = Response::new(Body::from(state.metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
