//! Prometheus metrics. Label sets are small and fixed (transport x outcome), and every counter
//! handle is created at start-up, so recording a check is two atomic adds and a histogram
//! observation, with no label hashing on the hot path.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::decision::Decision;

#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Grpc = 0,
    Http = 1,
}

const TRANSPORTS: [&str; 2] = ["grpc", "http"];
/// `allow` followed by every `Denial::label()`.
const OUTCOMES: [&str; 8] = [
    "allow",
    "no_token",
    "malformed",
    "invalid_token",
    "expired",
    "revoked",
    "wrong_token_type",
    "mfa_required",
];

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    checks: Vec<Vec<Counter>>,
    latency: Vec<Histogram>,
    logins: Family<Labels, Counter>,
    pub cached_tokens: Gauge,
    pub revoked_sessions: Gauge,
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
        let latency_family = Family::<Labels, Histogram>::new_with_constructor(|| {
            // 5 us .. ~80 ms
            Histogram::new(exponential_buckets(0.000_005, 2.0, 15))
        });
        let checks = TRANSPORTS
            .iter()
            .map(|t| {
                OUTCOMES
                    .iter()
                    .map(|o| {
                        checks_family
                            .get_or_create(&vec![("transport", *t), ("outcome", *o)])
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
        Self {
            registry,
            checks,
            latency,
            logins,
            cached_tokens,
            revoked_sessions,
        }
    }

    pub fn record_check(&self, transport: Transport, decision: &Decision, elapsed: Duration) {
        let label = match decision {
            Decision::Allow(_) => "allow",
            Decision::Deny(d) => d.label(),
        };
        let outcome = OUTCOMES.iter().position(|o| *o == label).unwrap_or(0);
        let t = transport as usize;
        self.checks[t][outcome].inc();
        self.latency[t].observe(elapsed.as_secs_f64());
    }

    /// `result` must come from a small fixed set (e.g. "success", "failure", "locked").
    pub fn record_login(&self, result: &'static str) {
        self.logins.get_or_create(&vec![("result", result)]).inc();
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
            &Decision::Deny(Denial::InvalidToken("token expired")),
            Duration::ZERO,
        );
        m.record_login("success");
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
        assert!(
            text.contains("authgate_check_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
