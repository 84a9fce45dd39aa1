//! OpenTelemetry traces, in builds with the cargo feature `otel` and with
//! `[telemetry] endpoint` set: a span for every login API request and for a sampled share of
//! checks (`telemetry.check_sample_ratio`), each the child of the proxy's span named by the
//! request's W3C `traceparent` header, exported over OTLP/gRPC by a batch processor on the
//! tokio runtime.
//!
//! The check path pays one branch when tracing is off (no endpoint, or a build without the
//! feature, where [`Telemetry`] is empty and [`Telemetry::check`] always answers `None`).
//! When it is on, an unsampled check costs a header lookup and a comparison; no span object is
//! made for it. Spans carry the route, the outcome and the status, never a token, a user name
//! or any other request content.

use crate::credentials::Headers;
use crate::decision::Decision;

/// The W3C trace context header (<https://www.w3.org/TR/trace-context/>).
pub const TRACEPARENT: &str = "traceparent";

/// Tracing of one replica; off unless configured (see the module documentation).
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    inner: Option<otel::Tracing>,
}

/// A check's span, started by [`Telemetry::check`]; ended by [`CheckSpan::finish`].
pub struct CheckSpan {
    #[cfg(feature = "otel")]
    span: opentelemetry_sdk::trace::Span,
    #[cfg(not(feature = "otel"))]
    _never: std::convert::Infallible,
}

/// A login API request's span, started by [`Telemetry::request`].
pub struct RequestSpan {
    #[cfg(feature = "otel")]
    span: opentelemetry_sdk::trace::Span,
    #[cfg(not(feature = "otel"))]
    _never: std::convert::Infallible,
}

impl Telemetry {
    /// No tracing.
    pub fn off() -> Self {
        Self::default()
    }

    /// Tracing as `[telemetry]` says: off without an endpoint. Needs a tokio runtime (the
    /// exporter's batch task runs on it). [`crate::config::Config::validate`] refuses an
    /// endpoint in a build without the feature.
    pub fn from_config(cfg: &crate::config::TelemetryConfig) -> Result<Self, String> {
        #[cfg(feature = "otel")]
        {
            Ok(Self {
                inner: otel::Tracing::from_config(cfg)?,
            })
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = cfg;
            Ok(Self::off())
        }
    }

    /// Whether spans are exported at all.
    pub fn enabled(&self) -> bool {
        #[cfg(feature = "otel")]
        {
            self.inner.is_some()
        }
        #[cfg(not(feature = "otel"))]
        {
            false
        }
    }

    /// A span for a check whose request has `headers`, if tracing is on and this check is
    /// sampled.
    #[inline]
    pub fn check(&self, headers: &dyn Headers) -> Option<CheckSpan> {
        #[cfg(feature = "otel")]
        {
            let tracing = self.inner.as_ref()?;
            tracing.check_span(headers).map(|span| CheckSpan { span })
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = headers;
            None
        }
    }

    /// A span named `name` (the route, e.g. `POST /auth/login`) for a login API request, if
    /// tracing is on.
    pub fn request(&self, name: String, headers: &dyn Headers) -> Option<RequestSpan> {
        #[cfg(feature = "otel")]
        {
            let tracing = self.inner.as_ref()?;
            Some(RequestSpan {
                span: tracing.request_span(name, headers),
            })
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = (name, headers);
            None
        }
    }

    /// Exports what is still buffered (bounded by the exporter's timeout); for shutdown.
    /// Blocking: call it off the async worker threads.
    pub fn flush(&self) {
        #[cfg(feature = "otel")]
        if let Some(tracing) = &self.inner {
            tracing.flush();
        }
    }
}

impl CheckSpan {
    /// Ends the span with the decision's outcome; `transport` is `grpc` or `http`.
    pub fn finish(self, transport: &'static str, decision: &Decision) {
        #[cfg(feature = "otel")]
        otel::finish_check(self.span, transport, decision);
        #[cfg(not(feature = "otel"))]
        {
            let _ = (transport, decision);
            match self._never {}
        }
    }
}

impl RequestSpan {
    /// Ends the span with the response's status.
    pub fn finish(self, status: u16) {
        #[cfg(feature = "otel")]
        otel::finish_request(self.span, status);
        #[cfg(not(feature = "otel"))]
        {
            let _ = status;
            match self._never {}
        }
    }
}

#[cfg(feature = "otel")]
mod otel {
    use std::time::Duration;

    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::{
        SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};

    use super::TRACEPARENT;
    use crate::config::TelemetryConfig;
    use crate::credentials::Headers;
    use crate::decision::Decision;

