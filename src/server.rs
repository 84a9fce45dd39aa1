//! Assembles the service from a [`Config`] and runs it: binds both listeners (port 0 allowed,
//! the bound addresses are reported), serves ext_authz + health over gRPC and the HTTP API,
//! runs the background loops (key reload, revocation pruning), and drains on shutdown:
//! readiness turns false first, then in-flight requests get a bounded grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::backend::Backend;
use crate::clock::Clock;
use crate::config::Config;
use crate::decision::Checker;
use crate::grpc::AuthzService;
use crate::http::{AppState, app};
use crate::login::LoginService;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::revocation::Revocations;
use crate::store::{Ns, Store, StoreError};
use crate::token::TokenService;

const KEY_RELOAD_EVERY: Duration = Duration::from_secs(10);
const REVOCATION_SYNC_EVERY: Duration = Duration::from_millis(500);

/// A started authgate.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    health: tonic_health::server::HealthReporter,
    servers: Vec<JoinHandle<()>>,
    drain_grace: Duration,
}

/// Starts authgate on the system clock.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, Clock::system()).await
}

/// Starts authgate with an injected clock (tests move it to expire tokens).
pub async fn start_with_clock(config: Config, clock: Clock) -> anyhow::Result<Running> {
    let tokens = Arc::new(
        TokenService::new(&config, clock.clone())
            .with_context(|| format!("loading keys under {}", config.store.path.display()))?,
    );
    let revocations = Arc::new(Revocations::new(clock.clone()));
    let store = crate::store::open(&config.store, clock.clone())
        .await
        .with_context(|| format!("opening the {:?} store", config.store.kind))?;
    sync_revocations(&*store, &revocations)
        .await
        .context("loading revocations")?;
    let metrics = Arc::new(Metrics::new());
    let backend = Backend::from_config(&config.backend).context("setting up the backend")?;
    let checker = Arc::new(Checker {
        tokens: tokens.clone(),
        policy: Policy::new(&config.policy),
        revocations: revocations.clone(),
    });
    let login = Arc::new(LoginService::new(
        &config,
        backend,
        tokens.clone(),
        store.clone(),
        revocations.clone(),
        metrics.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let state = Arc::new(AppState {
        checker: checker.clone(),
        tokens: tokens.clone(),
        login,
        metrics: metrics.clone(),
        ready: ready.clone(),
        trusted_proxies: config.listen.trusted_proxies.clone(),
    });

    let http_listener = TcpListener::bind(config.listen.http)
        .await
        .with_context(|| format!("binding listen.http {}", config.listen.http))?;
    let grpc_listener = TcpListener::bind(config.listen.grpc)
        .await
        .with_context(|| format!("binding listen.grpc {}", config.listen.grpc))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    let authz = AuthzService::new(checker, metrics.clone());
    let incoming =
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let grpc_stop = stopped();
    let grpc = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(authz)
            .serve_with_incoming_shutdown(incoming, grpc_stop)
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });

    let router = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let http_stop = stopped();
    let http = tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, router)
            .with_graceful_shutdown(http_stop)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    let bg_stop = stopped();
    let background = tokio::spawn(background_loops(tokens, store, revocations, bg_stop));

    ready.store(true, Ordering::Release);
    health.set_serving::<AuthzService>().await;
    health.set_service_status("", ServingStatus::Serving).await;
    tracing::info!(http = %http_addr, grpc = %grpc_addr, "authgate ready");

    Ok(Running {
        http_addr,
        grpc_addr,
        state,
        shutdown,
        health,
        servers: vec![grpc, http, background],
        drain_grace: config.listen.drain_grace,
    })
}

/// Merges the store's revocations into the in-memory set (a full resync).
async fn sync_revocations(store: &dyn Store, revocations: &Revocations) -> Result<(), StoreError> {
    let entries = store
        .scan(Ns::Revoked)
        .await?
        .into_iter()
        .filter_map(|(sid, until)| {
            let until = std::str::from_utf8(&until).ok()?.parse().ok()?;
            Some((Arc::<str>::from(sid), until))
        })
        .collect();
    revocations.merge(entries);
    Ok(())
}

/// After an outage the store may have lost data (a Redis restarted without persistence):
/// writes back what this replica knows, so replicas started later learn it too.
async fn republish_revocations(
    store: &dyn Store,
    revocations: &Revocations,
) -> Result<(), StoreError> {
    for (sid, until) in revocations.entries() {
        store
            .put(Ns::Revoked, &sid, until.to_string().as_bytes(), until)
            .await?;
    }
    Ok(())
}

/// Background work: revocations from other replicas (polled twice a second, so every replica
/// applies a revocation within a second), key reload, pruning. Stops on shutdown.
async fn background_loops(
    tokens: Arc<TokenService>,
    store: Arc<dyn Store>,
    revocations: Arc<Revocations>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut sync = tokio::time::interval(REVOCATION_SYNC_EVERY);
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(KEY_RELOAD_EVERY);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen_version = None;
    let mut store_down = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = sync.tick() => {
                let result = match store.version(Ns::Revoked).await {
                    Ok(v) if seen_version == Some(v) && !store_down => Ok(()),
                    Ok(v) => sync_revocations(&*store, &revocations).await.map(|()| seen_version = Some(v)),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) if store_down => {
                        store_down = false;
                        let healed = republish_revocations(&*store, &revocations).await;
                        tracing::info!(republished = healed.is_ok(), "store reachable again; revocations resynced");
                    }
                    Err(e) if !store_down => {
                        store_down = true;
                        tracing::error!(error = %e, "store unreachable; checks go on with the last known revocations");
                    }
                    _ => {}
                }
            }
            _ = housekeeping.tick() => {
                if let Err(e) = tokens.reload_keys() {
                    tracing::error!(error = %e, "reloading keys failed; keeping the loaded ones");
                }
                revocations.prune();
                if let Err(e) = store.sweep().await {
                    tracing::warn!(error = %e, "sweeping expired store entries failed");
                }
            }
        }
    }
}

impl Running {
    /// Readiness off, stop accepting, let in-flight requests finish within the grace period.
    pub async fn shutdown(self) {
        self.set_draining().await;
        let _ = self.shutdown.send(true);
        let all = futures_join(self.servers);
        if tokio::time::timeout(self.drain_grace, all).await.is_err() {
            tracing::warn!(grace = ?self.drain_grace, "drain grace period over; closing remaining connections");
        }
    }

    /// Marks the service as draining without stopping it (readiness and gRPC health go false).
    pub async fn set_draining(&self) {
        self.state.ready.store(false, Ordering::Release);
        self.health.set_not_serving::<AuthzService>().await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
