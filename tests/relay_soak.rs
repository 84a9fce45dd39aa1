//! Soak of the socket.io relay: authgate as its own process (the real binary, so its memory
//! is its own), N idle relayed sockets logged in through it (SOAK_SOCKETS, default 2000), its
//! resident memory per socket, then frames per second through the relay each way, and the
//! CPU authgate spends per frame, with the same traffic straight to the backend as the
//! baseline. Ignored in the normal suite (it takes a minute); run it with
//!
//! ```text
//! cargo test --release --test relay_soak -- --ignored --nocapture
//! ```
//!
//! `AUTHGATE_BIN` picks another authgate binary (say, a release build under a debug test),
//! `SOAK_SOCKETS` and `SOAK_FRAMES` the load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support::authgate_process::AuthgateProcess;
use support::nethcti_sim::NethctiSim;
use support::nethcti_socket::NethctiSocket;
use support::socket_client::{Seen, SocketClient};

const USER: (&str, &str) = ("alice", "alice secret");

/// Resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// User + system CPU time of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line; 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// Frames/s from the backend to the client and back over one socket (`c`, logged in), as
/// counted where they arrive.
async fn frame_rate(c: &mut SocketClient, socket: &NethctiSocket, frames: usize) -> (f64, f64) {
    let started = Instant::now();
    for i in 0..frames {
        socket.push_raw(&format!(r#"42["tick",{i}]"#));
    }
    let mut got = 0;
    while got < frames {
        match c.next().await {
            Seen::Text(t) if t.starts_with(r#"42["tick""#) => got += 1,
            Seen::Text(_) => {}
            other => panic!("after {got} frames: {other:?}"),
        }
    }
    let down = frames as f64 / started.elapsed().as_secs_f64();

    let before = socket.frame_count();
    let started = Instant::now();
    for i in 0..frames {
        c.send(&format!(r#"42["tock",{i}]"#)).await;
    }
    assert!(
        socket
            .wait_until(Duration::from_secs(120), |s| s.frame_count()
                >= before + frames)
            .await
    );
    let up = frames as f64 / started.elapsed().as_secs_f64();
    (down, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: a minute of load; run with --ignored"]
async fn idle_sockets_memory_and_frame_rate() {
    let n: usize = std::env::var("SOAK_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let frames: usize = std::env::var("SOAK_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let fds = raise_fd_limit();
    assert!(
        fds as usize > 2 * n + 100,
        "open-file limit {fds} too low for {n} sockets"
    );

    let sim = NethctiSim::start(&[USER], Duration::from_secs(3600)).await;
    let socket = NethctiSocket::start(&sim).await;
    let mut authgate = AuthgateProcess::start(
        &sim,
        &socket,
        &format!("[relay]\nmax_sockets = {}\n", n + 10),
        "warn",
    )
    .await;
    let addr = authgate.addr;
    let pid = authgate.pid();
    let token = authgate.login(USER.0, USER.1).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Frame rate through the relay, one socket (the only one: pushes go to every socket),
    // which also warms the whole path up.
    let mut one = SocketClient::open(addr).await;
    one.login_ok("alice", &token).await;
    let cpu_before = cpu_secs(pid);
    let (down, up) = frame_rate(&mut one, &socket, frames).await;
    let cpu = cpu_secs(pid) - cpu_before;
    let us_per_frame = cpu * 1e6 / (2 * frames) as f64;
    one.close().await;
    assert!(
        socket
            .wait_until(Duration::from_secs(5), |s| s.open() == 0)
            .await
    );

    // The same traffic straight to the backend, without the relay.
    let mut direct = SocketClient::connect(
        socket_addr(&socket),
        "/socket.io/?EIO=4&transport=websocket",
        &[],
    )
    .await
    .unwrap();
    direct.handshake().await;
    let legacy = sim_login(&sim).await;
    direct.login_ok("alice", &legacy).await;
    let (direct_down, direct_up) = frame_rate(&mut direct, &socket, frames).await;
    direct.close().await;
    assert!(
        socket
            .wait_until(Duration::from_secs(5), |s| s.open() == 0)
            .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);

    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    let mut pending = futures_util::stream::iter((0..n).map(|_| {
        let token = token.clone();
        async move {
            let mut c = SocketClient::open(addr).await;
            c.login_ok("alice", &token).await;
            c
        }
    }))
    .buffer_unordered(64);
    while let Some(c) = pending.next().await {
        clients.push(c);
    }
    let opened = started.elapsed();
    assert!(
        socket
            .wait_until(Duration::from_secs(30), |s| s.logged_in().len() == n)
            .await
    );
    // Idle for a moment, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_open = rss_kib(pid);
    let per_socket = (rss_open.saturating_sub(rss_before)) as f64 * 1024.0 / n as f64;
    eprintln!(
        "{n} idle relayed sockets opened and logged in in {opened:?}; authgate RSS {rss_before} KiB -> {rss_open} KiB: {:.1} KiB per socket",
        per_socket / 1024.0
    );
    // Every socket is still live: one event reaches all of them.
    assert_eq!(socket.push("presence", &json!({"all": true})), n);
    for c in clients.iter_mut().take(50) {
        assert!(matches!(c.next().await, Seen::Text(t) if t.contains("presence")));
    }

    eprintln!(
        "frames/s through the relay: backend->client {down:.0}, client->backend {up:.0}; \
         straight to the backend: {direct_down:.0}, {direct_up:.0} (ratios {:.3}, {:.3}); \
         authgate CPU per relayed frame {us_per_frame:.1} us",
        down / direct_down,
        up / direct_up
    );
    println!(
        "{}",
        json!({
            "sockets": n,
            "rss_before_kib": rss_before,
            "rss_open_kib": rss_open,
            "bytes_per_idle_socket": per_socket.round(),
            "frames": frames,
            "relay_frames_per_s": {"to_client": down.round(), "to_backend": up.round()},
            "direct_frames_per_s": {"to_client": direct_down.round(), "to_backend": direct_up.round()},
            "authgate_cpu_us_per_frame": (us_per_frame * 10.0).round() / 10.0,
        })
    );
    let metrics = support::client::get(addr, "/metrics", &[]).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains(&format!("authgate_relay_sockets {n}")),
        "{}",
        text.lines()
            .filter(|l| l.contains("relay"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(clients);
    authgate.process.stop();
}

fn socket_addr(socket: &NethctiSocket) -> std::net::SocketAddr {
    socket.ws_url().trim_start_matches("ws://").parse().unwrap()
}

/// A legacy token straight from the simulator (for the baseline without authgate).
async fn sim_login(sim: &NethctiSim) -> String {
    let resp = support::http_client()
        .post(format!("{}/authentication/login", sim.url()))
        .json(&json!({"username": USER.0, "password": USER.1}))
        .send()
        .await
        .unwrap();
    let nonce = resp
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches("Digest ")
        .to_owned();
    support::nethcti_sim::legacy_token(USER.0, USER.1, &nonce)
}
