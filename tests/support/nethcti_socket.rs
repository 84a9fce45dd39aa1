//! nethcti-server's live events, for tests only: a socket.io server (Engine.IO 4 over
//! WebSocket, socket.io protocol 5 as socket.io v3 servers speak it), written from SPEC 2.3.
//!
//! After the Engine.IO open packet and the socket.io connect, the client emits
//! `42["login",{"accessKeyId","token","uaType"}]`; the server checks `accessKeyId:token`
//! against the legacy sessions of a [`NethctiSim`] (the token it issued at
//! `/authentication/login`) and answers `42["authe_ok"]`, or `42["401",{"message":
//! "unauthorized access"}]` and disconnects. A logged-in socket gets what [`NethctiSocket::push`]
//! sends, and an `echo` event with an ack id is acknowledged with its own arguments.
//! Everything that reaches it (the handshake request, every frame) is recorded, so a test can
//! assert that no JWT ever arrived.
//!
//! It listens on its own port, as nethcti-server's WebSocket does (REST and socket.io are two
//! listeners there too): point `backend.ws_url` at [`NethctiSocket::ws_url`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::nethcti_sim::NethctiSim;

/// Checks a legacy credential `user:token`.
type Check = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The upgrade request as it reached the server.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// Path and query as requested.
    pub target: String,
    /// Lowercase names, in arrival order.
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    handshakes: Vec<Handshake>,
    /// Every text frame received, in order, from every socket.
    frames: Vec<String>,
    binary: Vec<Vec<u8>>,
    /// Logged-in sockets: id -> (user, sender of frames to push).
    logged_in: HashMap<u64, (String, mpsc::UnboundedSender<String>)>,
    open: usize,
    next_id: u64,
}

struct Shared {
    check: Check,
    ping_interval: Duration,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct NethctiSocket {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl NethctiSocket {
    /// A socket server that accepts the legacy tokens `sim` issued.
    pub async fn start(sim: &NethctiSim) -> Self {
        Self::start_with(Box::new(sim.credential_check()), Duration::from_secs(25)).await
    }

    /// A socket server that accepts the credentials `check` accepts, pinging every
    /// `ping_interval` as Engine.IO servers do.
    pub async fn start_with(check: Check, ping_interval: Duration) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            check,
            ping_interval,
            state: Mutex::new(State::default()),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Self {
            addr,
            shared,
            server: Some(server),
        }
    }

    /// `ws://127.0.0.1:PORT`, for `backend.ws_url`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.shared.lock().handshakes.clone()
    }

    /// Every text frame received so far, oldest first.
    pub fn frames(&self) -> Vec<String> {
        self.shared.lock().frames.clone()
    }

    /// How many text frames were received so far.
    pub fn frame_count(&self) -> usize {
        self.shared.lock().frames.len()
    }

    pub fn binary_frames(&self) -> Vec<Vec<u8>> {
        self.shared.lock().binary.clone()
    }

    /// Users of the logged-in sockets.
    pub fn logged_in(&self) -> Vec<String> {
        self.shared
            .lock()
            .logged_in
            .values()
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.shared.lock().open
    }

    /// Emits `event` with `data` to every logged-in socket; how many it reached.
    pub fn push(&self, event: &str, data: &Value) -> usize {
        let frame = format!("42{}", json!([event, data]));
        self.push_raw(&frame)
    }

    /// Sends a raw frame to every logged-in socket.
    pub fn push_raw(&self, frame: &str) -> usize {
        let state = self.shared.lock();
        state
            .logged_in
            .values()
            .filter(|(_, tx)| tx.send(frame.to_owned()).is_ok())
            .count()
    }

    /// Whether any frame or handshake header that reached the server contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        let state = self.shared.lock();
        state.frames.iter().any(|f| f.contains(needle))
            || state.handshakes.iter().any(|h| {
                h.target.contains(needle) || h.headers.iter().any(|(_, v)| v.contains(needle))
            })
            || state
                .binary
                .iter()
                .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }

    /// Waits until `cond` holds on the server (polling), at most `within`.
    pub async fn wait_until(&self, within: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cond(self)
    }
}

