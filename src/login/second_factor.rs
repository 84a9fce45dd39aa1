//! The second factor: step two of a login (a TOTP or recovery code for the MFA token), and
//! enrolling, confirming, disabling, new recovery codes and status. Codes are consumed
//! atomically in the store (replay guard, single-use recovery codes), failures count towards
//! the lockout, and any change of second factor revokes every session of the user. A code or
//! the plain TOTP secret is never logged or stored.

use crate::client_addr::ClientAddr;

use secrecy::ExposeSecret;

use super::mfa::{self, MfaRecord};
use super::session::Issue;
use super::{Enrollment, Issued, LoginError, LoginService, MAX_CODE, Redacted};
use super::{check_len, json, parse};
use crate::events::{RevokeReason, SecurityEvent};
use crate::metrics::{LoginResult, LoginStep};
use crate::store::{Ns, StoreError, update};
use crate::token::{Kind, MintError, Verified};

impl LoginService {
    /// Step two: a TOTP or recovery code for the MFA token from step one.
    pub async fn login_otp(
        &self,
        mfa_token: &str,
        code: &str,
        client: ClientAddr,
    ) -> Result<Issued, LoginError> {
        let started = std::time::Instant::now();
        let result = self.otp_login(mfa_token, code, client, Issue::Pair).await;
        self.metrics
            .record_login_duration(LoginStep::Otp, started.elapsed());
        result
    }

    /// Step two, issuing `how` the session's tokens (the profile's verify-otp times itself).
    pub(super) async fn otp_login(
        &self,
        mfa_token: &str,
        code: &str,
        client: ClientAddr,
        how: Issue,
    ) -> Result<Issued, LoginError> {
        self.refuse_in_lockdown()?;
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
        let attempt = self.reserve_attempt(&user, client).await?;
        let result = self.otp_step(&t, &user, code, client, how).await;
        match result {
            Err(LoginError::InvalidCode) => {
                self.count_failure(&user, client, attempt).await?;
            }
            Ok(_) => self.clear_failures(attempt, &[&user]).await,
            Err(_) => self.release_attempt(attempt).await,
        }
        result
    }

