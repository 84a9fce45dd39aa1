//! Typed configuration: the TOML file, its built-in defaults and the `AUTHGATE_<SECTION>__<KEY>`
//! environment overrides. Everything is validated once here, at start-up; later layers take the
//! typed values and never parse configuration themselves. A bad key is reported by its dotted
//! name so `check-config` can tell the operator exactly what to fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::client_addr::ClientAddr;

/// Everything authgate can be told. Unknown keys are errors in every section.
///
/// Every field's doc comment is its user documentation; the README's TOML block shows the
/// defaults (a test checks that it parses to [`Config::default`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[listen]`: where authgate accepts connections.
    pub listen: Listen,
    /// `[backend]`: who checks passwords.
    pub backend: BackendConfig,
    /// `[tokens]`: the tokens authgate issues and accepts.
    pub tokens: Tokens,
    /// `[store]`: where keys and shared state live.
    pub store: StoreConfig,
    /// `[totp]`: two-factor authentication codes.
    pub totp: Totp,
    /// `[lockout]`: how failed logins lock an account or a client address.
    pub lockout: Lockout,
    /// `[policy]`: which requests need which access, and where their token is.
    pub policy: PolicyConfig,
    /// `[relay]`: the socket.io relay to the backend's live events (SPEC 2.4).
    pub relay: RelayConfig,
    /// `[admin]`: the operator control API (`authgate admin ...`).
    pub admin: AdminConfig,
    /// `[telemetry]`: OpenTelemetry traces (builds with the cargo feature `otel`).
    pub telemetry: TelemetryConfig,
    /// `[compat]`: profiles that serve another product's API shape (SPEC 2.7).
    pub compat: CompatConfig,
}

/// `[telemetry]`: traces exported over OTLP/gRPC, each span the child of the proxy's span
/// named by the request's `traceparent` (see `authgate::telemetry`). Off without `endpoint`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317` (an OpenTelemetry Collector
    /// sidecar). Absent (the default): no tracing, and the check pays one branch. Needs a build
    /// with the cargo feature `otel`: other builds refuse the key.
    pub endpoint: Option<String>,
    /// Share of checks traced, from 0.0 to 1.0, decided on the trace id; a check whose proxy
    /// did not sample its trace (`traceparent` flags 00) is never traced. Login API requests
    /// are traced whenever their trace is sampled. Default 0.01.
    pub check_sample_ratio: f64,
    /// `service.name` of the spans. Default `authgate`.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            check_sample_ratio: 0.01,
            service_name: "authgate".into(),
        }
    }
}

/// `[compat]`: the nethcti-middleware profile, so the NethVoice CTI client (nethvoice-cti,
/// phone-island) works through authgate unchanged. Off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// Serve nethcti-middleware's API under `prefix` on the HTTP listener (`/api/login`,
    /// `/api/logout`, `/api/2fa/*`, `/api/tokens/persistent/*`), give check denials under
    /// `prefix` its error body, keep `prefix/static/` public and `prefix/authentication/`
    /// closed. Default `false`.
    pub nethcti_middleware: bool,
    /// Where the client's API lives: starts with `/`, no trailing `/`. Default `/api`.
    pub prefix: String,
    /// Life of the token `/api/login` and `/api/2fa/verify-otp` hand out (the client has no
    /// refresh; revocation still bites at once). Between 1m and 90d. Default `14d`.
    #[serde(deserialize_with = "duration")]
    pub token_ttl: Duration,
    /// Life of a persistent device token (`/api/tokens/persistent/{audience}`). Between 1h and
    /// 3650d. Default `365d`.
    #[serde(deserialize_with = "duration")]
    pub device_token_ttl: Duration,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self {
            nethcti_middleware: false,
            prefix: "/api".to_owned(),
            token_ttl: Duration::from_secs(14 * 24 * 3600),
            device_token_ttl: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// The devices that may hold a persistent token in the nethcti-middleware profile; each is
/// also that token's `aud`.
pub const DEVICE_AUDIENCES: [&str; 3] = ["phone-island", "mobile-app", "nethlink"];

impl CompatConfig {
    /// The prefix the profile serves under, when it is on.
    pub fn middleware_prefix(&self) -> Option<&str> {
        self.nethcti_middleware.then_some(self.prefix.as_str())
    }
}

/// `[relay]`: the WebSocket relay at `/socket.io/` (and `/api/ws/`) to `backend.ws_url`.
/// Only with `backend.kind = "nethcti"`; elsewhere those paths answer 404.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Relayed sockets open at once on this replica; past it an upgrade gets 503. At least 1,
    /// and less than `listen.max_connections` (each socket holds one of those connections:
    /// the rest serve the checks and the API). Default 2048.
    pub max_sockets: usize,
    /// Largest WebSocket message relayed either way (a bigger one closes the socket with
    /// 1009); at least 1 KiB, at most 16 MiB. Default 1 MiB (socket.io's own default).
    pub max_frame_bytes: usize,
    /// How long a socket may stay open without a successful socket.io `login` (when no token
    /// came with the upgrade). Between 1s and 5m. Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub login_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_sockets: 2048,
            max_frame_bytes: 1024 * 1024,
            login_timeout: Duration::from_secs(10),
        }
    }
}

/// `[admin]`: the operator control API, served apart from the proxy-facing listeners.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the admin API listens: a Unix socket path (created mode 0600, a stale one
    /// replaced, removed on exit) or a TCP `host:port`, which needs `token_file`. Default
    /// `<store.path>/admin.sock`.
    pub listen: Option<String>,
    /// A file holding the bearer secret every admin call must present (required for a TCP
    /// `listen`; optional on a Unix socket, whose mode already restricts it). Read at start-up
    /// by the server and by `authgate admin`. Default none.
    pub token_file: Option<PathBuf>,
    /// Longest life `authgate admin token --ttl` may give a service token. Default `24h`.
    #[serde(deserialize_with = "duration")]
    pub max_token_ttl: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: None,
            max_token_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where a listener accepts connections: a TCP `host:port`, or a Unix domain socket,
/// written `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The longest path a Unix socket address holds: `sun_path` is 108 bytes on Linux, the last
/// one a NUL.
pub const MAX_UNIX_PATH: usize = 107;

impl ListenAddr {
    /// The TCP address, when it is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(addr) => Some(*addr),
            Self::Unix(_) => None,
        }
    }

    /// Whether a second listener could not take this address too (port 0 always can).
    fn collides_with(&self, other: &Self) -> bool {
        self == other && !matches!(self, Self::Tcp(a) if a.port() == 0)
    }

    /// What `serve` would refuse without I/O: an empty path, or one longer than
    /// [`MAX_UNIX_PATH`] (the kernel would cut it, or refuse it).
    fn check(&self) -> Result<(), String> {
        let Self::Unix(path) = self else {
            return Ok(());
        };
        let len = path.as_os_str().len();
        if len == 0 {
            return Err("unix: needs a path, e.g. unix:/run/authgate/grpc.sock".to_owned());
        }
        if len > MAX_UNIX_PATH {
            return Err(format!(
                "the socket path is {len} bytes; a Unix socket path holds at most                  {MAX_UNIX_PATH}: pick a shorter directory"
            ));
        }
        Ok(())
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => addr.fmt(f),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        text.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
            format!("{text:?}: expected an IP address and port (127.0.0.1:9191) or unix:/path")
        })
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Where the admin API listens (`[admin] listen`, else `<store.path>/admin.sock`); a
    /// path without `unix:` is a Unix socket too.
    pub fn admin_listen(&self) -> ListenAddr {
        match self.admin.listen.as_deref() {
            None | Some("") => ListenAddr::Unix(self.store.path.join("admin.sock")),
            Some(text) => text
                .parse()
                .unwrap_or_else(|_| ListenAddr::Unix(PathBuf::from(text))),
        }
    }
}

