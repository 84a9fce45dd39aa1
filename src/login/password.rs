//! Step one of a login: the password, checked by the backend, behind the lockout. Also owns
//! the lockout bookkeeping the second factor shares (`reserve_attempt`, `count_failure`,
//! `release_attempt`). A wrong user and a wrong password must stay indistinguishable, and the
//! password is never logged or kept.
//!
//! Everything after the backend's yes is keyed on the canonical name it returns, never on the
//! name as typed: an alias (nethcti's extension number, `user@domain`) must not dodge the 2FA
//! record, the lockout or the session list of the account it stands for.

use crate::client_addr::ClientAddr;

use secrecy::{ExposeSecret, SecretString};

use super::lockout::{self, Attempt};
use super::session::{ClientToken, Issue, SingleToken};
use super::{LoginError, LoginOutcome, LoginService, MAX_PASSWORD, MAX_USERNAME, MFA_TOKEN_TTL};
use super::{check_len, usable_user_name};
use crate::backend::Verdict;
use crate::events::{LoginFailure, SecurityEvent};
use crate::metrics::{LoginResult, LoginStep};
use crate::token::Kind;

/// How often a login decides again after a user-wide revocation overtook it.
const EPOCH_RETRIES: usize = 3;

/// How a password step settles its lockout reservation.
enum Settle {
    /// Wrong password (or an answer as good as one): counts.
    Failed,
    /// Tokens issued for this canonical user: its failures are forgotten.
    Succeeded(String),
    /// Nothing decided against the guesser (backend down, second factor pending, ...).
    Undecided,
}

impl LoginService {
    /// Reserves one attempt of `user` from `client` on the lockout counters, before any
    /// password or code is checked. `Locked` (after a `login_failure` event) when the user or
    /// the address is locked out, or has as many attempts in flight as it may still fail.
    pub(super) async fn reserve_attempt(
        &self,
        user: &str,
        client: ClientAddr,
    ) -> Result<Attempt, LoginError> {
        let keys = lockout::keys(user, client);
        match self
            .lockout
            .reserve(&*self.store, &keys, self.now())
            .await?
        {
            Ok(attempt) => Ok(attempt),
            Err(retry_after) => {
                self.refuse_locked(user, client);
                Err(LoginError::Locked { retry_after })
            }
        }
    }

    fn refuse_locked(&self, user: &str, client: ClientAddr) {
        self.metrics.record_login(LoginResult::Locked);
        self.emit(SecurityEvent::LoginFailure {
            user,
            client,
            reason: LoginFailure::Locked,
        });
    }

    /// Counts a wrong password or code (the reserved `attempt`) against the user and the
    /// client address.
    pub(super) async fn count_failure(
        &self,
        user: &str,
        client: ClientAddr,
        attempt: Attempt,
    ) -> Result<(), LoginError> {
        if let Some(lock_for) = self.lockout.fail(&*self.store, attempt, self.now()).await? {
            self.emit(SecurityEvent::Lockout {
                user,
                client,
                lock_for,
            });
        }
        Ok(())
    }

    /// Frees a reservation that decided nothing. A store failure here only keeps the slot
    /// until it expires by itself, so it is logged, not returned.
    pub(super) async fn release_attempt(&self, attempt: Attempt) {
        if let Err(e) = self
            .lockout
            .release(&*self.store, attempt, self.now())
            .await
        {
            tracing::warn!(error = %e, "could not release a lockout reservation; it expires by itself");
        }
    }

    /// Forgets the failures of the user keys after a success and frees the reservation.
    pub(super) async fn clear_failures(&self, attempt: Attempt, users: &[&str]) {
        let keys: Vec<String> = users.iter().map(|u| lockout::user_key(u)).collect();
        if let Err(e) = self
            .lockout
            .succeed(&*self.store, attempt, &keys, self.now())
            .await
        {
            tracing::warn!(error = %e, "could not clear lockout failures after a success");
        }
    }

