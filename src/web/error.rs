//! The one mapping from what went wrong to what an API client sees: a [`Denial`] or a
//! [`LoginError`] becomes a status, a JSON body `{"error","error_description"}`, and
//! `WWW-Authenticate` / `Retry-After` where they apply. Bad input is always a 4xx, never
//! axum's default 415/422 rejections; a 500 is only for authgate's own faults, and the
//! detail of such a fault goes to the log, not to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::decision::{Denial, Dialect, dialect_body};
use crate::login::LoginError;

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
    pub(super) fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        Self {
            status,
            code,
            description,
            www_authenticate: None,
            retry_after: None,
        }
    }

    pub(super) fn bad_request(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        Self {
            status: StatusCode::from_u16(d.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            code: d.json_error(),
            description: d.description(),
            www_authenticate: d.www_authenticate(),
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
            LoginError::InvalidCode => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_grant", "invalid code")
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
            LoginError::Lockdown => unavailable("logins are suspended; try again later"),
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

/// An error of the nethcti-middleware profile's routes (SPEC 2.7): the same mapping, in the
/// body that client reads, `{"code","message","data":null}` (with `error` kept), realm
/// `nethcti`. Where the middleware's messages are the client's contract, they are kept.
#[derive(Debug)]
pub struct NethctiError(ApiError);

impl From<ApiError> for NethctiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<Denial> for NethctiError {
    fn from(d: Denial) -> Self {
        let mut e = ApiError::from(d);
        e.www_authenticate = d.response(Dialect::Nethcti).www_authenticate;
        Self(e)
    }
}

impl From<LoginError> for NethctiError {
    fn from(e: LoginError) -> Self {
        Self(match e {
            LoginError::BadCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "incorrect Username or Password",
            ),
            LoginError::InvalidCode => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_grant", "invalid_otp")
            }
            other => ApiError::from(other),
        })
    }
}

impl NethctiError {
    /// A refusal with the profile's own message (`missing Username or Password`, ...).
    pub(super) fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self(ApiError::new(status, code, message))
    }
}

impl IntoResponse for NethctiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = dialect_body(e.status.as_u16(), e.description, e.code);
        let www_authenticate = match e.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Some(
                e.www_authenticate
                    .unwrap_or_else(|| Dialect::Nethcti.plain_challenge()),
            ),
            _ => None,
        };
        ApiError {
            www_authenticate,
            ..e
        }
        .respond(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "error_description": self.description});
        self.respond(body)
    }
}

impl ApiError {
    /// This error's status and headers around `body`.
    fn respond(self, body: serde_json::Value) -> Response {
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