/// `[listen]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Address of the gRPC listener: Envoy ext_authz v3 and grpc.health.v1. `host:port`
    /// (port 0 picks a free port) or `unix:/path`, a Unix domain socket for a proxy on the
    /// same host (a sidecar): the socket file is created mode 0660 (authgate's user and
    /// group may connect), removed on exit; a stale one left by a crash is replaced, one a
    /// live server answers on (or anything that is not a socket) makes start-up fail. Its
    /// directory must exist; the path holds at most 107 bytes. Every `[listen]` limit
    /// applies to both kinds. Default `127.0.0.1:9191`.
    pub grpc: ListenAddr,
    /// Address of the HTTP listener: `/authz`, `/auth/*`, the socket.io relay, JWKS, health
    /// and metrics. `host:port` or `unix:/path`, as `grpc`. Default `127.0.0.1:8080`.
    pub http: ListenAddr,
    /// How long in-flight requests may take to finish after SIGTERM (readiness turns false
    /// first). Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub drain_grace: Duration,
    /// Peers whose `X-Forwarded-For` is believed: for a request from one of them, the last
    /// entry (the one that proxy appended) is the client address used for lockout and the
    /// audit log. List your proxy's address, e.g. `["127.0.0.1", "::1"]` when Envoy or nginx
    /// run beside authgate and are the only local peers (a Kubernetes pod). Default empty:
    /// the peer is the client, and nobody can name another address.
    ///
    /// A peer on a `unix:` listener has no address: it is the client `unix` (in the log, in
    /// a session's `client`, and one lockout bucket shared by everything it forwards), unless
    /// this list holds `"unix"`: then every peer on a Unix socket listener is a trusted
    /// proxy. List it when only your proxy can open the socket file (mode 0660: authgate's
    /// user and group; in a pod, a directory shared with the proxy container alone). Not
    /// implied: a socket any local process of that group can reach is no more trustworthy
    /// than 127.0.0.1, which is not trusted by default either.
    pub trusted_proxies: Vec<ClientAddr>,
    /// How long a client may take to send a request's headers; also the longest an HTTP/1
    /// connection may sit idle waiting for its next request. Keep your proxy's idle timeout
    /// for connections to authgate below it. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// The longest one gRPC call may take, its request message included; then its stream is
    /// reset. A check itself takes microseconds. Default `5s`.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Open connections per listener; past it, new ones wait in the kernel's backlog until
    /// one closes. Relayed WebSockets count on the HTTP listener. Default 4096.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (gRPC, and HTTP/2 on the HTTP listener);
    /// Envoy opens another connection when it needs more. Default 1024.
    pub max_streams: u32,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 9191))),
            http: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8080))),
            drain_grace: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            max_connections: 4096,
            max_streams: 1024,
        }
    }
}

/// The value of `backend.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The legacy nethcti-server.
    Nethcti,
    /// Any HTTP endpoint that answers a POSTed `{"username","password"}` with 2xx or 401/403.
    Http,
    /// A local users file with argon2id hashes.
    File,
}

impl BackendKind {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Nethcti => "nethcti",
            BackendKind::Http => "http",
            BackendKind::File => "file",
        }
    }
}

/// `[backend]`: who checks passwords, tagged by `kind`. Each kind holds only what it uses, so
/// a `file` backend always has its users file and an `http` one its URL.
///
/// Keys of the other kinds (`url` and `timeout` with `kind = "file"`, `users_file` with
/// `kind = "nethcti"`) are accepted, type-checked and ignored, so one file can switch kind
/// with `AUTHGATE_BACKEND__KIND` alone.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    /// `kind = "nethcti"`: `url` is where nethcti-server's REST API is mounted (e.g.
    /// `http://127.0.0.1:8179`, or `https://host/webrest` behind a proxy).
    Nethcti(RemoteBackendConfig),
    /// `kind = "http"`: `url` is the endpoint credentials are POSTed to.
    Http(RemoteBackendConfig),
    /// `kind = "file"` (the default): passwords are checked against `users_file`.
    File(FileBackendConfig),
}

/// The keys of a backend reached over HTTP (`nethcti`, `http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBackendConfig {
    /// `backend.url`: an `http://` or `https://` URL without credentials or fragment (and,
    /// for nethcti, without a query). Default `http://127.0.0.1:8179`.
    pub url: String,
    /// `backend.timeout`: upper bound of one backend call, connection included; more than
    /// zero. Default `5s`.
    pub timeout: Duration,
    /// `backend.ws_url`: where the backend's socket.io server is (`ws://` or `wss://`, no
    /// credentials, query or fragment); the relay dials `{ws_url}/socket.io/?...`. Default:
    /// `backend.url` with its scheme swapped (`http` -> `ws`, `https` -> `wss`).
    pub ws_url: Option<String>,
    /// `backend.ca_file`: a PEM file with the CA certificate(s) that sign the backend's
    /// certificate, for an `https` url (and a `wss` ws_url). With it only that CA is trusted;
    /// without it, the public (Mozilla) roots. Read and checked at start-up and by
    /// `check-config`. Default none.
    pub ca_file: Option<PathBuf>,
}

impl RemoteBackendConfig {
    /// `backend.ws_url`, or `backend.url` with its scheme swapped, without a trailing slash.
    pub fn ws_url(&self) -> String {
        let url = match &self.ws_url {
            Some(ws) => ws.clone(),
            None => match self.url.split_once("://") {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
                    format!("wss://{rest}")
                }
                Some((_, rest)) => format!("ws://{rest}"),
                None => self.url.clone(),
            },
        };
        url.trim_end_matches('/').to_owned()
    }
}

/// The keys of the `file` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBackendConfig {
    /// `backend.users_file`: one `name:<argon2id PHC hash>` per line (`authgate user-add`
    /// writes it; `serve` creates it with a demo user when missing). Default `./data/users`.
    pub users_file: PathBuf,
}

impl BackendConfig {
    /// The `kind` this backend was configured with.
    pub fn kind(&self) -> BackendKind {
        match self {
            BackendConfig::Nethcti(_) => BackendKind::Nethcti,
            BackendConfig::Http(_) => BackendKind::Http,
            BackendConfig::File(_) => BackendKind::File,
        }
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::File(FileBackendConfig {
            users_file: default_users_file(),
        })
    }
}

fn default_backend_kind() -> BackendKind {
    BackendKind::File
}

fn default_backend_url() -> String {
    "http://127.0.0.1:8179".into()
}

