//! Step one of a login: the password, checked by the backend, behind the lockout. Also owns
//! the lockout bookkeeping the second factor shares (`ensure_unlocked`, `count_failure`).
//! A wrong user and a wrong password must stay indistinguishable, and the password is never
//! logged or kept.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};

use super::{LoginError, LoginOutcome, LoginService, MAX_PASSWORD, MAX_USERNAME, MFA_TOKEN_TTL};
use super::{check_len, lockout};
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
}
