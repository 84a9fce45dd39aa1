//! One relayed socket: the dial to the backend and the frame pump between the two WebSockets.
//! One task per socket, one frame in flight per direction (so the buffers are the two
//! WebSockets' own, bounded by `relay.max_frame_bytes`), and every way out goes through one
//! closing sequence that says why.

use crate::client_addr::ClientAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::ws::{self, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self as ts, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::protocol::{self, ClientFrame};
use super::{
    Admission, CLOSE_TIMEOUT, CloseReason, READ_BUFFER, Refusal, Relay, WRITE_TIMEOUT, legacy_login,
};
use crate::token::Verified;

/// The backend side of a relayed socket, dialled before the client's upgrade is answered.
pub struct Upstream(WebSocketStream<MaybeTlsStream<TcpStream>>);

/// The WebSocket settings of both sides: small read buffers, eager writes, the frame bound.
pub fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(max_frame_bytes + 64 * 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Dials `{ws_url}/socket.io/?<query>` (`query` already without token parameters), with
/// `X-Forwarded-For` naming the client (when it has an IP address: not for `unix`) and
/// nothing else of the client's request.
pub async fn dial(relay: &Relay, query: &str, client: ClientAddr) -> Result<Upstream, String> {
    let url = if query.is_empty() {
        relay.socket_url.clone()
    } else {
        format!("{}?{query}", relay.socket_url)
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("invalid backend socket url: {e}"))?;
    if let Some(Ok(v)) = client
        .ip()
        .map(|ip| http::HeaderValue::from_str(&ip.to_string()))
    {
        request.headers_mut().insert("x-forwarded-for", v);
    }
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config(relay.limits.max_frame_bytes)),
        true,
        relay.tls.clone().map(tokio_tungstenite::Connector::Rustls),
    );
    match timeout(relay.dial_timeout, connect).await {
        Ok(Ok((stream, _))) => Ok(Upstream(stream)),
        // The error names the URL at most (no token is ever in it).
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// How a direction of the pump ended.
enum End {
    Client(Option<ws::CloseFrame>),
    Backend(Option<ts::protocol::CloseFrame>),
    Revoked,
    /// Why, and the user the client claimed (`accessKeyId`; never its token).
    LoginRefused(Refusal, String),
    LoginTimeout,
    TooLarge,
    SlowPeer,
    Draining,
    Unavailable,
}

/// Relays frames between `client` and `upstream` until one side closes, the session ends
/// or authgate drains. `bound` is the session authenticated at upgrade, if any.
pub async fn run(
    admission: Admission,
    client: WebSocket,
    upstream: Upstream,
    bound: Option<Arc<Verified>>,
    peer: ClientAddr,
) {
    let relay = admission.relay().clone();
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.0.split();
    let session: OnceLock<Arc<Verified>> = OnceLock::new();
    if let Some(v) = bound {
        let _ = session.set(v);
    }
    let mut revocations = relay.checker.revocations.subscribe();
    let mut draining = relay.draining.subscribe();
    let metrics = &relay.metrics;

    let client_to_backend = async {
        let deadline = Instant::now() + relay.limits.login_timeout;
        let mut logged_in = false;
        loop {
            let next = if logged_in {
                c_rx.next().await
            } else {
                match timeout_at(deadline, c_rx.next()).await {
                    Ok(next) => next,
                    Err(_) => return End::LoginTimeout,
                }
            };
            let message = match next {
                None => return End::Client(None),
                Some(Err(e)) => return client_error(&e),
                Some(Ok(m)) => m,
            };
            let out = match message {
                ws::Message::Text(text) => match protocol::classify(text.as_str()) {
                    ClientFrame::EngineIo => to_backend_text(text),
                    ClientFrame::Connect(frame) => ts::Message::text(frame.into_owned()),
                    ClientFrame::Login(login) => {
                        let verified = match login_session(&relay, &login, session.get()).await {
                            Ok(v) => v,
                            Err(Refusal::Unavailable) => return End::Unavailable,
                            Err(why) => return End::LoginRefused(why, claimed(&login)),
                        };
                        let Some((user, legacy)) = legacy_login(&verified) else {
                            return End::LoginRefused(Refusal::NoCredential, claimed(&login));
                        };
                        let frame = login.rewrite(user, legacy);
                        if !logged_in {
                            tracing::info!(user = %verified.sub, sid = %verified.sid, client = %peer, "relay: socket.io login");
                        }
                        let _ = session.set(verified.clone());
                        // A revocation between the check and `set` woke nobody: look again.
                        if relay.checker.revocations.is_revoked(&verified.sid) {
                            return End::Revoked;
                        }
                        logged_in = true;
                        ts::Message::text(frame)
                    }
                    ClientFrame::Other if logged_in => to_backend_text(text),
                    ClientFrame::Other => continue,
                },
                ws::Message::Binary(b) if logged_in => ts::Message::Binary(b),
                ws::Message::Binary(_) => continue,
                ws::Message::Close(frame) => return End::Client(frame),
                // WebSocket pings are per hop; the library answers them.
                ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
            };
            match timeout(WRITE_TIMEOUT, u_tx.send(out)).await {
                Ok(Ok(())) => metrics.relay_frames[0].inc(),
                Ok(Err(_)) => return End::Backend(None),
                Err(_) => return End::SlowPeer,
            };
        }
    };

    let backend_to_client = async {
        loop {
            let message = match u_rx.next().await {
                None => return End::Backend(None),
                Some(Err(e)) => return backend_error(&e),
                Some(Ok(m)) => m,
            };
            let out = match message {
                ts::Message::Text(text) => match ws::Utf8Bytes::try_from(Bytes::from(text)) {
                    Ok(t) => ws::Message::Text(t),
                    Err(_) => return End::Backend(None),
                },
                ts::Message::Binary(b) => ws::Message::Binary(b),
                ts::Message::Close(frame) => return End::Backend(frame),
                ts::Message::Ping(_) | ts::Message::Pong(_) | ts::Message::Frame(_) => continue,
            };
            match timeout(WRITE_TIMEOUT, c_tx.send(out)).await {
                Ok(Ok(())) => metrics.relay_frames[1].inc(),
                Ok(Err(_)) => return End::Client(None),
                Err(_) => return End::SlowPeer,
            };
        }
    };

    let revoked = async {
        loop {
            if let Some(v) = session.get()
                && relay.checker.revocations.is_revoked(&v.sid)
            {
                return End::Revoked;
            }
            if revocations.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };

    let drain = async {
        let _ = draining.wait_for(|d| *d).await;
        End::Draining
    };

    let end = tokio::select! {
        end = client_to_backend => end,
        end = backend_to_client => end,
        end = revoked => end,
        end = drain => end,
    };

    let (reason, to_client, to_backend) = closing(&end);
    let who = session.get();
    match &end {
        End::LoginRefused(why, claimed) => {
            tracing::info!(user = %claimed, client = %peer, why = why.label(), "relay: socket.io login refused");
        }
        _ => {
            tracing::info!(user = who.map(|v| &*v.sub), sid = who.map(|v| &*v.sid), client = %peer, reason = reason.as_str(), "relay: socket closed");
        }
    }
    relay.record_close(reason);

    // The client: what it must be told, then the close frame (after any frame in flight).
    let client_side = async {
        for text in to_client.packets {
            let _ = c_tx
                .send(ws::Message::Text(ws::Utf8Bytes::from(text)))
                .await;
        }
        let close = match (end, to_client.close) {
            (End::Backend(Some(frame)), None) => ws::CloseFrame {
                code: sendable(u16::from(frame.code)),
                reason: ws::Utf8Bytes::from(frame.reason.as_str()),
            },
            (_, Some((code, reason))) => ws::CloseFrame {
                code,
                reason: ws::Utf8Bytes::from_static(reason),
            },
            (_, None) => ws::CloseFrame {
                code: 1000,
                reason: ws::Utf8Bytes::from_static(""),
            },
        };
        let _ = c_tx.send(ws::Message::Close(Some(close))).await;
        let _ = c_tx.close().await;
    };
    let backend_side = async {
        let frame = ts::protocol::CloseFrame {
            code: CloseCode::from(to_backend),
            reason: ts::Utf8Bytes::from_static(""),
        };
        let _ = u_tx.send(ts::Message::Close(Some(frame))).await;
        let _ = u_tx.close().await;
    };
    let _ = timeout(
        CLOSE_TIMEOUT,
        futures_util::future::join(client_side, backend_side),
    )
    .await;
    drop(admission);
}

/// What the client gets when the relay closes: socket.io packets, then a close code.
struct ToClient {
    packets: Vec<&'static str>,
    /// `None`: pass on the backend's own close frame (or a normal close).
    close: Option<(u16, &'static str)>,
}

/// The metrics reason, what the client is told, and the close code for the backend.
fn closing(end: &End) -> (CloseReason, ToClient, u16) {
    let tell = |packets: Vec<&'static str>, code: u16, why: &'static str| ToClient {
        packets,
        close: Some((code, why)),
    };
    match end {
        End::Client(frame) => (
            CloseReason::Client,
            tell(Vec::new(), 1000, ""),
            frame.as_ref().map_or(1000, |f| sendable(f.code)),
        ),
        End::Backend(_) => (
            CloseReason::Backend,
            ToClient {
                packets: Vec::new(),
                close: None,
            },
            1000,
        ),
        End::Revoked => (
            CloseReason::Revoked,
            tell(vec![protocol::DISCONNECT], 1008, "session ended"),
            1000,
        ),
        End::LoginRefused(..) => (
            CloseReason::LoginRefused,
            tell(
                vec![protocol::UNAUTHORIZED, protocol::DISCONNECT],
                1008,
                "unauthorized",
            ),
            1000,
        ),
        End::LoginTimeout => (
            CloseReason::LoginTimeout,
            tell(Vec::new(), 1008, "no login"),
            1000,
        ),
        End::TooLarge => (
            CloseReason::TooLarge,
            tell(Vec::new(), 1009, "message too big"),
            1001,
        ),
        End::SlowPeer => (
            CloseReason::SlowPeer,
            tell(Vec::new(), 1011, "peer too slow"),
            1001,
        ),
        End::Draining => (
            CloseReason::Draining,
            tell(Vec::new(), 1001, "going away"),
            1001,
        ),
        End::Unavailable => (
            CloseReason::Unavailable,
            tell(Vec::new(), 1013, "try again later"),
            1001,
        ),
    }
}

/// The session a `login` event may bind: its token through the full check, or, with an
/// empty token, the session authenticated at upgrade; `accessKeyId` must be its `sub`, and a
/// socket bound to one session never changes to another.
async fn login_session(
    relay: &Relay,
    login: &protocol::LoginEvent,
    bound: Option<&Arc<Verified>>,
) -> Result<Arc<Verified>, Refusal> {
    let verified = match (login.token(), bound) {
        ("", Some(b)) => {
            if relay.checker.revocations.is_revoked(&b.sid) {
                return Err(Refusal::Denied(crate::decision::Denial::Revoked));
            }
            b.clone()
        }
        ("", None) => return Err(Refusal::Denied(crate::decision::Denial::NoToken)),
        (token, _) => relay.authorize(token).await?,
    };
    if bound.is_some_and(|b| b.sid != verified.sid) {
        return Err(Refusal::OtherUser);
    }
    if login.access_key_id() != &*verified.sub {
        return Err(Refusal::OtherUser);
    }
    Ok(verified)
}

/// A close code that may be sent on (1005, 1006, 1015 and unassigned ones may not).
fn sendable(code: u16) -> u16 {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => code,
        _ => 1000,
    }
}

/// The `accessKeyId` of a login, bounded, for the log.
fn claimed(login: &protocol::LoginEvent) -> String {
    login.access_key_id().chars().take(128).collect()
}

fn to_backend_text(text: ws::Utf8Bytes) -> ts::Message {
    match ts::Utf8Bytes::try_from(Bytes::from(text)) {
        Ok(t) => ts::Message::Text(t),
        // Cannot happen (it was valid UTF-8 on the way in); send nothing rather than panic.
        Err(_) => ts::Message::Text(ts::Utf8Bytes::from_static("6")),
    }
}

fn client_error(e: &axum::Error) -> End {
    if is_capacity(e) {
        End::TooLarge
    } else {
        End::Client(None)
    }
}

fn backend_error(e: &ts::Error) -> End {
    match e {
        ts::Error::Capacity(_) => End::TooLarge,
        _ => End::Backend(None),
    }
}

/// Whether axum's error is tungstenite's "message too long".
fn is_capacity(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(ts::Error::Capacity(_)) = err.downcast_ref::<ts::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}
