//! The check over HTTP, for nginx `auth_request` and Envoy's HTTP ext_authz: `ANY /authz`
//! and `/authz/{*path}`. It reads the request in place, hands the facts to
//! [`Checker`](crate::decision::Checker) and copies the decision into the response: 200 with
//! the upstream headers, or the denial's 401/403 (nginx turns any other status of an
//! `auth_request` subrequest into a 500, so there is no other).
//!
//! For the proxy's access log the answer also says what the gRPC check puts in Envoy's
//! dynamic metadata: `X-Authgate-Amr` on allow (beside `X-Auth-User` and `X-Auth-Session`)
//! and `X-Authgate-Reason` on deny. Envoy turns them into metadata
//! (`dynamic_metadata_from_headers`), nginx into variables (`auth_request_set`); neither passes
//! them on to the application or the client.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;
use crate::credentials::{self, Headers};
use crate::decision::{self, Decision, Denial, DenialResponse, Dialect};
use crate::metrics::Transport;
use crate::token::Invalid;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/authz", any(authz))
        .route("/authz/", any(authz))
        .route("/authz/{*path}", any(authz))
}

/// `http::HeaderMap` seen through the decision's header lookup.
impl Headers for HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        // The names every check asks for, as constants: a lookup by `&str` parses the name.
        let value = match name {
            credentials::AUTHORIZATION => HeaderMap::get(self, header::AUTHORIZATION),
            credentials::COOKIE => HeaderMap::get(self, header::COOKIE),
            _ => HeaderMap::get(self, name),
        };
        value.and_then(|v| v.to_str().ok())
    }

    fn repeated(&self, name: &str) -> bool {
        let mut all = match name {
            credentials::AUTHORIZATION => self.get_all(header::AUTHORIZATION).iter(),
            _ => self.get_all(name).iter(),
        };
        all.nth(1).is_some()
    }
}

static X_ENVOY_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");
/// The token's `amr` on allow (comma-separated), for the proxy's log.
pub const X_AUTHGATE_AMR: &str = "x-authgate-amr";
/// [`Denial::reason`] on deny, for the proxy's log.
pub const X_AUTHGATE_REASON: &str = "x-authgate-reason";
static AMR: HeaderName = HeaderName::from_static(X_AUTHGATE_AMR);
static REASON: HeaderName = HeaderName::from_static(X_AUTHGATE_REASON);

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
    let span = state.telemetry.check(headers);
    let decision = state.checker.check(&decision::Request {
        method,
        path,
        headers,
    });
    state
        .metrics
        .record_check(Transport::Http, &decision, started.elapsed());
    if let Some(span) = span {
        span.finish("http", &decision);
    }
    let dialect = match &decision {
        Decision::Deny(_) => state.checker.dialect(path),
        Decision::Allow(_) => Dialect::OAuth,
    };
    authz_response(decision, dialect)
}

fn authz_response(decision: Decision, dialect: Dialect) -> Response {
    match decision {
        Decision::Allow(allow) => {
            let mut resp = StatusCode::OK.into_response();
            let h = resp.headers_mut();
            for (name, value) in allow.set_headers {
                // From the `String` itself: its buffer becomes the value, no copy. A value
                // that cannot be a header is never skipped (the client's copy would then pass
                // on): the request is refused. Verified tokens carry only header-safe values,
                // so this is a guard, not a path.
                match HeaderValue::try_from(value) {
                    Ok(v) => h.insert(name, v),
                    Err(_) => {
                        return authz_response(
                            Decision::Deny(Denial::Invalid(Invalid::Claims)),
                            dialect,
                        );
                    }
                };
            }
            let remove = match allow.remove_headers.as_slice() {
                [] => None,
                [one] => Some(HeaderValue::from_static(one)),
                many => HeaderValue::from_str(&many.join(",")).ok(),
            };
            if let Some(v) = remove {
                h.insert(X_ENVOY_REMOVE.clone(), v);
            }
            if allow.user.is_some() {
                let amr = match allow.amr {
                    Cow::Borrowed(s) => Ok(HeaderValue::from_static(s)),
                    Cow::Owned(s) => HeaderValue::try_from(s),
                };
                if let Ok(v) = amr {
                    h.insert(AMR.clone(), v);
                }
            }
            resp
        }
        Decision::Deny(denial) => {
            let mut resp = denial_response(denial.response(dialect));
            resp.headers_mut()
                .insert(REASON.clone(), HeaderValue::from_static(denial.reason()));
            resp
        }
    }
}

/// A denial as an HTTP response (the check endpoint's, the relay's at upgrade).
pub(super) fn denial_response(denial: DenialResponse) -> Response {
    let mut resp = Response::new(Body::from(denial.body));
    *resp.status_mut() = StatusCode::from_u16(denial.status).unwrap_or(StatusCode::UNAUTHORIZED);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(Ok(v)) = denial.www_authenticate.map(HeaderValue::try_from) {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}
