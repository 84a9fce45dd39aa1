//! Assembles the service from a [`Config`] and runs it, in two steps. [`build`] makes every
//! part (keys, store, revocation set, checker, login service, handler state) and binds
//! nothing, spawns nothing. [`App::serve`] binds both listeners (TCP, port 0 allowed, or Unix
//! sockets; the bound addresses are reported) or [`App::serve_on`] takes bound ones, then serves ext_authz +
//! health over gRPC and the HTTP API, the admin API on its own listener, and runs the
//! background loops (key reload, revocation and lockdown sync, store sweeping). On shutdown readiness turns false first, then in-flight requests get
//! a bounded grace period.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::clock::Clock;
use crate::config::{BackendConfig, Config, Listen, ListenAddr};
use crate::decision::Checker;
use crate::grpc::AuthzService;
use crate::listener::{self, Limits, Listener};
use crate::login::LoginService;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::readiness::Readiness;
use crate::relay::Relay;
use crate::revocation::{self, Revocations, SyncState};
use crate::store::Store;
use crate::token::TokenService;
use crate::web::{AppState, app};

const KEY_RELOAD_EVERY: Duration = Duration::from_secs(10);
const STORE_SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Mode of the `listen.grpc` and `listen.http` socket files: the proxy, in authgate's group
/// (a pod's `fsGroup`), may connect; nobody else.
const PROXY_SOCKET_MODE: u32 = 0o660;

/// Every part of authgate, built and not yet serving: nothing bound, no task running, not
/// ready.
pub struct App {
    pub state: Arc<AppState>,
    pub store: Arc<dyn Store>,
    pub revocations: Arc<Revocations>,
    sync_state: watch::Sender<SyncState>,
    listen: Listen,
    /// The admin API's configuration (its listener is bound by `serve_on`).
    admin: Config,
    admin_secret: Option<secrecy::SecretString>,
}

/// Builds authgate from a valid configuration: loads (or creates) the keys, opens the store,
/// tries to load the revocations once, sets up the backend. Fails only on I/O (keys, the users
/// file, the embedded database). A store that cannot be read yet (Redis down) is no failure:
/// the replica serves unready until the revocation sync loop first reaches it.
pub async fn build(config: &Config, clock: Clock) -> anyhow::Result<App> {
    crate::tls::install_default_provider();
    let tokens = Arc::new(
        TokenService::new(config, clock.clone())
            .with_context(|| format!("loading keys under {}", config.store.path.display()))?,
    );
    let revocations = Arc::new(Revocations::new(clock.clone()));
    let store = crate::store::open(&config.store, clock.clone())
        .await
        .with_context(|| format!("opening the {} store", config.store.kind.as_str()))?;
    let first_load = revocation::sync(&*store, &revocations).await;
    if let Err(e) = &first_load {
        tracing::warn!(error = %e, "cannot load revocations yet; unready until the store answers");
    }
    let (sync_state, store_state) = watch::channel(SyncState::after_first_load(first_load.is_ok()));
    let metrics = Arc::new(Metrics::new());
    let backend = Backend::from_config(&config.backend).context("setting up the backend")?;
    let mut policy = Policy::new(&config.policy).deny_first(backend.own_login_routes());
    if let Some(prefix) = config.compat.middleware_prefix() {
        policy = policy.with_nethcti_profile(prefix);
    }
    let checker = Arc::new(Checker {
        tokens: tokens.clone(),
        policy,
        revocations: revocations.clone(),
    });
    let login = Arc::new(LoginService::new(
        config,
        backend,
        tokens.clone(),
        store.clone(),
        revocations.clone(),
        metrics.clone(),
    ));
    let relay = match &config.backend {
        BackendConfig::Nethcti(remote) => Some(Arc::new(Relay::new(
            remote,
            &config.relay,
            checker.clone(),
            store.clone(),
            metrics.clone(),
        ))),
        BackendConfig::Http(_) | BackendConfig::File(_) => None,
    };
    // Lockdown holds across restarts: read before serving the first login.
    if let Err(e) = login.sync_lockdown().await {
        tracing::warn!(error = %e, "could not read the lockdown switch yet; will keep trying");
    }
    let admin_secret = config
        .admin
        .token_file
        .as_deref()
        .map(crate::admin::read_secret)
        .transpose()?;
    let state = Arc::new(AppState {
        checker,
        tokens,
        login,
        metrics,
        ready: Arc::new(Readiness::new().await),
        store_state,
        trusted_proxies: config.listen.trusted_proxies.clone(),
        relay,
        telemetry: Arc::new(
            crate::telemetry::Telemetry::from_config(&config.telemetry)
                .map_err(anyhow::Error::msg)
                .context("setting up telemetry")?,
        ),
        nethcti: config
            .compat
            .nethcti_middleware
            .then(|| config.compat.clone()),
    });
    if first_load.is_ok() {
        state.ready.revocations_loaded().await;
    }
    Ok(App {
        state,
        store,
        revocations,
        sync_state,
        listen: config.listen.clone(),
        admin: config.clone(),
        admin_secret,
    })
}

