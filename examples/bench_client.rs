//! Helper of the end-to-end benchmark (`bench/run`): the few things the shell cannot do.
//!
//! - `grpc-body`: writes one gRPC message frame (flag byte, big-endian length, protobuf) holding
//!   the `CheckRequest` Envoy would send for `GET <path>` with a bearer token, for `h2load -d`.
//! - `mint`: mints access tokens with the keys of a configuration (the same `store.path` the
//!   running authgate uses), one per line, each for its own user and session.
//! - `latency`: unloaded latency of gRPC `Check`: one call at a time, percentiles in JSON.
//! - `fill`: sends one `Check` per token of a file (the verified-token cache fills up), JSON
//!   counts of allowed and denied.
//!
//! It measures and prepares; it never decides anything about authgate's answers beyond
//! counting `status.code == 0` (allowed) responses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use authgate::clock::Clock;
use authgate::config::Config;
use authgate::token::{Kind, TokenService};
use clap::{Parser, Subcommand};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use prost::Message as _;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(about = "Helper of bench/run: gRPC request bodies, token minting, latency, cache fill")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the length-prefixed CheckRequest for `h2load -d`.
    GrpcBody {
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "/api/x")]
        path: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint `count` access tokens (distinct user, session and jti) with the config's keys.
    Mint {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Sequential Check calls (one in flight): latency percentiles as JSON.
    Latency {
        #[arg(long)]
        grpc: SocketAddr,
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 1_000)]
        warmup: usize,
    },
    /// One Check per token in `tokens` (one per line), `concurrency` in flight.
    Fill {
        #[arg(long)]
        grpc: SocketAddr,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
}

/// The CheckRequest Envoy's ext_authz filter sends for a plain `GET` through its listener.
fn check_request(token: &str, path: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "app.example"),
        (":method", "GET"),
        (":path", path),
        (":scheme", "http"),
        ("authorization", &format!("Bearer {token}")),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "6f1b8a9e-3c0d-4a39-9a43-2f1c4c1c2d7e"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    method: "GET".into(),
                    headers,
                    path: path.into(),
                    host: "app.example".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn grpc_frame(msg: &CheckRequest) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0); // not compressed
    out.extend_from_slice(
        &u32::try_from(body.len())
            .expect("small message")
            .to_be_bytes(),
    );
    out.extend_from_slice(&body);
    out
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect to the gRPC listener")
}

fn allowed(resp: &CheckResponse) -> bool {
    resp.status.as_ref().is_some_and(|s| s.code == 0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

async fn latency(addr: SocketAddr, token: &str, count: usize, warmup: usize) {
    let mut client = AuthorizationClient::new(channel(addr).await);
    let req = check_request(token, "/api/x");
    let mut samples = Vec::with_capacity(count);
    let mut allowed_n = 0usize;
    for i in 0..warmup + count {
        let started = Instant::now();
        let resp = client
            .check(tonic::Request::new(req.clone()))
            .await
            .expect("Check")
            .into_inner();
        let took = started.elapsed();
        if i >= warmup {
            samples.push(took);
            allowed_n += usize::from(allowed(&resp));
        }
    }
    samples.sort_unstable();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "count": samples.len(),
            "allowed": allowed_n,
            "mean_us": mean * 1e6,
            "p50_us": percentile(&samples, 0.50),
            "p90_us": percentile(&samples, 0.90),
            "p99_us": percentile(&samples, 0.99),
            "p999_us": percentile(&samples, 0.999),
            "max_us": percentile(&samples, 1.0),
        })
    );
}

async fn fill(addr: SocketAddr, tokens: PathBuf, concurrency: usize) {
    let text = std::fs::read_to_string(&tokens).expect("read the tokens file");
    let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
    let client = AuthorizationClient::new(channel(addr).await);
    let started = Instant::now();
    let per_task = tokens.len().div_ceil(concurrency.max(1));
    let mut tasks = Vec::new();
    for chunk in tokens.chunks(per_task.max(1)) {
        let chunk = chunk.to_vec();
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for t in &chunk {
                let resp = client
                    .check(tonic::Request::new(check_request(t, "/api/x")))
                    .await
                    .expect("Check")
                    .into_inner();
                ok += usize::from(allowed(&resp));
            }
            (chunk.len(), ok)
        }));
    }
    let (mut sent, mut ok) = (0, 0);
    for t in tasks {
        let (s, o) = t.await.expect("fill task");
        sent += s;
        ok += o;
    }
    println!(
        "{}",
        serde_json::json!({
            "sent": sent,
            "allowed": ok,
            "denied": sent - ok,
            "secs": started.elapsed().as_secs_f64(),
        })
    );
}

fn mint(config: PathBuf, count: usize, ttl: u64, out: PathBuf) {
    let cfg = Config::load(Some(&config), std::iter::empty()).expect("load the config");
    let tokens = TokenService::new(&cfg, Clock::system()).expect("load the keys");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out).expect("create --out"));
    for i in 0..count {
        let sid = tokens.random_id();
        let (token, _) = tokens
            .mint(
                Kind::Access,
                &format!("user{i:06}"),
                &sid,
                &["pwd"],
                ttl,
                None,
            )
            .expect("mint");
        writeln!(file, "{token}").expect("write");
    }
    file.flush().expect("flush");
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::GrpcBody { token, path, out } => {
            std::fs::write(&out, grpc_frame(&check_request(&token, &path))).expect("write --out");
        }
        Command::Mint {
            config,
            count,
            ttl,
            out,
        } => mint(config, count, ttl, out),
        Command::Latency {
            grpc,
            token,
            count,
            warmup,
        } => runtime.block_on(latency(grpc, &token, count, warmup)),
        Command::Fill {
            grpc,
            tokens,
            concurrency,
        } => runtime.block_on(fill(grpc, tokens, concurrency)),
    }
}
