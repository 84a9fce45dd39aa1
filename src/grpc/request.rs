//! Envoy's `CheckRequest`, read where it lies.
//!
//! tonic's generated server decodes every call into owned prost structs: a `HashMap` of
//! `String`s for the request headers, and strings for a dozen fields the decision never reads
//! (Envoy sends every header unless told otherwise). This module reads the protobuf wire format
//! of the received buffer instead and keeps only where the method, the path and the headers
//! are, so learning a check's facts allocates nothing.
//!
//! On the fields the decision reads it agrees with prost (tests compare the two): wire types
//! are checked, strings must be UTF-8, the last `method`/`path` wins, a repeated key in the
//! `headers` map takes its last value, and `header_map` (raw headers) is searched in order.
//! Fields it does not read are skipped unexamined. One deliberate difference: protobuf lets a
//! sender split a sub-message into several parts that the receiver merges; Envoy never does,
//! and a request repeating `attributes`, `request` or `http` is refused, not merged.

use std::ops::Range;

use prost::encoding::{self, WireType};
use tonic::codegen::Bytes;

use crate::credentials::{self, Headers};

// Field numbers: envoy/service/auth/v3/{external_auth,attribute_context}.proto and
// envoy/config/core/v3/base.proto.
const CHECK_REQUEST_ATTRIBUTES: u32 = 1;
const ATTRIBUTES_REQUEST: u32 = 4;
const REQUEST_HTTP: u32 = 2;
const HTTP_METHOD: u32 = 2;
const HTTP_HEADERS: u32 = 3;
const HTTP_PATH: u32 = 4;
const HTTP_HEADER_MAP: u32 = 13;
const MAP_KEY: u32 = 1;
const MAP_VALUE: u32 = 2;
const HEADER_MAP_HEADERS: u32 = 1;
const HEADER_KEY: u32 = 1;
const HEADER_VALUE: u32 = 2;
const HEADER_RAW_VALUE: u32 = 3;

