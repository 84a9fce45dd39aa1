//! gRPC adapter: Envoy's `envoy.service.auth.v3.Authorization/Check` and `grpc.health.v1`.
//! It hands the request facts to [`decision::Checker`] and the decision back as a
//! `CheckResponse`; a denial is a normal `CheckResponse` with a `denied_response`. A gRPC error
//! status is never used for a denial (Envoy would then apply its failure mode instead of our
//! answer).
//!
//! The service is wired by hand rather than through envoy-types' generated server so that the
//! request is read in place ([`request::CheckCall`]) instead of decoded into prost's owned
//! structs; responses are ordinary prost messages, plus the `dynamic_metadata` Envoy logs
//! (`user`, `session`, `amr` on allow; `reason` on deny), which is written straight from the
//! decision's strings ([`Metadata`]) rather than built as a `google.protobuf.Struct` map.

mod request;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use envoy_types::pb::google::rpc;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::decision::{self, Decision, DenialResponse, Dialect};
use crate::metrics::{Metrics, Transport};
use crate::telemetry::Telemetry;

pub use request::{CheckCall, WireError};

/// google.rpc.Code values Envoy looks at.
const RPC_OK: i32 = 0;
const RPC_UNAUTHENTICATED: i32 = 16;
const RPC_PERMISSION_DENIED: i32 = 7;

/// The ext_authz service name, for routing and health reporting.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

fn header(key: &str, value: String, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// `CheckResponse.dynamic_metadata`: Envoy stores it under the filter's name
/// (`envoy.filters.http.ext_authz`), where the access log reads it.
const CHECK_RESPONSE_DYNAMIC_METADATA: u32 = 4;
const STRUCT_FIELDS: u32 = 1;
const MAP_KEY: u32 = 1;
const MAP_VALUE: u32 = 2;
const VALUE_STRING: u32 = 3;

/// The dynamic metadata of one answer: borrowed or static strings, keys in sorted order
/// (the order prost writes a `Struct`'s map in), so no map is built per check.
#[derive(Debug, Clone, Default)]
pub enum Metadata {
    /// A public route: nobody to report.
    #[default]
    None,
    Allow {
        user: Arc<str>,
        session: Arc<str>,
        amr: std::borrow::Cow<'static, str>,
    },
    Deny {
        reason: &'static str,
    },
}

impl Metadata {
    /// `(key, value)` pairs, sorted by key.
    fn entries(&self) -> ([(&str, &str); 3], usize) {
        match self {
            Metadata::None => ([("", ""); 3], 0),
            Metadata::Allow { user, session, amr } => {
                ([("amr", amr), ("session", session), ("user", user)], 3)
            }
            Metadata::Deny { reason } => ([("reason", reason), ("", ""), ("", "")], 1),
        }
    }

    fn string_len(tag: u32, s: &str) -> usize {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }

    fn put_string(tag: u32, s: &str, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }

    /// Lengths of one map entry's `Value` and of the entry itself.
    fn entry_lens(key: &str, value: &str) -> (usize, usize) {
        let value_len = Self::string_len(VALUE_STRING, value);
        let entry_len = Self::string_len(MAP_KEY, key)
            + key_len(MAP_VALUE)
            + encoded_len_varint(value_len as u64)
            + value_len;
        (value_len, entry_len)
    }

    fn struct_len(&self) -> usize {
        let (entries, n) = self.entries();
        entries[..n]
            .iter()
            .map(|(k, v)| {
                let (_, entry) = Self::entry_lens(k, v);
                key_len(STRUCT_FIELDS) + encoded_len_varint(entry as u64) + entry
            })
            .sum()
    }

    /// Bytes [`Self::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        if matches!(self, Metadata::None) {
            return 0;
        }
        let len = self.struct_len();
        key_len(CHECK_RESPONSE_DYNAMIC_METADATA) + encoded_len_varint(len as u64) + len
    }

    /// Writes `CheckResponse` field 4 (`dynamic_metadata`), nothing for [`Metadata::None`].
    /// Appended after prost's encoding of the other fields, it is what prost would write for
    /// the same `Struct` (fields in tag order; a unit test compares the bytes).
    pub fn encode(&self, buf: &mut impl BufMut) {
        let (entries, n) = self.entries();
        if n == 0 {
            return;
        }
        encode_key(
            CHECK_RESPONSE_DYNAMIC_METADATA,
            WireType::LengthDelimited,
            buf,
        );
        encode_varint(self.struct_len() as u64, buf);
        for (k, v) in &entries[..n] {
            let (value_len, entry_len) = Self::entry_lens(k, v);
            encode_key(STRUCT_FIELDS, WireType::LengthDelimited, buf);
            encode_varint(entry_len as u64, buf);
            Self::put_string(MAP_KEY, k, buf);
            encode_key(MAP_VALUE, WireType::LengthDelimited, buf);
            encode_varint(value_len as u64, buf);
            Self::put_string(VALUE_STRING, v, buf);
        }
    }

    /// The same metadata as prost's `Struct` (tests, tools; the server never builds it).
    pub fn to_struct(&self) -> Option<Struct> {
        let (entries, n) = self.entries();
        (n > 0).then(|| Struct {
            fields: entries[..n]
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        Value {
                            kind: Some(value::Kind::StringValue((*v).to_owned())),
                        },
                    )
                })
                .collect(),
        })
    }
}

