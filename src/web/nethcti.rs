//! The nethcti-middleware profile's routes (SPEC 2.7), under `[compat] prefix`: the API shape
//! the NethVoice CTI client (nethvoice-cti, phone-island) was written against, so it works
//! through authgate unchanged. Handlers translate between that shape and the flows in
//! [`crate::login`]; every error goes through [`NethctiError`], the profile's face of the one
//! error mapping.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::NethctiError;
use super::extract::ApiJson;
use crate::client_addr::ClientAddr;
use crate::config::DEVICE_AUDIENCES;
use crate::credentials::Sources;
use crate::decision::{self, Denial};
use crate::events::RevokeReason;
use crate::login::{SingleToken, with_user_agent};
use crate::token::{Kind, Verified};

pub(super) fn routes(prefix: &str) -> Router<Arc<AppState>> {
    let at = |path: &str| format!("{prefix}{path}");
    Router::new()
        .route(&at("/login"), post(login))
        .route(&at("/logout"), post(logout))
        .route(&at("/2fa/status"), get(status))
        .route(&at("/2fa/qr-code"), get(qr_code))
        .route(&at("/2fa/verify-otp"), post(verify_otp))
        .route(&at("/2fa/recovery-codes"), post(recovery_codes))
        .route(&at("/2fa/disable"), post(disable))
        .route(
            &at("/tokens/persistent/{audience}"),
            post(device_token_new)
                .get(device_token_exists)
                .delete(device_token_delete),
        )
}

/// A JSON body, its failures in the profile's shape.
struct Json<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = NethctiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, NethctiError> {
        let ApiJson(body) = ApiJson::from_request(req, state).await?;
        Ok(Self(body))
    }
}

/// A 200 JSON answer that no cache keeps.
fn ok(body: serde_json::Value) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `exp` as the client reads `expire`: RFC 3339, UTC.
fn rfc3339(exp: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::USER_AGENT)?.to_str().ok()
}

/// The bearer token of a request (header only, as the client sends it).
fn bearer(headers: &HeaderMap) -> Result<String, NethctiError> {
    Ok(decision::request_token(&Sources::HEADER_ONLY, headers, "")?.into_owned())
}

/// The caller of a route that needs a signed-in user: a genuine access token of a live
/// session, by the one authenticate path. A pre-OTP token is refused here (403).
fn caller(state: &AppState, headers: &HeaderMap) -> Result<Arc<Verified>, NethctiError> {
    Ok(state
        .checker
        .authenticate_request(&Sources::HEADER_ONLY, headers, "")?)
}

/// The caller of verify-otp and logout, the two routes a pre-OTP token opens: that token
/// (genuine, not expired, its session not revoked) or an access token as [`caller`] takes it.
fn caller_or_pre_otp(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, Arc<Verified>), NethctiError> {
    let token = bearer(headers)?;
    let verified = match state.tokens.verify(&token).map_err(Denial::from)? {
        v if v.kind == Kind::Mfa => {
            if state.checker.revocations.is_revoked(&v.sid) {
                return Err(Denial::Revoked.into());
            }
            v
        }
        _ => state.checker.authenticate(&token)?,
    };
    Ok((token, verified))
}

/// The client's answer to a new token: `{"code":200,"expire","token"}`.
fn token_answer(token: SingleToken) -> Response {
    ok(json!({
        "code": 200,
        "expire": rfc3339(token.exp),
        "token": token.token.expose(),
    }))
}

#[derive(Deserialize)]
struct Credentials {
    username: Option<String>,
    password: Option<String>,
}

/// `POST /api/login`: as the middleware answers, a missing user name or password is a 401
/// (`missing Username or Password`), whatever else is wrong with the body.
async fn login(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, NethctiError> {
    let missing = || {
        NethctiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "missing Username or Password",
        )
    };
    let creds: Credentials = serde_json::from_slice(&body).map_err(|_| missing())?;
    let (Some(username), Some(password)) = (creds.username, creds.password) else {
        return Err(missing());
    };
    if username.is_empty() || password.is_empty() {
        return Err(missing());
    }
    let password = SecretString::from(password);
    let token = with_user_agent(
        user_agent(&headers),
        state.login.profile_login(&username, &password, client),
    )
    .await?;
    Ok(token_answer(token))
}

