//! What the relay reads of Engine.IO 4 / socket.io (protocol 5) text frames: pure functions
//! over strings, no I/O, no transport types.
//!
//! Over WebSocket every Engine.IO packet is one frame: a type digit (`0` open, `1` close,
//! `2` ping, `3` pong, `4` message, `5` upgrade, `6` noop) and its data. A `4` message holds a
//! socket.io packet: a type digit (`0` connect, `1` disconnect, `2` event, `3` ack, `4` connect
//! error, `5`/`6` binary event/ack), an optional `/namespace,`, an optional ack id, and JSON.
//! The relay passes frames on untouched, so it only needs to tell apart what may go upstream
//! before a login ([`classify`]), and to rewrite the one event it changes, `login`
//! ([`LoginEvent::rewrite`]).

use serde_json::Value;

/// What the client sent, as far as the relay cares.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// An Engine.IO packet that is not a message (open, close, ping, pong, upgrade, noop).
    EngineIo,
    /// The socket.io connect packet `40[/nsp,]`; the value is the frame to send upstream:
    /// the packet without its auth payload when it had one (that payload is the client's to
    /// authgate, and may carry a token; nethcti-server never reads it).
    Connect(std::borrow::Cow<'a, str>),
    /// The `login` event.
    Login(LoginEvent),
    /// Anything else (other events, acks, disconnects, garbage).
    Other,
}

/// The client's `login` event: `42[/nsp,][id]["login",{"accessKeyId","token",...}]`.
#[derive(Debug, PartialEq, Eq)]
pub struct LoginEvent {
    /// Everything before the JSON array (`42`, namespace, ack id), kept as sent.
    prefix: String,
    /// The event's arguments after the name; the first is the login object.
    args: Vec<Value>,
}

impl LoginEvent {
    /// `accessKeyId` as sent (empty when missing or not a string).
    pub fn access_key_id(&self) -> &str {
        self.field("accessKeyId")
    }

    /// `token` as sent (empty when missing or not a string).
    pub fn token(&self) -> &str {
        self.field("token")
    }

    fn field(&self, name: &str) -> &str {
        self.args
            .first()
            .and_then(|o| o.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The frame for the backend: the same event with `accessKeyId` and `token` replaced by
    /// the legacy ones, every other field and the packet prefix kept.
    pub fn rewrite(&self, access_key_id: &str, legacy_token: &str) -> String {
        let mut args = self.args.clone();
        if let Some(Value::Object(o)) = args.first_mut() {
            o.insert("accessKeyId".into(), Value::from(access_key_id));
            o.insert("token".into(), Value::from(legacy_token));
        }
        let mut array = Vec::with_capacity(args.len() + 1);
        array.push(Value::from("login"));
        array.extend(args);
        format!("{}{}", self.prefix, Value::Array(array))
    }
}

/// The frame nethcti-server sends for a refused login, and the relay in its place.
pub const UNAUTHORIZED: &str = r#"42["401",{"message":"unauthorized access"}]"#;
/// The socket.io disconnect packet (main namespace): the client will not reconnect.
pub const DISCONNECT: &str = "41";

/// Tells apart the client text frames the relay treats differently.
pub fn classify(frame: &str) -> ClientFrame<'_> {
    let mut bytes = frame.bytes();
    match bytes.next() {
        Some(b'0' | b'1' | b'2' | b'3' | b'5' | b'6') => return ClientFrame::EngineIo,
        Some(b'4') => {}
        _ => return ClientFrame::Other,
    }
    let packet = &frame[1..];
    match packet.as_bytes().first() {
        Some(b'0') => ClientFrame::Connect(connect_without_payload(frame)),
        Some(b'2') => login_event(packet).map_or(ClientFrame::Other, ClientFrame::Login),
        _ => ClientFrame::Other,
    }
}

/// `40[/nsp,][payload]` -> `40[/nsp,]`.
fn connect_without_payload(frame: &str) -> std::borrow::Cow<'_, str> {
    let rest = &frame[2..];
    let keep = if rest.starts_with('/') {
        match rest.find(',') {
            Some(i) => 2 + i + 1,
            // `40/nsp` with nothing after it.
            None => frame.len(),
        }
    } else {
        2
    };
    if keep == frame.len() {
        std::borrow::Cow::Borrowed(frame)
    } else {
        std::borrow::Cow::Owned(frame[..keep].to_owned())
    }
}

