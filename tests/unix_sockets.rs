//! authgate with `listen.grpc` and `listen.http` on Unix domain sockets (`unix:/path`): the
//! socket files (mode 0660, gone after shutdown), the check over gRPC and HTTP, the login API,
//! what a Unix peer is to lockout and sessions (the client `unix`, unless `trusted_proxies`
//! lists "unix"), the header deadline, the socket.io relay, and `authgate serve`'s SIGTERM
//! drain closing an idle proxy connection at once. The real Envoy and nginx on the shipped
//! Unix socket configs are in `tests/envoy.rs` and `tests/nginx.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use authgate::client_addr::ClientAddr;
use authgate::config::{Config, ListenAddr};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::json;
use support::app::{ALICE_PASSWORD, TestApp};
use support::client::{HttpResponse, request_unix};
use support::nethcti_socket::Backend;
use support::process::ChildProcess;
use support::socket_client::SocketClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Both listeners on sockets in `dir`: (gRPC, HTTP).
fn sockets(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("grpc.sock"), dir.join("http.sock"))
}

fn on_unix(c: &mut Config, dir: &Path) {
    let (grpc, http) = sockets(dir);
    c.listen.grpc = ListenAddr::Unix(grpc);
    c.listen.http = ListenAddr::Unix(http);
}

async fn post(socket: &Path, target: &str, body: &serde_json::Value, xff: &str) -> HttpResponse {
    let mut headers = vec![("Content-Type", "application/json")];
    if !xff.is_empty() {
        headers.push(("X-Forwarded-For", xff));
    }
    request_unix(
        socket,
        "POST",
        target,
        &headers,
        Some(&serde_json::to_vec(body).unwrap()),
    )
    .await
    .unwrap()
}

/// A gRPC client on the Unix socket at `path`.
async fn grpc_client(path: &Path) -> AuthorizationClient<tonic::transport::Channel> {
    let path = path.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://authgate.invalid")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    AuthorizationClient::new(channel)
}

