//! The whole authgate in process on port 0 with a manual clock (crates.io's `TestApp`), started
//! from a typed [`Config`] rather than TOML text:
//!
//! ```ignore
//! let app = TestApp::builder()
//!     .config(|c| c.lockout.max_failures = 3)
//!     .start()
//!     .await;
//! let reply = app.login("alice", ALICE_PASSWORD).await;
//! ```
//!
//! By default: the `file` backend with user alice, the embedded store in a temporary directory,
//! every other setting at its default, the clock at [`T0`].
//!
//! HTTP API calls (`call`, `send`, `post`, `login`, `authz`) go through the router in process
//! with `tower::ServiceExt::oneshot` (axum's way): the same handlers and state, no socket. Both
//! listeners are still bound on port 0 for what needs the network: gRPC, a proxy in front, and
//! `base`/`http` for tests about the wire itself.
//!
//! Store and backend settings are made only in the section "Store and backend" at the end, so
//! a change to how `config` spells them touches that section alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authgate::client_addr::ClientAddr;
use authgate::clock::Clock;
use authgate::config::{
    Access, BackendConfig, Config, FileBackendConfig, RedisConfig, RemoteBackendConfig, Route,
    StoreKind,
};
use authgate::server::{Running, start_with_clock};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, header};
use serde_json::Value;
use tower::ServiceExt as _;

pub const T0: u64 = 1_800_000_000;
pub const ALICE_PASSWORD: &str = "alice password";

