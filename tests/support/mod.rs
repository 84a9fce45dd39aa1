//! What the integration tests share, one module per concern. A test binary includes it with
//! `mod support;` and uses what it needs:
//!
//! - [`process`]: free ports, repository paths, the Envoy/nginx/redis-server binaries, a child
//!   process stopped on drop, readiness waits;
//! - [`client`]: a raw HTTP/1.1 client that puts the request target on the wire as written;
//! - [`echo`]: the echo upstream standing in for the legacy application;
//! - [`proxy`]: the shipped Envoy and nginx configs rendered with test ports, the stack
//!   (proxy + authgate + echo) and the checks every proxy mode must pass;
//! - [`js_client`]: the real socket.io JavaScript client under node;
//! - [`nethvoice`]: the `deploy/nethvoice/` Envoy and nginx configs (authgate in place of
//!   nethcti-middleware) in front of authgate and the nethcti simulator;
//! - [`hostile`]: hand-made hostile tokens (also used by the fuzz target);
//! - [`app`]: the whole authgate in process ([`app::TestApp`] and its builder);
//! - [`nethcti_sim`]: the nethcti-server stand-in;
//! - [`nethcti_socket`]: its socket.io server (live events);
//! - [`redis`]: a real `redis-server`;
//! - [`tls`]: throwaway CAs and server certificates;
//! - [`totp`]: RFC 6238 codes computed independently of the code under test.

// Each test binary compiles this whole tree and uses a different part of it.
// Test servers record what they saw under a std Mutex: plain sync code, never held across
// an await.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types
)]

pub mod app;
pub mod authgate_process;
pub mod client;
pub mod echo;
pub mod hostile;
pub mod js_client;
pub mod logs;
pub mod nethcti_sim;
pub mod nethcti_socket;
pub mod nethvoice;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod socket_client;
pub mod tls;
pub mod totp;

/// A reqwest client builder for tests. authgate builds reqwest without a crypto provider of its
/// own (one provider, aws-lc-rs: see `src/tls.rs`), so one is installed before any client is.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    authgate::tls::install_default_provider();
    #[allow(clippy::disallowed_methods)]
    reqwest::Client::builder()
}

/// [`http_client_builder`] with reqwest's defaults.
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().expect("build http client")
}
