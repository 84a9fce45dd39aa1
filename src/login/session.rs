//! Sessions: opening one (a refresh-token family stored under its sid), issuing token pairs,
//! rotating refresh tokens with reuse detection, logout, and revoking one session or every
//! session of a user. The store keeps only the jti of the one refresh token still usable and
//! the backend credential sealed under the sid; the only tokens it ever holds are the pair of
//! a rotation during the short reuse grace, sealed under the server's key.
//!
//! User-wide revocation is race-free through a per-user epoch kept with the user's session
//! list (see [`LoginService::revoke_user`] and [`LoginService::start_session`]).

use crate::client_addr::ClientAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{LoginError, LoginService, Redacted, TokenPair, check_len, json, parse};
use crate::events::{RevokeReason, SecurityEvent};
use crate::store::{Ns, StoreError, update};
use crate::token::{Kind, TokenError, Verified};

/// The user's session list lives at least this long after its last write, so its epoch
/// cannot expire (and restart from 0) under a login still in flight.
const EPOCH_KEEP: u64 = 24 * 3600;

/// The sessions of one user and the epoch of its user-wide revocations.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct UserSessions {
    /// Moves on every user-wide revocation; a login lists its session only if it has not
    /// moved since the login read it.
    epoch: u64,
    /// (sid, expires at).
    pub(super) sids: Vec<(String, u64)>,
}

impl UserSessions {
    /// The stored list; a corrupt one is an error, never an empty list (that would forget
    /// the sessions a revocation has to find).
    pub(super) fn decode(raw: Option<&[u8]>) -> Result<Self, StoreError> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        serde_json::from_slice(raw)
            .or_else(|_| {
                // The list as stored before epochs existed.
                serde_json::from_slice::<Vec<(String, u64)>>(raw)
                    .map(|sids| Self { epoch: 0, sids })
            })
            .map_err(|e| StoreError::Corrupt(format!("user session list: {e}")))
    }

    pub(super) fn expires_at(&self, now: u64) -> u64 {
        let last = self.sids.iter().map(|(_, e)| *e).max().unwrap_or(0);
        last.max(now + EPOCH_KEEP)
    }
}

impl Session {
    /// The record of a service token: no refresh token, no backend credential.
    pub(super) fn service(sub: &str, now: u64, expires_at: u64) -> Self {
        Self {
            user: sub.to_owned(),
            amr: vec![crate::token::SERVICE_AMR.to_owned()],
            refresh_jti: String::new(),
            cred: None,
            expires_at,
            created: now,
            refreshed: 0,
            client: None,
            user_agent: None,
            device: None,
        }
    }

    /// How long a revocation of this session must last at least: a session without refresh
    /// tokens (service, profile and device tokens) handed out one token that lives as long as
    /// the session itself; 0 for the others, whose access tokens are short.
    pub(super) fn token_lives_until(&self, leeway: u64) -> u64 {
        if self.refresh_jti.is_empty() {
            self.expires_at + leeway + 60
        } else {
            0
        }
    }
}

/// What the reuse grace keeps of a rotation, sealed: the pair it handed out.
#[derive(Serialize, Deserialize)]
struct Rotated {
    next_jti: String,
    access_token: String,
    refresh_token: String,
}

fn grace_key(jti: &str) -> String {
    format!("refresh:{jti}")
}

fn grace_context(sid: &str, jti: &str) -> String {
    format!("refresh-grace:{sid}:{jti}")
}

/// One login session (a refresh-token family), as stored under its sid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Session {
    pub(super) user: String,
    pub(super) amr: Vec<String>,
    /// The only refresh token of this family that may still be used.
    pub(super) refresh_jti: String,
    /// Backend credential sealed under the sid.
    pub(super) cred: Option<String>,
    pub(super) expires_at: u64,
    /// What an operator sees of it (`authgate admin sessions`); absent in records written
    /// before they were kept.
    #[serde(default)]
    pub(super) created: u64,
    /// Unix seconds of the last refresh, 0 if none yet.
    #[serde(default)]
    pub(super) refreshed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) user_agent: Option<String>,
    /// The device of a persistent device token (its `aud`, SPEC 2.7); none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) device: Option<String>,
}

/// What a new session hands out.
#[derive(Debug, Clone, Copy)]
pub(super) enum Issue {
    /// An access token and a rotating refresh token (SPEC 2.2).
    Pair,
    /// One token with the nethcti-middleware client's claims, living as long as the session,
    /// no refresh (SPEC 2.7).
    Single(ClientToken),
}

