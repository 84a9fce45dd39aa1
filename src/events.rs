//! The security events of SPEC 2.2, as one typed enum: which events exist, which fields each
//! carries, at which level it is logged (target `security`, one JSON line each) and the
//! `authgate_security_events_total{event}` counter it bumps. Events borrow user, client
//! address and session id, and reasons are small enums: there is no field a password, token,
//! OTP code, TOTP secret, recovery code or backend credential could travel in. Nothing here
//! decides anything; the login flows say what happened and this module only reports it.

use crate::client_addr::ClientAddr;

use crate::backend::BackendError;
use crate::metrics::Metrics;

/// One security event. Construct it where the thing happened, then [`SecurityEvent::emit`].
#[derive(Debug, Clone, Copy)]
pub enum SecurityEvent<'a> {
    /// The password was accepted; with `mfa_pending` the second factor is still due and `sid`
    /// is the session it will open.
    LoginSuccess {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
        mfa_pending: bool,
    },
    /// A login attempt refused before any session existed.
    LoginFailure {
        user: &'a str,
        client: ClientAddr,
        reason: LoginFailure<'a>,
    },
    /// The second factor was accepted and the session opened.
    MfaSuccess {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
    },
    /// A wrong TOTP or recovery code.
    MfaFailure {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
    },
    /// This failure locked the user or the client address for `lock_for` seconds.
    Lockout {
        user: &'a str,
        client: ClientAddr,
        lock_for: u64,
    },
    /// A refresh token was rotated.
    Refresh {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
    },
    /// A spent refresh token was presented; the session is revoked.
    RefreshReuse {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
    },
    /// The user ended the session.
    Logout {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
    },
    /// A session entered the revocation set.
    Revoked {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
        reason: RevokeReason,
    },
    TwoFactorEnabled {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
    },
    TwoFactorDisabled {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
    },
    /// A recovery code stood in for a TOTP code (and is now spent).
    RecoveryCodeUsed {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
    },
    /// An operator revoked a session (`sid`) or every session of a user (`user`) through the
    /// admin API on `channel`; `revoked` were newly revoked.
    AdminRevoke {
        channel: &'a str,
        user: Option<&'a str>,
        sid: Option<&'a str>,
        revoked: u64,
    },
    /// An operator turned lockdown on or off (with `revoke_all`, `revoked` sessions ended).
    AdminLockdown {
        channel: &'a str,
        on: bool,
        revoke_all: bool,
        revoked: u64,
    },
    /// An operator minted a service token for `user` (its `sub`), session `sid`.
    AdminTokenMinted {
        channel: &'a str,
        user: &'a str,
        sid: &'a str,
        ttl: u64,
    },
    /// An operator started a new signing key `kid`.
    AdminRotateKeys { channel: &'a str, kid: &'a str },
    /// A persistent device token for `device` opened session `sid` (SPEC 2.7).
    DeviceToken {
        user: &'a str,
        client: ClientAddr,
        sid: &'a str,
        device: &'a str,
    },
}

/// Why a login attempt failed (the `reason` field of `login_failure`).
#[derive(Debug, Clone, Copy)]
pub enum LoginFailure<'a> {
    /// User or client address locked out.
    Locked,
    /// The backend said no.
    BadCredentials,
    /// The backend could not be asked.
    BackendUnavailable(&'a BackendError),
    /// The backend accepted a name authgate cannot use (see
    /// [`crate::login::usable_user_name`]); refused like bad credentials.
    InvalidUsername,
}

impl LoginFailure<'_> {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Locked => "locked",
            Self::BadCredentials => "bad_credentials",
            Self::BackendUnavailable(_) => "backend_unavailable",
            Self::InvalidUsername => "invalid_username",
        }
    }
}

/// Why a session was revoked (the `reason` field of `revoked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    RefreshReuse,
    /// The backend no longer knows the session (seen on refresh).
    BackendSessionEnded,
    TwoFactorEnabled,
    TwoFactorDisabled,
    /// `authgate admin revoke`.
    Admin,
    /// `authgate admin lockdown on --revoke-all`.
    Lockdown,
    /// A new device token for the same device replaced this one.
    Replaced,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::RefreshReuse => "refresh_reuse",
            Self::BackendSessionEnded => "backend_session_ended",
            Self::TwoFactorEnabled => "2fa_enabled",
            Self::TwoFactorDisabled => "2fa_disabled",
            Self::Admin => "admin",
            Self::Lockdown => "lockdown",
            Self::Replaced => "replaced",
        }
    }
}