impl Drop for NethctiSocket {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut sockets = JoinSet::new();
    loop {
        while sockets.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        sockets.spawn(async move {
            let seen = shared.clone();
            // tungstenite's callback signature, Err variant and all.
            #[allow(clippy::result_large_err)]
            let record = move |req: &Request, resp: Response| {
                seen.lock().handshakes.push(Handshake {
                    target: req.uri().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                });
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                return;
            };
            let id = {
                let mut state = shared.lock();
                state.open += 1;
                state.next_id += 1;
                state.next_id
            };
            socket(&shared, id, ws).await;
            let mut state = shared.lock();
            state.open -= 1;
            state.logged_in.remove(&id);
        });
    }
}

/// One client, as nethcti-server's socket.io handles it.
async fn socket(
    shared: &Shared,
    id: u64,
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    let (mut tx, mut rx) = ws.split();
    let sid = format!("eio{id:08}");
    let open = json!({
        "sid": sid,
        "upgrades": [],
        "pingInterval": shared.ping_interval.as_millis() as u64,
        "pingTimeout": 20000,
        "maxPayload": 1_000_000,
    });
    if tx.send(Message::text(format!("0{open}"))).await.is_err() {
        return;
    }
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<String>();
    let mut ping = tokio::time::interval(shared.ping_interval);
    ping.tick().await;
    loop {
        let frame = tokio::select! {
            pushed = push_rx.recv() => {
                let Some(frame) = pushed else { return };
                if tx.send(Message::text(frame)).await.is_err() {
                    return;
                }
                continue;
            }
            _ = ping.tick() => {
                if tx.send(Message::text("2")).await.is_err() {
                    return;
                }
                continue;
            }
            incoming = rx.next() => incoming,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Binary(b))) => {
                shared.lock().binary.push(b.to_vec());
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        };
        shared.lock().frames.push(text.clone());
        let replies = answer(shared, id, &sid, &text, &push_tx);
        for reply in replies {
            let close = reply.is_empty();
            if close {
                let _ = tx.send(Message::Close(None)).await;
                return;
            }
            if tx.send(Message::text(reply)).await.is_err() {
                return;
            }
        }
    }
}

/// The frames to answer `text` with; an empty string closes the socket.
fn answer(
    shared: &Shared,
    id: u64,
    sid: &str,
    text: &str,
    push: &mpsc::UnboundedSender<String>,
) -> Vec<String> {
    match text {
        "2" => return vec!["3".into()],
        "3" => return Vec::new(),
        "1" | "41" => return vec![String::new()],
        _ => {}
    }
    if let Some(rest) = text.strip_prefix("40") {
        let nsp = rest.split_once(',').map_or("", |(n, _)| n);
        let nsp = if nsp.starts_with('/') {
            format!("{nsp},")
        } else {
            String::new()
        };
        return vec![format!("40{nsp}{}", json!({ "sid": format!("s{sid}") }))];
    }
    let Some(rest) = text.strip_prefix("42") else {
        return Vec::new();
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (ack, body) = rest.split_at(digits);
    let Ok(Value::Array(args)) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let event = args.first().and_then(Value::as_str).unwrap_or("");
    let logged_in = shared.lock().logged_in.contains_key(&id);
    match event {
        "login" => {
            let user = args[1..]
                .first()
                .and_then(|o| o.get("accessKeyId"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let token = args[1..]
                .first()
                .and_then(|o| o.get("token"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !user.is_empty() && (shared.check)(&format!("{user}:{token}")) {
                shared
                    .lock()
                    .logged_in
                    .insert(id, (user.to_owned(), push.clone()));
                vec![r#"42["authe_ok"]"#.into()]
            } else {
                vec![
                    r#"42["401",{"message":"unauthorized access"}]"#.into(),
                    "41".into(),
                    String::new(),
                ]
            }
        }
        "echo" if logged_in && !ack.is_empty() => {
            vec![format!("43{ack}{}", Value::Array(args[1..].to_vec()))]
        }
        _ => Vec::new(),
    }
}

/// The legacy simulator with its socket.io server, and an authgate builder pointed at both:
/// what every relay test starts from.
pub struct Backend {
    pub sim: NethctiSim,
    pub socket: NethctiSocket,
}

impl Backend {
    pub async fn start(users: &[(&str, &str)]) -> Self {
        let sim = NethctiSim::start(users, Duration::from_secs(3600)).await;
        let socket = NethctiSocket::start(&sim).await;
        Self { sim, socket }
    }

    /// A [`TestApp`](super::app::TestApp) builder with the nethcti backend and its relay.
    pub fn app(&self) -> super::app::TestAppBuilder {
        super::app::TestApp::builder()
            .nethcti(&self.sim.url(), Duration::from_secs(2))
            .nethcti_ws(&self.socket.ws_url())
    }
}