fn default_users_file() -> PathBuf {
    PathBuf::from("./data/users")
}

fn default_backend_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[backend]` as written: every key of every kind, each with its default. Deserialised by
/// serde's derive, so an error in any key is reported by its own path (`backend.timeout`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    #[serde(default = "default_backend_kind")]
    kind: BackendKind,
    #[serde(default = "default_backend_url")]
    url: String,
    #[serde(default = "default_users_file")]
    users_file: PathBuf,
    #[serde(default = "default_backend_timeout", deserialize_with = "duration")]
    timeout: Duration,
    #[serde(default)]
    ws_url: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

// Not `#[serde(tag = "kind")]`: serde buffers an internally tagged enum's content before it
// picks the variant, and serde_path_to_error loses the path inside that buffer (tried: a bad
// `timeout` in such an enum is reported at `backend`, not `backend.timeout`). The flat raw
// table keeps every path; the missing ones are named by `serde_path_error`.
impl<'de> Deserialize<'de> for BackendConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawBackend::deserialize(d)?;
        let remote = || RemoteBackendConfig {
            url: raw.url.clone(),
            timeout: raw.timeout,
            ws_url: raw.ws_url.clone(),
            ca_file: raw.ca_file.clone(),
        };
        Ok(match raw.kind {
            BackendKind::Nethcti => BackendConfig::Nethcti(remote()),
            BackendKind::Http => BackendConfig::Http(remote()),
            BackendKind::File => BackendConfig::File(FileBackendConfig {
                users_file: raw.users_file.clone(),
            }),
        })
    }
}

/// The value of `tokens.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Algorithm {
    /// Ed25519 signatures (the default).
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// HMAC-SHA256 with a shared secret: no public keys, the JWKS is empty.
    HS256,
}

/// `[tokens]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    /// `iss` of issued tokens; accepted tokens must carry it. Default `authgate`.
    pub issuer: String,
    /// `aud` of issued tokens; accepted tokens must carry it. Default `authgate`.
    pub audience: String,
    /// Signing algorithm: "EdDSA", "ES256", "RS256" or "HS256". The keys under
    /// `store.path/keys` are made for one algorithm. Default `EdDSA`.
    pub algorithm: Algorithm,
    /// Lifetime of an access token; at least 1s. Default `15m`.
    #[serde(deserialize_with = "duration")]
    pub access_ttl: Duration,
    /// Lifetime of a refresh token (a session's idle limit); not shorter than `access_ttl`.
    /// Default `30d`.
    #[serde(deserialize_with = "duration")]
    pub refresh_ttl: Duration,
    /// Clock skew allowed on exp, nbf and iat; at most 5m. Default `30s`.
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
    /// How long after `authgate rotate-keys` a server may still sign with the old key, until
    /// it sees the new one (10 s for a shared directory; a Kubernetes Secret takes about a
    /// minute to reach every pod). A retired key verifies tokens issued up to this long (plus
    /// `leeway`) after its retirement, and none for longer than this plus its life. At most
    /// 1h. Default `2m`.
    #[serde(deserialize_with = "duration")]
    pub rotation_grace: Duration,
    /// Upper bound of the verified-token cache, in bytes. Default 48 MiB (~100k tokens).
    pub cache_bytes: u64,
    /// After a refresh token is rotated, presenting it again within this time returns the
    /// same new pair instead of counting as reuse (a browser's double refresh, two tabs);
    /// "0s" disables it, so every second use revokes the session. At most 5m. Default `10s`.
    #[serde(deserialize_with = "duration")]
    pub refresh_reuse_grace: Duration,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            issuer: "authgate".into(),
            audience: "authgate".into(),
            algorithm: Algorithm::EdDSA,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway: Duration::from_secs(30),
            rotation_grace: Duration::from_secs(120),
            cache_bytes: 48 * 1024 * 1024,
            refresh_reuse_grace: Duration::from_secs(10),
        }
    }
}

/// `[store]`: where keys and shared state (sessions, revocations, 2FA, lockout) live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `store.path`: directory for the keys (`<path>/keys`, every kind) and the embedded
    /// database. Default `./data`.
    pub path: PathBuf,
    /// `store.kind` with what that kind needs. Default `embedded`.
    pub kind: StoreKind,
}

/// `store.kind`: "embedded" (one replica) or "redis" (several replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// A database file under `store.path`, for a single replica.
    Embedded,
    /// One Redis shared by every replica.
    Redis(RedisConfig),
}

/// The keys of `kind = "redis"` (each ignored with "embedded", so one file can switch kind
/// with `AUTHGATE_STORE__KIND` alone).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisConfig {
    /// `store.url`: `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS) or
    /// `unix://path`; this or `url_file` is required. A password in it belongs in
    /// `password_file` (or `url_file`, or `AUTHGATE_STORE__URL`), not in the file.
    pub url: RedisUrl,
    /// `store.url_file`: a file holding the whole URL (a Kubernetes Secret), read at start-up
    /// and by `check-config`; instead of `url`. Default none.
    pub url_file: Option<PathBuf>,
    /// `store.password_file`: a file holding the Redis password (surrounding line breaks
    /// ignored), read at start-up and by `check-config`; `url` then carries none. Default none.
    pub password_file: Option<PathBuf>,
    /// The password read from `password_file`.
    pub password: Option<Secret>,
    /// `store.ca_file`: a PEM file with the CA certificate(s) that sign Redis's certificate,
    /// for a `rediss://` url. With it only that CA is trusted; without it, the public (Mozilla)
    /// roots. Default none.
    pub ca_file: Option<PathBuf>,
}

impl RedisConfig {
    /// Redis at `url`, nothing else set.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: RedisUrl::new(url),
            ..Self::default()
        }
    }
}

/// A secret read from a file: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl StoreKind {
    /// The name as written in the configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Redis { .. } => "redis",
        }
    }
}

/// A Redis URL. It may hold a password, so `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

impl StoreConfig {
    /// The Redis URL when `kind = "redis"`.
    pub fn redis_url(&self) -> Option<&str> {
        match &self.kind {
            StoreKind::Redis(redis) => Some(redis.url.as_str()),
            StoreKind::Embedded => None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            kind: StoreKind::Embedded,
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("./data")
}

/// The value of `store.kind` as written.
#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum StoreTag {
    #[default]
    Embedded,
    Redis,
}

/// `[store]` as written; see [`RawBackend`] for why it is flat.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    kind: StoreTag,
    #[serde(default = "default_store_path")]
    path: PathBuf,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_file: Option<PathBuf>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawStore::deserialize(d)?;
        let kind = match raw.kind {
            StoreTag::Embedded => StoreKind::Embedded,
            StoreTag::Redis => {
                // With `url_file` the URL is read later (`Config::read_files`).
                let url = match (raw.url, &raw.url_file) {
                    (Some(url), _) => url,
                    (None, Some(_)) => String::new(),
                    // `missing field` is how the key is named: see `serde_path_error`.
                    (None, None) => {
                        return Err(<D::Error as serde::de::Error>::custom(
                            "missing field `url`: required when kind = \"redis\" \
                             (or url_file)",
                        ));
                    }
                };
                StoreKind::Redis(RedisConfig {
                    url: RedisUrl(url),
                    url_file: raw.url_file,
                    password_file: raw.password_file,
                    password: None,
                    ca_file: raw.ca_file,
                })
            }
        };
        Ok(Self {
            path: raw.path,
            kind,
        })
    }
}