/// Envoy's answer to one check: the prost message and its dynamic metadata, which the
/// codec writes after it.
#[derive(Debug, Clone, Default)]
pub struct CheckReply {
    pub response: CheckResponse,
    pub metadata: Metadata,
}

impl CheckReply {
    /// The whole `CheckResponse` as prost would encode it with `dynamic_metadata` set.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.response.encoded_len() + self.metadata.encoded_len());
        self.encode_raw(&mut buf);
        buf
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.response.encode_raw(buf);
        self.metadata.encode(buf);
    }

    /// The reply as one prost message, `dynamic_metadata` included (for tests and tools).
    pub fn into_prost(self) -> CheckResponse {
        CheckResponse {
            dynamic_metadata: self.metadata.to_struct(),
            ..self.response
        }
    }
}

/// Builds Envoy's answer for a decision; a denial speaks `dialect` (its route's).
pub fn check_response(decision: Decision, dialect: Dialect) -> CheckReply {
    match decision {
        Decision::Allow(allow) => CheckReply {
            metadata: match (allow.user, allow.session) {
                (Some(user), Some(session)) => Metadata::Allow {
                    user,
                    session,
                    amr: allow.amr,
                },
                _ => Metadata::None,
            },
            response: CheckResponse {
                status: Some(rpc::Status {
                    code: RPC_OK,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: allow
                        .set_headers
                        .into_iter()
                        .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
                        .collect(),
                    headers_to_remove: allow
                        .remove_headers
                        .iter()
                        .map(|h| (*h).to_owned())
                        .collect(),
                    query_parameters_to_remove: allow.remove_query,
                    ..Default::default()
                })),
                ..Default::default()
            },
        },
        Decision::Deny(denial) => CheckReply {
            response: denied(denial.response(dialect)),
            metadata: Metadata::Deny {
                reason: denial.reason(),
            },
        },
    }
}

fn denied(denial: DenialResponse) -> CheckResponse {
    let status = denial.status;
    CheckResponse {
        status: Some(rpc::Status {
            code: if status == 401 {
                RPC_UNAUTHENTICATED
            } else {
                RPC_PERMISSION_DENIED
            },
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers: denial
                .www_authenticate
                .map(|v| ("www-authenticate", v))
                .into_iter()
                .chain([("content-type", "application/json".to_owned())])
                .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
                .collect(),
            body: denial.body,
        })),
        ..Default::default()
    }
}

/// The ext_authz service, ready for `tonic::transport::Server::add_service`.
#[derive(Clone)]
pub struct AuthzService {
    checker: Arc<decision::Checker>,
    metrics: Arc<Metrics>,
    telemetry: Arc<Telemetry>,
}

impl AuthzService {
    pub fn new(
        checker: Arc<decision::Checker>,
        metrics: Arc<Metrics>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            checker,
            metrics,
            telemetry,
        }
    }

    /// Decides one call.
    pub fn check(&self, call: &CheckCall) -> Result<CheckReply, Status> {
        let started = Instant::now();
        if !call.has_http() {
            // Not a request Envoy's HTTP filter would send: a fault of the caller's setup.
            return Err(Status::invalid_argument(
                "CheckRequest without attributes.request.http",
            ));
        }
        // One branch when tracing is off.
        let span = self.telemetry.check(call);
        let decision = self.checker.check(&decision::Request {
            method: call.method(),
            path: call.path(),
            headers: call,
        });
        self.metrics
            .record_check(Transport::Grpc, &decision, started.elapsed());
        if let Some(span) = span {
            span.finish("grpc", &decision);
        }
        let dialect = match &decision {
            Decision::Deny(_) => self.checker.dialect(call.path()),
            Decision::Allow(_) => Dialect::OAuth,
        };
        Ok(check_response(decision, dialect))
    }
}

