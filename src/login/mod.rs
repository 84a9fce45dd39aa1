//! Login flows, transport-neutral: password check by the backend, TOTP second factor with
//! recovery codes, sessions with one-use rotating refresh tokens, logout and revocation,
//! lockout. Emits the security events of SPEC 2.2 (through [`crate::events`]) with user,
//! client address and session id, and never a password, token, code, secret or credential.
//!
//! One [`LoginService`], its flows split by concern: `password` (step one, lockout),
//! `session` (issuing, refresh rotation, logout, revocation) and `second_factor` (step two,
//! enrollment and recovery codes). This file holds the service, what the flows return and
//! their error; `mfa` and `lockout` are the pure parts underneath.

pub mod admin;
pub mod lockout;
pub mod mfa;
mod password;
mod profile;
mod redacted;
mod second_factor;
mod session;

pub use redacted::Redacted;
pub use session::{Issued, SingleToken};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, Verdict};
use crate::config;
use crate::events::SecurityEvent;
use crate::metrics::{BackendOperation, Metrics};
use crate::revocation::Revocations;
use crate::store::{Store, StoreError};
use crate::token::{MintError, TokenService};

/// Lifetime of the token that stands between password and second factor.
pub const MFA_TOKEN_TTL: u64 = 300;
/// Upper bounds on what a client may send as credentials.
const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;
const MAX_CODE: usize = 64;

/// RFC 6749 section 5.1 token response.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: Redacted<String>,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: Redacted<String>,
    pub refresh_expires_in: u64,
}

/// What a correct password leads to.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LoginOutcome {
    Tokens(Issued),
    MfaRequired {
        mfa_required: bool,
        mfa_token: Redacted<String>,
        expires_in: u64,
        /// When the MFA token expires (unix seconds).
        #[serde(skip)]
        exp: u64,
    },
}