/// `[totp]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Totp {
    /// Issuer shown in authenticator apps; without `:` (it separates issuer and account in
    /// the otpauth URL). Default `NethVoice`.
    pub issuer: String,
}

impl Default for Totp {
    fn default() -> Self {
        Self {
            issuer: "NethVoice".into(),
        }
    }
}

/// `[lockout]`: failed logins counted per user and per client address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lockout {
    /// Failures within `window` that lock; at least 1. Default 5.
    pub max_failures: u32,
    /// How far back failures count. Default `5m`.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// How long a lock lasts (a correct password is refused meanwhile). Default `15m`.
    #[serde(deserialize_with = "duration")]
    pub lock_for: Duration,
}

impl Default for Lockout {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(300),
            lock_for: Duration::from_secs(900),
        }
    }
}

/// The value of `policy.routes[].access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// No token needed.
    Public,
    /// A valid access token.
    Token,
    /// A valid access token whose `amr` has "otp" (the user passed two-factor login).
    Mfa,
    /// A service token only (`authgate admin token`, `amr` ["svc"]); user tokens get 403.
    Service,
    /// Refused outright (403), whatever the token.
    Deny,
}

/// One `[[policy.routes]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Matches the normalised path equal to it or below it (`/api` matches `/api` and
    /// `/api/x`, not `/apix`); starts with `/`. Required.
    pub path_prefix: String,
    /// Only these methods match (any method when absent); HTTP method names, not empty.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// "public", "token", "mfa" or "deny". Required.
    pub access: Access,
    /// Where to look for the token on this route (the global `policy.token_sources` when absent).
    #[serde(default)]
    pub token_sources: Option<TokenSources>,
}

/// `[policy.token_sources]` (or a route's own): where a request's token may be.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSources {
    /// `Authorization: Bearer`. Default true.
    pub header: bool,
    /// Query parameters, in order (removed before the request goes upstream); names not
    /// empty. Default `["access_token", "authorization"]`.
    pub query: Vec<String>,
    /// Cookie name; empty disables. Default `authgate_access`.
    pub cookie: String,
}