fn check_request(path: &str, bearer: Option<&str>) -> CheckRequest {
    let headers = bearer
        .map(|t| ("authorization".to_owned(), format!("Bearer {t}")))
        .into_iter()
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn checks_and_login_over_unix_sockets_and_the_files_go_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = sockets(dir.path());
    let app = TestApp::builder()
        .config(|c| on_unix(c, dir.path()))
        .start()
        .await;
    assert_eq!(app.running().http_addr, ListenAddr::Unix(http.clone()));
    for path in [&grpc, &http] {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(meta.file_type().is_socket(), "{}", path.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o660,
            "{}",
            path.display()
        );
    }

    let login = post(
        &http,
        "/auth/login",
        &json!({"username": "alice", "password": ALICE_PASSWORD}),
        "",
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.describe());
    let token = login.json().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // HTTP: nginx's question.
    let bearer = format!("Bearer {token}");
    let allow = request_unix(
        &http,
        "GET",
        "/authz",
        &[("X-Original-URI", "/api/x"), ("Authorization", &bearer)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(allow.status, 200, "{}", allow.describe());
    assert_eq!(allow.header("x-auth-user"), Some("alice"));
    let deny = request_unix(
        &http,
        "GET",
        "/authz",
        &[("X-Original-URI", "/api/x")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(deny.status, 401);

    // gRPC: Envoy's question.
    let mut client = grpc_client(&grpc).await;
    let allowed = client
        .check(check_request("/api/x", Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.status.unwrap().code, 0);
    let denied = client
        .check(check_request("/api/x", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.status.unwrap().code, 16, "unauthenticated");

    app.shutdown().await;
    assert!(!grpc.exists(), "the gRPC socket file outlived the server");
    assert!(!http.exists(), "the HTTP socket file outlived the server");
}

/// The client of a request over a Unix socket: `unix` (one lockout bucket for all, the
/// session's client) unless `listen.trusted_proxies` lists "unix"; then X-Forwarded-For.
#[tokio::test]
async fn a_unix_peer_is_the_client_unix_unless_trusted() {
    for trusted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (_, http) = sockets(dir.path());
        let app = TestApp::builder()
            .config(|c| {
                on_unix(c, dir.path());
                c.lockout.max_failures = 2;
                if trusted {
                    c.listen.trusted_proxies = vec![ClientAddr::Unix];
                }
            })
            .start()
            .await;
        // A successful login records the client in its session.
        let ok = post(
            &http,
            "/auth/login",
            &json!({"username": "alice", "password": ALICE_PASSWORD}),
            "192.0.2.9",
        )
        .await;
        assert_eq!(ok.status, 200, "{}", ok.describe());
        let (sessions, _) = app
            .running()
            .state
            .login
            .list_sessions("alice")
            .await
            .unwrap();
        let expected = if trusted { "192.0.2.9" } else { "unix" };
        assert_eq!(sessions[0].client.as_deref(), Some(expected));

        // Two failures "from" 192.0.2.1, each for another user (only the address counts).
        for user in ["nobody1", "nobody2"] {
            let r = post(
                &http,
                "/auth/login",
                &json!({"username": user, "password": "wrong"}),
                "192.0.2.1",
            )
            .await;
            assert_eq!(r.status, 401, "{}", r.describe());
        }
        // "From" 192.0.2.2: its own bucket only when the socket's X-Forwarded-For counts.
        let other = post(
            &http,
            "/auth/login",
            &json!({"username": "nobody3", "password": "wrong"}),
            "192.0.2.2",
        )
        .await;
        let expected = if trusted { 401 } else { 429 };
        assert_eq!(
            other.status,
            expected,
            "trusted = {trusted}: {}",
            other.describe()
        );
        app.shutdown().await;
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off_on_a_unix_socket_too() {
    let dir = tempfile::tempdir().unwrap();
    let (_, http) = sockets(dir.path());
    let app = TestApp::builder()
        .config(|c| {
            on_unix(c, dir.path());
            c.listen.header_timeout = Duration::from_millis(500);
        })
        .start()
        .await;
    let mut slow = UnixStream::connect(&http).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "slow headers held for 5 s");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_relay_works_over_a_unix_socket() {
    let b = Backend::start(&[("alice", "alice secret")]).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, http) = sockets(dir.path());
    let app = b.app().config(|c| on_unix(c, dir.path())).start().await;
    let login = post(
        &http,
        "/auth/login",
        &json!({"username": "alice", "password": "alice secret"}),
        "",
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.describe());
    let token = login.json().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut c = SocketClient::open_unix(&http).await;
    c.login_ok("alice", &token).await;
    assert_eq!(b.socket.logged_in(), vec!["alice".to_owned()]);
    // Events flow from the backend to the client.
    b.socket.push("extenUpdate", &json!({"exten": "201"}));
    let seen = c.next().await;
    assert!(
        matches!(&seen, support::socket_client::Seen::Text(t) if t.contains("extenUpdate")),
        "{seen:?}"
    );
    // Without an IP address, the backend is told none.
    let handshake = b.socket.handshakes().pop().unwrap();
    assert!(
        !handshake
            .headers
            .iter()
            .any(|(name, _)| name == "x-forwarded-for"),
        "{:?}",
        handshake.headers
    );
    c.close().await;
    app.shutdown().await;
}

/// `authgate serve` on Unix sockets, SIGTERM with an idle keep-alive connection open: it is
/// closed at once (no wait for the 30 s grace), the process exits 0, the files are gone.
#[tokio::test]
async fn sigterm_drains_over_unix_sockets_closing_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = sockets(dir.path());
    let config = dir.path().join("authgate.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\ngrpc = \"unix:{}\"\nhttp = \"unix:{}\"\ndrain_grace = \"30s\"\n\
             [backend]\nkind = \"file\"\nusers_file = {:?}\n[store]\npath = {:?}\n",
            grpc.display(),
            http.display(),
            dir.path().join("users"),
            dir.path().join("data"),
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
    command.arg("serve").arg("--config").arg(&config);
    let mut process = ChildProcess::spawn("authgate", command, dir.path().join("authgate.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        process.ensure_running();
        if let Ok(r) = request_unix(&http, "GET", "/readyz", &[], None).await
            && r.status == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready:\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A proxy's idle keep-alive connection, after one request.
    let mut idle = UnixStream::connect(&http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);

    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the idle connection was not closed within 5 s of SIGTERM: {closed:?}"
    );
    let status = loop {
        if let Some(status) = process.exited() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM (grace 30 s):\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}:\n{}", process.log_tail());
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
    assert!(!grpc.exists() && !http.exists(), "socket files left behind");
}
