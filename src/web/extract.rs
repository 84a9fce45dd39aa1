//! What the login API reads from a request before a handler runs: a JSON body whose every
//! failure is a 400, the client address (through trusted proxies only; `unix` for a peer on
//! a Unix socket that is not one), and the
//! authenticated caller, by the same authenticate path as the check.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::client_addr::ClientAddr;
use crate::credentials::Sources;
use crate::token::Verified;

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

/// The authenticated caller of an API route: a genuine access token of a live session
/// (`Authorization: Bearer` only), and the client address (see [`client_addr`]).
pub struct Caller {
    pub token: Arc<Verified>,
    pub client: ClientAddr,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token =
            state
                .checker
                .authenticate_request(&Sources::HEADER_ONLY, &parts.headers, "")?;
        let client = ClientAddr::from_request_parts(parts, state).await?;
        Ok(Self { token, client })
    }
}

/// The client address of a request (see [`client_addr`]).
impl FromRequestParts<Arc<AppState>> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        // The listener sets it on every request; a request without one (a test calling the
        // router directly) is from an unknown local peer.
        let peer = parts
            .extensions
            .get::<ConnectInfo<ClientAddr>>()
            .map_or(ClientAddr::Ip(IpAddr::from([0, 0, 0, 0])), |c| c.0);
        Ok(client_addr(state, peer, &parts.headers))
    }
}

/// Says once that a peer sends `X-Forwarded-For` nobody trusts: behind a proxy that is not
/// in `listen.trusted_proxies`, every client shares the proxy's address (and its lockout).
fn untrusted_forwarding_once(peer: ClientAddr) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %peer,
            "X-Forwarded-For ignored: listen.trusted_proxies is empty, so the peer is the client; \
             behind a proxy, list its address there (\"unix\" for a proxy on a unix: listener)"
        );
    }
}

/// The client address: the peer, or the last `X-Forwarded-For` hop when the peer is a
/// trusted proxy (the entry that proxy appended itself). A peer on a Unix socket is `unix`,
/// and a trusted proxy only when `listen.trusted_proxies` lists `"unix"`.
fn client_addr(state: &AppState, peer: ClientAddr, headers: &HeaderMap) -> ClientAddr {
    if !state.trusted_proxies.contains(&peer) {
        if state.trusted_proxies.is_empty() && headers.contains_key("x-forwarded-for") {
            untrusted_forwarding_once(peer);
        }
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        .map_or(peer, ClientAddr::Ip)
}