    /// Step two after its lockout reservation: the code, then the session. A wrong code is
    /// `InvalidCode`, which the caller counts.
    async fn otp_step(
        &self,
        t: &Verified,
        user: &str,
        code: &str,
        client: ClientAddr,
        how: Issue,
    ) -> Result<Issued, LoginError> {
        // Read before the code is checked against the 2FA record: a user-wide revocation
        // (2FA disabled, re-enrolled) that runs meanwhile keeps this session from being listed.
        let epoch = self.sessions_epoch(user).await?;
        let Some(used) = self.check_code(user, code).await? else {
            self.metrics.record_login(LoginResult::Failure);
            self.emit(SecurityEvent::MfaFailure {
                user,
                client,
                sid: &t.sid,
            });
            return Err(LoginError::InvalidCode);
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
                user,
                client,
                sid: &t.sid,
            });
        }
        let Some(issued) = self
            .start_session(
                user,
                &t.sid,
                &["pwd", "otp"],
                t.credential.as_ref(),
                epoch,
                client,
                how,
            )
            .await?
        else {
            return Err(LoginError::InvalidGrant(
                "sessions of this user were revoked meanwhile; sign in again",
            ));
        };
        self.metrics.record_login(LoginResult::Success);
        self.emit(SecurityEvent::MfaSuccess {
            user,
            client,
            sid: &t.sid,
        });
        Ok(issued)
    }

    /// The stored second factor of `user`, pending or enabled.
    pub(super) async fn mfa_record(&self, user: &str) -> Result<Option<MfaRecord>, LoginError> {
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
                && let Some(i) = mfa::matching_recovery(&rec, user, code, |stored, message| {
                    self.tokens.keyed_digest_matches(stored, message)
                })
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
        client: ClientAddr,
    ) -> Result<Redacted<Vec<String>>, LoginError> {
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
        self.guarded_code(token, code, client).await?;
        let codes = mfa::new_recovery_codes();
        self.set_recovery_codes(user, &codes, true).await?;
        self.emit(SecurityEvent::TwoFactorEnabled {
            user,
            client,
            sid: &token.sid,
        });
        self.revoke_user(user, client, RevokeReason::TwoFactorEnabled)
            .await?;
        Ok(codes.into())
    }

    /// Replaces the recovery codes of `user`'s record with `codes`, kept as keyed digests (and
    /// with `enable`, turns it on).
    pub(super) async fn set_recovery_codes(
        &self,
        user: &str,
        codes: &[String],
        enable: bool,
    ) -> Result<(), LoginError> {
        let digests = codes
            .iter()
            .map(|c| self.tokens.keyed_digest(&mfa::recovery_message(user, c)))
            .collect::<Option<Vec<_>>>()
            .ok_or(MintError::Seal)?;
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
        Ok(())
    }

    /// Turns 2FA off after a valid code; revokes every session of the user.
    pub async fn disable(
        &self,
        token: &Verified,
        code: &str,
        client: ClientAddr,
    ) -> Result<(), LoginError> {
        self.require_enabled(&token.sub).await?;
        self.guarded_code(token, code, client).await?;
        self.turn_off_second_factor(token, client).await
    }

    /// Deletes the caller's second factor and revokes every session of the user.
    pub(super) async fn turn_off_second_factor(
        &self,
        token: &Verified,
        client: ClientAddr,
    ) -> Result<(), LoginError> {
        self.store.delete(Ns::Mfa, &token.sub).await?;
        self.emit(SecurityEvent::TwoFactorDisabled {
            user: &token.sub,
            client,
            sid: &token.sid,
        });
        self.revoke_user(&token.sub, client, RevokeReason::TwoFactorDisabled)
            .await?;
        Ok(())
    }

    /// A fresh set of recovery codes after a valid code; the old ones die.
    pub async fn regenerate_codes(
        &self,
        token: &Verified,
        code: &str,
        client: ClientAddr,
    ) -> Result<Redacted<Vec<String>>, LoginError> {
        self.require_enabled(&token.sub).await?;
        self.guarded_code(token, code, client).await?;
        let codes = mfa::new_recovery_codes();
        self.set_recovery_codes(&token.sub, &codes, false).await?;
        Ok(codes.into())
    }

    /// `Conflict` unless `user` has 2FA on.
    pub(super) async fn require_enabled(&self, user: &str) -> Result<(), LoginError> {
        if self.mfa_record(user).await?.is_some_and(|r| r.enabled) {
            Ok(())
        } else {
            Err(LoginError::Conflict(
                "two-factor authentication is not enabled",
            ))
        }
    }

    /// Checks and consumes a code of the caller's second factor behind the lockout: a wrong
    /// one counts against the user and the address (`InvalidCode`).
    pub(super) async fn guarded_code(
        &self,
        token: &Verified,
        code: &str,
        client: ClientAddr,
    ) -> Result<(), LoginError> {
        check_len(code, MAX_CODE)?;
        let attempt = self.reserve_attempt(&token.sub, client).await?;
        let checked = self.check_code(&token.sub, code).await;
        match checked {
            Ok(Some(kind)) => {
                self.release_attempt(attempt).await;
                if kind == CodeKind::Recovery {
                    self.emit(SecurityEvent::RecoveryCodeUsed {
                        user: &token.sub,
                        client,
                        sid: &token.sid,
                    });
                }
                Ok(())
            }
            Ok(None) => {
                self.emit(SecurityEvent::MfaFailure {
                    user: &token.sub,
                    client,
                    sid: &token.sid,
                });
                self.count_failure(&token.sub, client, attempt).await?;
                Err(LoginError::InvalidCode)
            }
            Err(e) => {
                self.release_attempt(attempt).await;
                Err(e)
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeKind {
    Totp,
    Recovery,
}
