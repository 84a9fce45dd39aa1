//! Sessions: opening one (a refresh-token family stored under its sid), issuing token pairs,
//! rotating refresh tokens with reuse detection, logout, and revoking one session or every
//! session of a user. The store keeps only the jti of the one refresh token still usable and
//! the backend credential sealed under the sid, never a token.

use std::net::IpAddr;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{LoginError, LoginService, TokenPair, check_len, json, parse};
use crate::events::{RevokeReason, SecurityEvent};
use crate::store::{Ns, update};
use crate::token::{Kind, TokenError, Verified};

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

impl LoginService {
    /// Opens session `sid` of `user`: a token pair, the stored session, and the session in
    /// the user's list (so a change of second factor can revoke it).
    pub(super) async fn start_session(
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
    pub(super) async fn revoke_user(
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
}
