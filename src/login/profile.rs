//! The flows of the nethcti-middleware profile (SPEC 2.7), on authgate's own machinery: the
//! same password step, second factor, sessions, lockout and revocation as `/auth/*`, with the
//! tokens and answers the NethVoice client expects. What the middleware got wrong is not
//! kept: the OTP user is the token's subject, never the body's; new recovery codes and
//! turning 2FA off need the password (checked by the backend, behind the lockout); device
//! tokens are sessions, so they are revoked like any other.

use crate::client_addr::ClientAddr;

use secrecy::{ExposeSecret, SecretString};

use super::mfa::{self, MfaRecord};
use super::session::{ClientToken, Issue};
use super::{
    Issued, LoginError, LoginOutcome, LoginService, MAX_PASSWORD, Redacted, SingleToken, check_len,
    json,
};
use crate::backend::Verdict;
use crate::events::{RevokeReason, SecurityEvent};
use crate::metrics::LoginStep;
use crate::store::{Ns, StoreError};
use crate::token::Verified;

impl Issued {
    /// The one token of a profile session (a pair, which such a session never issues, gives
    /// its access token).
    fn into_single(self, now: u64) -> SingleToken {
        match self {
            Issued::Single(token) => token,
            Issued::Pair(pair) => SingleToken {
                token: pair.access_token,
                exp: now + pair.expires_in,
            },
        }
    }
}

/// The pending second factor the client shows as a QR code.
#[derive(Debug)]
pub struct PendingSecret {
    pub otpauth_url: Redacted<String>,
    pub secret: Redacted<String>,
}

impl LoginService {
    fn profile_token(&self, two_factor: bool) -> Issue {
        Issue::Single(ClientToken {
            ttl: self.profile_ttl,
            two_factor,
            device: None,
        })
    }

    /// `POST /api/login`: the password step. The token is the session's, or for a user with
    /// 2FA on the pre-OTP token (an MFA token with the client's claims: `2fa` true,
    /// `otp_verified` false), good for verify-otp and logout only.
    pub async fn profile_login(
        &self,
        username: &str,
        password: &SecretString,
        client: ClientAddr,
    ) -> Result<SingleToken, LoginError> {
        let started = std::time::Instant::now();
        let outcome = self
            .password_login(username, password, client, self.profile_token(false))
            .await;
        self.metrics
            .record_login_duration(LoginStep::Password, started.elapsed());
        Ok(match outcome? {
            LoginOutcome::Tokens(issued) => issued.into_single(self.now()),
            LoginOutcome::MfaRequired { mfa_token, exp, .. } => SingleToken {
                token: mfa_token,
                exp,
            },
        })
    }

    /// `POST /api/2fa/verify-otp` with a pre-OTP token: step two of its login. The pre-OTP
    /// token is spent; the session it names starts with `amr` ["pwd","otp"].
    pub async fn profile_finish_login(
        &self,
        pre_otp_token: &str,
        code: &str,
        client: ClientAddr,
    ) -> Result<SingleToken, LoginError> {
        let started = std::time::Instant::now();
        let issued = self
            .otp_login(pre_otp_token, code, client, self.profile_token(true))
            .await;
        self.metrics
            .record_login_duration(LoginStep::Otp, started.elapsed());
        Ok(issued?.into_single(self.now()))
    }

    /// `POST /api/2fa/verify-otp` with an access token while an enrollment is pending: the
    /// code confirms it. 2FA turns on, every session of the user is revoked (the caller's
    /// too), and a new session through the second factor takes the caller's place.
    pub async fn profile_confirm(
        &self,
        caller: &Verified,
        code: &str,
        client: ClientAddr,
    ) -> Result<SingleToken, LoginError> {
        self.refuse_in_lockdown()?;
        let user = &*caller.sub;
        // The recovery codes confirming makes are not shown here: the client asks for a new
        // set, with the password, right after (`profile_recovery_codes`).
        self.confirm(caller, code, client).await?;
        let epoch = self.sessions_epoch(user).await?;
        let sid = self.tokens.random_id();
        let issued = self
            .start_session(
                user,
                &sid,
                &["pwd", "otp"],
                caller.credential.as_ref(),
                epoch,
                client,
                self.profile_token(true),
            )
            .await?
            .ok_or(LoginError::InvalidGrant(
                "sessions of this user were revoked meanwhile; sign in again",
            ))?;
        self.emit(SecurityEvent::MfaSuccess {
            user,
            client,
            sid: &sid,
        });
        Ok(issued.into_single(self.now()))
    }

    /// `GET /api/2fa/qr-code`: the pending secret, created on the first call and the same on
    /// every call until it is confirmed. Refused once 2FA is on: the secret is never shown
    /// again.
    pub async fn profile_pending_secret(
        &self,
        caller: &Verified,
    ) -> Result<PendingSecret, LoginError> {
        let user = &*caller.sub;
        let secret = loop {
            let current = self.store.get(Ns::Mfa, user).await?;
            match current.as_deref().map(serde_json::from_slice::<MfaRecord>) {
                Some(Ok(r)) if r.enabled => {
                    return Err(LoginError::Conflict(
                        "two-factor authentication is already enabled",
                    ));
                }
                Some(Ok(r)) => break self.open_pending(user, &r)?,
                Some(Err(e)) => return Err(StoreError::Corrupt(e.to_string()).into()),
                None => {
                    let secret = mfa::new_secret();
                    let record = MfaRecord {
                        secret: self.tokens.seal(&mfa::seal_context(user), &secret)?,
                        enabled: false,
                        recovery: Vec::new(),
                        last_step: 0,
                    };
                    // Two first calls at once must not show two secrets: one wins.
                    let stored = self
                        .store
                        .compare_and_swap(Ns::Mfa, user, None, Some(&json(&record)), 0)
                        .await?;
                    if stored {
                        break secret;
                    }
                }
            }
        };
        Ok(PendingSecret {
            otpauth_url: mfa::otpauth_url(&self.totp_issuer, user, &secret).into(),
            secret: secret.expose_secret().to_owned().into(),
        })
    }

