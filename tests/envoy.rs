//! The real Envoy, run with the shipped `envoy/envoy-grpc.yaml`, `envoy/envoy-http.yaml` and
//! `envoy/envoy-grpc-uds.yaml` (authgate on Unix sockets)
//! (ports templated), in front of an in-process authgate and an echo upstream. Each test starts
//! its own stack and runs the whole table of checks in `support::proxy`, reporting every failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::proxy::{Check, ProxyKind, Stack};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_ext_authz() {
    let stack = Stack::start(ProxyKind::EnvoyGrpc).await;
    stack.run_and_shutdown(Check::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_ext_authz() {
    let stack = Stack::start(ProxyKind::EnvoyHttp).await;
    stack.run_and_shutdown(Check::ALL).await;
}

/// The sidecar variant `envoy/envoy-grpc-uds.yaml`: Envoy reaches authgate's gRPC and HTTP
/// listeners over Unix sockets (pipe addresses), every check the TCP file passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_grpc_ext_authz_over_unix_sockets() {
    let stack = Stack::start(ProxyKind::EnvoyGrpcUnix).await;
    stack.run_and_shutdown(Check::ALL).await;
}

/// Envoy gives up on a Check after its timeout (0.5 s in the shipped file) and resets the
/// stream; when many give up at once (load stops, a burst of clients leaves), authgate reads a
/// burst of streams reset before it took them. h2 closes a connection past 20 of those by
/// default, and every other Check on it fails: Envoy answers those clients 503. Here the
/// burst is made certain: a hop between Envoy and authgate holds what Envoy sends while 300
/// Checks time out, then 20 more Checks start, then everything goes through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_checks_envoy_cancelled_fails_no_other_check() {
    use support::client::get;
    let (stack, gate) = Stack::start_with_grpc_hop(ProxyKind::EnvoyGrpc, Gate::start).await;
    let token = stack.login().await.unwrap().access;
    let bearer = format!("Bearer {token}");
    let addr = stack.addr;
    let call = move |bearer: String| async move {
        get(addr, "/api/burst", &[("Authorization", &bearer)])
            .await
            .map(|r| r.status)
    };
    // Envoy's HTTP/2 connection to authgate is up.
    assert_eq!(call(bearer.clone()).await.unwrap(), 200);

    gate.hold(true);
    let cancelled: Vec<_> = (0..300)
        .map(|_| tokio::spawn(call(bearer.clone())))
        .collect();
    for call in cancelled {
        // Envoy's own answer to a Check that timed out (status_on_error).
        assert_eq!(call.await.unwrap().unwrap(), 503);
    }
    // Envoy has written its resets; now Checks that must not fail.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen_before = stack.echo.count();
    let survivors: Vec<_> = (0..20)
        .map(|_| tokio::spawn(call(bearer.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    gate.hold(false);
    let statuses = statuses_of(survivors).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "Checks on the same connection failed after the burst: {statuses:?}"
    );
    assert_eq!(stack.echo.count() - seen_before, 20);
    // The same connection goes on serving.
    assert_eq!(gate.connections(), 1, "Envoy had to reconnect to authgate");
    assert_eq!(call(bearer).await.unwrap(), 200);
    stack.run_and_shutdown(&[]).await;
}

/// Each call's status, 0 where it got no answer.
async fn statuses_of(calls: Vec<JoinHandle<anyhow::Result<u16>>>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap().unwrap_or(0));
    }
    statuses
}

/// A TCP hop that can hold what the client side sends and then let it through at once, in
/// order; the other direction always flows.
struct Gate {
    hold: watch::Sender<bool>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Gate {
    /// Listens on a free port of 127.0.0.1, forwarding to `target`.
    fn start(target: SocketAddr) -> (u16, Gate) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let listener = TcpListener::from_std(listener).unwrap();
        let (hold, held) = watch::channel(false);
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let held = held.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (from_client, mut to_client) = client.into_split();
                    let (mut from_server, to_server) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let _ = forward_unless_held(from_client, to_server, held).await;
                });
            }
        });
        (
            port,
            Gate {
                hold,
                connections,
                task,
            },
        )
    }

    fn hold(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward_unless_held(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    loop {
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend_from_slice(&buf[..n]);
            }
            changed = held.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
        if !*held.borrow_and_update() && !pending.is_empty() {
            to.write_all(&pending).await?;
            pending.clear();
        }
    }
}
