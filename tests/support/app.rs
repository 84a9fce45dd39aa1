//! The whole authgate in-process on port 0, with a manual clock, for flow tests (crates.io's
//! `TestApp` habit). Include with `#[path = "support/app.rs"] mod app;`.
#![allow(dead_code)]

use authgate::clock::Clock;
use authgate::config::Config;
use authgate::server::{Running, start_with_clock};
use serde_json::Value;

pub const T0: u64 = 1_800_000_000;
pub const ALICE_PASSWORD: &str = "alice password";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub config: String,
    pub clock: Clock,
    pub running: Option<Running>,
    pub http: reqwest::Client,
    pub base: String,
}

/// Status, JSON body (Null when none) and headers of a response.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    /// `file` backend with user alice, embedded store; `extra` TOML is appended.
    pub async fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        authgate::backend::file::set_user(&users, "alice", ALICE_PASSWORD).unwrap();
        let config = format!(
            "[listen]\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n[backend]\nkind = \"file\"\nusers_file = {users:?}\n{extra}"
        );
        Self::start_with(dir, config, Clock::manual(T0)).await
    }

    /// Starts with `config` (listen/backend etc.); `[store] path` is set to a directory in `dir`
    /// unless the text has a `[store]` section.
    pub async fn start_with(dir: tempfile::TempDir, config: String, clock: Clock) -> Self {
        let mut text = config.clone();
        if !text.contains("[store]") {
            text.push_str(&format!(
                "\n[store]\npath = {:?}\n",
                dir.path().join("data")
            ));
        }
        let cfg = Config::from_toml_str(&text).unwrap();
        let running = start_with_clock(cfg, clock.clone()).await.unwrap();
        let base = format!("http://{}", running.http_addr);
        Self {
            dir,
            config,
            clock,
            running: Some(running),
            http: reqwest::Client::new(),
            base,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// Stops and starts again on the same directory (state must survive).
    pub async fn restart(mut self) -> Self {
        self.running.take().unwrap().shutdown().await;
        Self::start_with(self.dir, self.config, self.clock).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        bearer: Option<&str>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
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

    /// The check as nginx asks it; returns status and response headers.
    pub async fn authz(&self, path: &str, bearer: Option<&str>) -> Reply {
        let mut req = self
            .http
            .get(format!("{}/authz", self.base))
            .header("x-original-uri", path)
            .header("x-original-method", "GET");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: Value::Null,
        }
    }
}
