//! A stand-in for nethcti-server, written from SPEC section 2.3, for tests only.
//!
//! It speaks the legacy login protocol byte for byte: `POST /authentication/login` answers a
//! good password with HTTP 401 and `WWW-Authenticate: Digest <nonce>`, and from then on
//! accepts `Authorization: <user>:<hex HMAC-SHA1(password, "user:password:nonce")>` until the
//! token has been idle longer than the configured timeout. Every other path doubles as the
//! protected legacy application: with a live credential it echoes what reached it as JSON,
//! without one it answers 401. It never talks to anything but the socket it bound on
//! 127.0.0.1 and never sleeps except when a test asks it to be slow.
//!
//! ```ignore
//! mod support;
//! use support::nethcti_sim::NethctiSim;
//!
//! let sim = NethctiSim::start(&[("alice", "secret")], Duration::from_secs(60)).await;
//! let login = format!("{}/authentication/login", sim.url());
//! ```
//!
//! Routes:
//! - `POST /authentication/login`, JSON `{"username","password"}`: 401 + `WWW-Authenticate:
//!   Digest <40 lowercase hex>` on success, 401 without that header on bad credentials, 503
//!   while [`NethctiSim::set_down`] is on, 400 for a body that is not that JSON.
//! - `POST /authentication/logout` with a live credential: 200, the token dies.
//! - `GET /user/me` with a live credential: 200 `{"username",...}`, `username` being the
//!   canonical account name whatever alias the login used (or what
//!   [`NethctiSim::set_me_answer`] says).
//! - `POST /plain/login`, JSON `{"username","password"}`: 200 on good credentials, 401 on bad,
//!   503 while down. Not part of nethcti; it lets the same simulator stand in for the generic
//!   `http` backend kind.
//! - anything else with a live credential: 200 `{"method","path","query","headers"}` (`path`
//!   without the query string, `query` the raw query or null, `headers` an object of lowercase
//!   names; repeated headers are joined with ", "). Without a live credential: 401.
//!
//! Aliases, as the real server has them: a login may name the account by its user name, by
//! `user@domain` (anything after the last `@` is ignored) or by the user's main extension
//! number ([`NethctiSim::set_extension`]; only when no user has that name). The token is
//! computed over the name as typed and only works with it (`Authorization: <typed>:<token>`),
//! as the real server keys its grants on the login name; `/user/me` answers the canonical one.
//!
//! Time: tokens expire on the simulator's own clock, which is the real monotonic clock plus an
//! offset that [`NethctiSim::advance`] moves forward, so tests can expire a session without
//! sleeping.
//!
//! The simulator stops (listener and open connections) when the [`NethctiSim`] is dropped, or
//! when [`NethctiSim::stop`] is awaited (which also waits for the port to close).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Largest request body the simulator reads; anything bigger is answered with 413.
const MAX_BODY: usize = 64 * 1024;

