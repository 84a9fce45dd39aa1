//! NethVoice CTI with authgate in place of nethcti-middleware: the shipped
//! `deploy/nethvoice/envoy.yaml` and `deploy/nethvoice/nginx.conf` (ports templated, as
//! [`super::proxy`] renders the configs of `envoy/` and `nginx/`), run by the real Envoy and
//! nginx in front of an in-process authgate and the nethcti simulator with its socket.io
//! server ([`Backend`]). [`NvStack`] is one such stack; [`shipped_authgate_config`] is
//! `deploy/nethvoice/authgate.toml` with only its addresses and paths moved for a test.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, anyhow, ensure};
use authgate::config::Config;
use serde_json::Value;

use super::app::TestApp;
use super::client::{HttpResponse, request};
use super::nethcti_sim::RecordedRequest;
use super::nethcti_socket::Backend;
use super::process::{ChildProcess, local, repo_path};
use super::proxy::{Ports, ProxyKind, envoy_ports, nginx_ports, shipped, spawn_envoy, spawn_nginx};

/// The simulator's users.
pub const ALICE: (&str, &str) = ("alice", "alice secret");
pub const BOB: (&str, &str) = ("bob", "bob secret");

pub fn envoy_config(p: &Ports) -> String {
    shipped("deploy/nethvoice/envoy.yaml", &envoy_ports(p))
}

pub fn nginx_config(p: &Ports) -> String {
    shipped("deploy/nethvoice/nginx.conf", &nginx_ports(p))
}

/// Starts the `deploy/nethvoice/` config for `kind` (Envoy with gRPC ext_authz, or nginx).
pub async fn spawn(kind: ProxyKind, ports: &Ports, dir: &Path) -> ChildProcess {
    match kind {
        ProxyKind::EnvoyGrpc => spawn_envoy("envoy.yaml", &envoy_config(ports), ports, dir).await,
        ProxyKind::Nginx => spawn_nginx(&nginx_config(ports), ports, dir).await,
        ProxyKind::EnvoyHttp | ProxyKind::EnvoyGrpcUnix | ProxyKind::NginxUnix => {
            panic!("deploy/nethvoice/ ships one Envoy (gRPC) and one nginx config, over TCP")
        }
    }
}

