//! How every listener treats its connections. [`Listener::bind`] is the one place a listening
//! socket is made, for `listen.grpc`, `listen.http` and `admin.listen` alike: a TCP address,
//! or a Unix domain socket file (created with the mode asked for before it accepts anything,
//! a stale file from a crash replaced, a live one or a non-socket refused, removed when the
//! listener is dropped). Then the limits, the same on both kinds: a cap on open connections,
//! a deadline for a request's headers (which for HTTP/1 is also the longest a connection may
//! sit idle between requests), a cap on concurrent HTTP/2 streams, keep-alive pings that
//! close dead peers, and a deadline for one gRPC call. A peer that opens connections or
//! streams and sends nothing holds each for a bounded time, and never more of them than the
//! caps allow; a burst of cancelled streams (Envoy dropping its in-flight Checks) does not
//! close a connection.
//!
//! This module owns sockets and connection handling only; what a request means is the
//! routers' business.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::ConnectInfo;
use futures_util::Stream;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixSocket, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt as _;

use crate::client_addr::ClientAddr;
use crate::config::{Listen, ListenAddr};

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
            // Envoy cancels every in-flight Check at once when its clients go away; h2's
            // default (20 streams reset before they were accepted) would then close the
            // connection and fail the other Checks on it. As many as may be open at once.
            .http2_max_pending_accept_reset_streams(Some(self.max_streams as usize))
            .timeout(self.request_timeout)
            .http2_keepalive_interval(Some(PING_EVERY))
            .http2_keepalive_timeout(Some(PING_TIMEOUT))
    }
}

/// The backlog of a listening socket (tokio's own for TCP).
const BACKLOG: u32 = 1024;

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

impl Listener {
    /// Binds `addr` for the listener configured at `key` (`listen.grpc`, `listen.http`,
    /// `admin.listen`: errors name it). A Unix socket is created with `mode` before it listens,
    /// so no peer can connect while it has another; its directory must exist. A file already
    /// at the path is replaced only when it is a socket nobody answers on (left by a crash);
    /// a live socket, a symbolic link or any other file is an error.
    pub async fn bind(key: &str, addr: &ListenAddr, mode: u32) -> anyhow::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Self::Tcp(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding {key} {addr}"))?,
            )),
            ListenAddr::Unix(path) => bind_unix(key, path, mode)
                .await
                .map(|(l, f)| Self::Unix(l, f))
                .with_context(|| format!("binding {key} {addr}")),
        }
    }

    /// Where it listens (the port picked for port 0).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        Ok(match self {
            Self::Tcp(l) => ListenAddr::Tcp(l.local_addr()?),
            Self::Unix(_, file) => ListenAddr::Unix(file.path.clone()),
        })
    }

    async fn accept(&self) -> io::Result<(Conn, ClientAddr)> {
        match self {
            Self::Tcp(l) => {
                let (io, peer) = l.accept().await?;
                // Checks are small request/response pairs: no Nagle delay.
                let _ = io.set_nodelay(true);
                Ok((Conn::Tcp(io), ClientAddr::Ip(peer.ip())))
            }
            Self::Unix(l, _) => {
                let (io, _) = l.accept().await?;
                Ok((Conn::Unix(io), ClientAddr::Unix))
            }
        }
    }
}

async fn bind_unix(
    key: &str,
    path: &Path,
    mode: u32,
) -> anyhow::Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    anyhow::ensure!(
        dir.is_dir(),
        "the directory {} does not exist (authgate creates the socket, not its directory)",
        dir.display()
    );
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("cannot inspect the existing file"),
        Ok(meta) if !meta.file_type().is_socket() => anyhow::bail!(
            "{} exists and is not a socket ({}); refusing to replace it",
            path.display(),
            if meta.file_type().is_symlink() {
                "a symbolic link"
            } else if meta.is_dir() {
                "a directory"
            } else {
                "a file"
            }
        ),
        Ok(_) => match UnixStream::connect(path).await {
            Ok(_) => anyhow::bail!(
                "another server is answering on {} (is authgate already running?)",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).context("removing the stale socket file")?;
                tracing::info!(%key, path = %path.display(), "replaced a stale socket file (left by a server that is gone)");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("cannot tell whether the existing socket is in use"),
        },
    }
    let socket = UnixSocket::new_stream()?;
    socket.bind(path)?;
    let file = SocketFile::new(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o}"))?;
    let listener = socket.listen(BACKLOG)?;
    Ok((listener, file))
}

