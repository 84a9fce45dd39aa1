//! gRPC adapter: Envoy's `envoy.service.auth.v3.Authorization/Check` and `grpc.health.v1`.
//! It copies request facts into [`decision::Request`] and the decision into a `CheckResponse`;
//! a denial is a normal `CheckResponse` with a `denied_response`. A gRPC error status is never
//! used for a denial (Envoy would then apply its failure mode instead of our answer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use crate::decision::{self, Decision, Denial};
use crate::metrics::{Metrics, Transport};
use crate::policy::Headers;

/// google.rpc.Code values Envoy looks at.
const RPC_OK: i32 = 0;
const RPC_UNAUTHENTICATED: i32 = 16;
const RPC_PERMISSION_DENIED: i32 = 7;

pub struct AuthzService {
    pub checker: Arc<decision::Checker>,
    pub metrics: Arc<Metrics>,
}

/// Envoy sends headers lower-cased in `headers`, or (with `encode_raw_headers`) in `header_map`.
struct EnvoyHeaders<'a> {
    map: &'a HashMap<String, String>,
    raw: Option<&'a [HeaderValue]>,
}

impl Headers for EnvoyHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.map.get(name) {
            return Some(v);
        }
        let raw = self.raw?;
        raw.iter()
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .and_then(|h| {
                if h.value.is_empty() {
                    std::str::from_utf8(&h.raw_value).ok()
                } else {
                    Some(h.value.as_str())
                }
            })
    }
}

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

/// Builds Envoy's answer for a decision.
pub fn check_response(decision: Decision) -> CheckResponse {
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
        Decision::Deny(denial) => denied(denial),
    }
}

fn denied(denial: Denial) -> CheckResponse {
    let status = denial.status();
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
            headers: vec![
                header(
                    "www-authenticate",
                    denial.www_authenticate(),
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
                header(
                    "content-type",
                    "application/json".to_owned(),
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
            ],
            body: denial.json_body(),
        })),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let http: Option<&HttpRequest> = request
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let Some(http) = http else {
            // Not a request Envoy's HTTP filter would send: a fault of the caller's setup.
            return Err(Status::invalid_argument(
                "CheckRequest without attributes.request.http",
            ));
        };
        let headers = EnvoyHeaders {
            map: &http.headers,
            raw: http.header_map.as_ref().map(|m| m.headers.as_slice()),
        };
        let decision = self.checker.check(&decision::Request {
            method: &http.method,
            path: &http.path,
            headers: &headers,
        });
        self.metrics
            .record_check(Transport::Grpc, &decision, started.elapsed());
        Ok(Response::new(check_response(decision)))
    }
}
