//! The real nginx (`auth_request`), run with the shipped `nginx/nginx.conf` and
//! `nginx/nginx-uds.conf` (authgate on a Unix socket) (ports and socket paths templated,
//! everything it writes under a temporary `-p` prefix), in front of an in-process authgate and
//! an echo upstream. One stack, the whole table of checks in `support::proxy`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::proxy::{Check, ProxyKind, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request() {
    let stack = Stack::start(ProxyKind::Nginx).await;
    stack.run_and_shutdown(Check::ALL).await;
}

/// The sidecar variant `nginx/nginx-uds.conf`: nginx reaches authgate over a Unix socket
/// (`unix:` upstream), every check the TCP file passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_over_unix_sockets() {
    let stack = Stack::start(ProxyKind::NginxUnix).await;
    stack.run_and_shutdown(Check::ALL).await;
}