    fn open_pending(&self, user: &str, record: &MfaRecord) -> Result<SecretString, LoginError> {
        self.tokens
            .unseal(&mfa::seal_context(user), &record.secret)
            .ok_or_else(|| StoreError::Corrupt("TOTP secret does not open".into()).into())
    }

    /// `POST /api/2fa/recovery-codes`: ten new six-digit codes after the password; the old
    /// ones die.
    pub async fn profile_recovery_codes(
        &self,
        caller: &Verified,
        password: &SecretString,
        client: ClientAddr,
    ) -> Result<Redacted<Vec<String>>, LoginError> {
        self.require_enabled(&caller.sub).await?;
        self.confirm_password(caller, password, client).await?;
        let codes = mfa::new_numeric_recovery_codes();
        self.set_recovery_codes(&caller.sub, &codes, false).await?;
        Ok(codes.into())
    }

    /// `POST /api/2fa/disable`: 2FA off after the password; every session of the user is
    /// revoked.
    pub async fn profile_disable(
        &self,
        caller: &Verified,
        password: &SecretString,
        client: ClientAddr,
    ) -> Result<(), LoginError> {
        self.require_enabled(&caller.sub).await?;
        self.confirm_password(caller, password, client).await?;
        self.turn_off_second_factor(caller, client).await
    }

    /// The caller's password, checked by the backend behind the lockout (a wrong one counts
    /// like a wrong code). The backend session such a check opens is closed again at once.
    async fn confirm_password(
        &self,
        caller: &Verified,
        password: &SecretString,
        client: ClientAddr,
    ) -> Result<(), LoginError> {
        check_len(password.expose_secret(), MAX_PASSWORD)?;
        let user = &*caller.sub;
        let attempt = self.reserve_attempt(user, client).await?;
        let verdict = match self.backend.authenticate(user, password).await {
            Ok(v) => v,
            Err(e) => {
                self.release_attempt(attempt).await;
                return Err(e.into());
            }
        };
        match verdict {
            Verdict::Accepted {
                user: canonical,
                credential,
            } => {
                self.end_backend_session(credential.as_ref()).await;
                if canonical == user {
                    self.release_attempt(attempt).await;
                    return Ok(());
                }
            }
            Verdict::Rejected => {}
        }
        self.emit(SecurityEvent::MfaFailure {
            user,
            client,
            sid: &caller.sid,
        });
        self.count_failure(user, client, attempt).await?;
        Err(LoginError::BadCredentials)
    }

    /// `POST /api/tokens/persistent/{device}`: a token of its own session for `device`
    /// (`aud`), living `[compat] device_token_ttl`, with the caller's backend credential and
    /// `amr`. It replaces the user's earlier token for that device.
    pub async fn device_token(
        &self,
        caller: &Verified,
        device: &'static str,
        client: ClientAddr,
    ) -> Result<SingleToken, LoginError> {
        self.revoke_device_tokens(&caller.sub, device, client, RevokeReason::Replaced)
            .await?;
        let user = &*caller.sub;
        let two_factor = self.mfa_record(user).await?.is_some_and(|r| r.enabled);
        let epoch = self.sessions_epoch(user).await?;
        let sid = self.tokens.random_id();
        let amr: Vec<&str> = caller.amr.iter().map(String::as_str).collect();
        let spec = ClientToken {
            ttl: self.device_ttl,
            two_factor,
            device: Some(device),
        };
        let issued = self
            .start_session(
                user,
                &sid,
                &amr,
                caller.credential.as_ref(),
                epoch,
                client,
                Issue::Single(spec),
            )
            .await?
            .ok_or(LoginError::InvalidGrant(
                "sessions of this user were revoked meanwhile; sign in again",
            ))?;
        self.emit(SecurityEvent::DeviceToken {
            user,
            client,
            sid: &sid,
            device,
        });
        Ok(issued.into_single(self.now()))
    }

    /// Whether `user` has a live token for `device`.
    pub async fn device_token_exists(&self, user: &str, device: &str) -> Result<bool, LoginError> {
        let live = self.live_sessions(user, self.now()).await?;
        Ok(live
            .iter()
            .any(|(_, s)| s.device.as_deref() == Some(device)))
    }

    /// Revokes `user`'s tokens for `device`; how many were live.
    pub async fn revoke_device_tokens(
        &self,
        user: &str,
        device: &str,
        client: ClientAddr,
        reason: RevokeReason,
    ) -> Result<u64, LoginError> {
        let mut revoked = 0;
        for (sid, session) in self.live_sessions(user, self.now()).await? {
            if session.device.as_deref() == Some(device) {
                let until = session.token_lives_until(self.leeway);
                self.revoke_session_until(&sid, user, client, reason, until)
                    .await?;
                self.unlist(user, &sid).await;
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}