/// A pending second factor, shown once: the secret, and the same as URL and QR code.
#[derive(Debug, Serialize)]
pub struct Enrollment {
    pub secret: Redacted<String>,
    pub otpauth_url: Redacted<String>,
    pub qr_png_base64: Redacted<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("invalid username or password")]
    BadCredentials,
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// A wrong TOTP or recovery code (counted by the lockout where a code is guessed).
    #[error("invalid code")]
    InvalidCode,
    #[error("too many failed attempts")]
    Locked { retry_after: u64 },
    #[error("{0}")]
    Conflict(&'static str),
    #[error("authentication backend unavailable")]
    BackendUnavailable(#[from] BackendError),
    #[error("state store unavailable")]
    StoreUnavailable(#[from] StoreError),
    #[error("internal error")]
    Internal(#[from] MintError),
    #[error("logins are suspended (lockdown)")]
    Lockdown,
}

pub struct LoginService {
    backend: ObservedBackend,
    tokens: Arc<TokenService>,
    store: Arc<dyn Store>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
    lockout: lockout::Lockout,
    totp_issuer: String,
    access_ttl: u64,
    /// Seconds a rotated refresh token may be presented again for the same new pair.
    refresh_grace: u64,
    /// How long a revoked session id must stay in the revocation set: the longest an access
    /// token of it can still be presented (its life plus the leeway, with a margin).
    revoke_for: u64,
    refresh_ttl: u64,
    /// Lockdown as last read from the store (`admin::sync_lockdown`).
    lockdown: std::sync::atomic::AtomicBool,
    max_token_ttl: u64,
    leeway: u64,
    /// `[compat] token_ttl` and `device_token_ttl` (SPEC 2.7).
    profile_ttl: u64,
    device_ttl: u64,
}

/// Whether a canonical user name from a backend can be `sub`, `X-Auth-User` and a store key:
/// not empty, at most [`MAX_USERNAME`] bytes, no control character (C0, DEL, C1), so it is
/// always a valid header value and cannot forge a log line.
pub fn usable_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_USERNAME && !name.chars().any(char::is_control)
}

/// Longest user agent kept with a session (for `authgate admin sessions`).
const MAX_USER_AGENT: usize = 256;

tokio::task_local! {
    /// The user agent of the request a login flow serves: recorded with the session it
    /// opens, for operators. Set by the HTTP adapter around the flow ([`with_user_agent`]), so
    /// the flows' signatures stay about authentication.
    static USER_AGENT: Option<String>;
}

/// Runs a login flow with the client's `User-Agent` (bounded, control characters dropped)
/// known to the session it may open.
pub async fn with_user_agent<F: std::future::Future>(
    user_agent: Option<&str>,
    flow: F,
) -> F::Output {
    let kept = user_agent.map(|ua| {
        ua.chars()
            .filter(|c| !c.is_control())
            .scan(0, |len, c| {
                *len += c.len_utf8();
                (*len <= MAX_USER_AGENT).then_some(c)
            })
            .collect::<String>()
    });
    USER_AGENT
        .scope(kept.filter(|ua| !ua.is_empty()), flow)
        .await
}

/// The user agent [`with_user_agent`] set, if any.
fn user_agent() -> Option<String> {
    USER_AGENT.try_with(Clone::clone).ok().flatten()
}

fn check_len(value: &str, max: usize) -> Result<(), LoginError> {
    if value.is_empty() {
        return Err(LoginError::BadRequest("required fields are empty"));
    }
    if value.len() > max {
        return Err(LoginError::BadRequest("a field is too long"));
    }
    Ok(())
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn parse<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, LoginError> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt(e.to_string()).into())
}

impl LoginService {
    pub fn new(
        cfg: &config::Config,
        backend: Backend,
        tokens: Arc<TokenService>,
        store: Arc<dyn Store>,
        revocations: Arc<Revocations>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            backend: ObservedBackend {
                inner: backend,
                metrics: metrics.clone(),
                up: AtomicBool::new(true),
            },
            tokens,
            store,
            revocations,
            metrics,
            // A reservation outlives the slowest backend call, with room for the store calls
            // (and the file backend's queue for the password hasher).
            lockout: lockout::Lockout::new(&cfg.lockout, {
                let backend = match &cfg.backend {
                    config::BackendConfig::Nethcti(remote)
                    | config::BackendConfig::Http(remote) => remote.timeout,
                    config::BackendConfig::File(_) => std::time::Duration::ZERO,
                };
                backend + std::time::Duration::from_secs(30)
            }),
            refresh_grace: cfg.tokens.refresh_reuse_grace.as_secs(),
            totp_issuer: cfg.totp.issuer.clone(),
            access_ttl: cfg.tokens.access_ttl.as_secs(),
            revoke_for: cfg.tokens.access_ttl.as_secs() + cfg.tokens.leeway.as_secs() + 60,
            refresh_ttl: cfg.tokens.refresh_ttl.as_secs(),
            lockdown: std::sync::atomic::AtomicBool::new(false),
            max_token_ttl: cfg.admin.max_token_ttl.as_secs(),
            leeway: cfg.tokens.leeway.as_secs(),
            profile_ttl: cfg.compat.token_ttl.as_secs(),
            device_ttl: cfg.compat.device_token_ttl.as_secs(),
        }
    }

    fn now(&self) -> u64 {
        self.tokens.clock().now()
    }

    fn emit(&self, event: SecurityEvent<'_>) {
        event.emit(&self.metrics);
    }

    /// False while the last call to the backend failed (unreachable, timed out); true before
    /// the first call.
    pub fn backend_up(&self) -> bool {
        self.backend.up.load(Ordering::Relaxed)
    }
}

/// The backend as the flows call it: each call that goes out is timed
/// (`authgate_backend_request_duration_seconds`) and its success kept for `/status`.
struct ObservedBackend {
    inner: Backend,
    metrics: Arc<Metrics>,
    up: AtomicBool,
}

