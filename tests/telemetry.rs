//! OpenTelemetry (cargo feature `otel`; `scripts/test` runs with `--all-features`): authgate
//! exports spans over OTLP/gRPC to an in-process collector stand-in (the OTLP trace service
//! from opentelemetry-proto), and each span is the child of the span named in the request's
//! `traceparent`: a login through the API, and checks through the real Envoy with the shipped
//! configs (gRPC and HTTP mode), which must let `traceparent` through to ext_authz. A trace the
//! proxy did not sample gets no span.

#![cfg(feature = "otel")]
// The collector records spans under a std Mutex: plain sync code, never held across an await.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authgate::clock::Clock;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use support::app::{ALICE_PASSWORD, TestApp};
use support::client::{get, request};
use support::echo::Echo;
use support::process::local;
use support::proxy::{Ports, ProxyKind, spawn_proxy};

/// Everything exported to it, span by span.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on 127.0.0.1:0; returns the endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        format!("http://{addr}")
    }

    fn with_trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|v| match v {
            AnyValue::StringValue(s) => s,
            AnyValue::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// A fresh W3C trace context: (trace id, parent span id, header value).
fn traceparent(sampled: bool) -> (String, String, String) {
    let trace_id = hex(&rand::random::<[u8; 16]>());
    let span_id = hex(&rand::random::<[u8; 8]>());
    let flags = if sampled { "01" } else { "00" };
    let header = format!("00-{trace_id}-{span_id}-{flags}");
    (trace_id, span_id, header)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_join_the_callers_trace() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let app = TestApp::builder()
        .clock(Clock::system())
        .config(|c| {
            c.telemetry.endpoint = Some(endpoint.clone());
            c.telemetry.check_sample_ratio = 1.0;
        })
        .start()
        .await;
    let echo = Echo::start().await;

    // A login with the client's trace context.
    let (login_trace, login_parent, header) = traceparent(true);
    let login = support::http_client()
        .post(format!("{}/auth/login", app.base))
        .header("traceparent", header)
        .json(&json!({"username": "alice", "password": ALICE_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let access = login.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {access}");

    // Checks through the real Envoy, both modes, with the shipped configs.
    let mut checks = Vec::new();
    for kind in [ProxyKind::EnvoyGrpc, ProxyKind::EnvoyHttp] {
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports::for_app(&app, echo.addr.port());
        let mut proxy = spawn_proxy(kind, &ports, dir.path()).await;
        let (sampled_trace, parent, header) = traceparent(true);
        let resp = get(
            local(ports.proxy),
            "/api/traced",
            &[("Authorization", &bearer), ("traceparent", &header)],
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200, "{}: {}", kind.name(), resp.describe());
        let (denied_trace, denied_parent, header) = traceparent(true);
        let resp = request(
            local(ports.proxy),
            "GET",
            "/api/traced",
            &[("traceparent", &header)],
            None,
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 401, "{}: {}", kind.name(), resp.describe());
        let (unsampled_trace, _, header) = traceparent(false);
        let resp = get(
            local(ports.proxy),
            "/api/traced",
            &[("Authorization", &bearer), ("traceparent", &header)],
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200, "{}: {}", kind.name(), resp.describe());
        proxy.stop();
        checks.push((kind, sampled_trace, parent, "allow"));
        checks.push((kind, denied_trace, denied_parent, "no_token"));
        checks.push((kind, unsampled_trace, String::new(), ""));
    }
    // Shutting down exports what is left.
    app.shutdown().await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let login_spans = loop {
        let spans = collector.with_trace(&login_trace);
        if !spans.is_empty() || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(login_spans.len(), 1, "login spans: {login_spans:?}");
    let span = &login_spans[0];
    assert_eq!(span.name, "POST /auth/login");
    assert_eq!(hex(&span.parent_span_id), login_parent);
    assert_eq!(
        attribute(span, "http.response.status_code").as_deref(),
        Some("200")
    );

    for (kind, trace, parent, outcome) in checks {
        let spans = collector.with_trace(&trace);
        if outcome.is_empty() {
            assert!(
                spans.is_empty(),
                "{}: a trace the proxy did not sample was exported: {spans:?}",
                kind.name()
            );
            continue;
        }
        assert_eq!(
            spans.len(),
            1,
            "{}: spans of {trace}: {spans:?}",
            kind.name()
        );
        let span = &spans[0];
        assert_eq!(span.name, "authz.check", "{}", kind.name());
        assert_eq!(hex(&span.parent_span_id), parent, "{}", kind.name());
        assert_eq!(
            attribute(span, "authgate.outcome").as_deref(),
            Some(outcome),
            "{}: {span:?}",
            kind.name()
        );
        let transport = if kind == ProxyKind::EnvoyGrpc {
            "grpc"
        } else {
            "http"
        };
        assert_eq!(
            attribute(span, "authgate.transport").as_deref(),
            Some(transport)
        );
    }
    // Nothing from the request travels in a span.
    let all = format!("{:?}", collector.spans.lock().unwrap());
    assert!(!all.contains(&access) && !all.contains(ALICE_PASSWORD));
}
