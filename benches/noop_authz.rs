//! The do-nothing baseline of the end-to-end benchmark (`bench/run`).
//!
//! It runs the same stack as `authgate serve` with the same settings (tokio multi-thread
//! runtime built exactly as `main.rs` builds it, authgate's own `listener` code and default
//! limits for both listeners, `grpc.health.v1` beside ext_authz, an axum router) and decides
//! nothing: every `Check` gets an OK `CheckResponse`, every HTTP request on any path a 200.
//! The gap between authgate and this server is therefore the price of authgate's own work
//! (policy, token lookup, verification, building the answer, metrics), not of the transport.
//!
//! With `--identity`, every answer carries what authgate's allow carries (a user, a session id,
//! the amr and the removal of `authorization`, same lengths as in the benchmark: as headers over
//! HTTP, as header mutations and dynamic metadata over gRPC), still deciding nothing: behind
//! nginx or Envoy, the gap between this and the plain baseline is what forwarding an identity
//! costs the proxy, whoever the authorizer is.
//!
//! Usage: `noop_authz --grpc ADDR --http ADDR [--identity]`, each ADDR `127.0.0.1:PORT` or
//! `unix:/path` (bound by authgate's own `Listener::bind`, mode 0660, as `listen.grpc` and
//! `listen.http` are). Stops on SIGINT/SIGTERM, removing its socket files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use authgate::config::{Listen, ListenAddr};
use authgate::decision::{Allow, Decision, Dialect};
use authgate::grpc::check_response;
use authgate::listener::{self, Limits, Listener};
use axum::Router;
use axum::http::StatusCode;
use clap::Parser;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

#[derive(Parser)]
#[command(about = "Do-nothing ext_authz (gRPC) and auth_request (HTTP) baseline")]
struct Args {
    /// Address of the ext_authz gRPC listener (`host:port` or `unix:/path`).
    #[arg(long)]
    grpc: ListenAddr,
    /// Address of the HTTP listener (200 to any path; `host:port` or `unix:/path`).
    #[arg(long)]
    http: ListenAddr,
    /// Answer HTTP with constant identity headers, as authgate allows.
    #[arg(long)]
    identity: bool,
}

/// The benchmark user's identity, as authgate's allow reports it.
const USER: &str = "bench";
const SESSION: &str = "aYV6HKDqj5tmC22Fu_hy9Q";
const AMR: &str = "pwd";

/// The one answer this server gives to every `Check`.
struct Noop(CheckResponse);

impl Noop {
    fn new(identity: bool) -> Self {
        if !identity {
            return Noop(CheckResponse {
                status: Some(rpc::Status {
                    code: 0,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
                ..Default::default()
            });
        }
        // authgate's own rendering of an allow, with constant strings.
        let allow = Allow {
            user: Some(USER.into()),
            session: Some(SESSION.into()),
            amr: AMR.into(),
            set_headers: vec![
                ("x-auth-user", USER.to_owned()),
                ("x-auth-session", SESSION.to_owned()),
            ],
            remove_headers: vec!["authorization"],
            remove_query: Vec::new(),
        };
        Noop(check_response(Decision::Allow(allow), Dialect::OAuth).into_prost())
    }
}

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() {
    let args = Args::parse();
    // As authgate's `main.rs`: default worker count (the CPUs this process may run on).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let grpc_listener = Listener::bind("--grpc", &args.grpc, 0o660)
            .await
            .expect("bind --grpc");
        let http_listener = Listener::bind("--http", &args.http, 0o660)
            .await
            .expect("bind --http");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AuthorizationServer<Noop>>().await;
        // authgate's own listener code and default limits: the same stack, the same settings.
        let limits = Limits::new(&Listen::default());
        let incoming = listener::capped(grpc_listener, limits.max_connections);
        let grpc_stop = stopped();
        let grpc = tokio::spawn(async move {
            limits
                .grpc_server()
                .add_service(health_service)
                .add_service(AuthorizationServer::new(Noop::new(args.identity)))
                .serve_with_incoming_shutdown(incoming, grpc_stop)
                .await
                .expect("gRPC server");
        });

        let router = if args.identity {
            Router::new().fallback(|| async {
                (
                    [
                        ("x-auth-user", USER),
                        ("x-auth-session", SESSION),
                        ("x-authgate-amr", AMR),
                        ("x-envoy-auth-headers-to-remove", "authorization"),
                    ],
                    StatusCode::OK,
                )
            })
        } else {
            Router::new().fallback(|| async { StatusCode::OK })
        };
        let http = tokio::spawn(listener::serve_http(
            http_listener,
            router,
            limits,
            stopped(),
        ));

        println!("noop_authz ready: grpc={} http={}", args.grpc, args.http);
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        let _ = grpc.await;
        let _ = http.await;
    });
}
