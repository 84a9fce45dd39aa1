//! The real Envoy and nginx in front of an in-process authgate ([`TestApp`] on the system
//! clock) and the [`Echo`] upstream standing in for the legacy application: rendering the
//! shipped configs in `envoy/` and `nginx/` with the test's ports (and, for the Unix socket
//! variants, the test's socket paths), starting the stack, and the table of checks every
//! proxy mode must pass.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use authgate::clock::Clock;
use authgate::config::{Access, Algorithm, ListenAddr};
use authgate::token::Kind;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::app::{TestApp, routes};
use super::client::{HttpResponse, get, post_json, request, request_unix};
use super::echo::{Echo, Seen};
use super::hostile::{alg_none_token, hs256_token, jwt_part, tampered_signature};
use super::process::{ChildProcess, envoy_bin, free_ports, local, nginx_bin, repo_path};

/// The one user of the stack (file backend).
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery staple";

// ---------------------------------------------------------------------------------------------
// Config templates: the shipped files, with only their ports replaced
// ---------------------------------------------------------------------------------------------

/// Replaces each `from` with `to`; panics if a `from` does not occur, so a config change that
/// breaks the templating fails loudly instead of silently testing the wrong ports.
pub fn render(template: &str, what: &str, replacements: &[(&str, String)]) -> String {
    let mut text = template.to_owned();
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "{what}: expected to find {from:?} to replace"
        );
        text = text.replace(from, to);
    }
    text
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Where the proxy listens for clients.
    pub proxy: u16,
    /// Envoy's admin listener (unused by nginx).
    pub admin: u16,
    pub authgate_grpc: u16,
    pub authgate_http: u16,
    pub legacy: u16,
}

impl Ports {
    /// Free ports for the proxy and its admin listener, `app`'s listeners (0 for one on a Unix
    /// socket: the configs name those by path) and the upstream at `legacy`.
    pub fn for_app(app: &TestApp, legacy: u16) -> Self {
        let picked = free_ports(2);
        let port = |addr: &ListenAddr| addr.tcp().map_or(0, |a| a.port());
        Ports {
            proxy: picked[0],
            admin: picked[1],
            authgate_grpc: port(&app.running().grpc_addr),
            authgate_http: port(&app.running().http_addr),
            legacy,
        }
    }
}

/// The shipped file at `path` (from the repository root) with `replacements` made.
pub fn shipped(path: &str, replacements: &[(&str, String)]) -> String {
    let template =
        std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("read {path}: {e}"));
    render(&template, path, replacements)
}

/// The ports of an Envoy file with a gRPC ext_authz cluster: listener, admin, authgate's two
/// listeners, the legacy upstream.
pub fn envoy_ports(p: &Ports) -> Vec<(&'static str, String)> {
    vec![
        ("port_value: 10000", format!("port_value: {}", p.proxy)),
        ("port_value: 9901", format!("port_value: {}", p.admin)),
        (
            "port_value: 9191",
            format!("port_value: {}", p.authgate_grpc),
        ),
        (
            "port_value: 8080",
            format!("port_value: {}", p.authgate_http),
        ),
        ("port_value: 8179", format!("port_value: {}", p.legacy)),
    ]
}

pub fn envoy_grpc_config(p: &Ports) -> String {
    shipped("envoy/envoy-grpc.yaml", &envoy_ports(p))
}

pub fn envoy_http_config(p: &Ports) -> String {
    shipped(
        "envoy/envoy-http.yaml",
        &[
            ("port_value: 10000", format!("port_value: {}", p.proxy)),
            ("port_value: 9901", format!("port_value: {}", p.admin)),
            (
                "port_value: 8080",
                format!("port_value: {}", p.authgate_http),
            ),
            (
                "uri: http://127.0.0.1:8080",
                format!("uri: http://127.0.0.1:{}", p.authgate_http),
            ),
            ("port_value: 8179", format!("port_value: {}", p.legacy)),
        ],
    )
}

/// Where authgate listens for a Unix socket variant whose files are under `dir`: the gRPC
/// and the HTTP socket.
pub fn authgate_sockets(dir: &Path) -> [PathBuf; 2] {
    [
        dir.join("authgate-grpc.sock"),
        dir.join("authgate-http.sock"),
    ]
}

/// `envoy/envoy-grpc-uds.yaml`: the ports, and authgate's sockets under `dir`.
pub fn envoy_grpc_uds_config(p: &Ports, dir: &Path) -> String {
    let [grpc, http] = authgate_sockets(dir);
    shipped(
        "envoy/envoy-grpc-uds.yaml",
        &[
            ("port_value: 10000", format!("port_value: {}", p.proxy)),
            ("port_value: 9901", format!("port_value: {}", p.admin)),
            (
                "pipe: { path: /run/authgate/grpc.sock }",
                format!("pipe: {{ path: {} }}", grpc.display()),
            ),
            (
                "pipe: { path: /run/authgate/http.sock }",
                format!("pipe: {{ path: {} }}", http.display()),
            ),
            ("port_value: 8179", format!("port_value: {}", p.legacy)),
        ],
    )
}

/// `nginx/nginx-uds.conf`: the ports, and authgate's HTTP socket under `dir`.
pub fn nginx_uds_config(p: &Ports, dir: &Path) -> String {
    let [_, http] = authgate_sockets(dir);
    shipped(
        "nginx/nginx-uds.conf",
        &[
            (
                "listen 127.0.0.1:8000;",
                format!("listen 127.0.0.1:{};", p.proxy),
            ),
            (
                "server unix:/run/authgate/http.sock;",
                format!("server unix:{};", http.display()),
            ),
            (
                "server 127.0.0.1:8179;",
                format!("server 127.0.0.1:{};", p.legacy),
            ),
        ],
    )
}