/// `deploy/nethvoice/authgate.toml` as authgate loads it, with only what a test must move
/// overridden the way an operator would (`AUTHGATE_*`): listeners on port 0, the simulator's
/// REST and socket.io addresses, the store under `data`; then `extra` overrides.
pub fn shipped_authgate_config(
    sim_url: &str,
    ws_url: &str,
    data: &Path,
    extra: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Config> {
    let path = repo_path("deploy/nethvoice/authgate.toml");
    let env = [
        ("AUTHGATE_LISTEN__GRPC", "127.0.0.1:0".to_owned()),
        ("AUTHGATE_LISTEN__HTTP", "127.0.0.1:0".to_owned()),
        ("AUTHGATE_BACKEND__URL", sim_url.to_owned()),
        ("AUTHGATE_BACKEND__WS_URL", ws_url.to_owned()),
        ("AUTHGATE_STORE__PATH", data.to_string_lossy().into_owned()),
    ];
    let env = env.into_iter().map(|(k, v)| (k.to_owned(), v)).chain(extra);
    Config::load(Some(&path), env).map_err(|e| anyhow!("deploy/nethvoice/authgate.toml: {e}"))
}

/// The payload of a JWT, as the NethVoice client decodes it (no signature check).
pub fn jwt_payload(token: &str) -> Value {
    super::hostile::jwt_part(token, 1)
}

/// A `deploy/nethvoice/` proxy in front of authgate and the nethcti simulator.
pub struct NvStack {
    pub kind: ProxyKind,
    /// Where clients talk to the proxy.
    pub addr: SocketAddr,
    pub app: TestApp,
    pub backend: Backend,
    pub proxy: ChildProcess,
    failures: Vec<String>,
    /// Where the proxy runs (its config, logs, access log).
    pub dir: tempfile::TempDir,
}

impl NvStack {
    /// Puts the `kind` proxy in front of `app` (on the system clock: the proxy lives in real
    /// time) and `backend`.
    pub async fn start(kind: ProxyKind, backend: Backend, app: TestApp) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = Ports::for_app(&app, backend.sim.addr().port());
        let proxy = spawn(kind, &ports, dir.path()).await;
        Self {
            kind,
            addr: local(ports.proxy),
            app,
            backend,
            proxy,
            failures: Vec::new(),
            dir,
        }
    }

    /// `http://127.0.0.1:<proxy port>`, for the socket.io client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One request through the proxy; a JSON `body` is sent with its content type.
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<HttpResponse> {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let bytes = body.map(|b| b.to_string().into_bytes());
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        request(self.addr, method, target, &headers, bytes.as_deref()).await
    }

    /// How many requests have reached the simulator's REST side so far (authgate's own
    /// backend calls included).
    pub fn upstream_count(&self) -> usize {
        self.backend.sim.requests().len()
    }

    /// The requests that reached the simulator since it had seen `before`.
    pub fn upstream_since(&self, before: usize) -> Vec<RecordedRequest> {
        self.backend
            .sim
            .requests()
            .into_iter()
            .skip(before)
            .collect()
    }

    /// Fails unless nothing reached the simulator since `before`.
    pub fn expect_nothing_upstream(&self, what: &str, before: usize) -> anyhow::Result<()> {
        let reached = self.upstream_since(before);
        ensure!(
            reached.is_empty(),
            "{what}: nethcti-server was reached: {:?}",
            reached
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
        Ok(())
    }

    /// The one request that reached the simulator since `before`.
    pub fn expect_one_upstream(
        &self,
        what: &str,
        before: usize,
    ) -> anyhow::Result<RecordedRequest> {
        let mut reached = self.upstream_since(before);
        ensure!(
            reached.len() == 1,
            "{what}: expected one request at nethcti-server, got {:?}",
            reached
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
        reached.pop().context("one request")
    }

    /// Reports the outcome of one named check; failures are kept for [`Self::finish`].
    pub fn record(&mut self, name: &str, outcome: anyhow::Result<()>) {
        match outcome {
            Ok(()) => eprintln!("[{}] ok   {name}", self.kind.name()),
            Err(e) => {
                eprintln!("[{}] FAIL {name}: {e:#}", self.kind.name());
                self.failures.push(format!("{name}: {e:#}"));
            }
        }
    }

    /// Stops everything; panics listing every failed check with the proxy's output.
    pub async fn finish(mut self) {
        self.proxy.ensure_running();
        let log = self.proxy.log_tail();
        let failures = std::mem::take(&mut self.failures);
        self.shutdown().await;
        assert!(
            failures.is_empty(),
            "{} check(s) failed:\n- {}\n\nproxy output (tail):\n{log}",
            failures.len(),
            failures.join("\n- ")
        );
    }

    pub async fn shutdown(mut self) {
        self.proxy.stop();
        self.app.shutdown().await;
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2026-01-02T03:04:05Z`, optional
/// fraction, `Z` or `±hh:mm`), as the NethVoice client reads `expire`.
pub fn rfc3339_unix(text: &str) -> anyhow::Result<i64> {
    let bad = || anyhow!("not an RFC 3339 time: {text:?}");
    let num = |range: std::ops::Range<usize>| -> anyhow::Result<i64> {
        text.get(range)
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let b = text.as_bytes();
    ensure!(
        b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && matches!(b[10], b'T' | b't')
            && b[13] == b':'
            && b[16] == b':',
        bad()
    );
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        ensure!(digits > 0, bad());
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(bad()),
            };
            ensure!(rest.len() == 6 && rest.as_bytes()[3] == b':', bad());
            let h: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let m: i64 = rest[4..6].parse().map_err(|_| bad())?;
            sign * (h * 3600 + m * 60)
        }
    };
    // Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar.
    let (yy, mm_) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm_ + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}