/// `2[/nsp,][id][...]` whose array starts with `"login"`.
fn login_event(packet: &str) -> Option<LoginEvent> {
    let mut i = 1;
    let b = packet.as_bytes();
    if b.get(i) == Some(&b'/') {
        i += packet[i..].find(',')? + 1;
    }
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let Ok(Value::Array(mut array)) = serde_json::from_str::<Value>(&packet[i..]) else {
        return None;
    };
    if array.first().and_then(Value::as_str) != Some("login") {
        return None;
    }
    array.remove(0);
    Some(LoginEvent {
        prefix: format!("4{}", &packet[..i]),
        args: array,
    })
}

/// The client's query string for the backend: without the parameters that may carry a token
/// (`names`, and `token`), compared after percent-decoding and case-insensitively so that no
/// spelling of them slips through.
pub fn upstream_query(query: &str, names: &[&str]) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            let name = name.trim();
            !(name.eq_ignore_ascii_case("token")
                || names.iter().any(|n| name.eq_ignore_ascii_case(n)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn engine_io_packets_and_connect_pass() {
        for f in ["2", "3", "2probe", "5", "6", "1"] {
            assert_eq!(classify(f), ClientFrame::EngineIo, "{f}");
        }
        assert_eq!(classify("40"), ClientFrame::Connect("40".into()));
        assert_eq!(
            classify("40/admin,"),
            ClientFrame::Connect("40/admin,".into())
        );
        assert_eq!(
            classify(r#"40{"token":"eyJ.x.y"}"#),
            ClientFrame::Connect("40".into())
        );
        assert_eq!(
            classify(r#"40/admin,{"token":"eyJ.x.y"}"#),
            ClientFrame::Connect("40/admin,".into())
        );
        for f in [
            r#"42["hello",1]"#,
            r#"421["login"]x"#,
            "43[1]",
            "41",
            "44",
            "",
            "x",
            "4",
            r#"42["login""#,
            r#"42/nsp["login",{}]"#,
        ] {
            assert_eq!(classify(f), ClientFrame::Other, "{f}");
        }
    }

    #[test]
    fn login_is_found_and_rewritten_keeping_the_rest() {
        let f = r#"42["login",{"accessKeyId":"alice","token":"eyJhbGc.a.b","uaType":"desktop"}]"#;
        let ClientFrame::Login(login) = classify(f) else {
            panic!("not a login")
        };
        assert_eq!(login.access_key_id(), "alice");
        assert_eq!(login.token(), "eyJhbGc.a.b");
        let out = login.rewrite("alice", "15372d");
        assert!(out.starts_with(r#"42["login",{"#), "{out}");
        let v: Value = serde_json::from_str(&out[2..]).unwrap();
        assert_eq!(
            v,
            serde_json::json!(["login", {"accessKeyId":"alice","token":"15372d","uaType":"desktop"}])
        );
        assert!(!out.contains("eyJ"));

        // Namespace and ack id are kept.
        let ClientFrame::Login(login) = classify(r#"42/cti,7["login",{"token":"t"}]"#) else {
            panic!("not a login")
        };
        assert_eq!(login.access_key_id(), "");
        assert!(
            login
                .rewrite("bob", "x")
                .starts_with(r#"42/cti,7["login",{"#)
        );
        // Without an object, nothing to read, and still no way for a token through.
        let ClientFrame::Login(login) = classify(r#"42["login","eyJ.a.b"]"#) else {
            panic!("not a login")
        };
        assert_eq!(login.token(), "");
    }

    #[test]
    fn token_parameters_never_go_upstream() {
        let names = ["access_token", "authorization"];
        let q = upstream_query(
            "EIO=4&transport=websocket&access_token=eyJ&Token=x&access%5Ftoken=y&AUTHORIZATION=Bearer%20z&t=1",
            &names,
        );
        assert_eq!(q, "EIO=4&transport=websocket&t=1");
        assert_eq!(upstream_query("", &names), "");
    }

    proptest::proptest! {
        #[test]
        fn classify_is_total(frame in "\\PC{0,64}") {
            let _ = classify(&frame);
        }

        #[test]
        fn a_login_never_keeps_its_token(token in "[A-Za-z0-9._-]{1,64}", extra in "[a-z]{0,8}") {
            let f = format!(r#"42["login",{{"accessKeyId":"a","token":"{token}","{extra}x":1}}]"#);
            let ClientFrame::Login(login) = classify(&f) else {
                return Err(proptest::test_runner::TestCaseError::fail("not a login"));
            };
            let out = login.rewrite("a", "LEGACY");
            let v: Value = serde_json::from_str(&out[2..]).unwrap();
            proptest::prop_assert_eq!(&v[1]["token"], "LEGACY");
        }
    }
}