/// The ports of an nginx file in front of authgate's HTTP listener: listener, authgate, the
/// legacy upstream. nginx keeps every writable path relative to its `-p` prefix, so only ports
/// change.
pub fn nginx_ports(p: &Ports) -> Vec<(&'static str, String)> {
    vec![
        (
            "listen 127.0.0.1:8000;",
            format!("listen 127.0.0.1:{};", p.proxy),
        ),
        (
            "server 127.0.0.1:8080;",
            format!("server 127.0.0.1:{};", p.authgate_http),
        ),
        (
            "server 127.0.0.1:8179;",
            format!("server 127.0.0.1:{};", p.legacy),
        ),
    ]
}

pub fn nginx_config(p: &Ports) -> String {
    shipped("nginx/nginx.conf", &nginx_ports(p))
}

/// The token response of `POST /auth/login`.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub raw: Value,
}

pub fn parse_tokens(resp: &HttpResponse) -> anyhow::Result<Tokens> {
    ensure!(
        resp.status == 200,
        "login: expected 200, got {}",
        resp.describe()
    );
    let raw = resp.json()?;
    let field = |k: &str| {
        raw.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("login response lacks string {k:?}: {raw}"))
    };
    let access = field("access_token")?;
    let refresh = field("refresh_token")?;
    ensure!(
        raw.get("token_type").and_then(Value::as_str) == Some("Bearer"),
        "token_type is not \"Bearer\": {raw}"
    );
    ensure!(
        raw.get("expires_in").is_some_and(Value::is_u64),
        "expires_in missing: {raw}"
    );
    ensure!(
        raw.get("refresh_expires_in").is_some_and(Value::is_u64),
        "refresh_expires_in missing: {raw}"
    );
    Ok(Tokens {
        access,
        refresh,
        raw,
    })
}

// ---------------------------------------------------------------------------------------------
// The whole stack: authgate + echo upstream + one proxy
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    EnvoyGrpc,
    EnvoyHttp,
    Nginx,
    /// `envoy/envoy-grpc-uds.yaml`: gRPC ext_authz and the API over Unix sockets.
    EnvoyGrpcUnix,
    /// `nginx/nginx-uds.conf`: auth_request and the API over a Unix socket.
    NginxUnix,
}

impl ProxyKind {
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::EnvoyGrpc => "envoy (gRPC ext_authz)",
            ProxyKind::EnvoyHttp => "envoy (HTTP ext_authz)",
            ProxyKind::Nginx => "nginx (auth_request)",
            ProxyKind::EnvoyGrpcUnix => "envoy (gRPC ext_authz over a Unix socket)",
            ProxyKind::NginxUnix => "nginx (auth_request over a Unix socket)",
        }
    }

    pub fn is_envoy(self) -> bool {
        !self.is_nginx()
    }

    pub fn is_nginx(self) -> bool {
        matches!(self, ProxyKind::Nginx | ProxyKind::NginxUnix)
    }

    /// Whether the proxy reaches authgate over Unix sockets ([`authgate_sockets`]).
    pub fn over_unix(self) -> bool {
        matches!(self, ProxyKind::EnvoyGrpcUnix | ProxyKind::NginxUnix)
    }

    /// Envoy hands authgate's JSON error body to the client; nginx shows its own error page.
    pub fn denials_carry_json(self) -> bool {
        self.is_envoy()
    }
}

pub struct Stack {
    pub kind: ProxyKind,
    /// Where clients talk to the proxy.
    pub addr: SocketAddr,
    pub authgate: TestApp,
    pub echo: Echo,
    pub proxy: ChildProcess,
    pub dir: tempfile::TempDir,
}

/// Starts `kind` with its shipped config rendered for `ports` (and authgate's sockets under
/// `dir` for the Unix socket variants), writing under `dir`, and waits until it accepts
/// connections at `ports.proxy`.
pub async fn spawn_proxy(kind: ProxyKind, ports: &Ports, dir: &Path) -> ChildProcess {
    match kind {
        ProxyKind::EnvoyGrpc => {
            spawn_envoy("envoy-grpc.yaml", &envoy_grpc_config(ports), ports, dir).await
        }
        ProxyKind::EnvoyHttp => {
            spawn_envoy("envoy-http.yaml", &envoy_http_config(ports), ports, dir).await
        }
        ProxyKind::EnvoyGrpcUnix => {
            let config = envoy_grpc_uds_config(ports, dir);
            spawn_envoy("envoy-grpc-uds.yaml", &config, ports, dir).await
        }
        ProxyKind::Nginx => spawn_nginx(&nginx_config(ports), ports, dir).await,
        ProxyKind::NginxUnix => spawn_nginx(&nginx_uds_config(ports, dir), ports, dir).await,
    }
}

/// Where Envoy started by [`spawn_envoy`] writes its access log, under its `dir`.
const ENVOY_ACCESS_LOG: &str = "envoy-access.log";

/// Starts Envoy with the rendered config `text` (written to `dir/file`) and waits until it is
/// ready (admin `/ready` at `ports.admin`) and accepts connections at `ports.proxy`.
pub async fn spawn_envoy(
    file: &str,
    text: &str,
    ports: &Ports,
    dir: &std::path::Path,
) -> ChildProcess {
    let config = dir.join(file);
    // The access log goes to a file the test reads (stdout in the shipped configs).
    let log = format!("path: {}", dir.join(ENVOY_ACCESS_LOG).display());
    std::fs::write(&config, text.replace("path: /dev/stdout", &log)).expect("write envoy config");
    let mut command = Command::new(envoy_bin());
    command.arg("-c").arg(&config).args([
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "warning",
        // The access log reaches its file at once, not every 10 s.
        "--file-flush-interval-msec",
        "50",
    ]);
    let mut proxy = ChildProcess::spawn("envoy", command, dir.join("envoy.log"));
    proxy
        .wait_for_http_ok(local(ports.admin), "/ready", Duration::from_secs(30))
        .await;
    proxy
        .wait_for_tcp(local(ports.proxy), Duration::from_secs(10))
        .await;
    proxy
}

