//! The socket.io relay (SPEC 2.4): nethcti-server's live events reach a client that holds
//! only an authgate token. The client's WebSocket ends here; authgate dials the backend's
//! socket.io server itself and passes frames both ways as they are, except the `login` event,
//! whose JWT is checked on the same authenticate path as every request and replaced by the
//! session's legacy token. The socket lives as long as its session: a revocation on any
//! replica closes it.
//!
//! This module owns who may open a relayed socket ([`Relay::authorize`]), the open-socket
//! count and drain ([`Relay::admit`], [`Relay::drain`]) and the frame pump ([`pump`]). It must
//! never send a JWT upstream (query, header, cookie or frame) nor log one.

pub mod protocol;
mod pump;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::config::{RelayConfig, RemoteBackendConfig};
use crate::decision::{Checker, Denial};
use crate::login::mfa::MfaRecord;
use crate::metrics::Metrics;
use crate::store::{Ns, Store};
use crate::token::Verified;

pub use pump::{Upstream, dial, run, ws_config};

/// Why a relayed socket ended (or was never opened): the `reason` label of
/// `authgate_relay_closes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed, or its connection dropped.
    Client,
    /// The backend closed, or its connection dropped.
    Backend,
    /// The session was revoked (logout, admin, refresh reuse, 2FA change).
    Revoked,
    /// The `login` event was refused (`401` sent).
    LoginRefused,
    /// No successful `login` within `relay.login_timeout`.
    LoginTimeout,
    /// A message larger than `relay.max_frame_bytes`.
    TooLarge,
    /// A peer did not take a frame within the write timeout.
    SlowPeer,
    /// authgate is shutting down.
    Draining,
    /// The store could not say whether the user has a second factor.
    Unavailable,
    /// Refused at upgrade: bad token (401/403).
    UpgradeRefused,
    /// Refused at upgrade: `relay.max_sockets` reached (503).
    Full,
    /// Refused at upgrade: the backend's socket server could not be reached (502).
    BackendUnreachable,
}

impl CloseReason {
    pub const ALL: [CloseReason; 12] = [
        CloseReason::Client,
        CloseReason::Backend,
        CloseReason::Revoked,
        CloseReason::LoginRefused,
        CloseReason::LoginTimeout,
        CloseReason::TooLarge,
        CloseReason::SlowPeer,
        CloseReason::Draining,
        CloseReason::Unavailable,
        CloseReason::UpgradeRefused,
        CloseReason::Full,
        CloseReason::BackendUnreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Backend => "backend",
            CloseReason::Revoked => "revoked",
            CloseReason::LoginRefused => "login_refused",
            CloseReason::LoginTimeout => "login_timeout",
            CloseReason::TooLarge => "too_large",
            CloseReason::SlowPeer => "slow_peer",
            CloseReason::Draining => "draining",
            CloseReason::Unavailable => "unavailable",
            CloseReason::UpgradeRefused => "upgrade_refused",
            CloseReason::Full => "full",
            CloseReason::BackendUnreachable => "backend_unreachable",
        }
    }
}

/// Why a token may not hold a relayed socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The check's own denial (bad, expired, revoked, wrong kind...).
    Denied(Denial),
    /// A token without the second factor of a user who has one.
    SecondFactor,
    /// `accessKeyId` is not the token's `sub`.
    OtherUser,
    /// The session has no legacy credential to log in to the backend with (a service token).
    NoCredential,
    /// The store did not answer whether the user has a second factor.
    Unavailable,
}

impl Refusal {
    /// The status of an upgrade refused for this reason.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Denied(d) => d.status(),
            Refusal::SecondFactor | Refusal::OtherUser | Refusal::NoCredential => 403,
            Refusal::Unavailable => 503,
        }
    }

    /// The denial whose JSON body and challenge describe this refusal.
    pub fn denial(self) -> Denial {
        match self {
            Refusal::Denied(d) => d,
            Refusal::SecondFactor => Denial::MfaRequired,
            Refusal::OtherUser | Refusal::NoCredential => Denial::WrongKind,
            Refusal::Unavailable => Denial::NoToken,
        }
    }

    /// A fixed label for the log.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Denied(d) => d.outcome().label(),
            Refusal::SecondFactor => "second_factor_required",
            Refusal::OtherUser => "other_user",
            Refusal::NoCredential => "no_backend_credential",
            Refusal::Unavailable => "store_unavailable",
        }
    }
}

