//! Login flows, transport-neutral: password check by the backend, session creation, token
//! minting, logout. Emits the security events of SPEC 2.2 (target `security`) with user,
//! client address and session id, and never a password, token or credential.

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::SecretString;
use serde::Serialize;

use crate::backend::{Backend, BackendError, Verdict};
use crate::config;
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::token::{Kind, MintError, TokenService, Verified};

/// RFC 6749 section 5.1 token response.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("invalid username or password")]
    BadCredentials,
    #[error("authentication backend unavailable")]
    Unavailable(#[from] BackendError),
    #[error("internal error")]
    Internal(#[from] MintError),
}

pub struct LoginService {
    backend: Backend,
    tokens: Arc<TokenService>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
    access_ttl: u64,
    refresh_ttl: u64,
}

/// Upper bounds on what a client may send as credentials.
const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

impl LoginService {
    pub fn new(
        cfg: &config::Config,
        backend: Backend,
        tokens: Arc<TokenService>,
        revocations: Arc<Revocations>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            backend,
            tokens,
            revocations,
            metrics,
            access_ttl: cfg.tokens.access_ttl.as_secs(),
            refresh_ttl: cfg.tokens.refresh_ttl.as_secs(),
        }
    }

    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        client: IpAddr,
    ) -> Result<TokenPair, LoginError> {
        use secrecy::ExposeSecret;
        if username.is_empty() || password.expose_secret().is_empty() {
            return Err(LoginError::BadRequest("username and password are required"));
        }
        if username.len() > MAX_USERNAME || password.expose_secret().len() > MAX_PASSWORD {
            return Err(LoginError::BadRequest("username or password too long"));
        }
        let verdict = match self.backend.authenticate(username, password).await {
            Ok(v) => v,
            Err(e) => {
                self.metrics.record_login("unavailable");
                tracing::warn!(target: "security", event = "login_failure", user = username, client = %client, reason = "backend_unavailable", error = %e);
                return Err(e.into());
            }
        };
        let credential = match verdict {
            Verdict::Accepted { credential } => credential,
            Verdict::Rejected => {
                self.metrics.record_login("failure");
                tracing::info!(target: "security", event = "login_failure", user = username, client = %client, reason = "bad_credentials");
                return Err(LoginError::BadCredentials);
            }
        };
        let sid = self.tokens.random_id();
        let pair = self.issue(username, &sid, &["pwd"], credential.as_ref())?;
        self.metrics.record_login("success");
        tracing::info!(target: "security", event = "login_success", user = username, client = %client, sid = %sid);
        Ok(pair)
    }

    fn issue(
        &self,
        sub: &str,
        sid: &str,
        amr: &[&str],
        credential: Option<&SecretString>,
    ) -> Result<TokenPair, LoginError> {
        let (access_token, _) =
            self.tokens
                .mint(Kind::Access, sub, sid, amr, self.access_ttl, credential)?;
        let (refresh_token, _) =
            self.tokens
                .mint(Kind::Refresh, sub, sid, amr, self.refresh_ttl, None)?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer",
            expires_in: self.access_ttl,
            refresh_token,
            refresh_expires_in: self.refresh_ttl,
        })
    }

    /// Revokes the session of `token` everywhere at once and ends the backend session.
    pub async fn logout(&self, token: &Verified, client: IpAddr) {
        // Every token of this session dies within refresh_ttl of now.
        let until = self.tokens.clock().now() + self.refresh_ttl;
        self.revocations.revoke(&token.sid, until);
        if let Err(e) = self.backend.logout(token.credential.as_ref()).await {
            tracing::warn!(user = %token.sub, sid = %token.sid, error = %e, "backend logout failed; session revoked anyway");
        }
        tracing::info!(target: "security", event = "logout", user = %token.sub, client = %client, sid = %token.sid);
    }
}
