//! The HTTP listener: the check for proxies ([`authz`]), the login API ([`login_api`]), and
//! what operators and clients read (JWKS, health, readiness, status, metrics). Handlers translate;
//! decisions live in `decision` and `login`, and every error goes through [`error`], the one
//! place that maps it to a status and a JSON body.

mod authz;
mod error;
mod extract;
mod login_api;
mod nethcti;
mod socket;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::decision::Checker;
use crate::login::LoginService;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::revocation::SyncState;
use crate::token::TokenService;
pub use error::ApiError;

/// Largest request body the login API reads.
const MAX_BODY: usize = 16 * 1024;

/// Shared state of every handler.
pub struct AppState {
    pub checker: Arc<Checker>,
    pub tokens: Arc<TokenService>,
    pub login: Arc<LoginService>,
    pub metrics: Arc<Metrics>,
    /// Keys loaded, revocations loaded once, not draining; shared with gRPC health.
    pub ready: Arc<Readiness>,
    /// What the revocation sync loop knows of the store (for `/status` and `authgate_store_up`).
    pub store_state: tokio::sync::watch::Receiver<SyncState>,
    pub trusted_proxies: Vec<crate::client_addr::ClientAddr>,
    /// The socket.io relay (SPEC 2.4); `None` unless the backend is nethcti.
    pub relay: Option<Arc<crate::relay::Relay>>,
    /// Traces (`[telemetry]`); off unless configured.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The nethcti-middleware profile (SPEC 2.7), when `[compat] nethcti_middleware` is on.
    pub nethcti: Option<crate::config::CompatConfig>,
}

pub fn app(state: Arc<AppState>) -> Router {
    // The check answers only 200/401/403 (oversized credentials are a 401 there), so the
    // header bound applies to the API alone.
    let prefix = state.nethcti.as_ref().map(|c| c.prefix.clone());
    let api = login_api::routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            trace_request,
        ))
        .merge(socket::routes(prefix.as_deref()))
        .merge(
            prefix
                .as_deref()
                .map(|p| {
                    nethcti::routes(p).layer(axum::middleware::from_fn_with_state(
                        state.clone(),
                        trace_request,
                    ))
                })
                .unwrap_or_default(),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(limit_headers));
    // No layer on the check: each one costs an extension insert or a boxed future per request.
    authz::routes().merge(api).with_state(state)
}

/// A span per login API request when tracing is on, named by the route (`POST /auth/login`),
/// the child of the proxy's span named in `traceparent`.
async fn trace_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if !state.telemetry.enabled() {
        return next.run(request).await;
    }
    // The login API's routes are fixed paths (no parameters): the path is the route.
    let name = format!("{} {}", request.method(), request.uri().path());
    let span = state.telemetry.request(name, request.headers());
    let response = next.run(request).await;
    if let Some(span) = span {
        span.finish(response.status().as_u16());
    }
    response
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

/// Can this replica decide checks? A store or backend outage does not change the answer
/// (`/status` reports those).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// The body of `GET /status` (SPEC 2, HTTP listener).
#[derive(serde::Serialize)]
struct Status {
    ready: bool,
    store: Up,
    backend: Up,
    lockdown: bool,
    keys: Vec<String>,
    version: &'static str,
}

#[derive(serde::Serialize)]
struct Up {
    up: bool,
}

/// 200 with the replica's state for operators and probes, even when it is not ready.
async fn status(State(state): State<Arc<AppState>>) -> Response {
    let body = Status {
        ready: state.ready.is_ready(),
        store: Up {
            up: state.store_state.borrow().store_up,
        },
        backend: Up {
            up: state.login.backend_up(),
        },
        lockdown: state.login.lockdown(),
        keys: state.tokens.kids(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let store_up = state.store_state.borrow().store_up;
    state.metrics.store_up.set(i64::from(store_up));
    state
        .metrics
        .backend_up
        .set(i64::from(state.login.backend_up()));
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
