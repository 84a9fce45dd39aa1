//! The real Envoy, run with the shipped `envoy/envoy-grpc.yaml`, `envoy/envoy-http.yaml` and
//! `envoy/envoy-grpc-uds.yaml` (authgate on Unix sockets)
//! (ports templated), in front of an in-process authgate and an echo upstream. Each test starts
//! its own stack and runs the whole table of checks in `support::proxy`, reporting every failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::proxy::{Check, ProxyKind, Stack};

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
