//! A socket.io client over a raw WebSocket (tokio-tungstenite), for tests that need to see
//! every frame and close code: the Engine.IO open, the socket.io connect, the `login` event.
//! The real JavaScript client is driven by `tests/js/client.js`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// A connection of either kind (TCP, or a Unix socket listener).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct SocketClient {
    ws: WebSocketStream<Box<dyn Io>>,
}

/// What the client saw next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame's code (1005 when it had none), or 1006 when the connection just ended.
    Closed(u16),
    /// Nothing within the wait.
    Nothing,
}

/// How long a test waits for the next frame by default.
pub const WAIT: Duration = Duration::from_secs(3);

impl SocketClient {
    /// Upgrades at `http://addr{path}` (path with its query) with `headers`; the HTTP status
    /// when the server refuses the upgrade.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, u16> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Self::connect_on(Box::new(tcp), &addr.to_string(), path, headers).await
    }

    /// [`Self::connect`] on the Unix socket at `socket`.
    pub async fn connect_unix(
        socket: &Path,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, u16> {
        let unix = UnixStream::connect(socket).await.expect("connect");
        Self::connect_on(Box::new(unix), "localhost", path, headers).await
    }

    async fn connect_on(
        io: Box<dyn Io>,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, u16> {
        let addr = host;
        let mut request = format!("ws://{host}{path}")
            .into_client_request()
            .expect("request");
        for (k, v) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                http::HeaderValue::from_str(v).expect("header value"),
            );
        }
        match tokio_tungstenite::client_async(request, io).await {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("upgrade at {addr}{path} failed: {e}"),
        }
    }

    /// Connects at `/socket.io/` as socket.io-client does and completes the Engine.IO open
    /// and the socket.io connect.
    pub async fn open(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr, "/socket.io/?EIO=4&transport=websocket", &[])
            .await
            .expect("upgrade");
        c.handshake().await;
        c
    }

    /// [`Self::open`] on the Unix socket at `socket`.
    pub async fn open_unix(socket: &Path) -> Self {
        let mut c = Self::connect_unix(socket, "/socket.io/?EIO=4&transport=websocket", &[])
            .await
            .expect("upgrade");
        c.handshake().await;
        c
    }

    /// Engine.IO open (`0{...}`), then socket.io connect (`40` -> `40{"sid"}`).
    pub async fn handshake(&mut self) {
        match self.next().await {
            Seen::Text(t) if t.starts_with("0{") => {}
            other => panic!("expected the Engine.IO open packet, got {other:?}"),
        }
        self.send("40").await;
        match self.next().await {
            Seen::Text(t) if t.starts_with("40{") => {}
            other => panic!("expected the socket.io connect answer, got {other:?}"),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.send(Message::Binary(bytes.into())).await;
    }

    /// Emits `login` as the NethVoice client does.
    pub async fn login(&mut self, user: &str, token: &str) {
        let frame = format!(
            "42{}",
            json!(["login", {"accessKeyId": user, "token": token, "uaType": "desktop"}])
        );
        self.send(&frame).await;
    }

    /// The next data frame or close, skipping Engine.IO pings (answered with a pong).
    pub async fn next_within(&mut self, wait: Duration) -> Seen {
        loop {
            let Ok(next) = tokio::time::timeout(wait, self.ws.next()).await else {
                return Seen::Nothing;
            };
            return match next {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    let _ = self.ws.send(Message::text("3")).await;
                    continue;
                }
                Some(Ok(Message::Text(t))) => Seen::Text(t.to_string()),
                Some(Ok(Message::Binary(b))) => Seen::Binary(b.to_vec()),
                Some(Ok(Message::Close(f))) => Seen::Closed(f.map_or(1005, |f| f.code.into())),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => Seen::Closed(1006),
            };
        }
    }

    pub async fn next(&mut self) -> Seen {
        self.next_within(WAIT).await
    }

    /// Logs in and expects `authe_ok`.
    pub async fn login_ok(&mut self, user: &str, token: &str) {
        self.login(user, token).await;
        assert_eq!(
            self.next().await,
            Seen::Text(r#"42["authe_ok"]"#.into()),
            "login of {user} refused"
        );
    }

    /// Expects nethcti's refusal: `401`, the disconnect packet, a 1008 close.
    pub async fn expect_refused(&mut self) {
        assert_eq!(
            self.next().await,
            Seen::Text(r#"42["401",{"message":"unauthorized access"}]"#.into())
        );
        assert_eq!(self.next().await, Seen::Text("41".into()));
        assert_eq!(self.next().await, Seen::Closed(1008));
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The JSON of a socket.io event frame `42[...]` / ack `43<id>[...]`.
pub fn payload(frame: &str) -> Value {
    let start = frame.find('[').expect("a socket.io packet with data");
    serde_json::from_str(&frame[start..]).expect("JSON")
}