/// A started authgate.
pub struct Running {
    pub http_addr: ListenAddr,
    pub grpc_addr: ListenAddr,
    /// Where the admin API listens.
    pub admin_addr: ListenAddr,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    drain_grace: Duration,
}

/// Starts authgate on the system clock.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, Clock::system()).await
}

/// Starts authgate with an injected clock (tests move it to expire tokens).
pub async fn start_with_clock(config: Config, clock: Clock) -> anyhow::Result<Running> {
    build(&config, clock).await?.serve().await
}

impl App {
    /// Binds `listen.http` and `listen.grpc` (port 0 picks a free port; a Unix socket is
    /// made mode 0660), then [`App::serve_on`].
    pub async fn serve(self) -> anyhow::Result<Running> {
        let http = Listener::bind("listen.http", &self.listen.http, PROXY_SOCKET_MODE).await?;
        let grpc = Listener::bind("listen.grpc", &self.listen.grpc, PROXY_SOCKET_MODE).await?;
        self.serve_on(http, grpc).await
    }

    /// Serves on already-bound listeners (and binds `[admin] listen`, apart from them),
    /// starts the background loops, and turns ready.
    pub async fn serve_on(
        self,
        http_listener: Listener,
        grpc_listener: Listener,
    ) -> anyhow::Result<Running> {
        let http_addr = http_listener.local_addr()?;
        let grpc_addr = grpc_listener.local_addr()?;
        let admin_listener = crate::admin::bind(&self.admin).await?;
        let admin_addr = admin_listener.local_addr()?;
        let state = self.state;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = shutdown_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let authz = AuthzService::new(
            state.checker.clone(),
            state.metrics.clone(),
            state.telemetry.clone(),
        );
        let health = state.ready.health_service();
        let limits = Limits::new(&self.listen);
        let incoming = listener::capped(grpc_listener, limits.max_connections);
        let grpc_stop = stopped();
        let grpc = tokio::spawn(async move {
            let result = limits
                .grpc_server()
                .add_service(health)
                .add_service(authz)
                .serve_with_incoming_shutdown(incoming, grpc_stop)
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });

        let http = tokio::spawn(listener::serve_http(
            http_listener,
            app(state.clone()),
            limits,
            stopped(),
        ));

        let sync = tokio::spawn(revocation::keep_in_sync(
            self.store.clone(),
            self.revocations,
            self.sync_state,
            stopped(),
        ));
        let first_sync = tokio::spawn(ready_after_first_sync(state.clone(), stopped()));
        let housekeeping = tokio::spawn(housekeeping(state.tokens.clone(), self.store, stopped()));
        let lockdown = tokio::spawn(follow_lockdown(state.login.clone(), stopped()));
        let admin = tokio::spawn(crate::admin::serve(
            admin_listener,
            state.login.clone(),
            self.admin_secret,
            stopped(),
        ));

        state.ready.set(true).await;
        if state.ready.is_ready() {
            tracing::info!(http = %http_addr, grpc = %grpc_addr, admin = %admin_addr, "authgate ready");
        } else {
            tracing::warn!(http = %http_addr, grpc = %grpc_addr, admin = %admin_addr, "authgate serving, unready until the first revocation sync");
        }

        Ok(Running {
            http_addr,
            grpc_addr,
            admin_addr,
            state,
            shutdown,
            servers: vec![grpc, http, sync, first_sync, housekeeping, lockdown, admin],
            drain_grace: self.listen.drain_grace,
        })
    }
}

