//! gRPC adapter: Envoy's `envoy.service.auth.v3.Authorization/Check` and `grpc.health.v1`.
//! It hands the request facts to [`decision::Checker`] and the decision back as a
//! `CheckResponse`; a denial is a normal `CheckResponse` with a `denied_response`. A gRPC error
//! status is never used for a denial (Envoy would then apply its failure mode instead of our
//! answer).
//!
//! The service is wired by hand rather than through envoy-types' generated server so that the
//! request is read in place ([`request::CheckCall`]) instead of decoded into prost's owned
//! structs; responses are ordinary prost messages.

mod request;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use prost::Message;
use prost::bytes::Buf;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::decision::{self, Decision, DenialResponse, Dialect};
use crate::metrics::{Metrics, Transport};

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

/// Builds Envoy's answer for a decision; a denial speaks `dialect` (its route's).
pub fn check_response(decision: Decision, dialect: Dialect) -> CheckResponse {
    match decision {
        Decision::Allow(allow) => CheckResponse {
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
        Decision::Deny(denial) => denied(denial.response(dialect)),
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
}

impl AuthzService {
    pub fn new(checker: Arc<decision::Checker>, metrics: Arc<Metrics>) -> Self {
        Self { checker, metrics }
    }

    /// Decides one call.
    pub fn check(&self, call: &CheckCall) -> Result<CheckResponse, Status> {
        let started = Instant::now();
        if !call.has_http() {
            // Not a request Envoy's HTTP filter would send: a fault of the caller's setup.
            return Err(Status::invalid_argument(
                "CheckRequest without attributes.request.http",
            ));
        }
        let decision = self.checker.check(&decision::Request {
            method: call.method(),
            path: call.path(),
            headers: call,
        });
        self.metrics
            .record_check(Transport::Grpc, &decision, started.elapsed());
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
    type Response = CheckResponse;
    type Future = std::future::Ready<Result<Response<CheckResponse>, Status>>;

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
    type Encode = CheckResponse;
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
    type Item = CheckResponse;
    type Error = Status;

    fn encode(&mut self, item: CheckResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding CheckResponse: {e}")))
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
