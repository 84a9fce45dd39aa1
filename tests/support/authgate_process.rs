//! authgate as its own process (the real binary and its `serve` command), in front of the
//! nethcti simulator and its socket.io server: for what an in-process [`super::app::TestApp`]
//! cannot show, its own memory, its log, its answer to SIGTERM.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::nethcti_sim::NethctiSim;
use super::nethcti_socket::NethctiSocket;
use super::process::{ChildProcess, free_ports, local};

pub struct AuthgateProcess {
    pub process: ChildProcess,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl AuthgateProcess {
    /// `authgate serve` with the nethcti backend `sim` and its socket server `socket`,
    /// `extra` TOML appended (e.g. a `[relay]` section), log level `log`.
    pub async fn start(sim: &NethctiSim, socket: &NethctiSocket, extra: &str, log: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2);
        let config = dir.path().join("authgate.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\nhttp = \"127.0.0.1:{}\"\ngrpc = \"127.0.0.1:{}\"\ndrain_grace = \"5s\"\n\
                 max_connections = 20000\n\
                 [backend]\nkind = \"nethcti\"\nurl = {:?}\nws_url = {:?}\n\
                 [store]\npath = {:?}\n{extra}",
                ports[0],
                ports[1],
                sim.url(),
                socket.ws_url(),
                dir.path().join("data"),
            ),
        )
        .unwrap();
        // AUTHGATE_BIN: another build of authgate (say, a release build under a debug test).
        let bin = std::env::var("AUTHGATE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_authgate").to_owned());
        let mut command = Command::new(&bin);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("AUTHGATE_LOG", log);
        let mut process = ChildProcess::spawn("authgate", command, dir.path().join("authgate.log"));
        let addr = local(ports[0]);
        process
            .wait_for_http_ok(addr, "/readyz", Duration::from_secs(30))
            .await;
        Self { process, addr, dir }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("authgate.log")).unwrap_or_default()
    }

    /// `POST /auth/login`: the whole token response.
    pub async fn login(&self, user: &str, password: &str) -> serde_json::Value {
        let resp = super::client::post_json(
            self.addr,
            "/auth/login",
            &json!({"username": user, "password": password}),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.describe());
        resp.json().unwrap()
    }
}
