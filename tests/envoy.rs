//! The real Envoy, run with the shipped `envoy/envoy-grpc.yaml` and `envoy/envoy-http.yaml`
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