    /// How long one export may take.
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

    pub(super) struct Tracing {
        provider: SdkTracerProvider,
        tracer: SdkTracer,
        propagator: TraceContextPropagator,
        /// `check_sample_ratio` as a bound on the trace id's low 64 bits.
        check_threshold: u64,
    }

    /// The request's `traceparent`, for the W3C propagator.
    struct Carrier<'a>(&'a dyn Headers);

    impl Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            // Only traceparent is read: tracestate and baggage are not propagated.
            (key == TRACEPARENT)
                .then(|| self.0.get(TRACEPARENT))
                .flatten()
        }

        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT]
        }
    }

    impl Tracing {
        pub(super) fn from_config(cfg: &TelemetryConfig) -> Result<Option<Self>, String> {
            let Some(endpoint) = cfg.endpoint.as_deref().filter(|e| !e.is_empty()) else {
                return Ok(None);
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| format!("telemetry.endpoint: {e}"))?;
            let processor =
                BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                // Joins the proxy's decision: a trace it does not sample is not sampled here.
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                .with_resource(
                    Resource::builder_empty()
                        .with_service_name(cfg.service_name.clone())
                        .build(),
                )
                .build();
            let tracer = provider.tracer("authgate");
            Ok(Some(Self {
                provider,
                tracer,
                propagator: TraceContextPropagator::new(),
                check_threshold: threshold(cfg.check_sample_ratio),
            }))
        }

        fn parent(&self, headers: &dyn Headers) -> Context {
            self.propagator.extract(&Carrier(headers))
        }

        pub(super) fn check_span(&self, headers: &dyn Headers) -> Option<Span> {
            if self.check_threshold == 0 {
                return None;
            }
            let parent = self.parent(headers);
            let remote = parent.span().span_context().clone();
            // The proxy's trace, when it sends one, decides first; then the ratio, on the
            // trace id so that replicas (and the proxy, if it samples by ratio) agree.
            let low = if remote.is_valid() {
                if !remote.is_sampled() {
                    return None;
                }
                let id = remote.trace_id().to_bytes();
                u64::from_be_bytes([id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]])
            } else {
                rand::random::<u64>()
            };
            if low > self.check_threshold {
                return None;
            }
            Some(
                self.tracer
                    .span_builder("authz.check")
                    .with_kind(SpanKind::Server)
                    .start_with_context(&self.tracer, &parent),
            )
        }

        pub(super) fn request_span(&self, name: String, headers: &dyn Headers) -> Span {
            let parent = self.parent(headers);
            self.tracer
                .span_builder(name)
                .with_kind(SpanKind::Server)
                .start_with_context(&self.tracer, &parent)
        }

        pub(super) fn flush(&self) {
            if let Err(e) = self.provider.force_flush() {
                tracing::warn!(error = %e, "exporting the last spans failed");
            }
        }
    }

    impl Drop for Tracing {
        fn drop(&mut self) {
            let _ = self.provider.shutdown();
        }
    }

    /// `ratio` (0..=1) of the u64 range; `u64::MAX` samples everything, 0 nothing.
    fn threshold(ratio: f64) -> u64 {
        if ratio >= 1.0 {
            u64::MAX
        } else if ratio > 0.0 {
            // In range: 0 < ratio < 1. The cast saturates anyway.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let bound = (ratio * u64::MAX as f64) as u64;
            bound.max(1)
        } else {
            0
        }
    }

    pub(super) fn finish_check(mut span: Span, transport: &'static str, decision: &Decision) {
        use opentelemetry::trace::Span as _;
        let outcome = match decision {
            Decision::Allow(_) => "allow",
            Decision::Deny(d) => d.reason(),
        };
        span.set_attribute(KeyValue::new("authgate.transport", transport));
        span.set_attribute(KeyValue::new("authgate.outcome", outcome));
        span.end();
    }

    pub(super) fn finish_request(mut span: Span, status: u16) {
        use opentelemetry::trace::Span as _;
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error("server error"));
        }
        span.end();
    }

    #[cfg(test)]
    mod tests {
        use super::threshold;

        #[test]
        fn the_ratio_bounds_the_trace_id() {
            assert_eq!(threshold(0.0), 0);
            assert_eq!(threshold(-1.0), 0);
            assert_eq!(threshold(1.0), u64::MAX);
            let half = threshold(0.5);
            assert!(half > u64::MAX / 2 - 2048 && half < u64::MAX / 2 + 2048);
            assert_eq!(threshold(1e-30), 1);
        }
    }
}
