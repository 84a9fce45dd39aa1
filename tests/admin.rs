//! The operator control of SPEC 2.5: `authgate admin ...` (the real binary) against a running
//! `authgate serve` on the embedded store, lockdown across a restart, service tokens on
//! service, token and mfa routes, the admin socket's mode, a TCP admin listener refusing calls
//! without the right bearer secret, the admin API absent from the ext_authz port, and two
//! replicas on a real Redis following one replica's admin actions within a second.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use authgate::config::{Access, Config};
use serde_json::{Value, json};
use support::app::{ALICE_PASSWORD, TestApp, routes};
use support::process::free_port;
use support::redis::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// `authgate <args>` in `dir`: exit code, stdout as JSON (Null if not JSON), stderr.
fn cli(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `authgate admin <args> --config authgate.toml`, which must succeed; its JSON.
fn admin_ok(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", "authgate.toml"]);
    let (code, out, err) = cli(dir, &all);
    assert_eq!(code, 0, "authgate {all:?}: {err}");
    out
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `authgate serve --config authgate.toml` in `dir`, once ready.
    async fn start(dir: &Path) -> Self {
        let child = Command::new(BIN)
            .args(["serve", "--config", "authgate.toml"])
            .current_dir(dir)
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("serve.log"))
                    .unwrap(),
            )
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let text = std::fs::read_to_string(dir.join("authgate.toml")).unwrap();
        let http = text
            .lines()
            .find_map(|l| l.strip_prefix("http = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        let base = format!("http://{http}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = support::http_client()
                .get(format!("{base}/readyz"))
                .send()
                .await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "authgate did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base }
    }

    /// SIGTERM and wait for the exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(self.child.wait().unwrap().success());
    }

    async fn login(&self, dir: &Path) -> reqwest::Response {
        let password = std::fs::read_to_string(dir.join("data/demo-password")).unwrap();
        support::http_client()
            .post(format!("{}/auth/login", self.base))
            .header("user-agent", "admin-test/1")
            .json(&json!({"username": "demo", "password": password.trim()}))
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, dir: &Path) -> String {
        let r = self.login(dir).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// The check as nginx asks it: status and the headers for upstream.
    async fn authz(&self, path: &str, token: &str) -> (u16, reqwest::header::HeaderMap) {
        let r = support::http_client()
            .get(format!("{}/authz", self.base))
            .header("x-original-uri", path)
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.headers().clone())
    }
}

fn write_config(dir: &Path) {
    let (grpc, http) = (free_port(), free_port());
    std::fs::write(
        dir.join("authgate.toml"),
        format!(
            "[listen]\ngrpc = \"127.0.0.1:{grpc}\"\nhttp = \"127.0.0.1:{http}\"\n\
             [backend]\nkind = \"file\"\nusers_file = \"./data/users\"\n\
             [store]\npath = \"./data\"\n\
             [admin]\nmax_token_ttl = \"2h\"\n\
             [[policy.routes]]\npath_prefix = \"/svc/\"\naccess = \"service\"\n\
             [[policy.routes]]\npath_prefix = \"/mfa/\"\naccess = \"mfa\"\n\
             [[policy.routes]]\npath_prefix = \"/auth/\"\naccess = \"public\"\n"
        ),
    )
    .unwrap();
}