/// The legacy token for `username`/`password`/`nonce`: lowercase hex of
/// HMAC-SHA1(key = password, message = `username:password:nonce`).
pub fn legacy_token(username: &str, password: &str, nonce: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
    let message = format!("{username}:{password}:{nonce}");
    let tag = hmac::sign(&key, message.as_bytes());
    to_hex(tag.as_ref())
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A fresh nonce: 20 random bytes as 40 lowercase hex characters.
fn new_nonce() -> String {
    let mut bytes = [0u8; 20];
    aws_lc_rs::rand::fill(&mut bytes).expect("system random source");
    to_hex(&bytes)
}

/// One request as it reached the simulator.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string, if the request had one.
    pub query: Option<String>,
    /// Header names in lowercase, in arrival order, repeated headers kept apart.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8). Login bodies carry the password: tests only.
    pub body: String,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct Session {
    username: String,
    last_used: Instant,
}

struct State {
    users: HashMap<String, String>,
    /// Main extension number -> user name.
    extensions: HashMap<String, String>,
    /// Live sessions keyed by the full `Authorization` value `user:token`.
    sessions: HashMap<String, Session>,
    idle_timeout: Duration,
    clock_offset: Duration,
    down: bool,
    delay: Duration,
    forced_status: Option<StatusCode>,
    /// What `/user/me` answers a live credential instead of the user's JSON.
    me_answer: Option<(StatusCode, String)>,
    challenge_override: Option<String>,
    requests: Vec<RecordedRequest>,
}

impl State {
    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    fn drop_idle(&mut self) {
        let now = self.now();
        let idle = self.idle_timeout;
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.last_used) <= idle);
    }

    /// The user behind a live `Authorization` value; touching it slides its expiry.
    fn use_session(&mut self, credential: Option<&str>) -> Option<String> {
        self.drop_idle();
        let now = self.now();
        let session = self.sessions.get_mut(credential?)?;
        session.last_used = now;
        Some(session.username.clone())
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the original failure
        // behind a poison error in every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulator. Dropping it stops the server.
pub struct NethctiSim {
    addr: SocketAddr,
    /// Served over TLS (`https://`).
    tls: bool,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl NethctiSim {
    /// Binds 127.0.0.1 on an ephemeral port and serves `users` (name, password).
    pub async fn start(users: &[(&str, &str)], idle_timeout: Duration) -> Self {
        Self::start_with(users, idle_timeout, None).await
    }

    /// [`Self::start`] over TLS with `tls` (see `support::tls`): `url()` is `https://`.
    pub async fn start_tls(
        users: &[(&str, &str)],
        idle_timeout: Duration,
        tls: Arc<rustls::ServerConfig>,
    ) -> Self {
        Self::start_with(users, idle_timeout, Some(tls)).await
    }

    async fn start_with(
        users: &[(&str, &str)],
        idle_timeout: Duration,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                users: users
                    .iter()
                    .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                    .collect(),
                extensions: HashMap::new(),
                sessions: HashMap::new(),
                idle_timeout,
                clock_offset: Duration::ZERO,
                down: false,
                delay: Duration::ZERO,
                forced_status: None,
                me_answer: None,
                challenge_override: None,
                requests: Vec::new(),
            }),
        });
        let https = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let server = tokio::spawn(serve(listener, Arc::clone(&shared), acceptor));
        Self {
            addr,
            tls: https,
            shared,
            server: Some(server),
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` over TLS), no trailing slash.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// While on, logins (`/authentication/login` and `/plain/login`) answer 503.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    /// Every answer waits this long before the request is handled (it is logged at once).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// While set, every request is answered with this status and an empty body, whatever it
    /// asked; sessions are neither created, touched nor ended.
    pub fn set_forced_status(&self, status: Option<u16>) {
        self.shared.lock().forced_status =
            status.map(|s| StatusCode::from_u16(s).expect("valid status code"));
    }

    /// While set, a successful login sends `WWW-Authenticate: <value>` verbatim instead of
    /// `Digest <nonce>` (and remembers no token): for testing clients against a broken server.
    pub fn set_login_challenge(&self, value: Option<&str>) {
        self.shared.lock().challenge_override = value.map(str::to_owned);
    }

    /// While set, `/user/me` answers a live credential with this status and body (as JSON)
    /// instead of the user's JSON: for testing clients against a broken server.
    pub fn set_me_answer(&self, answer: Option<(u16, String)>) {
        self.shared.lock().me_answer = answer
            .map(|(status, body)| (StatusCode::from_u16(status).expect("valid status"), body));
    }

    /// Makes `extension` the main extension number of `user`: a login may use it instead of
    /// the user name.
    pub fn set_extension(&self, user: &str, extension: &str) {
        self.shared
            .lock()
            .extensions
            .insert(extension.to_owned(), user.to_owned());
    }

    /// How many `POST /authentication/login` requests have arrived so far.
    pub fn login_attempts(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == "/authentication/login" || r.path == "/plain/login")
            .count()
    }

    /// Moves the simulator's clock forward, so idle sessions expire without sleeping.
    pub fn advance(&self, by: Duration) {
        self.shared.lock().clock_offset += by;
    }

    /// Everything that reached the simulator so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Number of sessions that are still alive on the simulator's clock.
    pub fn live_tokens(&self) -> usize {
        let mut state = self.shared.lock();
        state.drop_idle();
        state.sessions.len()
    }

    /// Whether a legacy credential `user:token` is live (and touches it), for the socket.io
    /// server of `nethcti_socket.rs`.
    pub fn credential_check(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move |credential| shared.lock().use_session(Some(credential)).is_some()
    }

    /// Ends every session of `username` server-side, as an admin or a restart would.
    pub fn kill_sessions_of(&self, username: &str) {
        self.shared
            .lock()
            .sessions
            .retain(|_, s| s.username != username);
    }
}

impl NethctiSim {
    /// Stops the server and waits until its port is closed (dropping stops it too, but
    /// without waiting).
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for NethctiSim {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every open connection.
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            // A client hanging up mid-request (or refusing our certificate) is not the
            // simulator's problem.
            match acceptor {
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        });
    }
}

fn respond(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn respond_json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return respond(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let delay = {
        let mut state = shared.lock();
        state.requests.push(recorded.clone());
        state.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut state = shared.lock();
    if let Some(status) = state.forced_status {
        return respond(status);
    }
    // UTF-8, so a non-ASCII username round-trips. (Node decodes header bytes as latin1, so
    // the real server may not accept such a username; SPEC 2.3 does not say.)
    let credential = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok());
    match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/authentication/login") => login(&mut state, &body),
        (&Method::POST, "/plain/login") => plain_login(&state, &body),
        (&Method::POST, "/authentication/logout") => match state.use_session(credential) {
            Some(_) => {
                if let Some(c) = credential {
                    state.sessions.remove(c);
                }
                respond(StatusCode::OK)
            }
            None => respond(StatusCode::UNAUTHORIZED),
        },
        (&Method::GET, "/user/me") => match state.use_session(credential) {
            Some(_) if state.me_answer.is_some() => {
                let (status, body) = state.me_answer.clone().unwrap_or_default();
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Some(user) => respond_json(
                StatusCode::OK,
                &serde_json::json!({
                    "username": user,
                    "name": user,
                    "presence": "online",
                    "endpoints": {},
                }),
            ),
            None => respond(StatusCode::UNAUTHORIZED),
        },
        _ => match state.use_session(credential) {
            Some(_) => {
                let mut headers = serde_json::Map::new();
                for (name, value) in &recorded.headers {
                    let joined = match headers.get(name).and_then(|v| v.as_str()) {
                        Some(prev) => format!("{prev}, {value}"),
                        None => value.clone(),
                    };
                    headers.insert(name.clone(), serde_json::Value::String(joined));
                }
                respond_json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "method": recorded.method,
                        "path": recorded.path,
                        "query": recorded.query,
                        "headers": headers,
                    }),
                )
            }
            None => respond(StatusCode::UNAUTHORIZED),
        },
    }
}

/// `{"username": string, "password": string}`, or `None`.
fn parse_credentials(body: &[u8]) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let username = value.get("username")?.as_str()?.to_owned();
    let password = value.get("password")?.as_str()?.to_owned();
    Some((username, password))
}

fn check_password(state: &State, username: &str, password: &str) -> bool {
    state.users.get(username).is_some_and(|p| p == password)
}

/// The account a login name stands for, as nethcti-server resolves it: a user name, else a
/// main extension number, then `user@domain` cut at its last `@`.
fn canonical(state: &State, login_name: &str) -> Option<String> {
    let name = if state.users.contains_key(login_name) {
        login_name
    } else {
        state
            .extensions
            .get(login_name)
            .map_or(login_name, String::as_str)
    };
    let name = name.rsplit_once('@').map_or(name, |(user, _)| user);
    state.users.contains_key(name).then(|| name.to_owned())
}

fn login(state: &mut State, body: &[u8]) -> Response<Full<Bytes>> {
    if state.down {
        return respond(StatusCode::SERVICE_UNAVAILABLE);
    }
    let Some((username, password)) = parse_credentials(body) else {
        return respond(StatusCode::BAD_REQUEST);
    };
    let mut response = respond(StatusCode::UNAUTHORIZED);
    let Some(account) = canonical(state, &username) else {
        return response;
    };
    if !check_password(state, &account, &password) {
        return response;
    }
    let challenge = match &state.challenge_override {
        Some(value) => value.clone(),
        None => {
            let nonce = new_nonce();
            // Keyed on the name as typed, like the real server's grants.
            let token = legacy_token(&username, &password, &nonce);
            let last_used = state.now();
            state.sessions.insert(
                format!("{username}:{token}"),
                Session {
                    username: account,
                    last_used,
                },
            );
            format!("Digest {nonce}")
        }
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

fn plain_login(state: &State, body: &[u8]) -> Response<Full<Bytes>> {
    if state.down {
        return respond(StatusCode::SERVICE_UNAVAILABLE);
    }
    match parse_credentials(body) {
        None => respond(StatusCode::BAD_REQUEST),
        Some((u, p)) if check_password(state, &u, &p) => respond(StatusCode::OK),
        Some(_) => respond(StatusCode::UNAUTHORIZED),
    }
}