/// How long a peer may take to accept one frame before the socket is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing handshakes may take once the relay has decided to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Read buffer per WebSocket (client and backend side), also the most read per syscall:
/// socket.io frames are small, and an idle socket should cost little (the soak measured
/// 18.2 KiB per idle socket with 4 KiB, 16.2 with 1 KiB, 15.2 with 256 B). A large message
/// reserves its own length; it is read in steps of this size (a 1 MiB one in 2048 reads).
const READ_BUFFER: usize = 512;

/// The relay of one replica: shared by every relayed socket.
pub struct Relay {
    checker: Arc<Checker>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// `{backend.ws_url}/socket.io/`.
    socket_url: String,
    dial_timeout: Duration,
    /// TLS for a `wss://` backend: `backend.ca_file` alone, else the public roots.
    tls: Option<Arc<rustls::ClientConfig>>,
    limits: RelayConfig,
    open: AtomicUsize,
    /// Turns true on shutdown: every socket closes with 1001.
    draining: watch::Sender<bool>,
}

impl Relay {
    pub fn new(
        backend: &RemoteBackendConfig,
        limits: &RelayConfig,
        checker: Arc<Checker>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // The CA file was checked when the configuration was loaded. Should it have gone
        // since, the default connector (public roots) is used: a backend signed by a private
        // CA is then refused, never accepted unchecked.
        let tls = match crate::tls::client_config(backend.ca_file.as_deref(), &[]) {
            Ok(config) => Some(Arc::new(config)),
            Err(e) => {
                tracing::warn!(error = %e, "relay: backend.ca_file unusable; public roots only");
                None
            }
        };
        Self {
            checker,
            store,
            metrics,
            socket_url: format!("{}/socket.io/", backend.ws_url()),
            dial_timeout: backend.timeout,
            tls,
            limits: limits.clone(),
            open: AtomicUsize::new(0),
            draining: watch::Sender::new(false),
        }
    }

    pub fn limits(&self) -> &RelayConfig {
        &self.limits
    }

    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// Relayed sockets open now.
    pub fn open_sockets(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more socket, or `None` when `relay.max_sockets` are open or the relay
    /// is draining. The place is given back when the [`Admission`] drops.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        if *self.draining.borrow() {
            return None;
        }
        let max = self.limits.max_sockets;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.relay_sockets.inc();
        Some(Admission(self.clone()))
    }

    /// Closes every socket (1001, after the frames in flight) and waits until they are gone.
    /// New upgrades are refused from now on.
    pub async fn drain(&self) {
        self.draining.send_replace(true);
        while self.open_sockets() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn record_close(&self, reason: CloseReason) {
        self.metrics.record_relay_close(reason);
    }

    /// The full check for a token that is to hold a relayed socket: the authenticate path of
    /// every request (signature, kind, expiry, revocation), the second factor when the user
    /// has one, and a legacy credential to log in to the backend with.
    pub async fn authorize(&self, token: &str) -> Result<Arc<Verified>, Refusal> {
        let verified = self.checker.authenticate(token).map_err(Refusal::Denied)?;
        self.admissible(&verified).await?;
        Ok(verified)
    }

    /// What [`Relay::authorize`] adds to the authenticate path, for a token that passed it.
    pub async fn admissible(&self, verified: &Verified) -> Result<(), Refusal> {
        if !verified.has_otp() {
            // Enrolment revokes every session, so a password-only token of a user with 2FA
            // should be dead already; this read makes sure, at one store read per socket.
            match self.store.get(Ns::Mfa, &verified.sub).await {
                Ok(None) => {}
                Ok(Some(raw)) => {
                    // A record that does not parse is treated as enabled: refuse, not guess.
                    let enabled =
                        serde_json::from_slice::<MfaRecord>(&raw).map_or(true, |r| r.enabled);
                    if enabled {
                        return Err(Refusal::SecondFactor);
                    }
                }
                Err(e) => {
                    tracing::warn!(user = %verified.sub, sid = %verified.sid, error = %e, "relay: store unavailable for the second-factor check");
                    return Err(Refusal::Unavailable);
                }
            }
        }
        if legacy_login(verified).is_none() {
            return Err(Refusal::NoCredential);
        }
        Ok(())
    }
}

/// The backend's `accessKeyId` and legacy token from the session's credential `user:token`.
fn legacy_login(verified: &Verified) -> Option<(&str, &str)> {
    let credential: &SecretString = verified.credential.as_ref()?;
    let (user, token) = credential.expose_secret().split_once(':')?;
    (!user.is_empty() && !token.is_empty()).then_some((user, token))
}

/// One place among `relay.max_sockets`, given back on drop.
pub struct Admission(Arc<Relay>);

impl Admission {
    pub fn relay(&self) -> &Arc<Relay> {
        &self.0
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.relay_sockets.dec();
    }
}