impl NamedService for AuthzService {
    const NAME: &'static str = SERVICE_NAME;
}

impl UnaryService<CheckCall> for AuthzService {
    type Response = CheckReply;
    type Future = std::future::Ready<Result<Response<CheckReply>, Status>>;

    fn call(&mut self, request: Request<CheckCall>) -> Self::Future {
        std::future::ready(self.check(request.get_ref()).map(Response::new))
    }
}

impl<B> Service<http::Request<B>> for AuthzService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let service = self.clone();
        Box::pin(async move { Ok(Grpc::new(CheckCodec).unary(service, request).await) })
    }
}

/// Requests read in place, responses encoded by prost.
#[derive(Clone, Copy, Default)]
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckReply;
    type Decode = CheckCall;
    type Encoder = CheckCodec;
    type Decoder = CheckCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for CheckCodec {
    type Item = CheckReply;
    type Error = Status;

    fn encode(&mut self, item: CheckReply, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows as needed; prost's `encode` only checks for room first.
        item.encode_raw(dst);
        Ok(())
    }
}

impl Decoder for CheckCodec {
    type Item = CheckCall;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckCall>, Status> {
        let message = src.copy_to_bytes(src.remaining());
        CheckCall::parse(message)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::decision::{Allow, Denial};

    fn allow(amr: &'static str) -> Decision {
        Decision::Allow(Allow {
            user: Some("alice".into()),
            session: Some("sid-1".into()),
            amr: amr.into(),
            set_headers: vec![(decision::X_AUTH_USER, "alice".into())],
            remove_headers: vec!["authorization"],
            remove_query: vec![],
        })
    }

    /// The metadata written by hand decodes to the `Struct` prost would write, at the same
    /// length. (envoy-types keeps a `Struct`'s map in a `HashMap`, so prost's own entry order
    /// varies from run to run: the bytes are compared up to that order.)
    #[test]
    fn hand_written_metadata_is_what_prost_writes() {
        let long_user: &'static str = Box::leak("u".repeat(300).into_boxed_str());
        for decision in [
            allow("pwd"),
            allow("pwd,otp"),
            allow(""),
            Decision::Allow(Allow {
                user: Some(long_user.into()),
                session: Some("s".repeat(200).into()),
                amr: "pwd".into(),
                ..Allow::default()
            }),
            Decision::Allow(Allow::default()),
            Decision::Deny(Denial::Expired),
            Decision::Deny(Denial::NoToken),
            Decision::Deny(Denial::ServiceOnly),
        ] {
            let reply = check_response(decision, Dialect::OAuth);
            let ours = reply.encode_to_vec();
            let prost = reply.clone().into_prost();
            let theirs = prost.encode_to_vec();
            assert_eq!(ours.len(), theirs.len(), "{reply:?}");
            assert_eq!(
                ours.len(),
                reply.response.encoded_len() + reply.metadata.encoded_len()
            );
            let sorted = |b: &[u8]| {
                let mut b = b.to_vec();
                b.sort_unstable();
                b
            };
            assert_eq!(sorted(&ours), sorted(&theirs), "{reply:?}");
            assert_eq!(CheckResponse::decode(ours.as_slice()).unwrap(), prost);
        }
    }

    #[test]
    fn metadata_names_user_session_amr_or_the_reason() {
        let get = |reply: CheckReply, key: &str| {
            let fields = reply.into_prost().dynamic_metadata.unwrap().fields;
            match fields.get(key).and_then(|v| v.kind.clone()) {
                Some(value::Kind::StringValue(s)) => s,
                other => panic!("{key}: {other:?}"),
            }
        };
        assert_eq!(
            get(check_response(allow("pwd,otp"), Dialect::OAuth), "amr"),
            "pwd,otp"
        );
        assert_eq!(
            get(check_response(allow("pwd"), Dialect::OAuth), "user"),
            "alice"
        );
        assert_eq!(
            get(check_response(allow("pwd"), Dialect::OAuth), "session"),
            "sid-1"
        );
        let revoked = check_response(Decision::Deny(Denial::Revoked), Dialect::OAuth);
        assert_eq!(get(revoked, "reason"), "revoked");
        let public = check_response(Decision::Allow(Allow::default()), Dialect::OAuth);
        assert!(public.into_prost().dynamic_metadata.is_none());
    }
}
