//! What the listeners do with peers that take and do not give: headers sent slowly, a
//! keep-alive connection left idle, more connections than the cap, HTTP/2 streams opened and
//! never finished. Each is held for a bounded time only, and never more of them than the caps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::app::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long `stream` stays open without the server saying anything: `Some(elapsed)` when the
/// server closed it within `within`, `None` when it was still open then.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            within.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            // A response (a 408, or the answer to a request): keep reading until the close.
            Ok(Ok(_)) => {}
        }
    }
}

/// The headers of a gRPC `Check` call, as an HTTP/2 client opens the stream.
fn check_request(app: &TestApp) -> http::Request<()> {
    http::Request::post(format!(
        "http://{}/envoy.service.auth.v3.Authorization/Check",
        app.grpc_addr()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap()
}

async fn app_with(edit: impl FnOnce(&mut authgate::config::Config)) -> TestApp {
    TestApp::builder().config(edit).start().await
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_are_cut_off() {
    let app = app_with(|c| c.listen.header_timeout = Duration::from_millis(500)).await;
    // Headers that never end.
    let mut slow = TcpStream::connect(app.http_addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let closed = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "slow headers held for 5 s");
    // A keep-alive connection after its request: closed once idle for the same time.
    let mut idle = TcpStream::connect(app.http_addr()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let closed = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "idle keep-alive connection held for 5 s");
    app.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_place() {
    let app = app_with(|c| c.listen.max_connections = 2).await;
    let first = TcpStream::connect(app.http_addr()).await.unwrap();
    let _second = TcpStream::connect(app.http_addr()).await.unwrap();
    // The third is taken by the kernel but not served while two are open.
    let mut third = TcpStream::connect(app.http_addr()).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let waited =
        tokio::time::timeout(Duration::from_millis(700), third.read_to_end(&mut buf)).await;
    assert!(waited.is_err(), "served past the cap: {buf:?}");
    // One leaves: the third is served.
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf))
        .await
        .expect("served once a place was free")
        .unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"), "{buf:?}");
    app.shutdown().await;
}

/// gRPC over HTTP/2: at most `max_streams` open streams per connection, and a stream whose
/// request never finishes is answered (and freed) after `request_timeout`.
#[tokio::test]
async fn grpc_streams_are_capped_and_half_open_ones_time_out() {
    const STREAMS: usize = 8;
    let app = app_with(|c| {
        c.listen.max_streams = STREAMS as u32;
        c.listen.request_timeout = Duration::from_millis(800);
    })
    .await;
    let tcp = TcpStream::connect(app.grpc_addr()).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = connection.ping_pong().unwrap();
    tokio::spawn(connection);
    // A ping answered: the server's SETTINGS (sent first) are in force.
    ping.ping(h2::Ping::opaque()).await.unwrap();
    let check = || check_request(&app);
    // Open as many streams as allowed, each with headers and no message (never ended), and
    // one more, which the client library holds back until the server frees a stream.
    let mut client = client.ready().await.unwrap();
    let mut pending = Vec::new();
    let started = Instant::now();
    for _ in 0..=STREAMS {
        client = client.ready().await.unwrap();
        let (response, send) = client.send_request(check(), false).unwrap();
        pending.push((response, send));
    }
    // Each half-open call is answered once request_timeout is over, with a gRPC error; the
    // one held back opens only then, and is answered a timeout later.
    let mut answered = Vec::new();
    for (response, _send) in pending {
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("half-open call answered")
            .unwrap();
        let status = response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(status.is_some_and(|s| s != "0"), "{:?}", response.headers());
        answered.push(started.elapsed());
    }
    let (first, last) = (answered[0], answered[STREAMS]);
    assert!(
        first >= Duration::from_millis(700),
        "answered before the timeout: {answered:?}"
    );
    assert!(
        last >= first + Duration::from_millis(600),
        "the stream past the cap did not wait for a free one: {answered:?}"
    );
    app.shutdown().await;
}

/// Envoy cancels every in-flight Check at once when its clients go away (a load test ends, a
/// deploy drains): a burst of streams reset before the server took them. h2 closes a
/// connection past 20 such resets by default, failing every other Check on it; authgate's
/// gRPC listener allows as many as it allows streams.
#[tokio::test]
async fn a_burst_of_cancelled_checks_leaves_the_connection_serving() {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Request as AttrRequest,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use prost::Message as _;
    let app = TestApp::start().await;
    let tcp = TcpStream::connect(app.grpc_addr()).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = connection.ping_pong().unwrap();
    let driver = tokio::spawn(connection);
    ping.ping(h2::Ping::opaque()).await.unwrap();
    let check = || check_request(&app);
    // One Check message, gRPC-framed: a request without a token (a 401 answer).
    let message = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/api".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    // 300 calls started and cancelled at once.
    let mut client = client.ready().await.unwrap();
    for _ in 0..300 {
        client = client.ready().await.unwrap();
        let (_response, mut send) = client.send_request(check(), false).unwrap();
        send.send_reset(h2::Reason::CANCEL);
    }
    // The connection still serves a whole Check.
    client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(check(), false).unwrap();
    send.send_data(framed.into(), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered")
        .expect("the connection survived the burst");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "{trailers:?}"
    );
    assert!(!driver.is_finished(), "the connection was closed");
    app.shutdown().await;
}