/// The file of a bound Unix socket: removed when dropped, unless another file took its
/// place meanwhile (that one is someone else's).
pub struct SocketFile {
    path: PathBuf,
    inode: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        Ok(Self {
            path: path.to_owned(),
            inode: std::fs::symlink_metadata(path)?.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Accepts at most `max_connections` at a time: a connection past the cap waits in the
/// kernel's backlog until one closes. Each connection carries its permit.
pub fn capped(
    listener: Listener,
    max_connections: usize,
) -> impl Stream<Item = io::Result<Capped>> {
    let permits = Arc::new(Semaphore::new(max_connections));
    futures_util::stream::unfold((listener, permits), |(listener, permits)| async move {
        let permit = permits.clone().acquire_owned().await.ok()?;
        let (io, peer) = accept(&listener).await;
        Some((
            Ok(Capped {
                io,
                peer,
                _permit: permit,
            }),
            (listener, permits),
        ))
    })
}

/// The next connection; accept errors (a peer gone before we took it, no file descriptor
/// left) are logged and waited out.
async fn accept(listener: &Listener) -> (Conn, ClientAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// An accepted connection, of either kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A connection holding its place under the cap until it is dropped.
pub struct Capped {
    io: Conn,
    peer: ClientAddr,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    /// The TCP addresses (tonic's `remote_addr()`); none on a Unix socket.
    fn connect_info(&self) -> TcpConnectInfo {
        match &self.io {
            Conn::Tcp(io) => io.connect_info(),
            Conn::Unix(_) => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

/// Forwards to the stream inside, whichever kind it is.
macro_rules! either {
    ($conn:expr, $io:ident => $e:expr) => {
        match $conn {
            Conn::Tcp($io) => $e,
            Conn::Unix($io) => $e,
        }
    };
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(&mut self.io, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(&mut self.io, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(&mut self.io, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        either!(&self.io, io => io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(&mut self.io, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(&mut self.io, io => Pin::new(io).poll_shutdown(cx))
    }
}

/// Serves `router` on `listener` (HTTP/1 and HTTP/2, upgrades allowed) until `stop`, then
/// closes the listener (a Unix socket's file goes with it) and idle connections at once and
/// lets busy ones finish their requests; returns when the last one is gone (the caller bounds
/// that by the drain grace). Requests carry the peer as `ConnectInfo<ClientAddr>`.
pub async fn serve_http(
    listener: Listener,
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
        .max_pending_accept_reset_streams(limits.max_streams as usize)
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut connections = Box::pin(capped(listener, limits.max_connections));
    tokio::pin!(stop);
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
    // No new connection while draining: a proxy gets a refusal at once, not a wait.
    drop(connections);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    use super::*;

    fn unix(path: &Path) -> ListenAddr {
        ListenAddr::Unix(path.to_owned())
    }

    fn error_of(result: anyhow::Result<Listener>) -> String {
        match result {
            Ok(_) => panic!("bound"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[tokio::test]
    async fn a_unix_socket_is_made_with_its_mode_and_removed_with_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grpc.sock");
        let listener = Listener::bind("listen.grpc", &unix(&path), 0o660)
            .await
            .unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(listener.local_addr().unwrap(), unix(&path));
        // It accepts, and names the peer `unix`.
        let (accepted, _client) = tokio::join!(listener.accept(), UnixStream::connect(&path));
        assert_eq!(accepted.unwrap().1, ClientAddr::Unix);
        drop(listener);
        assert!(!path.exists(), "the socket file outlived its listener");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.sock");
        // A socket file nobody listens on: what a crashed server leaves.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let first = Listener::bind("listen.http", &unix(&path), 0o660)
            .await
            .unwrap();
        // A second server on the same path: refused, and the first keeps its file.
        let e = error_of(Listener::bind("listen.http", &unix(&path), 0o660).await);
        assert!(
            e.contains("listen.http") && e.contains("another server is answering"),
            "{e}"
        );
        assert!(
            UnixStream::connect(&path).await.is_ok(),
            "first listener lost its file"
        );
        drop(first);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn anything_but_a_socket_at_the_path_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.sock");
        std::fs::write(&file, "data").unwrap();
        let e = error_of(Listener::bind("listen.grpc", &unix(&file), 0o660).await);
        assert!(e.contains("is not a socket (a file)"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");

        // A symbolic link, even one to a stale socket, is not followed or replaced.
        let target = dir.path().join("target.sock");
        drop(std::os::unix::net::UnixListener::bind(&target).unwrap());
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = error_of(Listener::bind("listen.grpc", &unix(&link), 0o660).await);
        assert!(e.contains("a symbolic link"), "{e}");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(target.exists());
    }

    #[tokio::test]
    async fn the_directory_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/grpc.sock");
        let e = error_of(Listener::bind("listen.grpc", &unix(&path), 0o660).await);
        assert!(
            e.contains("listen.grpc") && e.contains("does not exist"),
            "{e}"
        );
        assert!(!dir.path().join("missing").exists());
    }

    #[tokio::test]
    async fn a_listener_replaced_meanwhile_keeps_its_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sock");
        let old = Listener::bind("listen.http", &unix(&path), 0o660)
            .await
            .unwrap();
        // Someone removed ours and made their own at the same path.
        std::fs::remove_file(&path).unwrap();
        let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(old);
        assert!(
            path.exists(),
            "dropping a listener removed another's socket file"
        );
        drop(theirs);
    }
}