impl Default for TokenSources {
    fn default() -> Self {
        Self {
            header: true,
            query: vec!["access_token".into(), "authorization".into()],
            cookie: "authgate_access".into(),
        }
    }
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// `[[policy.routes]]`: first match wins; without any, `/auth/` and `/.well-known/` are
    /// public and the rest needs `token`.
    pub routes: Vec<Route>,
    /// Where to look for the token on routes without their own `token_sources`.
    pub token_sources: TokenSources,
    /// The backend may read a path case-insensitively and with trailing dots and spaces cut
    /// (Express, IIS, Spring): routes then also match those readings, and the strictest
    /// access among all readings applies. Turn off only when every backend matches paths
    /// exactly.
    pub backend_folds_paths: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            token_sources: TokenSources::default(),
            backend_folds_paths: true,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration at `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Parses and validates TOML text (no environment overrides).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::invalid("(file)", e.message()))?;
        Self::from_table(value)
    }

    /// Loads `path` (or `./authgate.toml` if present, else defaults) and applies the
    /// `AUTHGATE_<SECTION>__<KEY>` overrides found in `env`.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let default_path = std::path::Path::new("authgate.toml");
        let path = path.or_else(|| default_path.exists().then_some(default_path));
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::invalid("(file)", e.message()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let mut config: Config = serde_path_error(table)?;
        config.read_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads what the `*_file` keys name: the secrets into the configuration
    /// (`store.url_file`, `store.password_file`), the CA files only to check that they hold
    /// certificates (`store.ca_file`, `backend.ca_file`; the clients read them again when they
    /// are built). The one I/O of loading a configuration; an error names the key and the file,
    /// never what the file holds.
    pub fn read_files(&mut self) -> Result<(), ConfigError> {
        if let StoreKind::Redis(redis) = &mut self.store.kind {
            if let Some(path) = &redis.url_file {
                if !redis.url.as_str().is_empty() {
                    return Err(ConfigError::invalid(
                        "store.url_file",
                        "set store.url or store.url_file, not both",
                    ));
                }
                redis.url = RedisUrl(read_secret_file("store.url_file", path)?);
            }
            if let Some(path) = &redis.password_file {
                redis.password = Some(Secret(read_secret_file("store.password_file", path)?));
            }
            if let Some(path) = &redis.ca_file {
                crate::tls::read_ca_file(path)
                    .map_err(|m| ConfigError::invalid("store.ca_file", m))?;
            }
        }
        if let BackendConfig::Nethcti(remote) | BackendConfig::Http(remote) = &self.backend
            && let Some(path) = &remote.ca_file
        {
            crate::tls::read_ca_file(path)
                .map_err(|m| ConfigError::invalid("backend.ca_file", m))?;
        }
        Ok(())
    }

    /// Everything `serve` would refuse about this configuration without doing I/O: URLs
    /// that do not parse, zero timeouts, both listeners on one address, routes that can never
    /// match. What needs I/O (keys,
    /// the users file, connecting) is left to `serve`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.listen;
        l.grpc
            .check()
            .map_err(|m| ConfigError::invalid("listen.grpc", m))?;
        l.http
            .check()
            .map_err(|m| ConfigError::invalid("listen.http", m))?;
        if l.grpc.collides_with(&l.http) {
            return Err(ConfigError::invalid(
                "listen.grpc",
                format!(
                    "{} is listen.http too; one address serves one listener",
                    l.grpc
                ),
            ));
        }
        for (key, value) in [
            ("listen.header_timeout", l.header_timeout),
            ("listen.request_timeout", l.request_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(ConfigError::invalid(key, "must be at least 100ms"));
            }
        }
        if l.max_connections == 0 {
            return Err(ConfigError::invalid(
                "listen.max_connections",
                "must be at least 1",
            ));
        }
        if l.max_streams == 0 {
            return Err(ConfigError::invalid(
                "listen.max_streams",
                "must be at least 1",
            ));
        }
        let t = &self.tokens;
        if t.issuer.is_empty() {
            return Err(ConfigError::invalid("tokens.issuer", "must not be empty"));
        }
        if t.audience.is_empty() {
            return Err(ConfigError::invalid("tokens.audience", "must not be empty"));
        }
        if t.access_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "tokens.access_ttl",
                "must be at least 1s",
            ));
        }
        if t.refresh_ttl < t.access_ttl {
            return Err(ConfigError::invalid(
                "tokens.refresh_ttl",
                "must not be shorter than tokens.access_ttl",
            ));
        }
        if t.leeway > Duration::from_secs(300) {
            return Err(ConfigError::invalid("tokens.leeway", "at most 5m"));
        }
        if t.rotation_grace > Duration::from_secs(3600) {
            return Err(ConfigError::invalid("tokens.rotation_grace", "at most 1h"));
        }
        if t.refresh_reuse_grace > Duration::from_secs(300) {
            return Err(ConfigError::invalid(
                "tokens.refresh_reuse_grace",
                "at most 5m",
            ));
        }
        match &self.backend {
            BackendConfig::Nethcti(remote) | BackendConfig::Http(remote) => {
                let url = backend_url(self.backend.kind(), &remote.url)
                    .map_err(|m| ConfigError::invalid("backend.url", m))?;
                if remote.timeout.is_zero() {
                    return Err(ConfigError::invalid(
                        "backend.timeout",
                        "must be greater than zero",
                    ));
                }
                let ws = ws_url(&remote.ws_url()).map_err(|m| {
                    // A derived URL fails only with `backend.url`, already refused above.
                    ConfigError::invalid("backend.ws_url", m)
                })?;
                let tls = url.scheme() == "https" || ws.scheme() == "wss";
                if remote.ca_file.is_some() && !tls {
                    return Err(ConfigError::invalid(
                        "backend.ca_file",
                        "backend.url is not https:// (nor backend.ws_url wss://): no TLS to \
                         check",
                    ));
                }
            }
            BackendConfig::File(file) => {
                if file.users_file.as_os_str().is_empty() {
                    return Err(ConfigError::invalid(
                        "backend.users_file",
                        "must not be empty",
                    ));
                }
            }
        }
        if let StoreKind::Redis(redis) = &self.store.kind {
            let key = if redis.url_file.is_some() {
                "store.url_file"
            } else {
                "store.url"
            };
            let info =
                check_redis_url(redis.url.as_str()).map_err(|m| ConfigError::invalid(key, m))?;
            let tls = match info.addr() {
                redis::ConnectionAddr::TcpTls { insecure: true, .. } => {
                    return Err(ConfigError::invalid(
                        key,
                        "#insecure turns off Redis certificate checks; name the CA in \
                         store.ca_file instead",
                    ));
                }
                redis::ConnectionAddr::TcpTls { .. } => true,
                _ => false,
            };
            if redis.ca_file.is_some() && !tls {
                return Err(ConfigError::invalid(
                    "store.ca_file",
                    format!("{key} is not a rediss:// url: no TLS to check"),
                ));
            }
            if redis.password.is_some() && info.redis_settings().password().is_some() {
                return Err(ConfigError::invalid(
                    "store.password_file",
                    format!("{key} carries a password too; keep it in one place"),
                ));
            }
        }
        if self.totp.issuer.contains(':') {
            return Err(ConfigError::invalid(
                "totp.issuer",
                "must not contain ':' (authenticator apps read it as the separator)",
            ));
        }
        if self.lockout.max_failures == 0 {
            return Err(ConfigError::invalid(
                "lockout.max_failures",
                "must be at least 1",
            ));
        }
        for (i, r) in self.policy.routes.iter().enumerate() {
            let key = |field: &str| format!("policy.routes[{i}].{field}");
            if !r.path_prefix.starts_with('/') {
                return Err(ConfigError::invalid(
                    &key("path_prefix"),
                    "must start with '/'",
                ));
            }
            if let Some(methods) = &r.methods {
                if methods.is_empty() {
                    return Err(ConfigError::invalid(
                        &key("methods"),
                        "an empty list matches no request; leave `methods` out to match any",
                    ));
                }
                if let Some(bad) = methods.iter().find(|m| !is_token(m)) {
                    return Err(ConfigError::invalid(
                        &key("methods"),
                        format!("{bad:?} is not an HTTP method name"),
                    ));
                }
            }
            if let Some(sources) = &r.token_sources {
                sources.validate(&key("token_sources"))?;
            }
        }
        self.policy.token_sources.validate("policy.token_sources")?;
        let r = &self.relay;
        if r.max_sockets == 0 {
            return Err(ConfigError::invalid(
                "relay.max_sockets",
                "must be at least 1",
            ));
        }
        if r.max_sockets >= self.listen.max_connections {
            return Err(ConfigError::invalid(
                "relay.max_sockets",
                format!(
                    "must be less than listen.max_connections ({}): each relayed socket holds \
                     one HTTP connection, and the checks need some too",
                    self.listen.max_connections
                ),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&r.max_frame_bytes) {
            return Err(ConfigError::invalid(
                "relay.max_frame_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if r.login_timeout < Duration::from_secs(1) || r.login_timeout > Duration::from_secs(300) {
            return Err(ConfigError::invalid(
                "relay.login_timeout",
                "must be between 1s and 5m",
            ));
        }
        let admin = self.admin_listen();
        admin.check().map_err(|m| {
            // The default lies under store.path: that is the key to shorten.
            let key = if self.admin.listen.as_deref().is_none_or(str::is_empty) {
                "store.path"
            } else {
                "admin.listen"
            };
            ConfigError::invalid(key, format!("admin socket {admin}: {m}"))
        })?;
        if let ListenAddr::Tcp(addr) = admin
            && self.admin.token_file.is_none()
        {
            return Err(ConfigError::invalid(
                "admin.token_file",
                format!("admin.listen {addr} is a TCP address; it needs a token_file"),
            ));
        }
        if admin.collides_with(&l.grpc) || admin.collides_with(&l.http) {
            return Err(ConfigError::invalid(
                "admin.listen",
                "must not be a proxy-facing listener (listen.grpc, listen.http)",
            ));
        }
        let t = &self.telemetry;
        if let Some(endpoint) = t.endpoint.as_deref().filter(|e| !e.is_empty()) {
            if !cfg!(feature = "otel") {
                return Err(ConfigError::invalid(
                    "telemetry.endpoint",
                    "this build has no OpenTelemetry support (cargo feature `otel`)",
                ));
            }
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| ConfigError::invalid("telemetry.endpoint", format!("{e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::invalid(
                    "telemetry.endpoint",
                    "expected http://host:port (OTLP over gRPC)",
                ));
            }
        }
        if !(0.0..=1.0).contains(&t.check_sample_ratio) {
            return Err(ConfigError::invalid(
                "telemetry.check_sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if t.service_name.is_empty() {
            return Err(ConfigError::invalid(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        if self.admin.max_token_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "admin.max_token_ttl",
                "must be at least 1s",
            ));
        }
        self.compat.validate()
    }
}

impl CompatConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.prefix;
        let well_formed = p.len() > 1
            && p.starts_with('/')
            && !p.ends_with('/')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
            && !p
                .split('/')
                .skip(1)
                .any(|s| s.is_empty() || s == "." || s == "..");
        if !well_formed {
            return Err(ConfigError::invalid(
                "compat.prefix",
                "must be a path like /api: starts with /, no trailing /, no empty or dot segments",
            ));
        }
        if p == "/auth" || p == "/authz" || p == "/socket.io" || p == "/.well-known" {
            return Err(ConfigError::invalid(
                "compat.prefix",
                "must not be one of authgate's own paths",
            ));
        }
        let day = 24 * 3600;
        if !(60..=90 * day).contains(&self.token_ttl.as_secs()) {
            return Err(ConfigError::invalid(
                "compat.token_ttl",
                "must be between 1m and 90d",
            ));
        }
        if !(3600..=3650 * day).contains(&self.device_token_ttl.as_secs()) {
            return Err(ConfigError::invalid(
                "compat.device_token_ttl",
                "must be between 1h and 3650d",
            ));
        }
        Ok(())
    }
}

/// The rules for `backend.ws_url`: `ws` or `wss`, a host, no credentials, query or fragment
/// (the relay appends `/socket.io/?<the client's query>`).
pub fn ws_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid ws url: {e}"))?;
    if !matches!(parsed.scheme(), "ws" | "wss") {
        return Err(format!(
            "ws url must be ws or wss, not {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("ws url must name a host".to_owned());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("ws url must not carry credentials".to_owned());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("ws url must not have a query or fragment".to_owned());
    }
    Ok(parsed)
}

impl TokenSources {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.query.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                &format!("{key}.query"),
                "a parameter name must not be empty",
            ));
        }
        if !self.cookie.is_empty() && !is_token(&self.cookie) {
            return Err(ConfigError::invalid(
                &format!("{key}.cookie"),
                format!("{:?} is not a cookie name", self.cookie),
            ));
        }
        Ok(())
    }
}

