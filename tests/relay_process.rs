//! The relay in the real `authgate serve` process: its log (at debug level) names users,
//! sessions and reasons but never a token, the legacy token or the credential; SIGTERM
//! closes a relayed socket with 1001 after the frame in flight, and the process exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::authgate_process::AuthgateProcess;
use support::nethcti_sim::NethctiSim;
use support::nethcti_socket::NethctiSocket;
use support::socket_client::{Seen, SocketClient, payload};

const ALICE: (&str, &str) = ("alice", "alice secret");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_in_the_log_and_sigterm_drains_sockets_with_1001() {
    let sim = NethctiSim::start(&[ALICE], Duration::from_secs(3600)).await;
    let socket = NethctiSocket::start(&sim).await;
    let mut authgate = AuthgateProcess::start(&sim, &socket, "", "debug").await;
    let addr = authgate.addr;
    let tokens = authgate.login(ALICE.0, ALICE.1).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Refused: a refresh token in the login event, a bad one with the upgrade.
    let mut c = SocketClient::open(addr).await;
    c.login("alice", &refresh).await;
    c.expect_refused().await;
    let refused = SocketClient::connect(
        addr,
        "/socket.io/?EIO=4&transport=websocket&access_token=x.y.zzzzzz",
        &[],
    )
    .await
    .err();
    assert_eq!(refused, Some(401));
    // Good: the token with the upgrade, in the query, and in the login event.
    let mut q = SocketClient::connect(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&access_token={access}"),
        &[],
    )
    .await
    .unwrap();
    q.handshake().await;
    q.login_ok("alice", "").await;
    let mut c = SocketClient::open(addr).await;
    c.login_ok("alice", &access).await;
    let legacy = socket
        .frames()
        .iter()
        .find(|f| f.contains("login"))
        .map(|f| payload(f)[1]["token"].as_str().unwrap().to_owned())
        .unwrap();

    // SIGTERM with a frame in flight: it arrives, then the close, 1001.
    assert_eq!(socket.push("last", &json!("words")), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = authgate.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    for client in [&mut c, &mut q] {
        assert!(matches!(client.next().await, Seen::Text(t) if t.contains("last")));
        assert_eq!(client.next().await, Seen::Closed(1001));
    }
    eprintln!("sockets closed {:?} after SIGTERM", started.elapsed());
    assert!(
        socket
            .wait_until(Duration::from_secs(3), |s| s.open() == 0)
            .await
    );
    let status = loop {
        if let Some(status) = authgate.process.exited() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "authgate did not exit after SIGTERM:\n{}",
            authgate.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", authgate.log());

    let log = authgate.log();
    for line in log.lines().filter(|l| l.contains("relay")) {
        eprintln!("{line}");
    }
    assert!(log.contains("relay: socket.io login"), "{log}");
    assert!(log.contains("relay: socket closed"), "{log}");
    assert!(
        log.contains("login_refused") || log.contains("wrong_token_type"),
        "{log}"
    );
    for secret in [
        access.as_str(),
        access.rsplit('.').next().unwrap(),
        refresh.as_str(),
        refresh.rsplit('.').next().unwrap(),
        legacy.as_str(),
        "x.y.zzzzzz",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    authgate.process.stop();
}
