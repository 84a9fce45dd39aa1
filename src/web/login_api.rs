//! The login API under `/auth/` (SPEC 2.2): password and OTP login, refresh, logout, the
//! caller's claims and second-factor management. Handlers translate between HTTP and
//! [`LoginService`](crate::login::LoginService); the flows themselves live in `login`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Caller};
use crate::client_addr::ClientAddr;
use crate::credentials::{self, Found, Sources};
use crate::decision::Denial;
use crate::login::with_user_agent;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
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

/// The `User-Agent` of a request, recorded with the session a login opens.
fn user_agent(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(header::USER_AGENT)?.to_str().ok()
}

async fn login(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let password = SecretString::from(body.password);
    let outcome = with_user_agent(
        user_agent(&headers),
        state.login.login(&body.username, &password, client),
    )
    .await?;
    Ok(no_store(outcome))
}

#[derive(Deserialize)]
struct OtpBody {
    mfa_token: String,
    code: String,
}

async fn login_otp(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<OtpBody>,
) -> Result<Response, ApiError> {
    let pair = with_user_agent(
        user_agent(&headers),
        state.login.login_otp(&body.mfa_token, &body.code, client),
    )
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
    client: ClientAddr,
    request: Request,
) -> Result<Response, ApiError> {
    let bearer = match credentials::find_token(&Sources::HEADER_ONLY, request.headers(), "") {
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
