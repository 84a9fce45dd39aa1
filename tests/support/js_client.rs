//! The real JavaScript socket.io client (`socket.io-client` 4.x under node, running
//! `tests/js/client.js`), as NethVoice CTI and phone-island use it: connects over WebSocket,
//! logs in with the `login` event, and reports each thing it sees as a JSON line that
//! [`JsClient`] reads. Needs node and `scripts/install-test-deps` (which installs
//! socket.io-client under `target/node`).

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::process::repo_path;

/// One run of `tests/js/client.js`.
pub struct JsClient {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<Value>,
}

impl JsClient {
    /// Connects to `url` at socket.io's default path `/socket.io/`.
    pub fn spawn(url: &str, user: &str, token: &str, query_token: Option<&str>) -> Self {
        Self::spawn_at(url, "/socket.io/", user, token, query_token)
    }

    /// Connects to `url` with socket.io's `path` option set to `path` (phone-island opens
    /// `/api/ws`), logs in as `user` with `token` in the `login` event, and sends
    /// `query_token` as `?access_token=` when given.
    pub fn spawn_at(
        url: &str,
        path: &str,
        user: &str,
        token: &str,
        query_token: Option<&str>,
    ) -> Self {
        let modules = std::env::var("SOCKET_IO_CLIENT_MODULES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| repo_path("target/node/node_modules"));
        assert!(
            modules.join("socket.io-client").is_dir(),
            "socket.io-client is not installed under {}: run scripts/install-test-deps",
            modules.display()
        );
        let mut command = Command::new("node");
        command
            .arg(repo_path("tests/js/client.js"))
            .env("NODE_PATH", &modules)
            .env("URL", url)
            .env("SIO_PATH", path)
            .env("LOGIN_USER", user)
            .env("TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(t) = query_token {
            command.env("QUERY_TOKEN", t);
        }
        let mut child = command.spawn().expect("run node (is it installed?)");
        let stdout = child.stdout.take().expect("stdout");
        Self {
            _child: child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// The next line matching `pred`, within `wait`; panics with everything seen otherwise.
    pub async fn expect(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => panic!("client ended before {what}; saw {:?}", self.seen),
                Err(_) => panic!("no {what} within {wait:?}; saw {:?}", self.seen),
            };
            let value: Value = serde_json::from_str(&line).expect("a JSON line");
            self.seen.push(value.clone());
            if pred(&value) {
                return value;
            }
        }
    }

    pub async fn expect_event(&mut self, name: &str) -> Value {
        self.expect(name, Duration::from_secs(5), |v| {
            v["ev"] == "event" && v["name"] == name
        })
        .await
    }

    /// Logged in: `authe_ok`, then the ack of its `echo`.
    pub async fn expect_logged_in(&mut self) {
        self.expect_event("authe_ok").await;
        let ack = self
            .expect("ack", Duration::from_secs(5), |v| v["ev"] == "ack")
            .await;
        assert_eq!(ack["args"], json!([{"n": 1}, "two"]));
    }

    /// nethcti's refusal, then the server's disconnect.
    pub async fn expect_refused(&mut self) {
        let refused = self.expect_event("401").await;
        assert_eq!(refused["args"], json!([{"message": "unauthorized access"}]));
        let gone = self
            .expect("disconnect", Duration::from_secs(3), |v| {
                v["ev"] == "disconnect"
            })
            .await;
        assert_eq!(gone["reason"], "io server disconnect");
        assert!(
            !self.seen.iter().any(|v| v["name"] == "authe_ok"),
            "{:?}",
            self.seen
        );
    }
}