impl ObservedBackend {
    fn observed<T>(
        &self,
        operation: BackendOperation,
        started: Instant,
        result: Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        self.metrics
            .record_backend_request(operation, started.elapsed());
        self.up.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Verdict, BackendError> {
        let started = Instant::now();
        let result = self.inner.authenticate(username, password).await;
        self.observed(BackendOperation::Authenticate, started, result)
    }

    async fn session_alive(&self, credential: Option<&SecretString>) -> Result<bool, BackendError> {
        if !self.inner.calls_out(credential) {
            return self.inner.session_alive(credential).await;
        }
        let started = Instant::now();
        let result = self.inner.session_alive(credential).await;
        self.observed(BackendOperation::Session, started, result)
    }

    async fn logout(&self, credential: Option<&SecretString>) -> Result<(), BackendError> {
        if !self.inner.calls_out(credential) {
            return self.inner.logout(credential).await;
        }
        let started = Instant::now();
        let result = self.inner.logout(credential).await;
        self.observed(BackendOperation::Logout, started, result)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ACCESS: &str = "eyJhbGciOiJFZERTQSJ9.access-claims.signature";
    const REFRESH: &str = "eyJhbGciOiJFZERTQSJ9.refresh-claims.signature";

    fn pair() -> TokenPair {
        TokenPair {
            access_token: ACCESS.to_owned().into(),
            token_type: "Bearer",
            expires_in: 900,
            refresh_token: REFRESH.to_owned().into(),
            refresh_expires_in: 86400,
        }
    }

    #[tokio::test]
    async fn the_user_agent_kept_is_bounded_and_printable() {
        assert_eq!(with_user_agent(None, async { user_agent() }).await, None);
        assert_eq!(
            with_user_agent(Some("curl/8\u{1b}[31m\n"), async { user_agent() }).await,
            Some("curl/8[31m".to_owned())
        );
        assert_eq!(
            with_user_agent(Some("\n"), async { user_agent() }).await,
            None
        );
        let long = "ü".repeat(MAX_USER_AGENT);
        let kept = with_user_agent(Some(&long), async { user_agent() })
            .await
            .unwrap();
        assert_eq!(kept.len(), MAX_USER_AGENT);
        assert_eq!(user_agent(), None, "outside a flow");
    }

    #[test]
    fn user_names_that_could_not_be_a_header_are_unusable() {
        assert!(usable_user_name("alice"));
        assert!(usable_user_name("zoë smith@example.org"));
        assert!(usable_user_name(&"x".repeat(MAX_USERNAME)));
        let long = "x".repeat(MAX_USERNAME + 1);
        for bad in [
            "",
            "a\tb",
            "a\nb",
            "a\rb",
            "a\0",
            "a\u{7f}",
            "a\u{85}",
            "\u{1b}[31m",
            &long,
        ] {
            assert!(!usable_user_name(bad), "{bad:?}");
        }
        for name in ["alice", "zoë smith@example.org"] {
            assert!(
                http::HeaderValue::from_bytes(name.as_bytes()).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn debug_of_what_the_flows_return_shows_no_secret() {
        let shown = [
            format!("{:?}", pair()),
            format!("{:#?}", LoginOutcome::Tokens(Issued::Pair(pair()))),
            format!(
                "{:?}",
                LoginOutcome::MfaRequired {
                    mfa_required: true,
                    mfa_token: ACCESS.to_owned().into(),
                    expires_in: MFA_TOKEN_TTL,
                    exp: 1_000_300,
                }
            ),
            format!(
                "{:?}",
                Enrollment {
                    secret: "JBSWY3DPEHPK3PXP".to_owned().into(),
                    otpauth_url: "otpauth://totp/x:alice?secret=JBSWY3DPEHPK3PXP"
                        .to_owned()
                        .into(),
                    qr_png_base64: "iVBORw0KGgoAAAANSUhEUg".to_owned().into(),
                }
            ),
            format!(
                "{:?}",
                Redacted::new(vec!["abcd-efgh-jkmn-pqrs".to_owned()])
            ),
        ];
        for text in &shown {
            assert!(text.contains(redacted::MARKER), "{text}");
            for secret in [
                ACCESS,
                REFRESH,
                "JBSWY3DPEHPK3PXP",
                "otpauth://",
                "iVBORw0KGgo",
                "abcd-efgh",
            ] {
                assert!(!text.contains(secret), "{secret} shown in {text}");
            }
        }
        assert!(shown[0].contains("expires_in: 900"), "{}", shown[0]);
    }

    #[test]
    fn json_of_what_the_flows_return_is_the_values_themselves() {
        assert_eq!(
            serde_json::to_string(&LoginOutcome::Tokens(Issued::Pair(pair()))).unwrap(),
            format!(
                r#"{{"access_token":"{ACCESS}","token_type":"Bearer","expires_in":900,"refresh_token":"{REFRESH}","refresh_expires_in":86400}}"#
            )
        );
        let mfa = LoginOutcome::MfaRequired {
            mfa_required: true,
            mfa_token: ACCESS.to_owned().into(),
            expires_in: 300,
            exp: 1_000_300,
        };
        assert_eq!(
            serde_json::to_string(&mfa).unwrap(),
            format!(r#"{{"mfa_required":true,"mfa_token":"{ACCESS}","expires_in":300}}"#)
        );
        let enrollment = Enrollment {
            secret: "S".to_owned().into(),
            otpauth_url: "U".to_owned().into(),
            qr_png_base64: "Q".to_owned().into(),
        };
        assert_eq!(
            serde_json::to_string(&enrollment).unwrap(),
            r#"{"secret":"S","otpauth_url":"U","qr_png_base64":"Q"}"#
        );
        let codes = Redacted::new(vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            serde_json::json!({ "recovery_codes": codes }).to_string(),
            r#"{"recovery_codes":["a","b"]}"#
        );
    }
}
