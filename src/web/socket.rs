//! The relay's HTTP side: WebSocket upgrades at `/socket.io/` (and `/api/ws/` in the
//! nethcti-middleware profile). Checks a
//! token that comes with the upgrade (the route's sources, as the check reads them), takes a
//! place among `relay.max_sockets`, dials the backend, then hands both sockets to the relay.
//! A refusal here is an HTTP answer and no upgrade: 401/403 for a token, 503 when full, 502
//! when the backend's socket server cannot be reached.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::client_addr::ClientAddr;
use crate::config::Access;
use crate::decision::{Denial, Dialect};
use crate::relay::{self, CloseReason, Refusal, protocol};

/// `/socket.io/`, and `{prefix}/ws/` when the nethcti-middleware profile serves `prefix`.
pub(super) fn routes(nethcti_prefix: Option<&str>) -> Router<Arc<AppState>> {
    let router = Router::new()
        .route("/socket.io", get(socket))
        .route("/socket.io/", get(socket));
    match nethcti_prefix {
        Some(prefix) => router
            .route(&format!("{prefix}/ws"), get(socket))
            .route(&format!("{prefix}/ws/"), get(socket)),
        None => router,
    }
}

async fn socket(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    request: Request,
) -> Response {
    let Some(relay) = state.relay.as_ref() else {
        return super::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no socket relay for this backend",
        )
        .into_response();
    };
    // Engine.IO's own answer to a transport it does not serve (long-polling here).
    let Ok(upgrade) = upgrade else {
        return engine_io_error(StatusCode::BAD_REQUEST, 0, "Transport unknown");
    };
    let checker = relay.checker();
    let raw_path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let route = checker.policy.route("GET", raw_path);
    let dialect = checker.dialect(raw_path);
    if route.access == Access::Deny {
        relay.record_close(CloseReason::UpgradeRefused);
        return refused(dialect, Refusal::Denied(Denial::RouteClosed));
    }
    // A token with the upgrade is optional (the client may log in with the `login` event),
    // but one that is there must be good.
    let bound = match checker.authenticate_request(route.sources, request.headers(), raw_path) {
        Ok(verified) => {
            let admissible = match relay.admissible(&verified).await {
                Ok(()) if route.access == Access::Mfa && !verified.has_otp() => {
                    Err(Refusal::SecondFactor)
                }
                other => other,
            };
            if let Err(why) = admissible {
                tracing::info!(user = %verified.sub, sid = %verified.sid, client = %client, why = why.label(), "relay: upgrade refused");
                relay.record_close(CloseReason::UpgradeRefused);
                return refused(dialect, why);
            }
            Some(verified)
        }
        Err(Denial::NoToken) => None,
        Err(denial) => {
            tracing::info!(client = %client, why = denial.outcome().label(), "relay: upgrade refused");
            relay.record_close(CloseReason::UpgradeRefused);
            return refused(dialect, Refusal::Denied(denial));
        }
    };
    let Some(admission) = relay.admit() else {
        relay.record_close(CloseReason::Full);
        tracing::warn!(client = %client, open = relay.open_sockets(), "relay: socket refused, relay.max_sockets reached or draining");
        return engine_io_error(StatusCode::SERVICE_UNAVAILABLE, 3, "Too many sockets");
    };
    let names: Vec<&str> = checker.policy.all_query_sources().collect();
    let query = protocol::upstream_query(request.uri().query().unwrap_or(""), &names);
    let upstream = match relay::dial(relay, &query, client).await {
        Ok(u) => u,
        Err(e) => {
            relay.record_close(CloseReason::BackendUnreachable);
            tracing::warn!(client = %client, error = %e, "relay: backend socket server unreachable");
            return engine_io_error(StatusCode::BAD_GATEWAY, 3, "Backend unreachable");
        }
    };
    let limits = relay.limits();
    let config = relay::ws_config(limits.max_frame_bytes);
    upgrade
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_write_buffer_size(config.max_write_buffer_size)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| relay::run(admission, socket, upstream, bound, client))
}

/// The check's JSON body and challenge (in the route's dialect), with the relay's status.
fn refused(dialect: Dialect, why: Refusal) -> Response {
    if why == Refusal::Unavailable {
        return super::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "state store unavailable",
        )
        .into_response();
    }
    let mut response = why.denial().response(dialect);
    response.status = why.status();
    super::authz::denial_response(response)
}

/// `{"code","message"}` as an Engine.IO server answers a request it cannot serve.
fn engine_io_error(status: StatusCode, code: u8, message: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "code": code, "message": message }).to_string(),
    )
        .into_response()
}