fn socket_mode(dir: &Path) -> u32 {
    std::fs::metadata(dir.join("data/admin.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_against_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(dir);

    // Nothing serving: exit 1 with a message; usage errors: 64.
    let (code, out, err) = cli(dir, &["admin", "status", "--config", "authgate.toml"]);
    assert_eq!((code, out), (1, Value::Null));
    assert!(err.contains("nothing serving the admin API"), "{err}");
    for usage in [
        &["admin", "revoke", "--config", "authgate.toml"][..],
        &["admin", "revoke", "--sid", "a", "--user", "b"],
        &["admin", "lockdown", "maybe"],
        &["admin", "lockdown", "off", "--revoke-all"],
        &["admin", "token", "--sub", "svc", "--ttl", "soon"],
        &["admin", "sessions"],
    ] {
        assert_eq!(cli(dir, usage).0, 64, "{usage:?}");
    }

    let server = Server::start(dir).await;
    assert_eq!(socket_mode(dir), 0o600);

    let status = admin_ok(dir, &["status"]);
    assert_eq!(status["lockdown"], false);
    assert_eq!(status["sessions"], 0);
    assert_eq!(status["store"], json!({"up": true}));
    assert_eq!(status["keys"].as_array().unwrap().len(), 1);

    // A user session: listed with what an operator needs, revoked by sid at once.
    let user_token = server.token(dir).await;
    assert_eq!(server.authz("/api/x", &user_token).await.0, 200);
    let sessions = admin_ok(dir, &["sessions", "--user", "demo"]);
    let list = sessions.as_array().unwrap();
    assert_eq!(list.len(), 1, "{sessions}");
    let s = &list[0];
    assert_eq!(s["user"], "demo");
    assert_eq!(s["amr"], json!(["pwd"]));
    assert_eq!(s["client"], "127.0.0.1");
    assert_eq!(s["user_agent"], "admin-test/1");
    assert_eq!(s["last_refresh"], Value::Null);
    assert!(s["created"].as_u64().unwrap() > 1_700_000_000);
    assert!(s["expires_at"].as_u64().unwrap() > s["created"].as_u64().unwrap());
    let sid = s["sid"].as_str().unwrap().to_owned();
    assert_eq!(admin_ok(dir, &["status"])["sessions"], 1);
    assert_eq!(
        admin_ok(dir, &["revoke", "--sid", &sid]),
        json!({"revoked": 1})
    );
    assert_eq!(server.authz("/api/x", &user_token).await.0, 401);
    assert_eq!(
        admin_ok(dir, &["revoke", "--sid", &sid]),
        json!({"revoked": 0})
    );
    assert_eq!(
        admin_ok(dir, &["revoke", "--sid", "no-such-sid"]),
        json!({"revoked": 0})
    );
    // One sid in 64 starts with '-' (random base64url): a value, not an option.
    assert_eq!(
        admin_ok(dir, &["revoke", "--sid", "-NZ2z18yvZP_P9uKoaBiaA"]),
        json!({"revoked": 0})
    );
    assert_eq!(admin_ok(dir, &["sessions", "--user", "-x"]), json!([]));
    assert_eq!(admin_ok(dir, &["sessions", "--user", "demo"]), json!([]));

    // A user-wide revocation.
    let (t1, t2) = (server.token(dir).await, server.token(dir).await);
    assert_eq!(
        admin_ok(dir, &["revoke", "--user", "demo"]),
        json!({"revoked": 2})
    );
    for t in [&t1, &t2] {
        assert_eq!(server.authz("/api/x", t).await.0, 401);
    }

    // A service token: service routes only; upstream gets who and which session, never an
    // Authorization header.
    let minted = admin_ok(dir, &["token", "--sub", "nuxeo", "--ttl", "1h"]);
    let svc = minted["token"].as_str().unwrap().to_owned();
    let svc_sid = minted["sid"].as_str().unwrap().to_owned();
    assert_eq!(minted["expires_in"], 3600);
    let (status, headers) = server.authz("/svc/docs", &svc).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-auth-user"], "nuxeo");
    assert_eq!(headers["x-auth-session"], svc_sid.as_str());
    assert!(headers.get("authorization").is_none());
    assert_eq!(server.authz("/api/x", &svc).await.0, 403);
    assert_eq!(server.authz("/mfa/x", &svc).await.0, 403);
    let me = support::http_client()
        .get(format!("{}/auth/me", server.base))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 403);
    let user_token = server.token(dir).await;
    assert_eq!(server.authz("/svc/docs", &user_token).await.0, 403);
    let listed = admin_ok(dir, &["sessions", "--user", "nuxeo"]);
    assert_eq!(listed[0]["amr"], json!(["svc"]));
    assert_eq!(listed[0]["sid"], svc_sid.as_str());
    // Bounded by admin.max_token_ttl.
    let (code, _, err) = cli(
        dir,
        &[
            "admin",
            "token",
            "--sub",
            "nuxeo",
            "--ttl",
            "3h",
            "--config",
            "authgate.toml",
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("max_token_ttl"), "{err}");

    // Lockdown: logins refused, sessions go on; it survives a restart.
    assert_eq!(
        admin_ok(dir, &["lockdown", "on"]),
        json!({"lockdown": true, "revoked": 0})
    );
    let r = server.login(dir).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "temporarily_unavailable"
    );
    assert_eq!(server.authz("/api/x", &user_token).await.0, 200);
    assert_eq!(server.authz("/svc/docs", &svc).await.0, 200);
    let keys_before = admin_ok(dir, &["status"])["keys"].clone();
    let kid = admin_ok(dir, &["rotate-keys"])["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let keys = admin_ok(dir, &["status"])["keys"].clone();
    assert_eq!(keys[0], kid.as_str());
    assert_eq!(
        keys.as_array().unwrap().len(),
        2,
        "{keys} after {keys_before}"
    );
    assert_eq!(server.authz("/api/x", &user_token).await.0, 200);

    server.stop();
    assert!(!dir.join("data/admin.sock").exists(), "socket left behind");
    let server = Server::start(dir).await;
    assert_eq!(socket_mode(dir), 0o600);
    assert_eq!(admin_ok(dir, &["status"])["lockdown"], true);
    assert_eq!(server.login(dir).await.status(), 503);
    assert_eq!(server.authz("/api/x", &user_token).await.0, 200);

    // --revoke-all: every session, the service token's too.
    let all = admin_ok(dir, &["lockdown", "on", "--revoke-all"]);
    assert_eq!(all["lockdown"], true);
    assert!(all["revoked"].as_u64().unwrap() >= 2, "{all}");
    assert_eq!(server.authz("/api/x", &user_token).await.0, 401);
    assert_eq!(server.authz("/svc/docs", &svc).await.0, 401);
    assert_eq!(admin_ok(dir, &["status"])["sessions"], 0);

    assert_eq!(
        admin_ok(dir, &["lockdown", "off"]),
        json!({"lockdown": false, "revoked": 0})
    );
    assert_eq!(server.login(dir).await.status(), 200);

    // Every action was a security event naming the channel.
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    for event in [
        "admin_revoke",
        "admin_lockdown",
        "admin_token_minted",
        "admin_rotate_keys",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .unwrap_or_else(|| panic!("no {event} in the log"));
        assert!(line.contains("\"channel\":\"unix:"), "{line}");
    }
    assert!(!log.contains(&svc), "a service token in the log");
    server.stop();
}

/// A stale socket file (a server killed with -9) is replaced at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_admin_socket_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(dir.join("data/admin.sock")).unwrap());
    std::fs::set_permissions(
        dir.join("data/admin.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let server = Server::start(dir).await;
    assert_eq!(socket_mode(dir), 0o600);
    assert_eq!(admin_ok(dir, &["status"])["lockdown"], false);
    server.stop();
}

/// The config a client uses to reach `app`'s admin API on TCP with `secret` (None: no
/// token_file at all).
fn tcp_client_config(app: &TestApp, admin: std::net::SocketAddr, secret: Option<&str>) -> Config {
    let mut c = app.config.clone();
    c.admin.listen = Some(admin.to_string());
    c.admin.token_file = secret.map(|s| {
        let path = app.dir.path().join(format!("client-secret-{}", s.len()));
        std::fs::write(&path, s).unwrap();
        path
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_admin_listener_needs_its_bearer_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let secret_file: PathBuf = tmp.path().join("admin-secret");
    std::fs::write(&secret_file, "s3cret-admin-bearer\n").unwrap();
    let app = TestApp::builder()
        .config(|c| {
            c.admin.listen = Some("127.0.0.1:0".into());
            c.admin.token_file = Some(secret_file.clone());
        })
        .start()
        .await;
    let authgate::config::ListenAddr::Tcp(addr) = app.running().admin_addr.clone() else {
        panic!("not on TCP");
    };
    assert_ne!(addr, app.grpc_addr());
    assert_ne!(addr, app.http_addr());
    // Without a secret, with a wrong one (also one that is a prefix of the right one).
    let mut no_secret = tcp_client_config(&app, addr, None);
    no_secret.admin.token_file = None;
    let mut client = authgate::admin::Client::connect(&no_secret).await.unwrap();
    let e = client.status().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        client.set_lockdown(true, true).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    for wrong in ["wrong", "s3cret-admin", "s3cret-admin-bearerX"] {
        let mut client =
            authgate::admin::Client::connect(&tcp_client_config(&app, addr, Some(wrong)))
                .await
                .unwrap();
        assert_eq!(
            client.revoke_user("alice").await.unwrap_err().code(),
            tonic::Code::Unauthenticated,
            "{wrong}"
        );
    }
    // Nothing happened.
    assert!(!app.running().state.login.lockdown());
    // The right one.
    let mut client = authgate::admin::Client::connect(&tcp_client_config(
        &app,
        addr,
        Some("s3cret-admin-bearer"),
    ))
    .await
    .unwrap();
    assert!(!client.status().await.unwrap().lockdown);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_not_on_the_proxy_facing_listeners() {
    let tmp = tempfile::tempdir().unwrap();
    let secret_file = tmp.path().join("admin-secret");
    std::fs::write(&secret_file, "s3cret").unwrap();
    let app = TestApp::start().await;
    let mode = std::fs::metadata(app.config.store.path.join("admin.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for addr in [app.grpc_addr(), app.http_addr()] {
        let mut c = app.config.clone();
        c.admin.listen = Some(addr.to_string());
        c.admin.token_file = Some(secret_file.clone());
        let result = match authgate::admin::Client::connect(&c).await {
            Ok(mut client) => client.set_lockdown(true, true).await.map(|_| ()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        let e = result.expect_err("admin call answered on a proxy-facing listener");
        if addr == app.grpc_addr() {
            // ext_authz's server answers gRPC, and has no such service.
            assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
        }
    }
    assert!(!app.running().state.login.lockdown());
    app.shutdown().await;
}

async fn within<F, Fut>(limit: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if probe().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_redis_follow_one_replicas_admin_actions_within_a_second() {
    let redis = RedisServer::start();
    let svc_routes = routes(&[
        ("/svc/", Access::Service),
        ("/auth/", Access::Public),
        ("/", Access::Token),
    ]);
    let a = TestApp::builder()
        .redis(&redis.url())
        .config(|c| c.policy.routes = svc_routes.clone())
        .start()
        .await;
    let b = TestApp::builder()
        .redis(&redis.url())
        .config(|c| c.policy.routes = svc_routes.clone())
        .keys_from(&a)
        .start()
        .await;
    let mut admin_a = authgate::admin::Client::connect(&a.config).await.unwrap();
    let mut admin_b = authgate::admin::Client::connect(&b.config).await.unwrap();

    // Revoke a session via a: b denies it within a second.
    let t = b.login("alice", ALICE_PASSWORD).await.body;
    let refreshed = b
        .post(
            "/auth/refresh",
            json!({"refresh_token": t["refresh_token"]}),
        )
        .await;
    assert_eq!(refreshed.status, 200);
    let access = refreshed.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(b.authz("/api", Some(&access)).await.status, 200);
    let listed = admin_a.list_sessions("alice").await.unwrap().sessions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].amr, ["pwd"]);
    assert_eq!(listed[0].last_refresh, support::app::T0);
    assert_eq!(admin_a.revoke_session(&listed[0].sid).await.unwrap(), 1);
    let took = within(Duration::from_secs(1), || async {
        b.authz("/api", Some(&access)).await.status == 401
    })
    .await;
    eprintln!("replica b applied the admin revocation after {took:?}");

    // A user-wide revocation via b reaches a.
    let t = a.login("alice", ALICE_PASSWORD).await.body;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(admin_b.revoke_user("alice").await.unwrap(), 1);
    within(Duration::from_secs(1), || async {
        a.authz("/api", Some(&access)).await.status == 401
    })
    .await;

    // A service token minted via b, revoked via a, refused by b.
    let minted = admin_b.mint_service_token("nuxeo", 600).await.unwrap();
    assert_eq!(a.authz("/svc/x", Some(&minted.token)).await.status, 200);
    assert_eq!(a.authz("/api", Some(&minted.token)).await.status, 403);
    assert_eq!(admin_a.status().await.unwrap().sessions, 1);
    assert_eq!(admin_a.revoke_session(&minted.sid).await.unwrap(), 1);
    within(Duration::from_secs(1), || async {
        b.authz("/svc/x", Some(&minted.token)).await.status == 401
    })
    .await;

    // Lockdown via a: b refuses logins within a second, and a replica started later too.
    let t = b.login("alice", ALICE_PASSWORD).await.body;
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    admin_a.set_lockdown(true, false).await.unwrap();
    within(Duration::from_secs(1), || async {
        b.login("alice", ALICE_PASSWORD).await.status == 503
    })
    .await;
    let r = b
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(
        (r.status, r.body["error"].clone()),
        (503, json!("temporarily_unavailable"))
    );
    let c = TestApp::builder()
        .redis(&redis.url())
        .keys_from(&a)
        .start()
        .await;
    assert_eq!(c.login("alice", ALICE_PASSWORD).await.status, 503);
    assert_eq!(
        c.running()
            .state
            .metrics
            .render()
            .lines()
            .find(|l| l.starts_with("authgate_lockdown ")),
        Some("authgate_lockdown 1")
    );
    admin_b.set_lockdown(false, false).await.unwrap();
    within(Duration::from_secs(1), || async {
        a.login("alice", ALICE_PASSWORD).await.status == 200
    })
    .await;
    for app in [a, b, c] {
        app.shutdown().await;
    }
}

/// `lockdown on --revoke-all` while a login is in flight on another replica (its backend
/// slow): that login either is refused or its session is revoked with the rest; no session
/// outlives the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_leaves_no_session_of_a_login_in_flight_elsewhere() {
    use support::nethcti_sim::NethctiSim;
    let redis = RedisServer::start();
    let sim = NethctiSim::start(&[("alice", "secret")], Duration::from_secs(3600)).await;
    let a = TestApp::builder()
        .redis(&redis.url())
        .nethcti(&sim.url(), Duration::from_secs(5))
        .start()
        .await;
    let b = TestApp::builder()
        .redis(&redis.url())
        .nethcti(&sim.url(), Duration::from_secs(5))
        .keys_from(&a)
        .start()
        .await;
    for delay in [Duration::from_millis(300), Duration::from_millis(1200)] {
        sim.set_delay(delay);
        let url = format!("{}/auth/login", b.base);
        let in_flight = tokio::spawn(async move {
            support::http_client()
                .post(url)
                .json(&json!({"username": "alice", "password": "secret"}))
                .send()
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut admin = authgate::admin::Client::connect(&a.config).await.unwrap();
        admin.set_lockdown(true, true).await.unwrap();
        let reply = in_flight.await.unwrap();
        let status = reply.status().as_u16();
        if status == 200 {
            let v: Value = reply.json().await.unwrap();
            let access = v["access_token"].as_str().unwrap().to_owned();
            for app in [&a, &b] {
                within(Duration::from_secs(1), || async {
                    app.authz("/api", Some(&access)).await.status == 401
                })
                .await;
            }
        } else {
            assert_eq!(status, 503, "delay {delay:?}");
        }
        eprintln!("login in flight for {delay:?} during revoke-all: {status}");
        assert_eq!(admin.status().await.unwrap().sessions, 0, "delay {delay:?}");
        sim.set_delay(Duration::ZERO);
        admin.set_lockdown(false, false).await.unwrap();
        within(Duration::from_secs(1), || async {
            !b.running().state.login.lockdown()
        })
        .await;
    }
    a.shutdown().await;
    b.shutdown().await;
    sim.stop().await;
}
