//! `kill -9` in the middle of writes loses no confirmed write: every logout that answered 204
//! before the kill is still a revocation after a restart on the same embedded store, and so
//! is a confirmed 2FA enrollment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::process::free_port;
use support::totp::totp;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

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

async fn serve(dir: &Path) -> Server {
    let (grpc, http) = (free_port(), free_port());
    let child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir)
        .env("AUTHGATE_LISTEN__GRPC", format!("127.0.0.1:{grpc}"))
        .env("AUTHGATE_LISTEN__HTTP", format!("127.0.0.1:{http}"))
        // Many logins from one address: keep lockout out of the way.
        .env("AUTHGATE_LOCKOUT__MAX_FAILURES", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "authgate did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base }
}

async fn login(c: &reqwest::Client, base: &str, user: &str) -> Value {
    let r = c
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": user, "password": "a password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn authz(c: &reqwest::Client, base: &str, token: &str) -> u16 {
    c.get(format!("{base}/authz/api"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_write_loses_no_confirmed_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("data/users");
    for user in ["alice", "bob"] {
        authgate::backend::file::set_user(&users, user, "a password").unwrap();
    }
    let server = serve(dir.path()).await;
    let c = support::http_client();

    // A confirmed enrollment, of another user (enabling 2FA revokes that user's sessions).
    // The code comes from the tests' own RFC 6238.
    let bob = login(&c, &server.base, "bob").await;
    let bob_access = bob["access_token"].as_str().unwrap().to_owned();
    let enroll: Value = c
        .post(format!("{}/auth/2fa/enroll", server.base))
        .bearer_auth(&bob_access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = enroll["secret"].as_str().unwrap();
    // The server runs on the system clock in another process.
    let now = authgate::clock::Clock::system().now();
    let confirm = c
        .post(format!("{}/auth/2fa/confirm", server.base))
        .bearer_auth(&bob_access)
        .json(&json!({"code": totp(secret, now)}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 200);

    let mut tokens = Vec::new();
    for _ in 0..80 {
        let t = login(&c, &server.base, "alice").await;
        tokens.push(t["access_token"].as_str().unwrap().to_owned());
    }
    // Log the sessions out concurrently and kill -9 while that is going on.
    let confirmed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for chunk in tokens.chunks(20) {
        let chunk = chunk.to_vec();
        let (c, base, confirmed, done) = (
            c.clone(),
            server.base.clone(),
            confirmed.clone(),
            done.clone(),
        );
        workers.push(tokio::spawn(async move {
            for t in chunk {
                let r = c
                    .post(format!("{base}/auth/logout"))
                    .bearer_auth(&t)
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status() == 204
                {
                    confirmed.lock().unwrap().push(t);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    while done.load(Ordering::SeqCst) < 10 {
        tokio::task::yield_now().await;
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for w in workers {
        let _ = w.await;
    }
    let confirmed = confirmed.lock().unwrap().clone();
    assert!(
        confirmed.len() >= 10,
        "only {} logouts confirmed",
        confirmed.len()
    );
    assert!(
        confirmed.len() < tokens.len(),
        "the kill came after every write; nothing was tested"
    );

    let server = serve(dir.path()).await;
    for t in &confirmed {
        assert_eq!(
            authz(&c, &server.base, t).await,
            401,
            "a confirmed logout was lost"
        );
    }
    let r = login(&c, &server.base, "bob").await;
    assert_eq!(r["mfa_required"], true, "a confirmed enrollment was lost");
}