/// Turns the replica ready once the sync loop has loaded the revocations (at once when start-up
/// did), unless `stop` comes first.
async fn ready_after_first_sync(state: Arc<AppState>, stop: impl std::future::Future<Output = ()>) {
    let mut store_state = state.store_state.clone();
    tokio::select! {
        _ = stop => {}
        loaded = async { store_state.wait_for(|s| s.loaded).await.is_ok() } => {
            if loaded && !state.ready.has_revocations() {
                state.ready.revocations_loaded().await;
                tracing::info!("revocations loaded; authgate ready");
            }
        }
    }
}

/// Follows the lockdown switch in the store (set by any replica's admin API) until `stop`
/// completes, at the pace of the revocation sync, so every replica applies it within 1 s.
async fn follow_lockdown(login: Arc<LoginService>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(revocation::SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                if let Err(e) = login.sync_lockdown().await {
                    tracing::debug!(error = %e, "reading the lockdown switch failed; keeping the last known state");
                }
            }
        }
    }
}

/// Key reload (after `authgate rotate-keys`) and store sweeping, until `stop` completes.
async fn housekeeping(
    tokens: Arc<TokenService>,
    store: Arc<dyn Store>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut reload = tokio::time::interval(KEY_RELOAD_EVERY);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(STORE_SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = reload.tick() => {
                if let Err(e) = tokens.reload_keys() {
                    tracing::error!(error = %e, "reloading keys failed; keeping the loaded ones");
                }
            }
            _ = sweep.tick() => {
                if let Err(e) = store.sweep().await {
                    tracing::warn!(error = %e, "sweeping expired store entries failed");
                }
            }
        }
    }
}

impl Running {
    /// Readiness off, stop accepting, let in-flight requests finish and relayed sockets close
    /// (1001, after their frames in flight) within the grace period.
    pub async fn shutdown(self) {
        self.set_draining().await;
        let _ = self.shutdown.send(true);
        let relay = self.state.relay.clone();
        let sockets = async move {
            if let Some(relay) = relay {
                relay.drain().await;
            }
        };
        let all = futures_util::future::join(futures_join(self.servers), sockets);
        if tokio::time::timeout(self.drain_grace, all).await.is_err() {
            tracing::warn!(grace = ?self.drain_grace, "drain grace period over; closing remaining connections");
        }
        // The last spans, off the async workers (the export itself runs on the runtime).
        if self.state.telemetry.enabled() {
            let telemetry = self.state.telemetry.clone();
            let _ = tokio::task::spawn_blocking(move || telemetry.flush()).await;
        }
    }

    /// Marks the service as draining without stopping it (readiness and gRPC health go false).
    pub async fn set_draining(&self) {
        self.state.ready.set(false).await;
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn build_binds_nothing_and_serve_turns_ready() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = Config::from_toml_str(&format!(
            "[listen]\nhttp = \"127.0.0.1:{port}\"\ngrpc = \"127.0.0.1:0\"\n\
             [backend]\nkind = \"file\"\nusers_file = {users:?}\n[store]\npath = {:?}\n",
            dir.path().join("data")
        ))
        .unwrap();
        let app = build(&config, Clock::manual(1_700_000_000)).await.unwrap();
        assert!(!app.state.ready.is_ready(), "ready before serving");
        // Nothing is bound yet: the configured port is still free.
        drop(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());

        let running = app.serve().await.unwrap();
        assert_eq!(running.http_addr.tcp().unwrap().port(), port);
        assert_ne!(running.grpc_addr.tcp().unwrap().port(), 0);
        let state = running.state.clone();
        assert!(state.ready.is_ready());
        running.shutdown().await;
        assert!(!state.ready.is_ready());
    }
}
