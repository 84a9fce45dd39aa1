//! Hand-made hostile tokens: `alg: none`, HS256 keyed with the server's public key (algorithm
//! confusion), a tampered signature, and the pieces to forge any other (segments encoded by
//! hand, re-assembled). Shared by the tests and the fuzz target: `fuzz/fuzz_targets/check.rs`
//! includes this very file with `#[path]`, so it may use only `base64`, `serde_json` and
//! `aws-lc-rs`, and nothing else from `tests/support`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Unpadded base64url, as JWT segments are encoded.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JSON value as a JWT segment (compact JSON, base64url).
pub fn b64json(value: &Value) -> String {
    b64url(value.to_string().as_bytes())
}

/// `header.payload.signature` from already encoded segments.
pub fn compact(header: &str, payload: &str, signature: &str) -> String {
    format!("{header}.{payload}.{signature}")
}

/// Segment `index` (0 header, 1 payload, 2 signature) of a token as it is, or "" if absent.
pub fn segment(token: &str, index: usize) -> &str {
    token.split('.').nth(index).unwrap_or("")
}

/// The decoded JSON of a JWT's header (0) or claims (1).
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("JWT part is base64url");
    serde_json::from_slice(&bytes).expect("JWT part is JSON")
}

/// `alg: none`, the real claims, an empty signature.
pub fn alg_none_token(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "at+jwt"});
    compact(&b64json(&header), &b64json(claims), "")
}

/// An HS256 token over `claims` signed with `key` (algorithm confusion when `key` is the
/// server's public key).
pub fn hs256_token(kid: Option<&str>, claims: &Value, key: &[u8]) -> String {
    let mut header = json!({"alg": "HS256", "typ": "at+jwt"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let (header, payload) = (b64json(&header), b64json(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
    compact(&header, &payload, &b64url(tag.as_ref()))
}

/// `token` with one character in the middle of its signature flipped.
pub fn tampered_signature(token: &str) -> String {
    let mut tampered = token.to_owned();
    let at = tampered.rfind('.').expect("signature") + 5;
    let flipped = if tampered.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(at..=at, flipped);
    tampered
}