/// Why a buffer is not a `CheckRequest` this reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed CheckRequest: {0}")]
pub struct WireError(&'static str);

/// One field's payload. Only length-delimited payloads are ever looked at.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Scalar,
    Bytes(&'a [u8]),
}

/// The fields of one message, in wire order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn of(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    /// Varints and keys are read by prost's own decoder, so they are accepted exactly when
    /// prost accepts them.
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        encoding::decode_varint(&mut self.rest).map_err(|_| WireError("bad varint"))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], WireError> {
        let len = usize::try_from(len).map_err(|_| WireError("length out of range"))?;
        if len > self.rest.len() {
            return Err(WireError("truncated field"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    #[inline]
    fn field(&mut self) -> Result<(u32, Payload<'a>), WireError> {
        let (number, wire_type) =
            encoding::decode_key(&mut self.rest).map_err(|_| WireError("bad field key"))?;
        let payload = match wire_type {
            WireType::Varint => self.varint().map(|_| Payload::Scalar)?,
            WireType::SixtyFourBit => self.take(8).map(|_| Payload::Scalar)?,
            WireType::LengthDelimited => {
                let len = self.varint()?;
                Payload::Bytes(self.take(len)?)
            }
            WireType::ThirtyTwoBit => self.take(4).map(|_| Payload::Scalar)?,
            WireType::StartGroup | WireType::EndGroup => {
                return Err(WireError("unsupported wire type"));
            }
        };
        Ok((number, payload))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Payload<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// The payload of a field declared as a string, bytes or message.
fn bytes(payload: Payload<'_>) -> Result<&[u8], WireError> {
    match payload {
        Payload::Bytes(b) => Ok(b),
        Payload::Scalar => Err(WireError("wrong wire type")),
    }
}

fn string(payload: Payload<'_>) -> Result<&[u8], WireError> {
    let b = bytes(payload)?;
    std::str::from_utf8(b).map_err(|_| WireError("string is not UTF-8"))?;
    Ok(b)
}

/// The sub-message in field `number` of `message`, if present; present twice is refused.
fn only_message(message: &[u8], number: u32) -> Result<Option<&[u8]>, WireError> {
    let mut found = None;
    for field in Fields::of(message) {
        let (n, payload) = field?;
        if n == number {
            if found.is_some() {
                return Err(WireError("sub-message split in parts"));
            }
            found = Some(bytes(payload)?);
        }
    }
    Ok(found)
}

/// `(key, value)` of a `map<string, string>` entry (absent parts are empty).
fn map_entry(entry: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    for field in Fields::of(entry) {
        match field? {
            (MAP_KEY, p) => key = bytes(p)?,
            (MAP_VALUE, p) => value = bytes(p)?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// `(key, value, raw_value)` of a `config.core.v3.HeaderValue`.
struct RawHeader<'a> {
    key: &'a [u8],
    value: &'a [u8],
    raw_value: &'a [u8],
}

fn raw_header(header: &[u8]) -> Result<RawHeader<'_>, WireError> {
    let mut h = RawHeader {
        key: &[],
        value: &[],
        raw_value: &[],
    };
    for field in Fields::of(header) {
        match field? {
            (HEADER_KEY, p) => h.key = bytes(p)?,
            (HEADER_VALUE, p) => h.value = bytes(p)?,
            (HEADER_RAW_VALUE, p) => h.raw_value = bytes(p)?,
            _ => {}
        }
    }
    Ok(h)
}

/// Walks `http` once: returns its method and path and calls `each` for every header,
/// `(true, key, value)` for an entry of the `headers` map, `(false, key, value)` for a raw
/// `header_map` entry (its `raw_value` when `value` is empty, as Envoy fills one or the
/// other), in wire order. Header strings are checked to be UTF-8 only with `validate`.
fn walk_http<'a>(
    http: &'a [u8],
    validate: bool,
    mut each: impl FnMut(bool, &'a [u8], &'a [u8]),
) -> Result<(&'a [u8], &'a [u8]), WireError> {
    let utf8 = |s: &[u8]| {
        if validate {
            std::str::from_utf8(s).map_err(|_| WireError("string is not UTF-8"))?;
        }
        Ok(())
    };
    let (mut method, mut path) = (&[][..], &[][..]);
    for field in Fields::of(http) {
        match field? {
            (HTTP_METHOD, p) => method = string(p)?,
            (HTTP_PATH, p) => path = string(p)?,
            (HTTP_HEADERS, p) => {
                let (key, value) = map_entry(bytes(p)?)?;
                utf8(key)?;
                utf8(value)?;
                each(true, key, value);
            }
            (HTTP_HEADER_MAP, p) => {
                for header in Fields::of(bytes(p)?) {
                    if let (HEADER_MAP_HEADERS, p) = header? {
                        let h = raw_header(bytes(p)?)?;
                        utf8(h.key)?;
                        utf8(h.value)?;
                        let value = if h.value.is_empty() {
                            h.raw_value
                        } else {
                            h.value
                        };
                        each(false, h.key, value);
                    }
                }
            }
            _ => {}
        }
    }
    Ok((method, path))
}

/// One header looked up as prost's structs answered it: the `headers` map by exact
/// (lower-case) key, its last entry if repeated; else the first raw `header_map` entry
/// whose key matches in any case. Raw entries are counted: Envoy keeps repeated headers
/// apart there (it joins them with `,` in the map).
struct Lookup<'n, 'a> {
    name: &'n str,
    mapped: Option<&'a [u8]>,
    raw: Option<&'a [u8]>,
    raw_count: u8,
}

impl<'n, 'a> Lookup<'n, 'a> {
    fn new(name: &'n str) -> Self {
        Self {
            name,
            mapped: None,
            raw: None,
            raw_count: 0,
        }
    }

    fn see(&mut self, in_map: bool, key: &[u8], value: &'a [u8]) {
        if in_map {
            if key == self.name.as_bytes() {
                self.mapped = Some(value);
            }
        } else if key.eq_ignore_ascii_case(self.name.as_bytes()) {
            self.raw_count = self.raw_count.saturating_add(1);
            if self.raw.is_none() {
                self.raw = Some(value);
            }
        }
    }

    fn repeated(&self) -> bool {
        self.raw_count > 1
    }

    fn found(&self) -> Option<&'a [u8]> {
        self.mapped.or(self.raw)
    }
}

/// The headers the decision reads (the bearer token and the token cookie), found during
/// the one walk of `parse` so that looking them up costs nothing more.
const KNOWN: [&str; 2] = [credentials::AUTHORIZATION, credentials::COOKIE];

/// Where `inner`, a part of `outer` unless empty, lies in `outer`.
fn within(outer: &[u8], inner: &[u8]) -> Range<usize> {
    if inner.is_empty() {
        return 0..0;
    }
    let start = (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize);
    start..start + inner.len()
}

/// One `Check` call: the received buffer and where its facts are.
#[derive(Debug)]
pub struct CheckCall {
    buf: Bytes,
    /// `attributes.request.http`, absent when the caller left it out.
    http: Option<Range<usize>>,
    method: Range<usize>,
    path: Range<usize>,
    /// Where the value of each of [`KNOWN`] is, if present.
    known: [Option<Range<usize>>; KNOWN.len()],
    /// Which of [`KNOWN`] came as more than one raw header.
    known_repeated: [bool; KNOWN.len()],
}

impl CheckCall {
    /// Reads and validates the parts the decision uses.
    pub fn parse(buf: Bytes) -> Result<Self, WireError> {
        let http = match only_message(&buf, CHECK_REQUEST_ATTRIBUTES)? {
            Some(attributes) => match only_message(attributes, ATTRIBUTES_REQUEST)? {
                Some(request) => only_message(request, REQUEST_HTTP)?,
                None => None,
            },
            None => None,
        };
        let Some(http) = http else {
            return Ok(Self {
                buf,
                http: None,
                method: 0..0,
                path: 0..0,
                known: [None, None],
                known_repeated: [false, false],
            });
        };
        let mut known = KNOWN.map(Lookup::new);
        let (method, path) = walk_http(http, true, |in_map, key, value| {
            known.iter_mut().for_each(|k| k.see(in_map, key, value));
        })?;
        Ok(Self {
            http: Some(within(&buf, http)),
            method: within(&buf, method),
            path: within(&buf, path),
            known_repeated: known.each_ref().map(Lookup::repeated),
            known: known.map(|k| k.found().map(|v| within(&buf, v))),
            buf,
        })
    }

    /// Whether the call carries `attributes.request.http` (Envoy's HTTP filter always does).
    pub fn has_http(&self) -> bool {
        self.http.is_some()
    }

    pub fn method(&self) -> &str {
        self.str_at(&self.method)
    }

    /// Path and query, as the client sent them.
    pub fn path(&self) -> &str {
        self.str_at(&self.path)
    }

    fn str_at(&self, range: &Range<usize>) -> &str {
        // Checked to be UTF-8 in `parse`; empty if that ever stopped being true.
        std::str::from_utf8(&self.buf[range.clone()]).unwrap_or_default()
    }
}

/// A header as prost's structs answered it (see [`Lookup`]).
impl Headers for CheckCall {
    fn get(&self, name: &str) -> Option<&str> {
        if let Some(i) = KNOWN.iter().position(|k| *k == name) {
            // A raw value is bytes, not necessarily UTF-8.
            let value = &self.buf[self.known[i].clone()?];
            return std::str::from_utf8(value).ok();
        }
        let http = &self.buf[self.http.clone()?];
        let mut lookup = Lookup::new(name);
        walk_http(http, false, |in_map, key, value| {
            lookup.see(in_map, key, value)
        })
        .ok()?;
        std::str::from_utf8(lookup.found()?).ok()
    }

    fn repeated(&self, name: &str) -> bool {
        if let Some(i) = KNOWN.iter().position(|k| *k == name) {
            return self.known_repeated[i];
        }
        let Some(http) = self.http.clone() else {
            return false;
        };
        let mut lookup = Lookup::new(name);
        let walked = walk_http(&self.buf[http], false, |in_map, key, value| {
            lookup.see(in_map, key, value)
        });
        walked.is_ok() && lookup.repeated()
    }
}

#[cfg(test)]
mod tests;
