//! How both listeners treat their connections: a cap on open connections, a deadline for a
//! request's headers (which for HTTP/1 is also the longest a connection may sit idle between
//! requests), a cap on concurrent HTTP/2 streams, keep-alive pings that close dead peers, and
//! a deadline for one gRPC call. A peer that opens connections or streams and sends nothing
//! holds each for a bounded time, and never more of them than the caps allow.
//!
//! This module owns connection handling only; what a request means is the routers' business.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures_util::Stream;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt as _;

use crate::config::Listen;

/// HTTP/2 keep-alive: a PING after this much silence, and the connection is closed when the
/// answer takes longer than [`PING_TIMEOUT`].
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The limits of `[listen]`, for both listeners.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_streams: u32,
}

impl Limits {
    pub fn new(listen: &Listen) -> Self {
        Self {
            header_timeout: listen.header_timeout,
            request_timeout: listen.request_timeout,
            max_connections: listen.max_connections,
            max_streams: listen.max_streams,
        }
    }

    /// The gRPC server with these limits (the connection cap is [`capped`]'s).
    pub fn grpc_server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.max_streams)
            .timeout(self.request_timeout)
            .http2_keepalive_interval(Some(PING_EVERY))
            .http2_keepalive_timeout(Some(PING_TIMEOUT))
    }
}

/// Accepts at most `max_connections` at a time: a connection past the cap waits in the
/// kernel's backlog until one closes. Each connection carries its permit.
pub fn capped(
    listener: TcpListener,
    max_connections: usize,
) -> impl Stream<Item = io::Result<Capped>> {
    let permits = Arc::new(Semaphore::new(max_connections));
    futures_util::stream::unfold((listener, permits), |(listener, permits)| async move {
        let permit = permits.clone().acquire_owned().await.ok()?;
        let accepted = accept(&listener).await;
        Some((
            Ok(Capped {
                io: accepted.0,
                peer: accepted.1,
                _permit: permit,
            }),
            (listener, permits),
        ))
    })
}

/// The next connection; accept errors (a peer gone before we took it, no file descriptor
/// left) are logged and waited out.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((io, peer)) => {
                // Checks are small request/response pairs: no Nagle delay.
                let _ = io.set_nodelay(true);
                return (io, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// A connection holding its place under the cap until it is dropped.
pub struct Capped {
    io: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` (HTTP/1 and HTTP/2, upgrades allowed) until `stop`, then
/// closes idle connections at once and lets busy ones finish their requests; returns when
/// the last one is gone (the caller bounds that by the drain grace).
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let connections = capped(listener, limits.max_connections);
    tokio::pin!(stop, connections);
    loop {
        let next = tokio::select! {
            _ = &mut stop => break,
            next = futures_util::StreamExt::next(&mut connections) => next,
        };
        let Some(Ok(conn)) = next else { break };
        let peer = conn.peer;
        let service = router
            .clone()
            .map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), TowerToHyperService::new(service))
            .into_owned();
        let watched = graceful.watch(served);
        tokio::spawn(async move {
            // A peer that resets or times out is no error of ours.
            let _ = watched.await;
        });
    }
    graceful.shutdown().await;
}