/// A user name as it goes into the log: itself, or with every control character escaped
/// (`\u{7f}`), so a name cannot forge or split a log line and its raw bytes never appear.
struct LogName<'a>(&'a str);

impl std::fmt::Display for LogName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The name of an event, without its fields: the `event` log field and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    LoginSuccess,
    LoginFailure,
    MfaSuccess,
    MfaFailure,
    Lockout,
    Refresh,
    RefreshReuse,
    Logout,
    Revoked,
    TwoFactorEnabled,
    TwoFactorDisabled,
    RecoveryCodeUsed,
    AdminRevoke,
    AdminLockdown,
    AdminTokenMinted,
    AdminRotateKeys,
    DeviceToken,
}

impl EventKind {
    /// Every kind, in declaration order (so `ALL[k as usize] == k`).
    pub const ALL: [EventKind; 17] = [
        Self::LoginSuccess,
        Self::LoginFailure,
        Self::MfaSuccess,
        Self::MfaFailure,
        Self::Lockout,
        Self::Refresh,
        Self::RefreshReuse,
        Self::Logout,
        Self::Revoked,
        Self::TwoFactorEnabled,
        Self::TwoFactorDisabled,
        Self::RecoveryCodeUsed,
        Self::AdminRevoke,
        Self::AdminLockdown,
        Self::AdminTokenMinted,
        Self::AdminRotateKeys,
        Self::DeviceToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSuccess => "login_success",
            Self::LoginFailure => "login_failure",
            Self::MfaSuccess => "mfa_success",
            Self::MfaFailure => "mfa_failure",
            Self::Lockout => "lockout",
            Self::Refresh => "refresh",
            Self::RefreshReuse => "refresh_reuse",
            Self::Logout => "logout",
            Self::Revoked => "revoked",
            Self::TwoFactorEnabled => "2fa_enabled",
            Self::TwoFactorDisabled => "2fa_disabled",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::AdminRevoke => "admin_revoke",
            Self::AdminLockdown => "admin_lockdown",
            Self::AdminTokenMinted => "admin_token_minted",
            Self::AdminRotateKeys => "admin_rotate_keys",
            Self::DeviceToken => "device_token",
        }
    }
}

/// The common line of the events that name a session: `event`, `user`, `client`, `sid`.
/// (`tracing` needs the level as a literal, hence a macro.)
macro_rules! session_event {
    ($level:ident, $event:expr, $user:expr, $client:expr, $sid:expr) => {
        tracing::$level!(target: "security", event = $event, user = %LogName($user), client = %$client, sid = $sid)
    };
}

