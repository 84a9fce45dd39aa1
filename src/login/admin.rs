//! What operators do to a running authgate (SPEC 2.5), transport-neutral: lockdown (stored
//! under `Ns::Control`, so every replica and a restarted one follow it), listing a user's
//! live sessions, revoking a session, a user or everyone, service tokens, key rotation. The
//! admin gRPC service only translates; each action here is a security event naming the
//! admin channel it came through. Revocation always goes through the normal path (the store's
//! revocation set and this replica's at once), so every replica and the relay see it.

use std::net::{IpAddr, Ipv4Addr};

use crate::client_addr::ClientAddr;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::session::{Session, UserSessions};
use super::{LoginError, LoginService, json, usable_user_name};
use crate::events::{RevokeReason, SecurityEvent};
use crate::store::{Ns, update};
use crate::token::{Kind, SERVICE_AMR};

/// The key of the lockdown switch in `Ns::Control`.
const LOCKDOWN: &str = "lockdown";
/// When `lockdown on --revoke-all` sweeps the sessions a second time.
const LATE_SWEEP_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);
/// The most sessions one listing returns.
pub const MAX_LISTED: usize = 1000;
/// The client address the revocation events of admin actions name (no client made them).
const NO_CLIENT: ClientAddr = ClientAddr::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED));

/// One live session as an operator sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub sid: String,
    pub user: String,
    pub amr: Vec<String>,
    pub created: u64,
    pub last_refresh: Option<u64>,
    pub expires_at: u64,
    pub client: Option<String>,
    pub user_agent: Option<String>,
    /// The device of a persistent device token (SPEC 2.7).
    pub device: Option<String>,
}

/// `authgate admin status`.
#[derive(Debug, Clone, Serialize)]
pub struct AdminStatus {
    pub lockdown: bool,
    pub sessions: u64,
    pub store_up: bool,
    pub keys: Vec<String>,
}

/// A service token just minted.
#[derive(Debug)]
pub struct ServiceToken {
    pub token: super::Redacted<String>,
    pub sid: String,
    pub expires_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("{0}")]
    Failed(String),
}

impl From<crate::store::StoreError> for AdminError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Login(e.into())
    }
}

impl LoginService {
    /// Whether lockdown is on, as this replica last read it.
    pub fn lockdown(&self) -> bool {
        self.lockdown.load(Ordering::Relaxed)
    }

    fn set_lockdown_view(&self, on: bool) {
        self.lockdown.store(on, Ordering::Relaxed);
        self.metrics.lockdown.set(i64::from(on));
    }

    /// Logins, OTP logins and refreshes are refused (503) while lockdown is on.
    pub(super) fn refuse_in_lockdown(&self) -> Result<(), LoginError> {
        if self.lockdown() {
            return Err(LoginError::Lockdown);
        }
        Ok(())
    }

    /// Reads the lockdown switch from the store (at start-up, then every sync interval).
    /// On a store failure the last known state stays.
    pub async fn sync_lockdown(&self) -> Result<(), crate::store::StoreError> {
        let on = self.store.get(Ns::Control, LOCKDOWN).await?.as_deref() == Some(b"on");
        if on != self.lockdown() {
            tracing::warn!(lockdown = on, "lockdown changed");
        }
        self.set_lockdown_view(on);
        Ok(())
    }

    /// Turns lockdown on or off everywhere; with `revoke_all` (and `on`), also revokes every
    /// session. Returns how many sessions were newly revoked.
    pub async fn set_lockdown(
        &self,
        on: bool,
        revoke_all: bool,
        channel: &str,
    ) -> Result<u64, AdminError> {
        let value: &[u8] = if on { b"on" } else { b"off" };
        self.store.put(Ns::Control, LOCKDOWN, value, 0).await?;
        self.set_lockdown_view(on);
        let revoked = if on && revoke_all {
            // A second pass once every replica follows the lockdown (they read it within
            // one sync interval, twice the margin here) takes the sessions that logins in
            // flight elsewhere opened meanwhile; after it none can start (`start_session`).
            let first = self.revoke_everyone().await?;
            tokio::time::sleep(LATE_SWEEP_AFTER).await;
            first + self.revoke_everyone().await?
        } else {
            0
        };
        self.emit(SecurityEvent::AdminLockdown {
            channel,
            on,
            revoke_all: on && revoke_all,
            revoked,
        });
        Ok(revoked)
    }