/// An RFC 9110 token: what HTTP method and cookie names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The rules for `backend.url`, shared with the backends so that `check-config` and `serve`
/// cannot disagree: http or https, no userinfo (it would end up in logs and config dumps), no
/// fragment, and for nethcti (a base URL that paths are appended to) no query.
pub fn backend_url(kind: BackendKind, url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid backend url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "backend url must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("backend url must not carry credentials".to_owned());
    }
    if parsed.fragment().is_some() {
        return Err("backend url must not have a fragment".to_owned());
    }
    if kind == BackendKind::Nethcti && parsed.query().is_some() {
        return Err("nethcti url must not have a query".to_owned());
    }
    Ok(parsed)
}

/// Whether the Redis client accepts `url` (the same parser the store connects with). The
/// message never quotes the URL: it may hold a password.
fn check_redis_url(url: &str) -> Result<redis::ConnectionInfo, String> {
    redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
        format!(
            "not a usable redis url ({}); expected redis://[:password@]host[:port][/db], \
             rediss://... (TLS) or unix://path",
            e.category()
        )
    })
}

/// The contents of a secret file named by `key`, without the line break editors and
/// `kubectl create secret --from-file` leave at its end; empty is an error. The message names
/// the key and the path, never the contents.
fn read_secret_file(key: &str, path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(secret.to_owned())
}

/// Deserialises, naming the dotted key (`tokens.access_ttl`, `policy.routes[0].access`) at fault.
/// serde reports a missing field at the table that lacks it; the key named is the field's.
fn serde_path_error(table: toml::Table) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let mut key = if path == "." { String::new() } else { path };
        if let Some(field) = missing_field(&message) {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(field);
        }
        if key.is_empty() {
            key = "(file)".to_owned();
        }
        ConfigError::Invalid { key, message }
    })
}

/// `x` from serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.trim().strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