/// Starts nginx with the rendered config `text` under the prefix `dir/nginx` and waits until
/// it accepts connections at `ports.proxy`.
pub async fn spawn_nginx(text: &str, ports: &Ports, dir: &std::path::Path) -> ChildProcess {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).expect("nginx prefix");
    let config = prefix.join("nginx.conf");
    std::fs::write(&config, text).expect("write nginx config");
    let mut command = Command::new(nginx_bin());
    // In the foreground and one process: nothing outlives the test, and no
    // switch to "nobody" (when run as root) that could not enter the tempdir.
    command.arg("-p").arg(&prefix).arg("-c").arg(&config).args([
        "-e",
        "stderr",
        "-g",
        "daemon off; master_process off;",
    ]);
    let mut proxy = ChildProcess::spawn("nginx", command, dir.join("nginx.log"));
    proxy
        .wait_for_tcp(local(ports.proxy), Duration::from_secs(10))
        .await;
    proxy
}

/// Where the proxy started by [`spawn_proxy`] in `dir` writes its access log.
pub fn access_log_path(kind: ProxyKind, dir: &std::path::Path) -> std::path::PathBuf {
    match kind {
        ProxyKind::EnvoyGrpc | ProxyKind::EnvoyHttp | ProxyKind::EnvoyGrpcUnix => {
            dir.join(ENVOY_ACCESS_LOG)
        }
        // `access_log access.log` in nginx.conf, under the `-p` prefix.
        ProxyKind::Nginx | ProxyKind::NginxUnix => dir.join("nginx").join("access.log"),
    }
}

/// The one access log line of the proxy `kind` started in `dir` for a request to `path`
/// (without its query) must hold `expected` (field, value) pairs ("" for a field not set).
pub async fn expect_access_log(
    kind: ProxyKind,
    dir: &Path,
    path: &str,
    expected: &[(&str, &str)],
) -> anyhow::Result<()> {
    let entry = access_log_entry(kind, dir, path).await?;
    for (field, value) in expected {
        ensure!(
            entry.get(*field).map(String::as_str) == Some(*value),
            "{path}: access log {field} is {:?}, expected {value:?}; line {entry:?}",
            entry.get(*field)
        );
    }
    Ok(())
}

/// The one access log line of the proxy `kind` started in `dir` for a request to `path`
/// (without its query), waiting up to 10 s for it to be written.
async fn access_log_entry(
    kind: ProxyKind,
    dir: &Path,
    path: &str,
) -> anyhow::Result<HashMap<String, String>> {
    let file = access_log_path(kind, dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut found = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let fields = parse_access_line(kind, line)?;
            if fields.get("path").map(String::as_str) == Some(path) {
                found.push(fields);
            }
        }
        match found.len() {
            1 => return Ok(found.remove(0)),
            0 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            n => {
                return Err(anyhow!(
                    "expected one access log line for {path}, found {n} in {}:\n{text}",
                    file.display()
                ));
            }
        }
    }
}

/// One access log line as `field -> value`: Envoy's JSON lines (null for metadata that was
/// not set), nginx's `name="value"` pairs (empty when not set; both read as "").
fn parse_access_line(kind: ProxyKind, line: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut fields = HashMap::new();
    match kind {
        ProxyKind::EnvoyGrpc | ProxyKind::EnvoyHttp | ProxyKind::EnvoyGrpcUnix => {
            let json: Value = serde_json::from_str(line)
                .with_context(|| format!("access log line is not JSON: {line}"))?;
            let object = json
                .as_object()
                .ok_or_else(|| anyhow!("access log line is not an object: {line}"))?;
            for (k, v) in object {
                let v = match v {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                fields.insert(k.clone(), v);
            }
        }
        ProxyKind::Nginx | ProxyKind::NginxUnix => {
            let mut rest = line;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].rsplit(' ').next().unwrap_or_default().to_owned();
                let after = &rest[eq + 2..];
                let end = after
                    .find('"')
                    .ok_or_else(|| anyhow!("unterminated value in {line}"))?;
                fields.insert(name, after[..end].to_owned());
                rest = &after[end + 1..];
            }
            let path = line
                .split('"')
                .nth(1)
                .and_then(|request| request.split(' ').nth(1))
                .unwrap_or_default();
            fields.insert("path".to_owned(), path.to_owned());
        }
    }
    Ok(fields)
}

impl Stack {
    pub async fn start(kind: ProxyKind) -> Self {
        Self::start_with_grpc_hop(kind, |addr| (addr.port(), ()))
            .await
            .0
    }

    /// As [`Stack::start`] over TCP, the proxy reaching authgate's gRPC listener through
    /// `hop`: called with that listener's address, it returns the port the proxy is given
    /// instead and whatever the test keeps of it.
    pub async fn start_with_grpc_hop<T>(
        kind: ProxyKind,
        hop: impl FnOnce(SocketAddr) -> (u16, T),
    ) -> (Self, T) {
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let [grpc_socket, http_socket] = authgate_sockets(dir.path());
        // On the system clock: the proxies live in real time.
        let authgate = TestApp::builder()
            .file_users(&[(USER, PASSWORD)])
            .clock(Clock::system())
            .config(|c| c.tokens.algorithm = Algorithm::EdDSA)
            .config(|c| {
                c.policy.routes = routes(&[
                    ("/admin", Access::Mfa),
                    ("/svc/", Access::Service),
                    ("/auth/", Access::Public),
                    ("/.well-known/", Access::Public),
                    ("/", Access::Token),
                ])
            })
            .config(|c| {
                if kind.over_unix() {
                    c.listen.grpc = ListenAddr::Unix(grpc_socket);
                    c.listen.http = ListenAddr::Unix(http_socket);
                }
            })
            .start()
            .await;
        let echo = Echo::start().await;
        let mut ports = Ports::for_app(&authgate, echo.addr.port());
        let kept;
        (ports.authgate_grpc, kept) = hop(local(ports.authgate_grpc));
        let addr = local(ports.proxy);
        let proxy = spawn_proxy(kind, &ports, dir.path()).await;
        eprintln!(
            "[{}] stack up in {:?}: proxy {addr}, authgate http {} grpc {}, upstream {}",
            kind.name(),
            started.elapsed(),
            authgate.running().http_addr,
            authgate.running().grpc_addr,
            echo.addr
        );
        let stack = Self {
            kind,
            addr,
            authgate,
            echo,
            proxy,
            dir,
        };
        (stack, kept)
    }