/// A token of the nethcti-middleware profile.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientToken {
    pub(super) ttl: u64,
    /// Whether the user has 2FA on (the `2fa` claim).
    pub(super) two_factor: bool,
    /// A device token's device (its `aud` and [`Session::device`]).
    pub(super) device: Option<&'static str>,
}

/// The tokens of a new session.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Issued {
    Pair(TokenPair),
    Single(SingleToken),
}

/// One token and when it expires (unix seconds).
#[derive(Debug, Serialize)]
pub struct SingleToken {
    pub token: Redacted<String>,
    pub exp: u64,
}

impl LoginService {
    /// Opens session `sid` of `user`: a token pair, the stored session, and the session in
    /// the user's list (so a user-wide revocation can find it). `epoch` is the user's epoch as
    /// read before the caller decided this login may have a session; if a user-wide
    /// revocation has moved it since, the session is dropped unseen and `None` returned.
    ///
    /// Why this closes the race with [`Self::revoke_user`]: listing the session is one
    /// compare-and-swap on the whole list record, conditioned on the epoch. Store writes to
    /// one key are linearisable, so the append either lands before the revocation's bump (and
    /// the bump, being one atomic update of the same record, hands it to the revocation) or
    /// after it (and sees the moved epoch and fails). Its tokens only leave this function once
    /// it is listed; a dropped session's access token was never handed out and its record is
    /// deleted, so nothing of it is usable.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_session(
        &self,
        user: &str,
        sid: &str,
        amr: &[&str],
        credential: Option<&SecretString>,
        epoch: u64,
        client: ClientAddr,
        how: Issue,
    ) -> Result<Option<Issued>, LoginError> {
        let now = self.now();
        let (issued, refresh_jti, expires_at, device) = match how {
            Issue::Pair => {
                let (pair, jti) = self.issue(user, sid, amr, credential)?;
                (Issued::Pair(pair), jti, now + self.refresh_ttl, None)
            }
            Issue::Single(spec) => {
                let single =
                    self.mint_client_token(Kind::Access, user, sid, amr, credential, spec)?;
                let exp = single.exp;
                (Issued::Single(single), String::new(), exp, spec.device)
            }
        };
        let session = Session {
            user: user.to_owned(),
            amr: amr.iter().map(|s| (*s).to_owned()).collect(),
            refresh_jti,
            cred: credential.map(|c| self.tokens.seal(sid, c)).transpose()?,
            expires_at,
            created: now,
            refreshed: 0,
            client: Some(client.to_string()),
            user_agent: super::user_agent(),
            device: device.map(str::to_owned),
        };
        self.store
            .put(Ns::Session, sid, &json(&session), session.expires_at)
            .await?;
        let until = session.expires_at;
        let listed = update(&*self.store, Ns::UserSessions, user, |raw| {
            let mut list = match UserSessions::decode(raw) {
                Ok(list) => list,
                Err(e) => return (raw.map(<[u8]>::to_vec), 0, Err(e)),
            };
            if list.epoch != epoch {
                return (raw.map(<[u8]>::to_vec), 0, Ok(false));
            }
            list.sids.retain(|(_, exp)| *exp > now);
            list.sids.push((sid.to_owned(), until));
            let expires = list.expires_at(now);
            (Some(json(&list)), expires, Ok(true))
        })
        .await
        .and_then(|decoded| decoded);
        match listed {
            Ok(true) if self.lockdown() => {
                // Lockdown came on while this login was in flight: a `--revoke-all` sweep
                // may already have passed, so the session must not start. (One that started
                // before this replica saw the lockdown is in the store by then, where the
                // sweep's second pass finds it.)
                self.store.delete(Ns::Session, sid).await?;
                Err(LoginError::Lockdown)
            }
            Ok(true) => Ok(Some(issued)),
            Ok(false) => {
                self.store.delete(Ns::Session, sid).await?;
                Ok(None)
            }
            Err(e) => {
                // Unlisted, it would escape a user-wide revocation: it must not live.
                let _ = self.store.delete(Ns::Session, sid).await;
                Err(e.into())
            }
        }
    }

    /// Keeps `sid`'s entry in the user's list (and so the list) alive as long as the session,
    /// which each refresh extends: an entry left at the session's first expiry would drop out
    /// while the session lives on, and a user-wide revocation would no longer find it.
    async fn extend_listing(&self, user: &str, sid: &str, until: u64) -> Result<(), LoginError> {
        let now = self.now();
        update(&*self.store, Ns::UserSessions, user, |raw| {
            let mut list = match UserSessions::decode(raw) {
                Ok(list) => list,
                Err(e) => return (raw.map(<[u8]>::to_vec), 0, Err(e)),
            };
            let Some(entry) = list.sids.iter_mut().find(|(s, _)| s == sid) else {
                // Not listed (taken by a revocation that is revoking it): leave it so.
                return (raw.map(<[u8]>::to_vec), 0, Ok(()));
            };
            entry.1 = until;
            let expires = list.expires_at(now);
            (Some(json(&list)), expires, Ok(()))
        })
        .await??;
        Ok(())
    }

    /// Takes revoked session `sid` out of `user`'s list, so the list holds live sessions
    /// only (it stays as small as the user's live sessions, and listings need not skip the
    /// dead). Best effort: an entry left behind expires with the session anyway.
    pub(super) async fn unlist(&self, user: &str, sid: &str) {
        let now = self.now();
        let result = update(&*self.store, Ns::UserSessions, user, |raw| {
            let Ok(mut list) = UserSessions::decode(raw) else {
                return (raw.map(<[u8]>::to_vec), 0, ());
            };
            list.sids.retain(|(s, exp)| s != sid && *exp > now);
            let expires = list.expires_at(now);
            (Some(json(&list)), expires, ())
        })
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not take a revoked session out of its user's list");
        }
    }

    /// The epoch of `user`'s user-wide revocations, to hand to [`Self::start_session`].
    pub(super) async fn sessions_epoch(&self, user: &str) -> Result<u64, LoginError> {
        let raw = self.store.get(Ns::UserSessions, user).await?;
        Ok(UserSessions::decode(raw.as_deref())?.epoch)
    }

    /// A token of the nethcti-middleware profile: authgate's claims, and the ones its client
    /// reads mirrored from them (`id` = `sub`, `2fa`, `otp_verified` = `amr` has `otp`).
    pub(super) fn mint_client_token(
        &self,
        kind: Kind,
        sub: &str,
        sid: &str,
        amr: &[&str],
        credential: Option<&SecretString>,
        spec: ClientToken,
    ) -> Result<SingleToken, LoginError> {
        let mut claims = self
            .tokens
            .claims(kind, sub, sid, amr, spec.ttl, credential)?;
        claims.id = Some(sub.to_owned());
        claims.two_factor = Some(spec.two_factor);
        claims.otp_verified = Some(amr.contains(&"otp"));
        if let Some(device) = spec.device {
            claims.aud = device.to_owned();
        }
        let token = self.tokens.sign(kind, &claims)?;
        Ok(SingleToken {
            token: token.into(),
            exp: claims.exp,
        })
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
    /// spent one revokes the whole session, except the token rotated last, presented again
    /// within `tokens.refresh_reuse_grace` (a browser's double refresh, two tabs): that gets
    /// the same pair again. The price is bounded by the grace: in it, whoever holds the token
    /// just rotated gets the pair its rotation handed out; after it, any second use revokes.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: ClientAddr,
    ) -> Result<TokenPair, LoginError> {
        self.refuse_in_lockdown()?;
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
            // Rotated already: by this same token moments ago, or it is reuse.
            return self
                .rotated_or_reuse(&t, Some(&session.refresh_jti), client)
                .await;
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
        if self.refresh_grace > 0 && !self.claim_rotation(&t.sid, &t.jti, &new_jti, &pair).await? {
            // A concurrent refresh of the same token rotates it: hand out its pair.
            return self.rotated_or_reuse(&t, None, client).await;
        }
        let next = Session {
            refresh_jti: new_jti,
            expires_at: self.now() + self.refresh_ttl,
            refreshed: self.now(),
            client: Some(client.to_string()),
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
            return Err(self.reuse(&t.sid, &t.sub, client).await);
        }
        self.extend_listing(&session.user, &t.sid, next.expires_at)
            .await?;
        Ok(self.refreshed(pair, &t.sub, &t.sid, client))
    }

    /// A refresh token that was rotated already: the pair its rotation handed out while the
    /// grace lasts (see [`Self::rotated_pair`] for `current`), else reuse, which revokes.
    async fn rotated_or_reuse(
        &self,
        t: &Verified,
        current: Option<&str>,
        client: ClientAddr,
    ) -> Result<TokenPair, LoginError> {
        match self.rotated_pair(&t.sid, &t.jti, current).await? {
            Some(pair) => Ok(self.refreshed(pair, &t.sub, &t.sid, client)),
            None => Err(self.reuse(&t.sid, &t.sub, client).await),
        }
    }

    fn refreshed(&self, pair: TokenPair, user: &str, sid: &str, client: ClientAddr) -> TokenPair {
        self.emit(SecurityEvent::Refresh { user, client, sid });
        pair
    }

    /// A spent refresh token was presented: the session dies, `refresh_reuse` is logged.
    async fn reuse(&self, sid: &str, user: &str, client: ClientAddr) -> LoginError {
        if let Err(e) = self
            .revoke_session(sid, user, client, RevokeReason::RefreshReuse)
            .await
        {
            return e;
        }
        self.emit(SecurityEvent::RefreshReuse { user, client, sid });
        LoginError::InvalidGrant("refresh token already used; session revoked")
    }

    /// Stakes the claim to rotate refresh token `jti`: its new pair, sealed, under the old
    /// jti for the grace. Only the first claimant rotates; whoever finds the claim taken hands
    /// out the claimant's pair instead of minting a rival one.
    async fn claim_rotation(
        &self,
        sid: &str,
        jti: &str,
        next_jti: &str,
        pair: &TokenPair,
    ) -> Result<bool, LoginError> {
        let rotated = Rotated {
            next_jti: next_jti.to_owned(),
            access_token: pair.access_token.expose().clone(),
            refresh_token: pair.refresh_token.expose().clone(),
        };
        let plain = SecretString::from(serde_json::to_string(&rotated).unwrap_or_default());
        let sealed = self.tokens.seal(&grace_context(sid, jti), &plain)?;
        let until = self.now() + self.refresh_grace;
        Ok(self
            .store
            .compare_and_swap(
                Ns::Once,
                &grace_key(jti),
                None,
                Some(sealed.as_bytes()),
                until,
            )
            .await?)
    }

    /// The pair the rotation of `jti` handed out, while the grace lasts, and only if it is
    /// still the session's current pair (`current`: the session's refresh jti, when known):
    /// the grace covers the token rotated last, never an older one.
    async fn rotated_pair(
        &self,
        sid: &str,
        jti: &str,
        current: Option<&str>,
    ) -> Result<Option<TokenPair>, LoginError> {
        if self.refresh_grace == 0 {
            return Ok(None);
        }
        let Some(sealed) = self.store.get(Ns::Once, &grace_key(jti)).await? else {
            return Ok(None);
        };
        let Some(plain) = std::str::from_utf8(&sealed)
            .ok()
            .and_then(|s| self.tokens.unseal(&grace_context(sid, jti), s))
        else {
            return Ok(None);
        };
        let Ok(rotated) = serde_json::from_str::<Rotated>(plain.expose_secret()) else {
            return Ok(None);
        };
        if current.is_some_and(|c| c != rotated.next_jti) {
            return Ok(None);
        }
        Ok(Some(TokenPair {
            access_token: rotated.access_token.into(),
            token_type: "Bearer",
            expires_in: self.access_ttl,
            refresh_token: rotated.refresh_token.into(),
            refresh_expires_in: self.refresh_ttl,
        }))
    }

    /// Revokes one session everywhere: store (replicas pick it up) and this replica at once.
    pub(super) async fn revoke_session(
        &self,
        sid: &str,
        user: &str,
        client: ClientAddr,
        reason: RevokeReason,
    ) -> Result<(), LoginError> {
        self.revoke_session_until(sid, user, client, reason, 0)
            .await
    }

    /// [`Self::revoke_session`], the revocation lasting at least until `at_least` (a service
    /// token lives longer than an access token).
    pub(super) async fn revoke_session_until(
        &self,
        sid: &str,
        user: &str,
        client: ClientAddr,
        reason: RevokeReason,
        at_least: u64,
    ) -> Result<(), LoginError> {
        // Refresh tokens die with the session record; the revocation entry only has to outlast
        // the access tokens already out, which keeps the hot-path set small.
        let until = (self.now() + self.revoke_for).max(at_least);
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

    /// Revokes every session of `user` (after a change of second factor). First the epoch
    /// moves, in the same atomic update that takes the list, so a login racing this one
    /// either is in that list or cannot list itself afterwards (see [`Self::start_session`]);
    /// then the listed sessions are revoked and only they leave the list.
    pub(super) async fn revoke_user(
        &self,
        user: &str,
        client: ClientAddr,
        reason: RevokeReason,
    ) -> Result<u64, LoginError> {
        let now = self.now();
        let listed = update(&*self.store, Ns::UserSessions, user, |raw| {
            let mut list = match UserSessions::decode(raw) {
                Ok(list) => list,
                Err(e) => return (raw.map(<[u8]>::to_vec), 0, Err(e)),
            };
            list.epoch = list.epoch.wrapping_add(1);
            let expires = list.expires_at(now);
            let sids: Vec<String> = list.sids.iter().map(|(s, _)| s.clone()).collect();
            (Some(json(&list)), expires, Ok(sids))
        })
        .await??;
        let mut revoked = 0;
        for sid in &listed {
            if self.revocations.is_revoked(sid) {
                continue;
            }
            let Some(raw) = self.store.get(Ns::Session, sid).await? else {
                continue;
            };
            // A long-lived token's revocation lasts as long as the token.
            let until = serde_json::from_slice::<Session>(&raw)
                .map_or(0, |s| s.token_lives_until(self.leeway));
            self.revoke_session_until(sid, user, client, reason, until)
                .await?;
            revoked += 1;
        }
        update(&*self.store, Ns::UserSessions, user, |raw| {
            let mut list = match UserSessions::decode(raw) {
                Ok(list) => list,
                Err(e) => return (raw.map(<[u8]>::to_vec), 0, Err(e)),
            };
            list.sids
                .retain(|(sid, exp)| *exp > now && !listed.contains(sid));
            let expires = list.expires_at(now);
            (Some(json(&list)), expires, Ok(()))
        })
        .await??;
        Ok(revoked)
    }

    /// Ends the session of `token` everywhere at once, and the backend session of its
    /// credential unless another live session of the user still uses it (a device token
    /// carries the credential of the session that minted it).
    pub async fn logout(&self, token: &Verified, client: ClientAddr) -> Result<(), LoginError> {
        let until = token.exp + self.leeway + 60;
        self.revoke_session_until(&token.sid, &token.sub, client, RevokeReason::Logout, until)
            .await?;
        self.unlist(&token.sub, &token.sid).await;
        let shared = match &token.credential {
            Some(c) => self.credential_in_use(&token.sub, c).await?,
            None => false,
        };
        if !shared && let Err(e) = self.backend.logout(token.credential.as_ref()).await {
            tracing::warn!(user = %token.sub, sid = %token.sid, error = %e, "backend logout failed; session revoked anyway");
        }
        self.emit(SecurityEvent::Logout {
            user: &token.sub,
            client,
            sid: &token.sid,
        });
        Ok(())
    }

    /// Whether a live session of `user` holds `credential`.
    async fn credential_in_use(
        &self,
        user: &str,
        credential: &SecretString,
    ) -> Result<bool, LoginError> {
        let now = self.now();
        for (sid, session) in self.live_sessions(user, now).await? {
            let same = session
                .cred
                .as_deref()
                .and_then(|sealed| self.tokens.unseal(&sid, sealed))
                .is_some_and(|c| c.expose_secret() == credential.expose_secret());
            if same {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The live sessions of `user` (listed, not revoked, not expired), with their records, in
    /// the order they were listed.
    pub(super) async fn live_sessions(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Vec<(String, Session)>, LoginError> {
        let raw = self.store.get(Ns::UserSessions, user).await?;
        let list = UserSessions::decode(raw.as_deref())?;
        let mut live = Vec::new();
        for (sid, exp) in list.sids {
            if exp <= now || self.revocations.is_revoked(&sid) {
                continue;
            }
            // A record that does not parse is no live session anyone could use.
            let record = self.store.get(Ns::Session, &sid).await?;
            if let Some(session) = record.and_then(|raw| serde_json::from_slice(&raw).ok()) {
                live.push((sid, session));
            }
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn user_session_lists_from_before_epochs_still_read_and_corrupt_ones_do_not() {
        let old = UserSessions::decode(Some(br#"[["s1",2000]]"#)).unwrap();
        assert_eq!((old.epoch, old.sids), (0, vec![("s1".to_owned(), 2000)]));
        let new = UserSessions::decode(Some(br#"{"epoch":7,"sids":[]}"#)).unwrap();
        assert_eq!(new.epoch, 7);
        assert_eq!(UserSessions::decode(None).unwrap().epoch, 0);
        assert!(matches!(
            UserSessions::decode(Some(b"{nope")),
            Err(StoreError::Corrupt(_))
        ));
    }
}