    /// Revokes every session in the store, service tokens included.
    async fn revoke_everyone(&self) -> Result<u64, AdminError> {
        let mut revoked = 0;
        for (sid, raw) in self.store.scan(Ns::Session).await? {
            let Ok(session) = serde_json::from_slice::<Session>(&raw) else {
                continue;
            };
            if self
                .end_session(&sid, &session, RevokeReason::Lockdown)
                .await?
            {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// Revokes `sid` of `session`, for as long as any token of it can be presented; false if
    /// it had ended already.
    async fn end_session(
        &self,
        sid: &str,
        session: &Session,
        reason: RevokeReason,
    ) -> Result<bool, LoginError> {
        if self.revocations.is_revoked(sid) {
            return Ok(false);
        }
        // A service or profile token may outlive an access token's life: its revocation
        // lasts as long.
        let until = session.token_lives_until(self.leeway);
        self.revoke_session_until(sid, &session.user, NO_CLIENT, reason, until)
            .await?;
        Ok(true)
    }

    /// `authgate admin revoke --sid`: 1 if the session was live, 0 if unknown or ended.
    pub async fn admin_revoke_session(&self, sid: &str, channel: &str) -> Result<u64, AdminError> {
        let revoked = match self.store.get(Ns::Session, sid).await? {
            Some(raw) => match serde_json::from_slice::<Session>(&raw) {
                Ok(session) => {
                    let ended = self.end_session(sid, &session, RevokeReason::Admin).await?;
                    self.unlist(&session.user, sid).await;
                    u64::from(ended)
                }
                Err(_) => 0,
            },
            None => 0,
        };
        self.emit(SecurityEvent::AdminRevoke {
            channel,
            user: None,
            sid: Some(sid),
            revoked,
        });
        Ok(revoked)
    }

    /// `authgate admin revoke --user`: every session of `user`, race-free with logins in
    /// flight (the epoch of [`LoginService::revoke_user`]).
    pub async fn admin_revoke_user(&self, user: &str, channel: &str) -> Result<u64, AdminError> {
        let revoked = self
            .revoke_user(user, NO_CLIENT, RevokeReason::Admin)
            .await?;
        self.emit(SecurityEvent::AdminRevoke {
            channel,
            user: Some(user),
            sid: None,
            revoked,
        });
        Ok(revoked)
    }

    /// The live sessions of `user`, oldest first, at most [`MAX_LISTED`] (and whether there
    /// were more).
    pub async fn list_sessions(&self, user: &str) -> Result<(Vec<SessionInfo>, bool), AdminError> {
        let live = self.live_sessions(user, self.now()).await?;
        let truncated = live.len() > MAX_LISTED;
        let mut out: Vec<SessionInfo> = live
            .into_iter()
            .take(MAX_LISTED)
            .map(|(sid, s)| SessionInfo {
                sid,
                user: s.user,
                amr: s.amr,
                created: s.created,
                last_refresh: (s.refreshed != 0).then_some(s.refreshed),
                expires_at: s.expires_at,
                client: s.client,
                user_agent: s.user_agent,
                device: s.device,
            })
            .collect();
        out.sort_by_key(|s| s.created);
        Ok((out, truncated))
    }

    /// `authgate admin status`.
    pub async fn admin_status(&self) -> AdminStatus {
        let sessions = match self.store.scan(Ns::Session).await {
            Ok(all) => all
                .iter()
                .filter(|(sid, _)| !self.revocations.is_revoked(sid))
                .count() as u64,
            Err(_) => 0,
        };
        AdminStatus {
            lockdown: self.lockdown(),
            sessions,
            store_up: self.store.ping().await.is_ok(),
            keys: self.tokens.kids(),
        }
    }

    /// `authgate admin token`: an access token with `amr` ["svc"] and a session of its own
    /// (listed under `sub`, revocable by sid, by user, and by lockdown --revoke-all), without
    /// a backend credential, for `ttl` seconds (at most `admin.max_token_ttl`).
    pub async fn mint_service_token(
        &self,
        sub: &str,
        ttl: u64,
        channel: &str,
    ) -> Result<ServiceToken, AdminError> {
        if !usable_user_name(sub) {
            return Err(AdminError::BadRequest(
                "--sub must be 1 to 256 bytes without control characters".into(),
            ));
        }
        if ttl == 0 || ttl > self.max_token_ttl {
            return Err(AdminError::BadRequest(format!(
                "--ttl must be between 1s and admin.max_token_ttl ({}s)",
                self.max_token_ttl
            )));
        }
        let sid = self.tokens.random_id();
        let now = self.now();
        let (token, _) = self
            .tokens
            .mint(Kind::Access, sub, &sid, &[SERVICE_AMR], ttl, None)
            .map_err(LoginError::from)?;
        let session = Session::service(sub, now, now + ttl);
        self.store
            .put(Ns::Session, &sid, &json(&session), session.expires_at)
            .await?;
        let until = session.expires_at;
        update(&*self.store, Ns::UserSessions, sub, |raw| {
            let mut list = match UserSessions::decode(raw) {
                Ok(list) => list,
                Err(e) => return (raw.map(<[u8]>::to_vec), 0, Err(e)),
            };
            list.sids.retain(|(_, exp)| *exp > now);
            list.sids.push((sid.clone(), until));
            let expires = list.expires_at(now);
            (Some(json(&list)), expires, Ok(()))
        })
        .await??;
        self.emit(SecurityEvent::AdminTokenMinted {
            channel,
            user: sub,
            sid: &sid,
            ttl,
        });
        Ok(ServiceToken {
            token: token.into(),
            sid,
            expires_in: ttl,
        })
    }

    /// `authgate admin rotate-keys`: a new signing key; the new kid.
    pub fn admin_rotate_keys(&self, channel: &str) -> Result<String, AdminError> {
        let kid = self.tokens.rotate_signing_key().map_err(|e| match &e {
            crate::token::keys::KeyError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                AdminError::Failed(format!(
                    "{e}: the key directory is read-only (a Kubernetes Secret?); rotate the \
                     Secret instead (authgate rotate-keys on a copy, then update the Secret)"
                ))
            }
            _ => AdminError::Failed(e.to_string()),
        })?;
        self.emit(SecurityEvent::AdminRotateKeys { channel, kid: &kid });
        Ok(kid)
    }
}
