//! Login flows, transport-neutral: password check by the backend, TOTP second factor with
//! recovery codes, sessions with one-use rotating refresh tokens, logout and revocation,
//! lockout. Emits the security events of SPEC 2.2 (target `security`) with user, client
//! address and session id, and never a password, token, code, secret or credential.

pub mod lockout;
pub mod mfa;
mod redacted;

pub use redacted::Redacted;

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, Verdict};
use crate::config;
use crate::events::{LoginFailure, RevokeReason, SecurityEvent};
use crate::metrics::{LoginResult, Metrics};
use crate::revocation::Revocations;
use crate::store::{Ns, Store, StoreError, update};
use crate::token::{Kind, MintError, TokenError, TokenService, Verified};
use mfa::MfaRecord;

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
    Tokens(TokenPair),
    MfaRequired {
        mfa_required: bool,
        mfa_token: Redacted<String>,
        expires_in: u64,
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
}

/// One login session (a refresh-token family), as stored under its sid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Session {
    user: String,
    amr: Vec<String>,
    /// The only refresh token of this family that may still be used.
    refresh_jti: String,
    /// Backend credential sealed under the sid.
    cred: Option<String>,
    expires_at: u64,
}

pub struct LoginService {
    backend: Backend,
    tokens: Arc<TokenService>,
    store: Arc<dyn Store>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
    lockout: lockout::Lockout,
    totp_issuer: String,
    access_ttl: u64,
    /// How long a revoked session id must stay in the revocation set: the longest an access
    /// token of it can still be presented (its life plus the leeway, with a margin).
    revoke_for: u64,
    refresh_ttl: u64,
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
            backend,
            tokens,
            store,
            revocations,
            metrics,
            lockout: lockout::Lockout::new(&cfg.lockout),
            totp_issuer: cfg.totp.issuer.clone(),
            access_ttl: cfg.tokens.access_ttl.as_secs(),
            revoke_for: cfg.tokens.access_ttl.as_secs() + cfg.tokens.leeway.as_secs() + 60,
            refresh_ttl: cfg.tokens.refresh_ttl.as_secs(),
        }
    }

    fn now(&self) -> u64 {
        self.tokens.clock().now()
    }

    fn emit(&self, event: SecurityEvent<'_>) {
        event.emit(&self.metrics);
    }

    async fn ensure_unlocked(&self, user: &str, client: IpAddr) -> Result<(), LoginError> {
        let keys = lockout::keys(user, client);
        if let Some(retry_after) = self.lockout.locked(&*self.store, &keys, self.now()).await? {
            self.metrics.record_login(LoginResult::Locked);
            self.emit(SecurityEvent::LoginFailure {
                user,
                client,
                reason: LoginFailure::Locked,
            });
            return Err(LoginError::Locked { retry_after });
        }
        Ok(())
    }

    async fn count_failure(&self, user: &str, client: IpAddr) -> Result<(), LoginError> {
        let keys = lockout::keys(user, client);
        if let Some(lock_for) = self.lockout.fail(&*self.store, &keys, self.now()).await? {
            self.emit(SecurityEvent::Lockout {
                user,
                client,
                lock_for,
            });
        }
        Ok(())
    }

    /// Step one: the password, checked by the backend.
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        client: IpAddr,
    ) -> Result<LoginOutcome, LoginError> {
        check_len(username, MAX_USERNAME)?;
        check_len(password.expose_secret(), MAX_PASSWORD)?;
        self.ensure_unlocked(username, client).await?;
        let verdict = match self.backend.authenticate(username, password).await {
            Ok(v) => v,
            Err(e) => {
                self.metrics.record_login(LoginResult::Unavailable);
                self.emit(SecurityEvent::LoginFailure {
                    user: username,
                    client,
                    reason: LoginFailure::BackendUnavailable(&e),
                });
                return Err(e.into());
            }
        };
        let credential = match verdict {
            Verdict::Accepted { credential } => credential,
            Verdict::Rejected => {
                self.metrics.record_login(LoginResult::Failure);
                self.emit(SecurityEvent::LoginFailure {
                    user: username,
                    client,
                    reason: LoginFailure::BadCredentials,
                });
                self.count_failure(username, client).await?;
                return Err(LoginError::BadCredentials);
            }
        };
        let sid = self.tokens.random_id();
        let mfa = self.mfa_record(username).await?;
        if mfa.as_ref().is_some_and(|m| m.enabled) {
            let (mfa_token, _) = self.tokens.mint(
                Kind::Mfa,
                username,
                &sid,
                &["pwd"],
                MFA_TOKEN_TTL,
                credential.as_ref(),
            )?;
            self.emit(SecurityEvent::LoginSuccess {
                user: username,
                client,
                sid: &sid,
                mfa_pending: true,
            });
            return Ok(LoginOutcome::MfaRequired {
                mfa_required: true,
                mfa_token: mfa_token.into(),
                expires_in: MFA_TOKEN_TTL,
            });
        }
        self.lockout
            .clear(&*self.store, &lockout::keys(username, client)[0])
            .await?;
        let pair = self
            .start_session(username, &sid, &["pwd"], credential.as_ref())
            .await?;
        self.metrics.record_login(LoginResult::Success);
        self.emit(SecurityEvent::LoginSuccess {
            user: username,
            client,
            sid: &sid,
            mfa_pending: false,
        });
        Ok(LoginOutcome::Tokens(pair))
    }

    /// Step two: a TOTP or recovery code for the MFA token from step one.
    pub async fn login_otp(
        &self,
        mfa_token: &str,
        code: &str,
        client: IpAddr,
    ) -> Result<TokenPair, LoginError> {
        check_len(mfa_token, crate::token::MAX_TOKEN_LEN)?;
        check_len(code, MAX_CODE)?;
        let t = self
            .tokens
            .verify(mfa_token)
            .map_err(|_| LoginError::InvalidGrant("invalid or expired MFA token"))?;
        if t.kind != Kind::Mfa {
            return Err(LoginError::InvalidGrant("not an MFA token"));
        }
        let user = t.sub.to_string();
        self.ensure_unlocked(&user, client).await?;
        let used = self.check_code(&user, code).await?;
        let Some(used) = used else {
            self.metrics.record_login(LoginResult::Failure);
            self.emit(SecurityEvent::MfaFailure {
                user: &user,
                client,
                sid: &t.sid,
            });
            self.count_failure(&user, client).await?;
            return Err(LoginError::InvalidGrant("invalid code"));
        };
        // Each MFA token opens one session.
        let fresh = self
            .store
            .compare_and_swap(
                Ns::Once,
                &format!("mfa:{}", t.jti),
                None,
                Some(b"1"),
                t.exp + 1,
            )
            .await?;
        if !fresh {
            return Err(LoginError::InvalidGrant("MFA token already used"));
        }
        if used == CodeKind::Recovery {
            self.emit(SecurityEvent::RecoveryCodeUsed {
                user: &user,
                client,
                sid: &t.sid,
            });
        }
        self.lockout
            .clear(&*self.store, &lockout::keys(&user, client)[0])
            .await?;
        let pair = self
            .start_session(&user, &t.sid, &["pwd", "otp"], t.credential.as_ref())
            .await?;
        self.metrics.record_login(LoginResult::Success);
        self.emit(SecurityEvent::MfaSuccess {
            user: &user,
            client,
            sid: &t.sid,
        });
        Ok(pair)
    }

    async fn start_session(
        &self,
        user: &str,
        sid: &str,
        amr: &[&str],
        credential: Option<&SecretString>,
    ) -> Result<TokenPair, LoginError> {
        let (pair, refresh_jti) = self.issue(user, sid, amr, credential)?;
        let now = self.now();
        let session = Session {
            user: user.to_owned(),
            amr: amr.iter().map(|s| (*s).to_owned()).collect(),
            refresh_jti,
            cred: credential.map(|c| self.tokens.seal(sid, c)).transpose()?,
            expires_at: now + self.refresh_ttl,
        };
        self.store
            .put(Ns::Session, sid, &json(&session), session.expires_at)
            .await?;
        let until = session.expires_at;
        update(&*self.store, Ns::UserSessions, user, |raw| {
            let mut sids: Vec<(String, u64)> = raw
                .and_then(|r| serde_json::from_slice(r).ok())
                .unwrap_or_default();
            sids.retain(|(_, exp)| *exp > now);
            sids.push((sid.to_owned(), until));
            let max = sids.iter().map(|(_, e)| *e).max().unwrap_or(until);
            (Some(json(&sids)), max, ())
        })
        .await?;
        Ok(pair)
    }

    fn issue(
        &self,
        sub: &str,
        sid: &str,
        amr: &[&str],
        credential: Option<&SecretString>,
    ) -> Result<(TokenPair, String), LoginError> {
        let (access_token, _) =
            self.tokens
                .mint(Kind::Access, sub, sid, amr, self.access_ttl, credential)?;
        let (refresh_token, claims) =
            self.tokens
                .mint(Kind::Refresh, sub, sid, amr, self.refresh_ttl, None)?;
        let pair = TokenPair {
            access_token: access_token.into(),
            token_type: "Bearer",
            expires_in: self.access_ttl,
            refresh_token: refresh_token.into(),
            refresh_expires_in: self.refresh_ttl,
        };
        Ok((pair, claims.jti))
    }

    /// Rotates a refresh token: the presented one dies, a new pair is issued. Presenting a
    /// spent one revokes the whole session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: IpAddr,
    ) -> Result<TokenPair, LoginError> {
        check_len(refresh_token, crate::token::MAX_TOKEN_LEN)?;
        let t = self.tokens.verify(refresh_token).map_err(|e| match e {
            TokenError::Malformed => LoginError::BadRequest("malformed refresh token"),
            _ => LoginError::InvalidGrant("invalid or expired refresh token"),
        })?;
        if t.kind != Kind::Refresh {
            return Err(LoginError::InvalidGrant("not a refresh token"));
        }
        if self.revocations.is_revoked(&t.sid)
            || self.store.get(Ns::Revoked, &t.sid).await?.is_some()
        {
            return Err(LoginError::InvalidGrant("session revoked"));
        }
        let Some(raw) = self.store.get(Ns::Session, &t.sid).await? else {
            return Err(LoginError::InvalidGrant("session ended"));
        };
        let session: Session = parse(&raw)?;
        if session.refresh_jti != *t.jti {
            self.revoke_session(&t.sid, &t.sub, client, RevokeReason::RefreshReuse)
                .await?;
            self.emit(SecurityEvent::RefreshReuse {
                user: &t.sub,
                client,
                sid: &t.sid,
            });
            return Err(LoginError::InvalidGrant(
                "refresh token already used; session revoked",
            ));
        }
        let credential = session
            .cred
            .as_deref()
            .and_then(|c| self.tokens.unseal(&t.sid, c));
        if !self.backend.session_alive(credential.as_ref()).await? {
            self.revoke_session(&t.sid, &t.sub, client, RevokeReason::BackendSessionEnded)
                .await?;
            return Err(LoginError::InvalidGrant("backend session ended"));
        }
        let amr: Vec<&str> = session.amr.iter().map(String::as_str).collect();
        let (pair, new_jti) = self.issue(&session.user, &t.sid, &amr, credential.as_ref())?;
        let next = Session {
            refresh_jti: new_jti,
            expires_at: self.now() + self.refresh_ttl,
            ..session.clone()
        };
        let swapped = self
            .store
            .compare_and_swap(
                Ns::Session,
                &t.sid,
                Some(&raw),
                Some(&json(&next)),
                next.expires_at,
            )
            .await?;
        if !swapped {
            // Someone else rotated this same token in the meantime: that is reuse too.
            self.revoke_session(&t.sid, &t.sub, client, RevokeReason::RefreshReuse)
                .await?;
            self.emit(SecurityEvent::RefreshReuse {
                user: &t.sub,
                client,
                sid: &t.sid,
            });
            return Err(LoginError::InvalidGrant(
                "refresh token already used; session revoked",
            ));
        }
        self.emit(SecurityEvent::Refresh {
            user: &t.sub,
            client,
            sid: &t.sid,
        });
        Ok(pair)
    }

    /// Revokes one session everywhere: store (replicas pick it up) and this replica at once.
    async fn revoke_session(
        &self,
        sid: &str,
        user: &str,
        client: IpAddr,
        reason: RevokeReason,
    ) -> Result<(), LoginError> {
        // Refresh tokens die with the session record; the revocation entry only has to outlast
        // the access tokens already out, which keeps the hot-path set small.
        let until = self.now() + self.revoke_for;
        self.revocations.revoke(sid, until);
        self.store.delete(Ns::Session, sid).await?;
        self.store
            .put(Ns::Revoked, sid, until.to_string().as_bytes(), until)
            .await?;
        self.emit(SecurityEvent::Revoked {
            user,
            client,
            sid,
            reason,
        });
        Ok(())
    }

    /// Revokes every session of `user` (after a change of second factor).
    async fn revoke_user(
        &self,
        user: &str,
        client: IpAddr,
        reason: RevokeReason,
    ) -> Result<(), LoginError> {
        let sids: Vec<(String, u64)> = match self.store.get(Ns::UserSessions, user).await? {
            Some(raw) => parse(&raw)?,
            None => Vec::new(),
        };
        for (sid, _) in sids {
            self.revoke_session(&sid, user, client, reason).await?;
        }
        self.store.delete(Ns::UserSessions, user).await?;
        Ok(())
    }

    /// Ends the session of `token` everywhere at once and logs out of the backend.
    pub async fn logout(&self, token: &Verified, client: IpAddr) -> Result<(), LoginError> {
        self.revoke_session(&token.sid, &token.sub, client, RevokeReason::Logout)
            .await?;
        if let Err(e) = self.backend.logout(token.credential.as_ref()).await {
            tracing::warn!(user = %token.sub, sid = %token.sid, error = %e, "backend logout failed; session revoked anyway");
        }
        self.emit(SecurityEvent::Logout {
            user: &token.sub,
            client,
            sid: &token.sid,
        });
        Ok(())
    }

    async fn mfa_record(&self, user: &str) -> Result<Option<MfaRecord>, LoginError> {
        match self.store.get(Ns::Mfa, user).await? {
            Some(raw) => Ok(Some(parse(&raw)?)),
            None => Ok(None),
        }
    }

    fn open_secret(&self, user: &str, record: &MfaRecord) -> Result<totp_rs::TOTP, LoginError> {
        self.tokens
            .unseal(&mfa::seal_context(user), &record.secret)
            .and_then(|s| mfa::totp(&s, &self.totp_issuer, user))
            .ok_or_else(|| StoreError::Corrupt("TOTP secret does not open".into()).into())
    }

    /// Checks `code` (TOTP, or a recovery code when `enabled`) and consumes it atomically.
    async fn check_code(&self, user: &str, code: &str) -> Result<Option<CodeKind>, LoginError> {
        let Some(record) = self.mfa_record(user).await? else {
            return Ok(None);
        };
        let totp = self.open_secret(user, &record)?;
        let now = self.now();
        let consumed = update(&*self.store, Ns::Mfa, user, |raw| {
            let Some(mut rec) = raw.and_then(|r| serde_json::from_slice::<MfaRecord>(r).ok())
            else {
                return (raw.map(<[u8]>::to_vec), 0, None);
            };
            if let Some(step) = mfa::matching_step(&totp, code, now, rec.last_step) {
                rec.last_step = step;
                return (Some(json(&rec)), 0, Some(CodeKind::Totp));
            }
            if rec.enabled
                && let Some(i) = mfa::matching_recovery(&rec, user, code)
            {
                rec.recovery.remove(i);
                return (Some(json(&rec)), 0, Some(CodeKind::Recovery));
            }
            (raw.map(<[u8]>::to_vec), 0, None)
        })
        .await?;
        Ok(consumed)
    }

    /// Starts enrollment: a new secret, not active until confirmed.
    pub async fn enroll(&self, token: &Verified) -> Result<Enrollment, LoginError> {
        let user = &*token.sub;
        if self.mfa_record(user).await?.is_some_and(|r| r.enabled) {
            return Err(LoginError::Conflict(
                "two-factor authentication is already enabled",
            ));
        }
        let secret = mfa::new_secret();
        let totp = mfa::totp(&secret, &self.totp_issuer, user)
            .ok_or(LoginError::BadRequest("user name unusable for TOTP"))?;
        let record = MfaRecord {
            secret: self.tokens.seal(&mfa::seal_context(user), &secret)?,
            enabled: false,
            recovery: Vec::new(),
            last_step: 0,
        };
        self.store.put(Ns::Mfa, user, &json(&record), 0).await?;
        Ok(Enrollment {
            secret: secret.expose_secret().to_owned().into(),
            otpauth_url: totp.get_url().into(),
            qr_png_base64: totp.get_qr_base64().unwrap_or_default().into(),
        })
    }

    /// Activates a pending enrollment with a valid code; returns the recovery codes (once).
    /// Every session of the user is revoked: they sign in again with the second factor.
    pub async fn confirm(
        &self,
        token: &Verified,
        code: &str,
        client: IpAddr,
    ) -> Result<Redacted<Vec<String>>, LoginError> {
        check_len(code, MAX_CODE)?;
        let user = &*token.sub;
        match self.mfa_record(user).await? {
            None => return Err(LoginError::Conflict("no enrollment pending")),
            Some(r) if r.enabled => {
                return Err(LoginError::Conflict(
                    "two-factor authentication is already enabled",
                ));
            }
            Some(_) => {}
        }
        if self.check_code(user, code).await? != Some(CodeKind::Totp) {
            self.emit(SecurityEvent::MfaFailure {
                user,
                client,
                sid: &token.sid,
            });
            return Err(LoginError::InvalidGrant("invalid code"));
        }
        let codes = self.replace_recovery_codes(user, true).await?;
        self.emit(SecurityEvent::TwoFactorEnabled {
            user,
            client,
            sid: &token.sid,
        });
        self.revoke_user(user, client, RevokeReason::TwoFactorEnabled)
            .await?;
        Ok(codes)
    }

    async fn replace_recovery_codes(
        &self,
        user: &str,
        enable: bool,
    ) -> Result<Redacted<Vec<String>>, LoginError> {
        let (codes, digests) = mfa::new_recovery_codes(user);
        update(&*self.store, Ns::Mfa, user, |raw| {
            let Some(mut rec) = raw.and_then(|r| serde_json::from_slice::<MfaRecord>(r).ok())
            else {
                return (raw.map(<[u8]>::to_vec), 0, ());
            };
            rec.enabled |= enable;
            rec.recovery = digests.clone();
            (Some(json(&rec)), 0, ())
        })
        .await?;
        Ok(codes.into())
    }

    /// Turns 2FA off after a valid code; revokes every session of the user.
    pub async fn disable(
        &self,
        token: &Verified,
        code: &str,
        client: IpAddr,
    ) -> Result<(), LoginError> {
        self.require_enabled_code(token, code, client).await?;
        self.store.delete(Ns::Mfa, &token.sub).await?;
        self.emit(SecurityEvent::TwoFactorDisabled {
            user: &token.sub,
            client,
            sid: &token.sid,
        });
        self.revoke_user(&token.sub, client, RevokeReason::TwoFactorDisabled)
            .await
    }

    /// A fresh set of recovery codes after a valid code; the old ones die.
    pub async fn regenerate_codes(
        &self,
        token: &Verified,
        code: &str,
        client: IpAddr,
    ) -> Result<Redacted<Vec<String>>, LoginError> {
        self.require_enabled_code(token, code, client).await?;
        self.replace_recovery_codes(&token.sub, false).await
    }

    async fn require_enabled_code(
        &self,
        token: &Verified,
        code: &str,
        client: IpAddr,
    ) -> Result<(), LoginError> {
        check_len(code, MAX_CODE)?;
        if !self
            .mfa_record(&token.sub)
            .await?
            .is_some_and(|r| r.enabled)
        {
            return Err(LoginError::Conflict(
                "two-factor authentication is not enabled",
            ));
        }
        self.ensure_unlocked(&token.sub, client).await?;
        match self.check_code(&token.sub, code).await? {
            Some(kind) => {
                if kind == CodeKind::Recovery {
                    self.emit(SecurityEvent::RecoveryCodeUsed {
                        user: &token.sub,
                        client,
                        sid: &token.sid,
                    });
                }
                Ok(())
            }
            None => {
                self.emit(SecurityEvent::MfaFailure {
                    user: &token.sub,
                    client,
                    sid: &token.sid,
                });
                self.count_failure(&token.sub, client).await?;
                Err(LoginError::InvalidGrant("invalid code"))
            }
        }
    }

    /// `(enabled, recovery_codes_left)`.
    pub async fn status(&self, token: &Verified) -> Result<(bool, usize), LoginError> {
        Ok(match self.mfa_record(&token.sub).await? {
            Some(r) if r.enabled => (true, r.recovery.len()),
            _ => (false, 0),
        })
    }

    /// Whether the state store answers (part of readiness).
    pub async fn store_ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeKind {
    Totp,
    Recovery,
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

    #[test]
    fn debug_of_what_the_flows_return_shows_no_secret() {
        let shown = [
            format!("{:?}", pair()),
            format!("{:#?}", LoginOutcome::Tokens(pair())),
            format!(
                "{:?}",
                LoginOutcome::MfaRequired {
                    mfa_required: true,
                    mfa_token: ACCESS.to_owned().into(),
                    expires_in: MFA_TOKEN_TTL,
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
            serde_json::to_string(&LoginOutcome::Tokens(pair())).unwrap(),
            format!(
                r#"{{"access_token":"{ACCESS}","token_type":"Bearer","expires_in":900,"refresh_token":"{REFRESH}","refresh_expires_in":86400}}"#
            )
        );
        let mfa = LoginOutcome::MfaRequired {
            mfa_required: true,
            mfa_token: ACCESS.to_owned().into(),
            expires_in: 300,
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
