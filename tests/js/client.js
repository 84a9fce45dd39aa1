// The real socket.io JavaScript client (socket.io-client 4.x, as NethVoice CTI uses it),
// driven by tests/relay_js.rs: connects to URL over WebSocket, logs in with the `login`
// event carrying TOKEN (as NethVoice does), emits `echo` with an ack once logged in, and
// prints one JSON line per thing it sees, for the Rust test to read:
//   {"ev":"connect"} {"ev":"event","name":...,"args":[...]} {"ev":"ack","args":[...]}
//   {"ev":"disconnect","reason":...} {"ev":"connect_error","message":...}
// Environment: URL (http://host:port), SIO_PATH (default /socket.io/), LOGIN_USER, TOKEN,
// QUERY_TOKEN (sent as ?access_token=, optional). Installed by scripts/install-test-deps
// under target/node; the test sets NODE_PATH.
"use strict";

const { io } = require("socket.io-client");

const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const env = process.env;

const query = env.QUERY_TOKEN ? { access_token: env.QUERY_TOKEN } : {};
const socket = io(env.URL, {
  path: env.SIO_PATH || "/socket.io/",
  transports: ["websocket"],
  reconnection: false,
  timeout: 5000,
  query,
});

socket.on("connect", () => {
  out({ ev: "connect" });
  socket.emit("login", {
    accessKeyId: env.LOGIN_USER,
    token: env.TOKEN || "",
    uaType: "desktop",
  });
});

socket.on("authe_ok", () => {
  out({ ev: "event", name: "authe_ok", args: [] });
  socket.emit("echo", { n: 1 }, "two", (...args) => out({ ev: "ack", args }));
});

socket.onAny((name, ...args) => {
  if (name !== "authe_ok") out({ ev: "event", name, args });
});

socket.on("connect_error", (err) => {
  out({ ev: "connect_error", message: String(err && err.message) });
  process.exit(0);
});

socket.on("disconnect", (reason) => {
  out({ ev: "disconnect", reason });
  setTimeout(() => process.exit(0), 50);
});