/// Applies `AUTHGATE_<SECTION>__<KEY>=value` overrides. Values are parsed as TOML when they
/// parse (numbers, booleans, arrays), otherwise taken as strings.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("AUTHGATE_") else {
            continue;
        };
        // Variables without `__` are not overrides: AUTHGATE_LOG, or the AUTHGATE_*_PORT
        // service links Kubernetes injects for a Service named authgate-*.
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                &name,
                "expected AUTHGATE_<SECTION>__<KEY>",
            ));
        }
        let value = parse_env_value(&raw);
        let mut cursor = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = cursor
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::invalid(&path.join("."), "is not a section"))?;
        }
        cursor.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn admin_defaults_to_a_socket_under_the_store_and_tcp_needs_a_secret() {
        let c = Config::from_toml_str("[store]\npath = \"/var/lib/ag\"\n").unwrap();
        assert_eq!(
            c.admin_listen(),
            ListenAddr::Unix(PathBuf::from("/var/lib/ag/admin.sock"))
        );
        let e = Config::from_toml_str("[admin]\nlisten = \"127.0.0.1:9300\"\n").unwrap_err();
        assert!(e.to_string().contains("admin.token_file"), "{e}");
        let c = Config::from_toml_str(
            "[admin]\nlisten = \"127.0.0.1:9300\"\ntoken_file = \"/run/secret\"\n",
        )
        .unwrap();
        assert_eq!(
            c.admin_listen(),
            ListenAddr::Tcp("127.0.0.1:9300".parse().unwrap())
        );
        let e = Config::from_toml_str(
            "[admin]\nlisten = \"127.0.0.1:9191\"\ntoken_file = \"/run/secret\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("admin.listen"), "{e}");
        let e = Config::from_toml_str("[admin]\nmax_token_ttl = \"0s\"\n").unwrap_err();
        assert!(e.to_string().contains("admin.max_token_ttl"), "{e}");
        let c = Config::from_toml_str(
            "[[policy.routes]]\npath_prefix = \"/svc/\"\naccess = \"service\"\n",
        )
        .unwrap();
        assert_eq!(c.policy.routes[0].access, Access::Service);
    }

    #[test]
    fn listeners_take_unix_sockets_up_to_the_sun_path_limit() {
        let c = Config::from_toml_str(
            "[listen]\ngrpc = \"unix:/run/authgate/grpc.sock\"\nhttp = \"unix:/run/authgate/http.sock\"\n\
             trusted_proxies = [\"unix\", \"::1\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.listen.grpc,
            ListenAddr::Unix(PathBuf::from("/run/authgate/grpc.sock"))
        );
        assert_eq!(c.listen.http.to_string(), "unix:/run/authgate/http.sock");
        assert_eq!(
            c.listen.trusted_proxies,
            vec![ClientAddr::Unix, ClientAddr::Ip("::1".parse().unwrap())]
        );
        // 107 bytes fit; 108 do not, and the message says why.
        let path = |len: usize| format!("/{}", "s".repeat(len - 1));
        let at = |key: &str, len: usize| format!("[listen]\n{key} = \"unix:{}\"\n", path(len));
        assert!(Config::from_toml_str(&at("grpc", MAX_UNIX_PATH)).is_ok());
        for key in ["grpc", "http"] {
            let e = Config::from_toml_str(&at(key, MAX_UNIX_PATH + 1)).unwrap_err();
            assert!(
                e.to_string().contains(&format!("listen.{key}")) && e.to_string().contains("107"),
                "{e}"
            );
        }
        assert_eq!(bad_key("[listen]\nhttp = \"unix:\""), "listen.http");
        assert_eq!(
            bad_key("[listen]\ngrpc = \"unix:/r/a.sock\"\nhttp = \"unix:/r/a.sock\""),
            "listen.grpc"
        );
        assert_eq!(
            bad_key("[listen]\ntrusted_proxies = [\"local\"]"),
            "listen.trusted_proxies[0]"
        );
        assert_eq!(
            bad_key("[listen]\ngrpc = \"unix:/r/a.sock\"\n[admin]\nlisten = \"/r/a.sock\""),
            "admin.listen"
        );
        // The default admin socket lies under store.path: that is what to shorten.
        assert_eq!(
            bad_key(&format!("[store]\npath = \"{}\"", path(100))),
            "store.path"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(c.listen.grpc.tcp().unwrap().port(), 9191);
        assert_eq!(c.policy.token_sources.cookie, "authgate_access");
    }

    #[test]
    fn spec_example_parses() {
        let text = r#"
[listen]
grpc = "127.0.0.1:9191"
http = "127.0.0.1:8080"
[backend]
kind = "nethcti"
url = "http://127.0.0.1:8179"
[tokens]
issuer = "authgate"
audience = "authgate"
algorithm = "ES256"
access_ttl = "15m"
refresh_ttl = "30d"
leeway = "30s"
[store]
kind = "embedded"
path = "./data"
[totp]
issuer = "NethVoice"
[lockout]
max_failures = 5
window = "5m"
lock_for = "15m"
[[policy.routes]]
path_prefix = "/auth/"
access = "public"
[[policy.routes]]
path_prefix = "/"
access = "mfa"
methods = ["GET"]
[policy.token_sources]
header = true
query = ["access_token", "authorization"]
cookie = "authgate_access"
"#;
        let c = Config::from_toml_str(text).unwrap();
        assert_eq!(c.tokens.algorithm, Algorithm::ES256);
        assert_eq!(c.policy.routes.len(), 2);
        assert_eq!(c.policy.routes[1].access, Access::Mfa);
        assert_eq!(c.tokens.refresh_ttl, Duration::from_secs(30 * 86400));
    }

    fn bad_key(text: &str) -> String {
        match Config::from_toml_str(text).unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            bad_key("[tokens]\naccess_ttl = \"soon\""),
            "tokens.access_ttl"
        );
        assert_eq!(bad_key("[tokens]\nbogus = 1"), "tokens.bogus");
        assert_eq!(
            bad_key("[tokens]\nrotation_grace = \"2h\""),
            "tokens.rotation_grace"
        );
        assert_eq!(bad_key("[nope]\nx = 1"), "nope");
        assert_eq!(
            bad_key("[tokens]\nalgorithm = \"none\""),
            "tokens.algorithm"
        );
        assert_eq!(bad_key("[tokens]\nissuer = \"\""), "tokens.issuer");
        assert_eq!(
            bad_key("[tokens]\nrefresh_reuse_grace = \"1h\""),
            "tokens.refresh_reuse_grace"
        );
        assert_eq!(bad_key("[listen]\ngrpc = \"nowhere\""), "listen.grpc");
        assert_eq!(
            bad_key("[[policy.routes]]\npath_prefix = \"x\"\naccess = \"public\""),
            "policy.routes[0].path_prefix"
        );
    }

    #[test]
    fn missing_keys_are_named_by_the_key_itself() {
        assert_eq!(
            bad_key("[store]\nkind = \"redis\""),
            "store.url",
            "a redis store cannot lack its url"
        );
        assert_eq!(
            bad_key("[[policy.routes]]\npath_prefix = \"/\""),
            "policy.routes[0].access"
        );
    }

    #[test]
    fn errors_inside_the_tagged_sections_keep_their_path() {
        assert_eq!(bad_key("[store]\nkind = \"mongo\""), "store.kind");
        assert_eq!(bad_key("[store]\nkind = \"redis\"\nurl = 5"), "store.url");
        assert_eq!(bad_key("[store]\nnope = 1"), "store.nope");
        assert_eq!(bad_key("[store]\npath = 1"), "store.path");
        assert_eq!(bad_key("[backend]\nkind = \"ldap\""), "backend.kind");
        assert_eq!(
            bad_key("[backend]\nkind = \"http\"\ntimeout = \"soon\""),
            "backend.timeout"
        );
        assert_eq!(bad_key("[backend]\nusers_file = []"), "backend.users_file");
        assert_eq!(bad_key("[backend]\nsurprise = 1"), "backend.surprise");
    }

    #[test]
    fn store_and_backend_hold_what_their_kind_needs() {
        let c = Config::from_toml_str(
            "[store]\nkind = \"redis\"\nurl = \"redis://:pw@127.0.0.1:6379/0\"\npath = \"/s\"\n\
             [backend]\nkind = \"nethcti\"\ntimeout = \"2s\"\nusers_file = \"/ignored\"",
        )
        .unwrap();
        assert_eq!(c.store.path, PathBuf::from("/s"));
        assert_eq!(c.store.redis_url(), Some("redis://:pw@127.0.0.1:6379/0"));
        assert!(
            !format!("{c:?}").contains("pw@"),
            "Debug shows the redis password"
        );
        assert_eq!(
            c.backend,
            BackendConfig::Nethcti(RemoteBackendConfig {
                url: "http://127.0.0.1:8179".into(),
                timeout: Duration::from_secs(2),
                ws_url: None,
                ca_file: None,
            })
        );
        // The url of another kind is ignored: one file switches kind by one override.
        let c = Config::from_toml_str(
            "[store]\nkind = \"embedded\"\nurl = \"not even a url\"\n\
             [backend]\nkind = \"file\"\nurl = \"nor this\"\nusers_file = \"/u\"",
        )
        .unwrap();
        assert_eq!(c.store.kind, StoreKind::Embedded);
        assert_eq!(
            c.backend,
            BackendConfig::File(FileBackendConfig {
                users_file: "/u".into()
            })
        );
    }

    #[test]
    fn what_serve_would_refuse_is_refused_naming_the_key() {
        for (text, key) in [
            (
                "[backend]\nkind = \"http\"\nurl = \"ftp://x\"",
                "backend.url",
            ),
            (
                "[backend]\nkind = \"http\"\nurl = \"http://\"",
                "backend.url",
            ),
            (
                "[backend]\nkind = \"http\"\nurl = \"http://u:p@h/login\"",
                "backend.url",
            ),
            (
                "[backend]\nkind = \"http\"\nurl = \"http://h/#f\"",
                "backend.url",
            ),
            (
                "[backend]\nkind = \"nethcti\"\nurl = \"http://h/?q=1\"",
                "backend.url",
            ),
            (
                "[backend]\nkind = \"nethcti\"\ntimeout = \"0s\"",
                "backend.timeout",
            ),
            (
                "[backend]\nkind = \"file\"\nusers_file = \"\"",
                "backend.users_file",
            ),
            ("[store]\nkind = \"redis\"\nurl = \"http://h\"", "store.url"),
            (
                "[store]\nkind = \"redis\"\nurl = \"redis://h:port\"",
                "store.url",
            ),
            ("[totp]\nissuer = \"Neth:Voice\"", "totp.issuer"),
            (
                "[backend]\nkind = \"nethcti\"\nws_url = \"http://h\"",
                "backend.ws_url",
            ),
            (
                "[backend]\nkind = \"nethcti\"\nws_url = \"ws://h/?token=x\"",
                "backend.ws_url",
            ),
            (
                "[backend]\nkind = \"nethcti\"\nws_url = \"wss://u:p@h\"",
                "backend.ws_url",
            ),
            ("[relay]\nmax_sockets = 0", "relay.max_sockets"),
            ("[relay]\nmax_sockets = 4096", "relay.max_sockets"),
            ("[relay]\nmax_frame_bytes = 10", "relay.max_frame_bytes"),
            ("[relay]\nlogin_timeout = \"0s\"", "relay.login_timeout"),
            (
                "[telemetry]\ncheck_sample_ratio = 1.5",
                "telemetry.check_sample_ratio",
            ),
            ("[telemetry]\nendpoint = \"nowhere\"", "telemetry.endpoint"),
            ("[telemetry]\nservice_name = \"\"", "telemetry.service_name"),
            (
                "[listen]\ngrpc = \"127.0.0.1:8080\"\nhttp = \"127.0.0.1:8080\"",
                "listen.grpc",
            ),
            (
                "[[policy.routes]]\npath_prefix = \"/\"\naccess = \"token\"\n\
                 [[policy.routes]]\npath_prefix = \"/a\"\naccess = \"token\"\n\
                 [[policy.routes]]\npath_prefix = \"/b\"\naccess = \"mfa\"\nmethods = []",
                "policy.routes[2].methods",
            ),
            (
                "[[policy.routes]]\npath_prefix = \"/\"\naccess = \"token\"\nmethods = [\"GET \"]",
                "policy.routes[0].methods",
            ),
            (
                "[[policy.routes]]\npath_prefix = \"/\"\naccess = \"token\"\n\
                 [policy.routes.token_sources]\nquery = [\"\"]",
                "policy.routes[0].token_sources.query",
            ),
            (
                "[policy.token_sources]\ncookie = \"a b\"",
                "policy.token_sources.cookie",
            ),
        ] {
            assert_eq!(bad_key(text), key, "{text}");
        }
        // The redis password never appears in the message.
        let err =
            Config::from_toml_str("[store]\nkind = \"redis\"\nurl = \"redis://:hunter2@h:x\"")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("store.url") && !err.contains("hunter2"),
            "{err}"
        );
        // And what passes here is accepted by serve's own constructors.
        let ok = Config::from_toml_str(
            "[backend]\nkind = \"nethcti\"\nurl = \"https://h/webrest/\"\n\
             [store]\nkind = \"redis\"\nurl = \"redis://:pw@h:6380/2\"\n\
             [[policy.routes]]\npath_prefix = \"/\"\naccess = \"token\"\nmethods = [\"get\", \"M-SEARCH\"]",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// The README's TOML block is the documentation of the defaults: it must be exactly them.
    #[test]
    fn readme_block_is_the_defaults() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Configuration\n")
            .nth(1)
            .expect("README has a Configuration section");
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .expect("the Configuration section has a TOML block");
        let parsed = Config::from_toml_str(block).unwrap();
        assert_eq!(parsed, Config::default());
        // Every key is written out, not left to its default.
        let table: toml::Table = block.parse().unwrap();
        for section in [
            "listen",
            "backend",
            "tokens",
            "store",
            "totp",
            "lockout",
            "policy",
            "relay",
            "telemetry",
        ] {
            assert!(
                table.contains_key(section),
                "README block lacks [{section}]"
            );
        }
    }

    /// A build without the `otel` feature refuses an endpoint it could not honour.
    #[test]
    fn a_telemetry_endpoint_needs_the_otel_feature() {
        let result = Config::from_toml_str("[telemetry]\nendpoint = \"http://127.0.0.1:4317\"\n");
        if cfg!(feature = "otel") {
            assert!(result.is_ok(), "{result:?}");
        } else {
            assert_eq!(
                bad_key("[telemetry]\nendpoint = \"http://127.0.0.1:4317\"\n"),
                "telemetry.endpoint"
            );
        }
    }

    #[test]
    fn secret_files_are_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("pw");
        std::fs::write(&password, "hunter2\r\n").unwrap();
        let c = Config::from_toml_str(&format!(
            "[store]\nkind = \"redis\"\nurl = \"redis://h:6379/1\"\npassword_file = {password:?}\n"
        ))
        .unwrap();
        let StoreKind::Redis(redis) = &c.store.kind else {
            panic!("{:?}", c.store.kind)
        };
        assert_eq!(redis.password.as_ref().map(Secret::expose), Some("hunter2"));
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "Debug shows the password"
        );
        // A URL from its file is checked like an inline one, the key named being the file's.
        let url = dir.path().join("url");
        std::fs::write(&url, "http://not-redis\n").unwrap();
        let text = format!("[store]\nkind = \"redis\"\nurl_file = {url:?}\n");
        assert_eq!(bad_key(&text), "store.url_file");
    }

    #[test]
    fn ws_url_defaults_to_the_scheme_swapped_url() {
        let remote = |url: &str, ws: Option<&str>| RemoteBackendConfig {
            url: url.into(),
            timeout: Duration::from_secs(1),
            ws_url: ws.map(str::to_owned),
            ca_file: None,
        };
        assert_eq!(remote("http://h:8179", None).ws_url(), "ws://h:8179");
        assert_eq!(
            remote("https://h/webrest/", None).ws_url(),
            "wss://h/webrest"
        );
        assert_eq!(
            remote("http://h:8179", Some("ws://h:8183/")).ws_url(),
            "ws://h:8183"
        );
        let c = Config::from_toml_str(
            "[backend]\nkind = \"nethcti\"\nurl = \"https://h\"\nws_url = \"ws://127.0.0.1:8183\"",
        )
        .unwrap();
        let BackendConfig::Nethcti(r) = &c.backend else {
            panic!("{:?}", c.backend)
        };
        assert_eq!(r.ws_url(), "ws://127.0.0.1:8183");
        assert_eq!(c.relay, RelayConfig::default());
    }

    #[test]
    fn env_overrides_apply() {
        let env = vec![
            (
                "AUTHGATE_BACKEND__URL".to_owned(),
                "http://127.0.0.1:9".to_owned(),
            ),
            ("AUTHGATE_BACKEND__KIND".to_owned(), "nethcti".to_owned()),
            ("AUTHGATE_LOCKOUT__MAX_FAILURES".to_owned(), "7".to_owned()),
            ("AUTHGATE_TOKENS__ACCESS_TTL".to_owned(), "5m".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
            ("AUTHGATE_LOG".to_owned(), "debug".to_owned()),
            (
                "AUTHGATE_REDIS_PORT".to_owned(),
                "tcp://10.0.0.1:6379".to_owned(),
            ),
        ];
        let c = Config::load(Some(std::path::Path::new("/dev/null")), env).unwrap();
        // (The default backend, `file`, has no url: the kind is overridden too.)
        let BackendConfig::Nethcti(remote) = &c.backend else {
            panic!("{:?}", c.backend)
        };
        assert_eq!(remote.url, "http://127.0.0.1:9");
        assert_eq!(c.lockout.max_failures, 7);
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(300));
    }

    #[test]
    fn env_override_of_unknown_key_is_an_error() {
        let env = vec![("AUTHGATE_TOKENS__NOPE".to_owned(), "1".to_owned())];
        let err = Config::load(Some(std::path::Path::new("/dev/null")), env).unwrap_err();
        assert!(err.to_string().contains("tokens.nope"), "{err}");
    }
}