/// The peer in-process requests come from: loopback, as over a local TCP socket.
const PEER: ClientAddr = ClientAddr::Ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub clock: Clock,
    pub running: Option<Running>,
    /// A client for the real listener at `base`, for tests about the wire.
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>` of the HTTP listener.
    pub base: String,
}

/// Status, JSON body (Null when none or not JSON), headers and body text of a response.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
    pub text: String,
}

/// Starts a [`TestApp`]; see the module documentation.
pub struct TestAppBuilder {
    dir: tempfile::TempDir,
    config: Config,
    clock: Clock,
    users: Vec<(String, String)>,
}

/// Routes for `policy.routes`, in order, any method, the global token sources.
pub fn routes(routes: &[(&str, Access)]) -> Vec<Route> {
    routes
        .iter()
        .map(|(prefix, access)| Route {
            path_prefix: (*prefix).to_owned(),
            methods: None,
            access: *access,
            token_sources: None,
        })
        .collect()
}

impl TestAppBuilder {
    /// Any change to the configuration; may be called more than once.
    pub fn config(mut self, edit: impl FnOnce(&mut Config)) -> Self {
        edit(&mut self.config);
        self
    }

    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The users of the `file` backend (alice with [`ALICE_PASSWORD`] when not called).
    pub fn file_users(mut self, users: &[(&str, &str)]) -> Self {
        self.users = users
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect();
        let users_file = self.dir.path().join("users");
        file_backend(&mut self.config, users_file);
        self
    }

    /// The nethcti backend at `url` (a [`super::nethcti_sim::NethctiSim`]), each call bounded
    /// by `timeout`.
    pub fn nethcti(mut self, url: &str, timeout: Duration) -> Self {
        nethcti_backend(&mut self.config, url, timeout);
        self
    }

    /// The nethcti backend's socket.io server at `ws_url` (a
    /// [`super::nethcti_socket::NethctiSocket`]); call after [`Self::nethcti`].
    pub fn nethcti_ws(mut self, ws_url: &str) -> Self {
        if let BackendConfig::Nethcti(remote) = &mut self.config.backend {
            remote.ws_url = Some(ws_url.to_owned());
        }
        self
    }

    /// State in the Redis at `url`; keys still under the app's directory.
    pub fn redis(mut self, url: &str) -> Self {
        redis_store(&mut self.config, url);
        self
    }

    /// The signing and sealing keys of `other` (as replicas get them from one Secret).
    pub fn keys_from(self, other: &TestApp) -> Self {
        let from = store_path(&other.config).join("keys");
        let to = store_path(&self.config).join("keys");
        std::fs::create_dir_all(&to).expect("create keys directory");
        for entry in std::fs::read_dir(from).expect("read keys directory") {
            let entry = entry.expect("keys directory entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy key");
        }
        self
    }

    pub async fn start(self) -> TestApp {
        let users = self.dir.path().join("users");
        for (user, password) in &self.users {
            authgate::backend::file::set_user(&users, user, password).expect("write users file");
        }
        TestApp::launch(self.dir, self.config, self.clock).await
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.listen.grpc = SocketAddr::from(([127, 0, 0, 1], 0)).into();
        config.listen.http = SocketAddr::from(([127, 0, 0, 1], 0)).into();
        file_backend(&mut config, dir.path().join("users"));
        embedded_store(&mut config, dir.path().join("data"));
        TestAppBuilder {
            dir,
            config,
            clock: Clock::manual(T0),
            users: vec![("alice".to_owned(), ALICE_PASSWORD.to_owned())],
        }
    }

    /// The default app (see the module documentation).
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    async fn launch(dir: tempfile::TempDir, config: Config, clock: Clock) -> Self {
        let running = start_with_clock(config.clone(), clock.clone())
            .await
            .expect("start authgate");
        // Over a Unix socket, `base` names no listener (tests about it dial the socket).
        let base = format!("http://{}", running.http_addr);
        Self {
            dir,
            config,
            clock,
            running: Some(running),
            http: super::http_client(),
            base,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("authgate is running")
    }

    /// The HTTP listener's TCP address (panics when it is a Unix socket).
    pub fn http_addr(&self) -> SocketAddr {
        self.running().http_addr.tcp().expect("listen.http is TCP")
    }

    /// The gRPC listener's TCP address (panics when it is a Unix socket).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.running().grpc_addr.tcp().expect("listen.grpc is TCP")
    }

    /// The HTTP router over this app's state: the one place tests build it.
    pub fn router(&self) -> axum::Router {
        authgate::web::app(self.running().state.clone())
    }

    /// Stops and starts again on the same directory and configuration (state must survive).
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        Self::launch(self.dir, self.config, self.clock).await
    }

    /// Stops authgate (idempotent); a proxy in front then has nobody to ask.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// One request through the router, from a loopback peer.
    pub async fn call(&self, mut request: Request<Body>) -> Reply {
        request.extensions_mut().insert(ConnectInfo(PEER));
        let response = self.router().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("response body");
        Reply {
            status: parts.status.as_u16(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers: parts.headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        bearer: Option<&str>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(t) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.call(request.body(body).expect("request")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(body), None).await
    }

    pub async fn login(&self, user: &str, password: &str) -> Reply {
        self.post(
            "/auth/login",
            serde_json::json!({"username": user, "password": password}),
        )
        .await
    }

    /// The check as nginx asks it (`GET /authz` naming the request in headers).
    pub async fn authz(&self, path: &str, bearer: Option<&str>) -> Reply {
        let mut request = Request::get("/authz")
            .header("x-original-uri", path)
            .header("x-original-method", "GET");
        if let Some(t) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.call(request.body(Body::empty()).expect("request"))
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// Store and backend: the only lines here that know how `config` spells them
// ---------------------------------------------------------------------------------------------

fn file_backend(config: &mut Config, users_file: PathBuf) {
    config.backend = BackendConfig::File(FileBackendConfig { users_file });
}

fn nethcti_backend(config: &mut Config, url: &str, timeout: Duration) {
    config.backend = BackendConfig::Nethcti(RemoteBackendConfig {
        url: url.to_owned(),
        timeout,
        ws_url: None,
        ca_file: None,
    });
}

fn embedded_store(config: &mut Config, path: PathBuf) {
    config.store.kind = StoreKind::Embedded;
    config.store.path = path;
}

fn redis_store(config: &mut Config, url: &str) {
    config.store.kind = StoreKind::Redis(RedisConfig::new(url));
}

fn store_path(config: &Config) -> &Path {
    &config.store.path
}
