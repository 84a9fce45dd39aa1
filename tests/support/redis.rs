//! A real `redis-server` on a free port of 127.0.0.1, for tests; killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{free_port, redis_server_bin};

/// A `redis-server` child process; killed on drop.
pub struct RedisServer {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn_redis(port, dir.path());
        Self { child, port, dir }
    }

    /// A server that speaks only TLS (`--port 0 --tls-port`), presenting `cert`/`key`, and
    /// asks for `password` when given. Debian's redis-server is built with TLS.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path, password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut args: Vec<String> = vec!["--port".into(), "0".into()];
        args.extend(["--tls-port".into(), port.to_string()]);
        for (flag, path) in [
            ("--tls-cert-file", cert),
            ("--tls-key-file", key),
            ("--tls-ca-cert-file", ca),
        ] {
            args.push(flag.into());
            args.push(path.to_str().unwrap().to_owned());
        }
        args.extend(["--tls-auth-clients".into(), "no".into()]);
        if let Some(pw) = password {
            args.extend(["--requirepass".into(), pw.to_owned()]);
        }
        let child = spawn_redis_with(dir.path(), &args, || accepts_tcp(port));
        Self { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A fresh server on the same port (no persistence: it starts empty).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_redis(self.port, self.dir.path());
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_redis(port: u16, dir: &Path) -> Child {
    let args = ["--port".to_owned(), port.to_string()];
    spawn_redis_with(dir, &args, || answers_ping(port))
}

/// redis-server with `args`, bound to 127.0.0.1, without persistence, until `ready`.
fn spawn_redis_with(dir: &Path, args: &[String], ready: impl Fn() -> bool) -> Child {
    let mut child = Command::new(redis_server_bin())
        .args(args)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ready() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            panic!("redis-server {args:?} exited with {status}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server {args:?} was not ready within 10 s");
}

fn accepts_tcp(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