impl SecurityEvent<'_> {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::LoginSuccess { .. } => EventKind::LoginSuccess,
            Self::LoginFailure { .. } => EventKind::LoginFailure,
            Self::MfaSuccess { .. } => EventKind::MfaSuccess,
            Self::MfaFailure { .. } => EventKind::MfaFailure,
            Self::Lockout { .. } => EventKind::Lockout,
            Self::Refresh { .. } => EventKind::Refresh,
            Self::RefreshReuse { .. } => EventKind::RefreshReuse,
            Self::Logout { .. } => EventKind::Logout,
            Self::Revoked { .. } => EventKind::Revoked,
            Self::TwoFactorEnabled { .. } => EventKind::TwoFactorEnabled,
            Self::TwoFactorDisabled { .. } => EventKind::TwoFactorDisabled,
            Self::RecoveryCodeUsed { .. } => EventKind::RecoveryCodeUsed,
            Self::AdminRevoke { .. } => EventKind::AdminRevoke,
            Self::AdminLockdown { .. } => EventKind::AdminLockdown,
            Self::AdminTokenMinted { .. } => EventKind::AdminTokenMinted,
            Self::AdminRotateKeys { .. } => EventKind::AdminRotateKeys,
            Self::DeviceToken { .. } => EventKind::DeviceToken,
        }
    }

    /// Logs the event (target `security`, fields in the order `event`, `user`, `client`,
    /// `sid`, then the event's own) and counts it. Failures an attacker can cause at will are
    /// `info`; what points at an attack or an outage is `warn`.
    pub fn emit(&self, metrics: &Metrics) {
        let kind = self.kind();
        metrics.record_security_event(kind);
        let event = kind.as_str();
        match *self {
            Self::LoginSuccess {
                user,
                client,
                sid,
                mfa_pending: true,
            } => {
                tracing::info!(target: "security", event, user = %LogName(user), client = %client, sid, mfa_pending = true);
            }
            Self::LoginSuccess {
                user,
                client,
                sid,
                mfa_pending: false,
            }
            | Self::MfaSuccess { user, client, sid }
            | Self::MfaFailure { user, client, sid }
            | Self::Refresh { user, client, sid }
            | Self::Logout { user, client, sid }
            | Self::TwoFactorEnabled { user, client, sid }
            | Self::TwoFactorDisabled { user, client, sid } => {
                session_event!(info, event, user, client, sid);
            }
            Self::RefreshReuse { user, client, sid }
            | Self::RecoveryCodeUsed { user, client, sid } => {
                session_event!(warn, event, user, client, sid);
            }
            Self::LoginFailure {
                user,
                client,
                reason,
            } => {
                let why = reason.as_str();
                match reason {
                    LoginFailure::BadCredentials => {
                        tracing::info!(target: "security", event, user = %LogName(user), client = %client, reason = why);
                    }
                    LoginFailure::Locked | LoginFailure::InvalidUsername => {
                        tracing::warn!(target: "security", event, user = %LogName(user), client = %client, reason = why);
                    }
                    LoginFailure::BackendUnavailable(error) => {
                        tracing::warn!(target: "security", event, user = %LogName(user), client = %client, reason = why, error = %error);
                    }
                }
            }
            Self::Lockout {
                user,
                client,
                lock_for,
            } => {
                tracing::warn!(target: "security", event, user = %LogName(user), client = %client, lock_for);
            }
            Self::Revoked {
                user,
                client,
                sid,
                reason,
            } => {
                tracing::info!(target: "security", event, user = %LogName(user), client = %client, sid, reason = reason.as_str());
            }
            Self::AdminRevoke {
                channel,
                user,
                sid,
                revoked,
            } => {
                let user = user.map(|u| LogName(u).to_string());
                tracing::warn!(target: "security", event, channel, user, sid, revoked);
            }
            Self::AdminLockdown {
                channel,
                on,
                revoke_all,
                revoked,
            } => {
                tracing::warn!(target: "security", event, channel, lockdown = on, revoke_all, revoked);
            }
            Self::AdminTokenMinted {
                channel,
                user,
                sid,
                ttl,
            } => {
                tracing::warn!(target: "security", event, channel, user = %LogName(user), sid, ttl);
            }
            Self::AdminRotateKeys { channel, kid } => {
                tracing::warn!(target: "security", event, channel, kid);
            }
            Self::DeviceToken {
                user,
                client,
                sid,
                device,
            } => {
                tracing::info!(target: "security", event, user = %LogName(user), client = %client, sid, device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // A std Mutex around the captured log bytes: written by tracing's sync writer.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn kinds_are_listed_in_order_with_the_spec_names() {
        for (i, kind) in EventKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "login_success",
                "login_failure",
                "mfa_success",
                "mfa_failure",
                "lockout",
                "refresh",
                "refresh_reuse",
                "logout",
                "revoked",
                "2fa_enabled",
                "2fa_disabled",
                "recovery_code_used",
                "admin_revoke",
                "admin_lockdown",
                "admin_token_minted",
                "admin_rotate_keys",
                "device_token",
            ]
        );
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `event` logs through the JSON format `main` sets up, without the timestamp.
    fn logged(event: SecurityEvent<'_>, metrics: &Metrics) -> Value {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || event.emit(metrics));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let mut v: Value = serde_json::from_str(text.trim()).unwrap();
        v.as_object_mut().unwrap().remove("timestamp");
        v
    }

    /// The log lines are an interface (alerting and the integration tests read them): names,
    /// values and levels as they were when each flow logged for itself.
    #[test]
    fn each_event_logs_its_fields_and_counts() {
        let metrics = Metrics::new();
        let client: ClientAddr = "192.0.2.7".parse().unwrap();
        let (user, sid) = ("alice", "s-1");
        let down = BackendError::Timeout;
        let session = |level: &str, event: &str| {
            json!({"level": level, "event": event, "user": user, "client": "192.0.2.7",
                   "sid": sid, "target": "security"})
        };
        let cases = [
            (
                SecurityEvent::LoginSuccess {
                    user,
                    client,
                    sid,
                    mfa_pending: true,
                },
                json!({"level": "INFO", "event": "login_success", "user": user,
                       "client": "192.0.2.7", "sid": sid, "mfa_pending": true,
                       "target": "security"}),
            ),
            (
                SecurityEvent::LoginSuccess {
                    user,
                    client,
                    sid,
                    mfa_pending: false,
                },
                session("INFO", "login_success"),
            ),
            (
                SecurityEvent::LoginFailure {
                    user,
                    client,
                    reason: LoginFailure::BadCredentials,
                },
                json!({"level": "INFO", "event": "login_failure", "user": user,
                       "client": "192.0.2.7", "reason": "bad_credentials",
                       "target": "security"}),
            ),
            (
                SecurityEvent::LoginFailure {
                    user,
                    client,
                    reason: LoginFailure::Locked,
                },
                json!({"level": "WARN", "event": "login_failure", "user": user,
                       "client": "192.0.2.7", "reason": "locked", "target": "security"}),
            ),
            (
                SecurityEvent::LoginFailure {
                    user,
                    client,
                    reason: LoginFailure::BackendUnavailable(&down),
                },
                json!({"level": "WARN", "event": "login_failure", "user": user,
                       "client": "192.0.2.7", "reason": "backend_unavailable",
                       "error": "backend timed out", "target": "security"}),
            ),
            (
                SecurityEvent::Lockout {
                    user,
                    client,
                    lock_for: 900,
                },
                json!({"level": "WARN", "event": "lockout", "user": user,
                       "client": "192.0.2.7", "lock_for": 900, "target": "security"}),
            ),
            (
                SecurityEvent::Revoked {
                    user,
                    client,
                    sid,
                    reason: RevokeReason::BackendSessionEnded,
                },
                json!({"level": "INFO", "event": "revoked", "user": user,
                       "client": "192.0.2.7", "sid": sid, "reason": "backend_session_ended",
                       "target": "security"}),
            ),
            (
                SecurityEvent::MfaSuccess { user, client, sid },
                session("INFO", "mfa_success"),
            ),
            (
                SecurityEvent::MfaFailure { user, client, sid },
                session("INFO", "mfa_failure"),
            ),
            (
                SecurityEvent::Refresh { user, client, sid },
                session("INFO", "refresh"),
            ),
            (
                SecurityEvent::RefreshReuse { user, client, sid },
                session("WARN", "refresh_reuse"),
            ),
            (
                SecurityEvent::Logout { user, client, sid },
                session("INFO", "logout"),
            ),
            (
                SecurityEvent::TwoFactorEnabled { user, client, sid },
                session("INFO", "2fa_enabled"),
            ),
            (
                SecurityEvent::TwoFactorDisabled { user, client, sid },
                session("INFO", "2fa_disabled"),
            ),
            (
                SecurityEvent::RecoveryCodeUsed { user, client, sid },
                session("WARN", "recovery_code_used"),
            ),
            (
                SecurityEvent::DeviceToken {
                    user,
                    client,
                    sid,
                    device: "phone-island",
                },
                json!({"level": "INFO", "event": "device_token", "user": user,
                       "client": "192.0.2.7", "sid": sid, "device": "phone-island",
                       "target": "security"}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(logged(event, &metrics), expected);
        }
        let text = metrics.render();
        for (name, n) in [("login_success", 2), ("login_failure", 3), ("lockout", 1)] {
            let line = format!(r#"authgate_security_events_total{{event="{name}"}} {n}"#);
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn user_names_with_control_characters_are_escaped() {
        let metrics = Metrics::new();
        let client: ClientAddr = "192.0.2.7".parse().unwrap();
        let v = logged(
            SecurityEvent::LoginFailure {
                user: "ev\u{7f}il\n{\"event\":\"x\"}",
                client,
                reason: LoginFailure::InvalidUsername,
            },
            &metrics,
        );
        assert_eq!(
            v,
            json!({"level": "WARN", "event": "login_failure",
                   "user": "ev\\u{7f}il\\u{a}{\"event\":\"x\"}",
                   "client": "192.0.2.7", "reason": "invalid_username", "target": "security"})
        );
        assert_eq!(LogName("zoë smith").to_string(), "zoë smith");
    }

    #[test]
    fn reasons_keep_their_log_values() {
        let reasons = [
            RevokeReason::Logout,
            RevokeReason::RefreshReuse,
            RevokeReason::BackendSessionEnded,
            RevokeReason::TwoFactorEnabled,
            RevokeReason::TwoFactorDisabled,
        ]
        .map(RevokeReason::as_str);
        assert_eq!(
            reasons,
            [
                "logout",
                "refresh_reuse",
                "backend_session_ended",
                "2fa_enabled",
                "2fa_disabled"
            ]
        );
    }
}
