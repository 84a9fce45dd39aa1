//! authgate: an external-authorization sidecar for Envoy (`ext_authz`, gRPC and HTTP) and
//! nginx (`auth_request`) in front of a legacy application with a weak login.
//!
//! Layers, arrows pointing one way: [`config`] -> [`token`], [`credentials`] and [`policy`] ->
//! [`decision`] ->
//! [`grpc`] and [`web`] -> [`server`]. [`token`], [`policy`] and [`decision`] know nothing of
//! any transport.

pub mod admin;
pub mod backend;
pub mod client_addr;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod decision;
pub mod events;
pub mod grpc;
pub mod listener;
pub mod login;
pub mod metrics;
pub mod policy;
pub mod readiness;
pub mod relay;
pub mod revocation;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod web;