    /// Step one: the password, checked by the backend.
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        client: ClientAddr,
    ) -> Result<LoginOutcome, LoginError> {
        let started = std::time::Instant::now();
        let result = self
            .password_login(username, password, client, Issue::Pair)
            .await;
        self.metrics
            .record_login_duration(LoginStep::Password, started.elapsed());
        result
    }

    /// Step one, issuing `how` the session's tokens (the profile's login times itself).
    pub(super) async fn password_login(
        &self,
        username: &str,
        password: &SecretString,
        client: ClientAddr,
        how: Issue,
    ) -> Result<LoginOutcome, LoginError> {
        self.refuse_in_lockdown()?;
        check_len(username, MAX_USERNAME)?;
        check_len(password.expose_secret(), MAX_PASSWORD)?;
        let attempt = self.reserve_attempt(username, client).await?;
        let (result, settle) = self.password_step(username, password, client, how).await;
        match settle {
            Settle::Failed => self.count_failure(username, client, attempt).await?,
            Settle::Succeeded(user) => self.clear_failures(attempt, &[username, &user]).await,
            Settle::Undecided => self.release_attempt(attempt).await,
        }
        result
    }

    async fn password_step(
        &self,
        username: &str,
        password: &SecretString,
        client: ClientAddr,
        how: Issue,
    ) -> (Result<LoginOutcome, LoginError>, Settle) {
        let verdict = match self.backend.authenticate(username, password).await {
            Ok(v) => v,
            Err(e) => {
                self.metrics.record_login(LoginResult::Unavailable);
                self.emit(SecurityEvent::LoginFailure {
                    user: username,
                    client,
                    reason: LoginFailure::BackendUnavailable(&e),
                });
                return (Err(e.into()), Settle::Undecided);
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
                return (Err(LoginError::BadCredentials), Settle::Failed);
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
            return (Err(LoginError::BadCredentials), Settle::Failed);
        }
        // Failures under another spelling count under the canonical account's key: a correct
        // password does not open it while it is locked.
        let canonical_key = [lockout::user_key(&user)];
        match self
            .lockout
            .locked(&*self.store, &canonical_key, self.now())
            .await
        {
            Ok(None) => {}
            Ok(Some(retry_after)) => {
                self.refuse_locked(&user, client);
                self.end_backend_session(credential.as_ref()).await;
                return (Err(LoginError::Locked { retry_after }), Settle::Undecided);
            }
            Err(e) => return (Err(e.into()), Settle::Undecided),
        }
        let sid = self.tokens.random_id();
        for _ in 0..EPOCH_RETRIES {
            let decided = self
                .open_or_defer(&user, &sid, credential.as_ref(), client, how)
                .await;
            match decided {
                Ok(Some(LoginOutcome::Tokens(issued))) => {
                    return (Ok(LoginOutcome::Tokens(issued)), Settle::Succeeded(user));
                }
                Ok(Some(mfa)) => return (Ok(mfa), Settle::Undecided),
                // A user-wide revocation overtook this login: decide again.
                Ok(None) => {}
                Err(e) => return (Err(e), Settle::Undecided),
            }
        }
        (
            Err(LoginError::StoreUnavailable(
                crate::store::StoreError::Unavailable(
                    "sessions of this user keep being revoked".into(),
                ),
            )),
            Settle::Undecided,
        )
    }

    /// The 2FA decision and, without 2FA, the session: `None` when a user-wide revocation ran
    /// between reading the 2FA record and listing the new session (see `start_session`).
    async fn open_or_defer(
        &self,
        user: &str,
        sid: &str,
        credential: Option<&SecretString>,
        client: ClientAddr,
        how: Issue,
    ) -> Result<Option<LoginOutcome>, LoginError> {
        // The epoch is read before the 2FA record: a revocation that follows a change of
        // second factor bumps it after that change, so either this login sees the change or
        // its session cannot be listed (or is listed before the bump and revoked by it).
        let epoch = self.sessions_epoch(user).await?;
        let mfa = self.mfa_record(user).await?;
        if mfa.as_ref().is_some_and(|m| m.enabled) {
            let mfa_token = match how {
                Issue::Pair => {
                    let (token, claims) = self.tokens.mint(
                        Kind::Mfa,
                        user,
                        sid,
                        &["pwd"],
                        MFA_TOKEN_TTL,
                        credential,
                    )?;
                    SingleToken {
                        token: token.into(),
                        exp: claims.exp,
                    }
                }
                Issue::Single(spec) => {
                    let pre_otp = ClientToken {
                        ttl: MFA_TOKEN_TTL,
                        two_factor: true,
                        ..spec
                    };
                    self.mint_client_token(Kind::Mfa, user, sid, &["pwd"], credential, pre_otp)?
                }
            };
            self.emit(SecurityEvent::LoginSuccess {
                user,
                client,
                sid,
                mfa_pending: true,
            });
            return Ok(Some(LoginOutcome::MfaRequired {
                mfa_required: true,
                mfa_token: mfa_token.token,
                expires_in: MFA_TOKEN_TTL,
                exp: mfa_token.exp,
            }));
        }
        let Some(issued) = self
            .start_session(user, sid, &["pwd"], credential, epoch, client, how)
            .await?
        else {
            return Ok(None);
        };
        self.metrics.record_login(LoginResult::Success);
        self.emit(SecurityEvent::LoginSuccess {
            user,
            client,
            sid,
            mfa_pending: false,
        });
        Ok(Some(LoginOutcome::Tokens(issued)))
    }

    /// Ends a legacy session authgate will not use (the login was refused after the backend
    /// said yes). Best effort: it also dies by the backend's own idle expiry.
    pub(super) async fn end_backend_session(&self, credential: Option<&SecretString>) {
        if let Err(e) = self.backend.logout(credential).await {
            tracing::warn!(error = %e, "backend logout of a refused login failed");
        }
    }
}
