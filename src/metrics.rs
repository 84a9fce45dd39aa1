//! Prometheus metrics. Label sets are small and fixed (transport x outcome), and every handle
//! is created at start-up, so recording a check is three relaxed atomic adds, with no label
//! hashing and no lock on the hot path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::decision::{Decision, Outcome};
use crate::events::EventKind;

#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Grpc = 0,
    Http = 1,
}

const TRANSPORTS: [&str; 2] = ["grpc", "http"];

type Labels = Vec<(&'static str, &'static str)>;

/// The `result` label of `authgate_logins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Success,
    Failure,
    Locked,
    Unavailable,
}

impl LoginResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Locked => "locked",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Finite latency buckets: 5 us doubling up to ~82 ms, then +Inf.
const LATENCY_BUCKETS: usize = 15;
const FIRST_BOUND_NANOS: u64 = 5_000;

/// A check-latency histogram without a lock (prometheus-client's `Histogram` takes one on
/// every observation, which the two request threads then contend for).
#[derive(Clone, Debug, Default)]
struct LatencyHistogram(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Observations per bucket, not cumulative; the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = (0..LATENCY_BUCKETS)
            .find(|&i| nanos <= FIRST_BOUND_NANOS << i)
            .unwrap_or(LATENCY_BUCKETS);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        let buckets: Vec<(f64, u64)> = counts
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bound = if i == LATENCY_BUCKETS {
                    f64::MAX // rendered as +Inf
                } else {
                    (FIRST_BOUND_NANOS << i) as f64 / 1e9
                };
                (bound, n.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = counts.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

pub struct Metrics {
    registry: Registry,
    checks: Vec<Vec<Counter>>,
    latency: Vec<LatencyHistogram>,
    logins: Family<Labels, Counter>,
    /// One counter per `EventKind`, indexed by it.
    security_events: [Counter; EventKind::ALL.len()],
    pub cached_tokens: Gauge,
    pub revoked_sessions: Gauge,
    /// 1 while lockdown is on (as this replica last read it), else 0.
    pub lockdown: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("authgate");
        let checks_family = Family::<Labels, Counter>::default();
        let latency_family = Family::<Labels, LatencyHistogram>::default();
        let checks = TRANSPORTS
            .iter()
            .map(|t| {
                Outcome::ALL
                    .iter()
                    .map(|o| {
                        checks_family
                            .get_or_create(&vec![("transport", *t), ("outcome", o.label())])
                            .clone()
                    })
                    .collect()
            })
            .collect();
        let latency = TRANSPORTS
            .iter()
            .map(|t| {
                latency_family
                    .get_or_create(&vec![("transport", *t)])
                    .clone()
            })
            .collect();
        registry.register(
            "checks",
            "Authorization checks by transport and outcome",
            checks_family,
        );
        registry.register(
            "check_duration_seconds",
            "Time to decide one check, inside authgate",
            latency_family,
        );
        let logins = Family::<Labels, Counter>::default();
        registry.register("logins", "Login attempts by result", logins.clone());
        let events_family = Family::<Labels, Counter>::default();
        let security_events = EventKind::ALL.map(|kind| {
            events_family
                .get_or_create(&vec![("event", kind.as_str())])
                .clone()
        });
        registry.register(
            "security_events",
            "Security events by name (SPEC 2.2)",
            events_family,
        );
        let cached_tokens = Gauge::default();
        registry.register(
            "cached_tokens",
            "Verified tokens in the cache",
            cached_tokens.clone(),
        );
        let revoked_sessions = Gauge::default();
        registry.register(
            "revoked_sessions",
            "Sessions in the in-memory revocation set",
            revoked_sessions.clone(),
        );
        let lockdown = Gauge::default();
        registry.register(
            "lockdown",
            "1 while lockdown is on (logins and refreshes refused), else 0",
            lockdown.clone(),
        );
        Self {
            lockdown,
            registry,
            checks,
            latency,
            logins,
            security_events,
            cached_tokens,
            revoked_sessions,
        }
    }

    /// Counts one check under its transport and outcome; records how long it took.
    pub fn record_check(&self, transport: Transport, decision: &Decision, elapsed: Duration) {
        let t = transport as usize;
        self.checks[t][decision.outcome() as usize].inc();
        self.latency[t].observe(elapsed);
    }

    /// A result's series appears on its first use (as it always has).
    pub fn record_login(&self, result: LoginResult) {
        self.logins
            .get_or_create(&vec![("result", result.as_str())])
            .inc();
    }

    pub fn record_security_event(&self, kind: EventKind) {
        self.security_events[kind as usize].inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Denial;

    #[test]
    fn renders_counters_per_outcome() {
        let m = Metrics::new();
        m.record_check(
            Transport::Grpc,
            &Decision::Deny(Denial::NoToken),
            Duration::from_micros(20),
        );
        m.record_check(
            Transport::Http,
            &Decision::Deny(Denial::Expired),
            Duration::ZERO,
        );
        m.record_login(LoginResult::Success);
        m.record_security_event(EventKind::RefreshReuse);
        let text = m.render();
        assert!(
            text.contains(r#"authgate_checks_total{transport="grpc",outcome="no_token"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authgate_checks_total{transport="http",outcome="expired"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authgate_logins_total{result="success"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"result="failure""#), "{text}");
        // Every event has its series from the start.
        assert!(
            text.contains(r#"authgate_security_events_total{event="refresh_reuse"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authgate_security_events_total{event="2fa_disabled"} 0"#),
            "{text}"
        );
        // 20 us: not in the 10 us bucket, in the 20 us one; the zero lands in the first.
        for line in [
            r#"authgate_check_duration_seconds_count{transport="grpc"} 1"#,
            r#"authgate_check_duration_seconds_sum{transport="grpc"} 0.00002"#,
            r#"authgate_check_duration_seconds_bucket{le="0.00001",transport="grpc"} 0"#,
            r#"authgate_check_duration_seconds_bucket{le="0.00002",transport="grpc"} 1"#,
            r#"authgate_check_duration_seconds_bucket{le="+Inf",transport="grpc"} 1"#,
            r#"authgate_check_duration_seconds_bucket{le="0.000005",transport="http"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // Every outcome has its own series, from start-up.
        for o in Outcome::ALL {
            let series = format!(
                r#"authgate_checks_total{{transport="http",outcome="{}"}}"#,
                o.label()
            );
            assert!(text.contains(&series), "{series} missing");
        }
    }
}