/// `POST /api/logout`: 200 `{"code":200}`; the session (also a pre-OTP one) is revoked.
async fn logout(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
) -> Result<Response, NethctiError> {
    let (_, verified) = caller_or_pre_otp(&state, &headers)?;
    state.login.logout(&verified, client).await?;
    Ok(ok(json!({ "code": 200 })))
}

async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, NethctiError> {
    let verified = caller(&state, &headers)?;
    let (enabled, _) = state.login.status(&verified).await?;
    Ok(ok(json!({ "status": enabled })))
}

async fn qr_code(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, NethctiError> {
    let verified = caller(&state, &headers)?;
    let pending = state.login.profile_pending_secret(&verified).await?;
    Ok(ok(json!({
        "code": 200,
        "message": "QR code string",
        "data": { "url": pending.otpauth_url.expose(), "key": pending.secret.expose() },
    })))
}

#[derive(Deserialize)]
struct VerifyOtp {
    #[serde(default)]
    username: Option<String>,
    otp: String,
}

/// `POST /api/2fa/verify-otp`: finishes a login (pre-OTP token) or an enrollment (access
/// token). The user is always the token's: a body `username` naming someone else is refused.
async fn verify_otp(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
    Json(body): Json<VerifyOtp>,
) -> Result<Response, NethctiError> {
    let (token, verified) = caller_or_pre_otp(&state, &headers)?;
    if body
        .username
        .as_deref()
        .is_some_and(|u| !u.is_empty() && u != &*verified.sub)
    {
        return Err(NethctiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "username does not match the token",
        ));
    }
    let flow = async {
        if verified.kind == Kind::Mfa {
            state
                .login
                .profile_finish_login(&token, &body.otp, client)
                .await
        } else {
            state
                .login
                .profile_confirm(&verified, &body.otp, client)
                .await
        }
    };
    let issued = with_user_agent(user_agent(&headers), flow).await?;
    Ok(ok(json!({
        "code": 200,
        "message": "OTP verified",
        "data": { "token": issued.token.expose(), "expire": rfc3339(issued.exp) },
    })))
}

#[derive(Deserialize)]
struct Password {
    password: String,
}

async fn recovery_codes(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
    Json(body): Json<Password>,
) -> Result<Response, NethctiError> {
    let verified = caller(&state, &headers)?;
    let password = SecretString::from(body.password);
    let codes = state
        .login
        .profile_recovery_codes(&verified, &password, client)
        .await?;
    Ok(ok(json!({ "codes": codes })))
}

async fn disable(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    headers: HeaderMap,
    Json(body): Json<Password>,
) -> Result<Response, NethctiError> {
    let verified = caller(&state, &headers)?;
    let password = SecretString::from(body.password);
    state
        .login
        .profile_disable(&verified, &password, client)
        .await?;
    Ok(ok(json!({
        "code": 200,
        "message": "2FA disabled",
        "data": { "must_relogin": true },
    })))
}

/// One of [`DEVICE_AUDIENCES`], else 400 `invalid audience`.
fn device(audience: &str) -> Result<&'static str, NethctiError> {
    DEVICE_AUDIENCES
        .into_iter()
        .find(|d| *d == audience)
        .ok_or_else(|| {
            NethctiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "invalid audience",
            )
        })
}

async fn device_token_new(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    Path(audience): Path<String>,
    headers: HeaderMap,
) -> Result<Response, NethctiError> {
    let device = device(&audience)?;
    let verified = caller(&state, &headers)?;
    let token = state.login.device_token(&verified, device, client).await?;
    Ok(ok(json!({ "token": token.token.expose() })))
}

async fn device_token_exists(
    State(state): State<Arc<AppState>>,
    Path(audience): Path<String>,
    headers: HeaderMap,
) -> Result<Response, NethctiError> {
    let device = device(&audience)?;
    let verified = caller(&state, &headers)?;
    let exists = state
        .login
        .device_token_exists(&verified.sub, device)
        .await?;
    Ok(ok(json!({ "exists": exists })))
}

async fn device_token_delete(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    Path(audience): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, NethctiError> {
    let device = device(&audience)?;
    let verified = caller(&state, &headers)?;
    state
        .login
        .revoke_device_tokens(&verified.sub, device, client, RevokeReason::Logout)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
