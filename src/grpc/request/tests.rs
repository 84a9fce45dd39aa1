#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HeaderValue};
use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use proptest::prelude::*;
use prost::Message;

use super::*;

/// Names every comparison looks up: the ones the decision reads, case variants, absent ones.
const NAMES: [&str; 6] = ["authorization", "cookie", "Authorization", "x-a", "x-b", ""];

fn request(http: Option<HttpRequest>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn parse(message: &CheckRequest) -> CheckCall {
    CheckCall::parse(Bytes::from(message.encode_to_vec())).unwrap()
}

/// What the decision saw through prost's structs before this reader existed: the map
/// first (exact key), then the first raw header whose key matches in any case.
fn prost_header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(v) = http.headers.get(name) {
        return Some(v);
    }
    let raw = http.header_map.as_ref()?;
    raw.headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| {
            if h.value.is_empty() {
                std::str::from_utf8(&h.raw_value).ok()
            } else {
                Some(h.value.as_str())
            }
        })
}

/// Asserts that `buf` reads the same through prost and through [`CheckCall`].
fn assert_agrees(buf: &[u8]) -> Result<(), TestCaseError> {
    let ours = CheckCall::parse(Bytes::copy_from_slice(buf));
    let Ok(theirs) = CheckRequest::decode(buf) else {
        return Ok(()); // prost refuses it; ours may refuse or read it, but must not panic
    };
    let ours = match ours {
        Ok(ours) => ours,
        // Refused where prost reads it: only for the two documented reasons.
        Err(WireError(why)) => {
            prop_assert!(
                why == "sub-message split in parts" || why == "unsupported wire type",
                "{why}"
            );
            return Ok(());
        }
    };
    let http = theirs
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    prop_assert_eq!(ours.has_http(), http.is_some());
    let Some(http) = http else {
        return Ok(());
    };
    prop_assert_eq!(ours.method(), http.method.as_str());
    prop_assert_eq!(ours.path(), http.path.as_str());
    for name in NAMES {
        prop_assert_eq!(
            ours.get(name),
            prost_header(http, name),
            "header {:?}",
            name
        );
    }
    Ok(())
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("authorization".to_owned()),
        Just("AUTHORIZATION".to_owned()),
        Just("cookie".to_owned()),
        Just("x-a".to_owned()),
        "[a-zA-Z-]{0,6}",
    ]
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    (
        header_name(),
        "[ -~]{0,12}",
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(key, value, raw_value)| HeaderValue {
            key,
            value,
            raw_value,
        })
}

fn http_request() -> impl Strategy<Value = HttpRequest> {
    (
        "[A-Z]{0,7}",
        "\\PC{0,24}",
        prop::collection::hash_map(header_name(), "\\PC{0,16}", 0..6),
        prop::option::of(prop::collection::vec(header_value(), 0..5)),
        "\\PC{0,8}",
    )
        .prop_map(|(method, path, headers, raw, host)| HttpRequest {
            method,
            path,
            headers,
            header_map: raw.map(|headers| HeaderMap { headers }),
            host,
            size: 42,
            ..Default::default()
        })
}

proptest! {
    #[test]
    fn agrees_with_prost_on_envoy_requests(http in prop::option::of(http_request())) {
        assert_agrees(&request(http).encode_to_vec())?;
    }

    #[test]
    fn agrees_with_prost_on_damaged_requests(
        http in http_request(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = request(Some(http)).encode_to_vec();
        for (at, byte) in edits {
            let i = at.index(buf.len());
            buf[i] = byte;
        }
        assert_agrees(&buf)?;
        assert_agrees(&buf[..cut.index(buf.len() + 1)])?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..256)) {
        assert_agrees(&buf)?;
    }
}

#[test]
fn reads_method_path_and_headers() {
    let call = parse(&request(Some(HttpRequest {
        method: "POST".into(),
        path: "/api/x?y=1".into(),
        headers: HashMap::from([
            ("authorization".into(), "Bearer abc".into()),
            ("cookie".into(), "a=b".into()),
        ]),
        ..Default::default()
    })));
    assert!(call.has_http());
    assert_eq!(call.method(), "POST");
    assert_eq!(call.path(), "/api/x?y=1");
    assert_eq!(call.get("authorization"), Some("Bearer abc"));
    assert_eq!(call.get("cookie"), Some("a=b"));
    // The map's keys are lower-case: an exact lookup, as prost's HashMap did.
    assert_eq!(call.get("Authorization"), None);
    assert_eq!(call.get("x-missing"), None);
}

#[test]
fn raw_header_map_is_searched_in_any_case() {
    let call = parse(&request(Some(HttpRequest {
        header_map: Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "Authorization".into(),
                    raw_value: b"Bearer raw".to_vec(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "authorization".into(),
                    value: "Bearer second".into(),
                    ..Default::default()
                },
            ],
        }),
        ..Default::default()
    })));
    assert_eq!(call.get("authorization"), Some("Bearer raw"));
}

#[test]
fn without_http_attributes_there_is_nothing_to_read() {
    for message in [CheckRequest::default(), request(None)] {
        let call = parse(&message);
        assert!(!call.has_http());
        assert_eq!((call.method(), call.path()), ("", ""));
        assert_eq!(call.get("authorization"), None);
    }
}

/// Encodes `http` twice as `attributes.request.http`: legal protobuf (the parts merge), never
/// sent by Envoy, and refused here rather than merged.
#[test]
fn a_split_http_message_is_refused() {
    let part = |path: &str| HttpRequest {
        path: path.into(),
        ..Default::default()
    };
    let mut buf = request(Some(part("/public"))).encode_to_vec();
    buf.extend(request(Some(part("/admin"))).encode_to_vec());
    // prost merges the two parts (and so would see /admin) ...
    assert_eq!(
        CheckRequest::decode(&buf[..])
            .unwrap()
            .attributes
            .unwrap()
            .request
            .unwrap()
            .http
            .unwrap()
            .path,
        "/admin"
    );
    // ... this reader refuses the call.
    assert_eq!(
        CheckCall::parse(Bytes::from(buf)).unwrap_err(),
        WireError("sub-message split in parts")
    );
}

#[test]
fn a_path_that_is_not_utf8_is_refused() {
    // attributes(1) { request(4) { http(2) { path(4) = 0xff } } }
    let buf = vec![0x0a, 0x07, 0x22, 0x05, 0x12, 0x03, 0x22, 0x01, 0xff];
    assert!(CheckRequest::decode(&buf[..]).is_err());
    assert_eq!(
        CheckCall::parse(Bytes::from(buf)).unwrap_err(),
        WireError("string is not UTF-8")
    );
}

/// `tag` as a length-delimited field around `inner`.
fn field(tag: u32, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(inner.len() as u64, &mut out);
    out.extend_from_slice(inner);
    out
}

#[test]
fn a_repeated_map_key_takes_its_last_value_as_prost_does() {
    let http = |token: &str| HttpRequest {
        headers: HashMap::from([("authorization".into(), format!("Bearer {token}"))]),
        ..Default::default()
    };
    // Two encodings of one message concatenated: one message holding both map entries.
    let mut both = http("first").encode_to_vec();
    both.extend(http("second").encode_to_vec());
    let buf = field(1, &field(4, &field(2, &both)));
    assert_agrees(&buf).unwrap();
    let call = CheckCall::parse(Bytes::from(buf)).unwrap();
    assert_eq!(call.get("authorization"), Some("Bearer second"));
}
