//! Step one of a login: the password, checked by the backend, behind the lockout. Also owns
//! the lockout bookkeeping the second factor shares (`ensure_unlocked`, `count_failure`).
//! A wrong user and a wrong password must stay indistinguishable, and the password is never
//! logged or kept.
//!
//! Everything after the backend's yes is keyed on the canonical name it returns, never on the
//! name as typed: an alias (nethcti's extension number, `user@domain`) must not dodge the 2FA
//! record, the lockout or the session list of the account it stands for.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};

use super::{LoginError, LoginOutcome, LoginService, MAX_PASSWORD, MAX_USERNAME, MFA_TOKEN_TTL};
use super::{check_len, lockout, usable_user_name};
use crate::backend::Verdict;
use crate::events::{LoginFailure, SecurityEvent};
use crate::metrics::LoginResult;
use crate::token::Kind;

impl LoginService {
    /// `Locked` (after a `login_failure` event) while the user or the client address is
    /// locked out.
    pub(super) async fn ensure_unlocked(
        &self,
        user: &str,
        client: IpAddr,
    ) -> Result<(), LoginError> {
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

    /// Counts a wrong password or code against the user and the client address.
    pub(super) async fn count_failure(&self, user: &str, client: IpAddr) -> Result<(), LoginError> {
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
        let (user, credential) = match verdict {
            Verdict::Accepted { user, credential } => (user, credential),
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
        // The canonical name becomes `sub`, `X-Auth-User` and store keys: a backend that
        // hands back one that could not be a header value gets a plain "no".
        if !usable_user_name(&user) {
            self.metrics.record_login(LoginResult::Failure);
            self.emit(SecurityEvent::LoginFailure {
                user: username,
                client,
                reason: LoginFailure::InvalidUsername,
            });
            self.end_backend_session(credential.as_ref()).await;
            self.count_failure(username, client).await?;
            return Err(LoginError::BadCredentials);
        }
        // Failures under another spelling count under the canonical account's key: a correct
        // password does not open it while it is locked.
        let canonical_key = [lockout::user_key(&user)];
        if let Some(retry_after) = self
            .lockout
            .locked(&*self.store, &canonical_key, self.now())
            .await?
        {
            self.metrics.record_login(LoginResult::Locked);
            self.emit(SecurityEvent::LoginFailure {
                user: &user,
                client,
                reason: LoginFailure::Locked,
            });
            self.end_backend_session(credential.as_ref()).await;
            return Err(LoginError::Locked { retry_after });
        }
        let user = user.as_str();
        let sid = self.tokens.random_id();
        let mfa = self.mfa_record(user).await?;
        if mfa.as_ref().is_some_and(|m| m.enabled) {
            let (mfa_token, _) = self.tokens.mint(
                Kind::Mfa,
                user,
                &sid,
                &["pwd"],
                MFA_TOKEN_TTL,
                credential.as_ref(),
            )?;
            self.emit(SecurityEvent::LoginSuccess {
                user,
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
        for key in [lockout::user_key(username), canonical_key[0].clone()] {
            self.lockout.clear(&*self.store, &key).await?;
        }
        let pair = self
            .start_session(user, &sid, &["pwd"], credential.as_ref())
            .await?;
        self.metrics.record_login(LoginResult::Success);
        self.emit(SecurityEvent::LoginSuccess {
            user,
            client,
            sid: &sid,
            mfa_pending: false,
        });
        Ok(LoginOutcome::Tokens(pair))
    }

    /// Ends a legacy session authgate will not use (the login was refused after the backend
    /// said yes). Best effort: it also dies by the backend's own idle expiry.
    async fn end_backend_session(&self, credential: Option<&secrecy::SecretString>) {
        if let Err(e) = self.backend.logout(credential).await {
            tracing::warn!(error = %e, "backend logout of a refused login failed");
        }
    }
}