    /// Logs in directly at authgate (not through the proxy).
    pub async fn login(&self) -> anyhow::Result<Tokens> {
        let body = serde_json::to_vec(&json!({"username": USER, "password": PASSWORD}))?;
        let headers = [("Content-Type", "application/json")];
        let resp = self
            .authgate_request("POST", "/auth/login", &headers, Some(&body))
            .await?;
        parse_tokens(&resp)
    }

    /// `GET target` directly at authgate's HTTP listener (not through the proxy).
    pub async fn authgate_get(&self, target: &str) -> anyhow::Result<HttpResponse> {
        self.authgate_request("GET", target, &[], None).await
    }

    /// A request directly at authgate's HTTP listener, TCP or Unix socket.
    pub async fn authgate_request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<HttpResponse> {
        match &self.authgate.running().http_addr {
            ListenAddr::Tcp(addr) => request(*addr, method, target, headers, body).await,
            ListenAddr::Unix(path) => request_unix(path, method, target, headers, body).await,
        }
    }

    pub async fn get(
        &self,
        target: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<HttpResponse> {
        get(self.addr, target, headers).await
    }

    /// Runs the checks, reports each, then stops everything; panics listing every failure.
    pub async fn run_and_shutdown(mut self, checks: &[Check]) {
        let started = Instant::now();
        let mut failures = Vec::new();
        for check in checks {
            let t = Instant::now();
            match self.run(*check).await {
                Ok(()) => eprintln!("[{}] ok   {check:?} ({:?})", self.kind.name(), t.elapsed()),
                Err(e) => {
                    eprintln!("[{}] FAIL {check:?}: {e:#}", self.kind.name());
                    failures.push(format!("{check:?}: {e:#}"));
                }
            }
        }
        eprintln!("[{}] checks took {:?}", self.kind.name(), started.elapsed());
        self.proxy.ensure_running();
        let proxy_log = self.proxy.log_tail();
        self.proxy.stop();
        let Stack { authgate, echo, .. } = self;
        authgate.shutdown().await;
        drop(echo);
        if !failures.is_empty() {
            panic!(
                "{} check(s) failed:\n- {}\n\nproxy output (tail):\n{proxy_log}",
                failures.len(),
                failures.join("\n- ")
            );
        }
    }

    async fn run(&mut self, check: Check) -> anyhow::Result<()> {
        match check {
            Check::NoToken => self.check_no_token().await,
            Check::BadTokens => self.check_bad_tokens().await,
            Check::RefreshTokenAsAccess => self.check_refresh_as_access().await,
            Check::ValidBearer => self.check_valid_bearer().await,
            Check::QueryToken => self.check_query_token().await,
            Check::PublicRoutes => self.check_public_routes().await,
            Check::PathTricks => self.check_path_tricks().await,
            Check::SpoofedIdentityWithoutToken => self.check_spoofed_identity().await,
            Check::CookieToken => self.check_cookie_token().await,
            Check::BackendLoginClosed => self.check_backend_login_closed().await,
            Check::FoldedMfaRoute => self.check_folded_mfa_route().await,
            Check::UnderscoreIdentity => self.check_underscore_identity().await,
            Check::UnemittableIdentity => self.check_unemittable_identity().await,
            Check::ServiceTokens => self.check_service_tokens().await,
            Check::AccessLog => self.check_access_log().await,
            Check::FailClosedWithoutAuthgate => self.check_fail_closed().await,
        }
    }

    /// Asserts a denial: status, `WWW-Authenticate`, JSON body (Envoy), nothing upstream.
    fn expect_denial(
        &self,
        what: &str,
        resp: &HttpResponse,
        status: u16,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        ensure!(
            resp.status == status,
            "{what}: expected {status}, got {}",
            resp.describe()
        );
        let challenges = resp
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
            .count();
        ensure!(
            challenges == 1,
            "{what}: expected one WWW-Authenticate header, got {challenges}: {}",
            resp.describe()
        );
        let challenge = resp
            .header("www-authenticate")
            .ok_or_else(|| anyhow!("{what}: no WWW-Authenticate in {}", resp.describe()))?;
        ensure!(
            challenge.starts_with("Bearer realm=\"authgate\""),
            "{what}: WWW-Authenticate {challenge:?} does not start with Bearer realm=\"authgate\""
        );
        match error {
            Some(code) => ensure!(
                challenge.contains(&format!("error=\"{code}\"")),
                "{what}: WWW-Authenticate {challenge:?} lacks error=\"{code}\""
            ),
            None => ensure!(
                !challenge.contains("error="),
                "{what}: no token was sent, yet WWW-Authenticate {challenge:?} carries an error code"
            ),
        }
        if self.kind.denials_carry_json() {
            let body = resp
                .json()
                .with_context(|| format!("{what}: {}", resp.describe()))?;
            ensure!(
                body.get("error").is_some_and(Value::is_string),
                "{what}: JSON body without an \"error\" string: {body}"
            );
            if let Some(code) = error {
                ensure!(
                    body["error"] == code,
                    "{what}: body error {} differs from the challenge's {code}",
                    body["error"]
                );
            }
        }
        Ok(())
    }

    fn expect_upstream_untouched(&self, what: &str, before: usize) -> anyhow::Result<()> {
        let after = self.echo.since(before);
        ensure!(
            after.is_empty(),
            "{what}: the legacy upstream was reached: {:?}",
            after
                .iter()
                .map(|s| format!("{} {}", s.method, s.path))
                .collect::<Vec<_>>()
        );
        Ok(())
    }

    /// The one request the upstream got since `before`.
    fn upstream_single(&self, what: &str, before: usize) -> anyhow::Result<Seen> {
        let seen = self.echo.since(before);
        ensure!(
            seen.len() == 1,
            "{what}: upstream got {} requests, expected 1",
            seen.len()
        );
        Ok(seen.into_iter().next().expect("one"))
    }

    async fn check_no_token(&self) -> anyhow::Result<()> {
        let before = self.echo.count();
        for method in ["GET", "POST"] {
            // `/` too: under Envoy's HTTP mode it arrives as `/authz/`.
            for path in ["/api/x", "/"] {
                let resp = request(self.addr, method, path, &[], Some(b"")).await?;
                self.expect_denial(&format!("{method} {path} without token"), &resp, 401, None)?;
            }
        }
        self.expect_upstream_untouched("no token", before)
    }

    async fn check_bad_tokens(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let kid = jwt_part(&tokens.access, 0)["kid"]
            .as_str()
            .map(str::to_owned);
        let claims = jwt_part(&tokens.access, 1);
        let jwks = self.authgate_get("/.well-known/jwks.json").await?.json()?;
        let public_x = jwks["keys"][0]["x"]
            .as_str()
            .ok_or_else(|| anyhow!("JWKS has no OKP key with x: {jwks}"))?
            .to_owned();
        let public_raw = URL_SAFE_NO_PAD.decode(&public_x)?;
        let cases: Vec<(&str, String)> = vec![
            ("garbage", "not-a-jwt".to_owned()),
            (
                "three garbage parts",
                "eyJhbGciOiJFZERTQSJ9.Z2FyYmFnZQ.c2ln".to_owned(),
            ),
            ("alg none", alg_none_token(&claims)),
            (
                "HS256 with a made-up key",
                hs256_token(kid.as_deref(), &claims, b"secret"),
            ),
            (
                "HS256 keyed with the public key (raw)",
                hs256_token(kid.as_deref(), &claims, &public_raw),
            ),
            (
                "HS256 keyed with the public key (base64url)",
                hs256_token(kid.as_deref(), &claims, public_x.as_bytes()),
            ),
            ("tampered signature", tampered_signature(&tokens.access)),
        ];
        let before = self.echo.count();
        let mut failed = Vec::new();
        for (label, token) in &cases {
            let header = format!("Bearer {token}");
            let resp = self.get("/api/x", &[("Authorization", &header)]).await?;
            if let Err(e) = self.expect_denial(label, &resp, 401, Some("invalid_token")) {
                failed.push(format!("{e:#}"));
            }
        }
        self.expect_upstream_untouched("bad tokens", before)?;
        ensure!(failed.is_empty(), "{}", failed.join("\n    "));
        Ok(())
    }

    async fn check_refresh_as_access(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let before = self.echo.count();
        let header = format!("Bearer {}", tokens.refresh);
        let resp = self.get("/api/x", &[("Authorization", &header)]).await?;
        self.expect_denial(
            "refresh token as access token",
            &resp,
            403,
            Some("insufficient_scope"),
        )?;
        self.expect_upstream_untouched("refresh token as access token", before)
    }

    /// What every allowed request must look like upstream.
    fn expect_identity(&self, what: &str, seen: &Seen, sid: &str) -> anyhow::Result<()> {
        ensure!(
            seen.headers.get("x-auth-user").map(String::as_str) == Some(USER),
            "{what}: upstream x-auth-user is {:?}, expected {USER:?}; headers {:?}",
            seen.headers.get("x-auth-user"),
            seen.headers
        );
        let session = seen
            .headers
            .get("x-auth-session")
            .map(String::as_str)
            .unwrap_or_default();
        ensure!(
            !session.is_empty(),
            "{what}: no x-auth-session upstream; headers {:?}",
            seen.headers
        );
        ensure!(
            session == sid,
            "{what}: upstream x-auth-session {session:?} is not the token's sid {sid:?}"
        );
        ensure!(
            !seen.headers.contains_key("authorization"),
            "{what}: the client's Authorization reached upstream: {:?}",
            seen.headers.get("authorization")
        );
        Ok(())
    }

    /// The access log line of the one request to `path`, once the proxy has written it.
    /// The proxy's access log says who was let in (user, session, amr from authgate's
    /// answer) and why a request was refused (the denial's reason), and never holds a token.
    async fn check_access_log(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let sid = Self::sid_of(&tokens.access);
        let run = sid.chars().take(8).collect::<String>();
        let bearer = format!("Bearer {}", tokens.access);

        let allowed = format!("/api/log-allowed-{run}");
        let resp = self.get(&allowed, &[("Authorization", &bearer)]).await?;
        ensure!(resp.status == 200, "allowed request: {}", resp.describe());
        let no_token = format!("/api/log-no-token-{run}");
        let resp = self.get(&no_token, &[]).await?;
        ensure!(
            resp.status == 401,
            "request without token: {}",
            resp.describe()
        );
        // Revoked, with the token in the query: the reason is logged, the token is not.
        let logout = self
            .authgate_request(
                "POST",
                "/auth/logout",
                &[("Authorization", &bearer)],
                Some(b""),
            )
            .await?;
        ensure!(logout.status == 204, "logout: {}", logout.describe());
        let revoked = format!("/api/log-revoked-{run}");
        let resp = self
            .get(&format!("{revoked}?access_token={}", tokens.access), &[])
            .await?;
        ensure!(resp.status == 401, "revoked token: {}", resp.describe());

        let (kind, dir) = (self.kind, self.dir.path());
        let allowed_fields = [
            ("user", USER),
            ("session", sid.as_str()),
            ("amr", "pwd"),
            ("reason", ""),
        ];
        expect_access_log(kind, dir, &allowed, &allowed_fields).await?;
        for (path, reason) in [(&no_token, "no_token"), (&revoked, "revoked")] {
            let fields = [("reason", reason), ("user", ""), ("amr", "")];
            expect_access_log(kind, dir, path, &fields).await?;
        }
        let text = std::fs::read_to_string(access_log_path(self.kind, self.dir.path()))?;
        ensure!(
            !text.contains(&tokens.access) && !text.contains(&tokens.access[..40]),
            "the access log holds the access token"
        );
        Ok(())
    }

    /// A service token from the admin API opens `access = "service"` routes only: upstream
    /// gets its sub and sid and no Authorization; token and mfa routes refuse it with 403,
    /// and a user's token is refused on the service route.
    async fn check_service_tokens(&self) -> anyhow::Result<()> {
        let mut admin = authgate::admin::Client::connect(&self.authgate.config).await?;
        let minted = admin.mint_service_token("nuxeo", 600).await?;
        let header = format!("Bearer {}", minted.token);
        let before = self.echo.count();
        let resp = self
            .get(
                "/svc/docs",
                &[("Authorization", &header), ("X-Auth-User", "mallory")],
            )
            .await?;
        ensure!(
            resp.status == 200,
            "service token on a service route: {}",
            resp.describe()
        );
        let seen = self.upstream_single("service token", before)?;
        ensure!(
            seen.headers.get("x-auth-user").map(String::as_str) == Some("nuxeo")
                && seen.headers.get("x-auth-session") == Some(&minted.sid)
                && !seen.headers.contains_key("authorization"),
            "service token: upstream headers {:?}",
            seen.headers
        );
        let before = self.echo.count();
        for path in ["/api/x", "/admin/x"] {
            let resp = self.get(path, &[("Authorization", &header)]).await?;
            self.expect_denial(
                &format!("service token on {path}"),
                &resp,
                403,
                Some("insufficient_scope"),
            )?;
        }
        let user = self.login().await?;
        let resp = self
            .get(
                "/svc/docs",
                &[("Authorization", &format!("Bearer {}", user.access))],
            )
            .await?;
        self.expect_denial(
            "user token on a service route",
            &resp,
            403,
            Some("insufficient_scope"),
        )?;
        self.expect_upstream_untouched("tokens on the wrong routes", before)
    }

    async fn check_valid_bearer(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let sid = jwt_part(&tokens.access, 1)["sid"]
            .as_str()
            .ok_or_else(|| anyhow!("access token has no sid claim"))?
            .to_owned();
        let header = format!("Bearer {}", tokens.access);
        let before = self.echo.count();
        let resp = self
            .get(
                "/api/x?q=a%5Cb&r=%2F",
                &[
                    ("Authorization", &header),
                    ("X-Auth-User", "mallory"),
                    ("X-Auth-Session", "x"),
                ],
            )
            .await?;
        ensure!(
            resp.status == 200,
            "valid bearer: expected 200, got {}",
            resp.describe()
        );
        let seen = self.upstream_single("valid bearer", before)?;
        ensure!(
            seen.path == "/api/x?q=a%5Cb&r=%2F",
            "valid bearer: upstream path {:?}",
            seen.path
        );
        self.expect_identity("valid bearer", &seen, &sid)?;
        // The response the client got is the upstream's own (the echo of that request).
        let echoed = resp.json()?;
        ensure!(
            echoed["headers"]["x-auth-user"] == USER,
            "client did not get the upstream body: {echoed}"
        );

        // A POST with a body goes through too, body intact is not checked here, method is.
        let before = self.echo.count();
        let resp = request(
            self.addr,
            "POST",
            "/api/y",
            &[
                ("Authorization", &header),
                ("Content-Type", "application/json"),
            ],
            Some(br#"{"k":"v"}"#),
        )
        .await?;
        ensure!(
            resp.status == 200,
            "valid bearer POST: expected 200, got {}",
            resp.describe()
        );
        let seen = self.upstream_single("valid bearer POST", before)?;
        ensure!(
            seen.method == "POST",
            "valid bearer POST: upstream method {}",
            seen.method
        );
        self.expect_identity("valid bearer POST", &seen, &sid)
    }

    async fn check_query_token(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let sid = jwt_part(&tokens.access, 1)["sid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let t = &tokens.access;
        let cases = [
            (
                format!("/api/x?a=1&access_token={t}&b=2"),
                vec!["/api/x?a=1&b=2"],
            ),
            (format!("/api/x?authorization={t}&b=2"), vec!["/api/x?b=2"]),
            (format!("/api/x?a=1&authorization={t}"), vec!["/api/x?a=1"]),
            (
                format!("/api/x?access_token={t}"),
                vec!["/api/x", "/api/x?"],
            ),
            // The other parameters must arrive byte for byte: an encoded "&" decoded on the
            // way would split one parameter into two at the legacy app.
            (
                format!("/api/x?q=a%26b%3Dc&access_token={t}&r=%2F%20%25+x"),
                vec!["/api/x?q=a%26b%3Dc&r=%2F%20%25+x"],
            ),
        ];
        for (target, expected) in &cases {
            let what = format!("query token {}", target.replace(t.as_str(), "<token>"));
            let before = self.echo.count();
            let resp = self.get(target, &[("X-Auth-User", "mallory")]).await?;
            ensure!(
                resp.status == 200,
                "{what}: expected 200, got {}",
                resp.describe()
            );
            let seen = self.upstream_single(&what, before)?;
            ensure!(
                !seen.path.contains(t.as_str()),
                "{what}: the token reached upstream in the query: {}",
                seen.path.replace(t.as_str(), "<token>")
            );
            ensure!(
                expected.contains(&seen.path.as_str()),
                "{what}: upstream path {:?}, expected one of {expected:?}",
                seen.path
            );
            self.expect_identity(&what, &seen, &sid)?;
        }
        Ok(())
    }

    async fn check_public_routes(&self) -> anyhow::Result<()> {
        let before = self.echo.count();
        let resp = post_json(
            self.addr,
            "/auth/login",
            &json!({"username": USER, "password": PASSWORD}),
        )
        .await?;
        let tokens = parse_tokens(&resp).context("login through the proxy")?;
        let bad = post_json(
            self.addr,
            "/auth/login",
            &json!({"username": USER, "password": "wrong"}),
        )
        .await?;
        ensure!(
            bad.status == 401,
            "wrong password through the proxy: expected 401, got {}",
            bad.describe()
        );
        let jwks = self.get("/.well-known/jwks.json", &[]).await?;
        ensure!(
            jwks.status == 200,
            "JWKS through the proxy: {}",
            jwks.describe()
        );
        ensure!(
            jwks.json()?["keys"].is_array(),
            "JWKS without keys: {}",
            jwks.text()
        );
        self.expect_upstream_untouched("public routes", before)?;
        // The token minted through the proxy works through the proxy.
        let header = format!("Bearer {}", tokens.access);
        let resp = self
            .get("/api/after-login", &[("Authorization", &header)])
            .await?;
        ensure!(
            resp.status == 200,
            "token from proxied login: {}",
            resp.describe()
        );
        Ok(())
    }

    async fn check_path_tricks(&self) -> anyhow::Result<()> {
        let tricks = [
            "/auth/../admin",
            "/auth/%2e%2e/admin",
            "/auth/.%2E/admin",
            "/auth/..%2Fadmin",
            "/auth%2F..%2Fadmin",
            "/auth/..%5Cadmin",
            "/admin?x=/auth/login",
            "/admin#/auth/login",
            "//auth/../admin",
            "/.well-known/../admin",
            "/auth/./../admin",
            "/auth/..%2fadmin",
            "/auth%5Cadmin",
            "/auth%5C..%5Cadmin",
            "/auth\\admin",
            "/auth\\..\\admin",
            "/auth/..;/admin",
            "/%2Fauth/../admin",
        ];
        let mut observed = Vec::new();
        let mut failed = Vec::new();
        for trick in tricks {
            let before = self.echo.count();
            let resp = self.get(trick, &[]).await?;
            observed.push(format!("{trick} -> {}", resp.status));
            if !matches!(resp.status, 400 | 401 | 404) {
                failed.push(format!(
                    "{trick}: expected 401 (or the proxy's own 400/404), got {}",
                    resp.describe()
                ));
            }
            if let Err(e) = self.expect_upstream_untouched(trick, before) {
                failed.push(format!("{e:#}"));
            }
        }
        eprintln!(
            "[{}] path tricks: {}",
            self.kind.name(),
            observed.join(", ")
        );
        ensure!(failed.is_empty(), "{}", failed.join("\n    "));
        Ok(())
    }

    async fn check_spoofed_identity(&self) -> anyhow::Result<()> {
        let before = self.echo.count();
        let resp = self
            .get(
                "/api/x",
                &[
                    ("X-Auth-User", USER),
                    ("X-Auth-Session", "s-1"),
                    ("Authorization", "alice:0123"),
                ],
            )
            .await?;
        ensure!(
            resp.status == 401,
            "spoofed X-Auth-User: expected 401, got {}",
            resp.describe()
        );
        let resp = self.get("/api/x", &[("X-Auth-User", USER)]).await?;
        self.expect_denial("spoofed X-Auth-User", &resp, 401, None)?;
        // authgate's /authz trusts X-Original-URI / X-Original-Method (nginx sets them); a
        // client's own copies must never reach it and turn a protected path into a public one.
        let resp = self
            .get(
                "/api/x",
                &[
                    ("X-Original-URI", "/auth/login"),
                    ("X-Original-Method", "POST"),
                    ("X-Envoy-Original-Path", "/auth/login"),
                ],
            )
            .await?;
        self.expect_denial("spoofed X-Original-URI", &resp, 401, None)?;
        self.expect_upstream_untouched("spoofed identity / original URI", before)
    }

    /// With authgate gone, nothing gets through: Envoy answers 503 (`status_on_error`),
    /// nginx 500 (what auth_request makes of a failed subrequest).
    async fn check_fail_closed(&mut self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let header = format!("Bearer {}", tokens.access);
        self.authgate.stop().await;
        let before = self.echo.count();
        for (target, headers) in [
            ("/api/x", vec![("Authorization", header.as_str())]),
            ("/api/x", vec![]),
        ] {
            let resp = self.get(target, &headers).await?;
            eprintln!(
                "[{}] authgate down, {} header(s): {}",
                self.kind.name(),
                headers.len(),
                resp.status
            );
            let expected: &[u16] = if self.kind.is_envoy() {
                &[503]
            } else {
                &[500, 502, 503]
            };
            ensure!(
                expected.contains(&resp.status),
                "authgate down, {} header(s): expected {expected:?}, got {}",
                headers.len(),
                resp.describe()
            );
        }
        self.expect_upstream_untouched("authgate down", before)
    }

    async fn check_cookie_token(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let sid = jwt_part(&tokens.access, 1)["sid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let cookie = format!("theme=dark; authgate_access={}; lang=it", tokens.access);
        let before = self.echo.count();
        let resp = self.get("/api/cookie", &[("Cookie", &cookie)]).await?;
        ensure!(
            resp.status == 200,
            "cookie token: expected 200, got {}",
            resp.describe()
        );
        let seen = self.upstream_single("cookie token", before)?;
        self.expect_identity("cookie token", &seen, &sid)?;
        let forwarded = seen.headers.get("cookie").cloned().unwrap_or_default();
        ensure!(
            forwarded == "theme=dark; lang=it",
            "cookie token: upstream Cookie should keep the other cookies only, got {forwarded:?}"
        );
        // The token cookie alone: no Cookie header upstream at all.
        let before = self.echo.count();
        let only = format!("authgate_access={}", tokens.access);
        let resp = self.get("/api/cookie", &[("Cookie", &only)]).await?;
        ensure!(resp.status == 200, "cookie alone: {}", resp.describe());
        let seen = self.upstream_single("cookie alone", before)?;
        ensure!(
            !seen.headers.contains_key("cookie"),
            "cookie alone: upstream got Cookie {:?}",
            seen.headers.get("cookie")
        );
        // A bearer token and the app's own cookies: those pass untouched.
        let before = self.echo.count();
        let bearer = format!("Bearer {}", tokens.access);
        let resp = self
            .get(
                "/api/cookie",
                &[
                    ("Authorization", &bearer),
                    ("Cookie", "theme=dark; lang=it"),
                ],
            )
            .await?;
        ensure!(resp.status == 200, "app cookies: {}", resp.describe());
        let seen = self.upstream_single("app cookies", before)?;
        ensure!(
            seen.headers.get("cookie").map(String::as_str) == Some("theme=dark; lang=it"),
            "app cookies: upstream got Cookie {:?}",
            seen.headers.get("cookie")
        );
        // A bad token in the cookie is refused like any other.
        let resp = self
            .get("/api/cookie", &[("Cookie", "authgate_access=not-a-jwt")])
            .await?;
        ensure!(
            resp.status == 401,
            "bad cookie token: expected 401, got {}",
            resp.describe()
        );
        Ok(())
    }

    fn sid_of(access: &str) -> String {
        jwt_part(access, 1)["sid"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The shipped configs close the legacy app's own login API however it is spelled, so
    /// nobody guesses passwords there outside lockout and 2FA (with a token or without).
    async fn check_backend_login_closed(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let bearer = format!("Bearer {}", tokens.access);
        let before = self.echo.count();
        let body = br#"{"username":"alice","password":"guess"}"#;
        for path in [
            "/authentication/login",
            "/authentication",
            "/Authentication/login",
            "/AUTHENTICATION/LOGIN",
            "/x/../authentication/login",
            "//authentication//login",
            "/authentication%2Flogin",
            "/%61uthentication/login",
        ] {
            for auth in [None, Some(bearer.as_str())] {
                let headers: Vec<(&str, &str)> =
                    auth.map(|a| ("Authorization", a)).into_iter().collect();
                let resp = request(self.addr, "POST", path, &headers, Some(body)).await?;
                let expected: &[u16] = if auth.is_some() { &[403] } else { &[401, 403] };
                ensure!(
                    expected.contains(&resp.status),
                    "POST {path} ({} token): expected {expected:?}, got {}",
                    if auth.is_some() { "with" } else { "no" },
                    resp.describe()
                );
            }
        }
        self.expect_upstream_untouched("the backend's own login API", before)
    }

    /// An MFA route read as a backend that folds case or trims trailing dots and spaces reads
    /// it (Express, IIS, Spring): a password-only token gets no further than on `/admin`.
    async fn check_folded_mfa_route(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let bearer = format!("Bearer {}", tokens.access);
        let before = self.echo.count();
        for path in [
            "/admin",
            "/ADMIN",
            "/Admin/users",
            "/%41DMIN",
            "/admin.",
            "/admin%2e",
            "/admin%20",
            "/admin..;/",
            "/ADMIN..;/users",
        ] {
            let resp = self.get(path, &[("Authorization", &bearer)]).await?;
            // 403 from authgate; a proxy may refuse a path it cannot normalise (400).
            ensure!(
                matches!(resp.status, 400 | 403),
                "{path} with a password-only token: expected 403, got {}",
                resp.describe()
            );
        }
        self.expect_upstream_untouched("MFA route readings, password-only token", before)?;
        // The same token still opens the routes next to it.
        let resp = self
            .get("/administrator", &[("Authorization", &bearer)])
            .await?;
        ensure!(resp.status == 200, "/administrator: {}", resp.describe());
        Ok(())
    }

    /// `X_Auth_User` is `X-Auth-User` to CGI, WSGI and PHP: Envoy refuses the request, nginx
    /// drops the header (underscores_in_headers off); it never reaches the app.
    async fn check_underscore_identity(&self) -> anyhow::Result<()> {
        let tokens = self.login().await?;
        let bearer = format!("Bearer {}", tokens.access);
        let before = self.echo.count();
        let resp = self
            .get(
                "/api/underscore",
                &[
                    ("Authorization", &bearer),
                    ("X_Auth_User", "root"),
                    ("X_AUTH_SESSION", "s-root"),
                ],
            )
            .await?;
        if self.kind.is_envoy() {
            ensure!(
                resp.status == 400,
                "underscores: expected 400, got {}",
                resp.describe()
            );
            self.expect_upstream_untouched("underscore identity headers", before)
        } else {
            ensure!(
                resp.status == 200,
                "underscores: expected 200, got {}",
                resp.describe()
            );
            let seen = self.upstream_single("underscore identity headers", before)?;
            ensure!(
                !seen.headers.keys().any(|k| k.contains('_')),
                "underscores: the app got {:?}",
                seen.headers
            );
            self.expect_identity(
                "underscore identity headers",
                &seen,
                &Self::sid_of(&tokens.access),
            )
        }
    }

    /// A genuine token whose user name cannot be a header value (a backend that accepted a
    /// control character) is refused: the identity is never skipped, so the client's own
    /// X-Auth-User can never pass in its place.
    async fn check_unemittable_identity(&self) -> anyhow::Result<()> {
        let service = &self.authgate.running().state.tokens;
        let before = self.echo.count();
        for sub in ["ali\u{1}ce", "alice\r\nX-Auth-User: root", "alice\u{7f}"] {
            let (token, _) = service.mint(Kind::Access, sub, "sid-ctl", &["pwd"], 300, None)?;
            let resp = self
                .get(
                    "/api/x",
                    &[
                        ("Authorization", &format!("Bearer {token}")),
                        ("X-Auth-User", "mallory"),
                    ],
                )
                .await?;
            self.expect_denial(
                &format!("user name {sub:?}"),
                &resp,
                401,
                Some("invalid_token"),
            )?;
        }
        self.expect_upstream_untouched("identities that cannot be headers", before)
    }
}

/// The behaviours every proxy mode must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    NoToken,
    BadTokens,
    RefreshTokenAsAccess,
    ValidBearer,
    QueryToken,
    CookieToken,
    PublicRoutes,
    PathTricks,
    SpoofedIdentityWithoutToken,
    BackendLoginClosed,
    FoldedMfaRoute,
    UnderscoreIdentity,
    UnemittableIdentity,
    ServiceTokens,
    AccessLog,
    /// Stops authgate: must come last.
    FailClosedWithoutAuthgate,
}

impl Check {
    pub const ALL: &'static [Check] = &[
        Check::NoToken,
        Check::BadTokens,
        Check::RefreshTokenAsAccess,
        Check::ValidBearer,
        Check::QueryToken,
        Check::CookieToken,
        Check::PublicRoutes,
        Check::PathTricks,
        Check::SpoofedIdentityWithoutToken,
        Check::BackendLoginClosed,
        Check::FoldedMfaRoute,
        Check::UnderscoreIdentity,
        Check::UnemittableIdentity,
        Check::ServiceTokens,
        Check::AccessLog,
        Check::FailClosedWithoutAuthgate,
    ];
}
