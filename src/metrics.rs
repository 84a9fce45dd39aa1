//! Prometheus metrics. Label sets are small and fixed (transport x outcome), and every handle
//! is created at start-up, so recording a check is three relaxed atomic adds, with no label
//! hashing and no lock on the hot path. Besides: build info, the store's and backend's state,
//! login and backend call durations (not on the hot path: a lock per observation is fine
//! there), and the standard `process_*` metrics, read from `/proc` at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::decision::{Decision, Outcome};
use crate::events::EventKind;
use crate::relay::CloseReason;

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

/// The `step` label of `authgate_login_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStep {
    Password = 0,
    Otp = 1,
}

const LOGIN_STEPS: [&str; 2] = ["password", "otp"];

/// The `operation` label of `authgate_backend_request_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOperation {
    Authenticate = 0,
    Session = 1,
    Logout = 2,
}

const BACKEND_OPERATIONS: [&str; 3] = ["authenticate", "session", "logout"];

/// 5 ms doubling up to ~10 s, then +Inf: a login or backend call, from a local file check
/// (an Argon2 hash) to a backend near its timeout.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
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
    login_duration: Vec<Histogram>,
    backend_duration: Vec<Histogram>,
    pub cached_tokens: Gauge,
    pub revoked_sessions: Gauge,
    /// Relayed socket.io sockets open now.
    pub relay_sockets: Gauge,
    /// Relayed WebSocket messages: `[to the backend, to the client]`.
    pub relay_frames: [Counter; 2],
    /// One counter per `CloseReason`, indexed by it.
    relay_closes: [Counter; CloseReason::ALL.len()],
    /// 1 while the last revocation sync reached the store (set at scrape time).
    pub store_up: Gauge,
    /// 1 unless the last backend call failed (set at scrape time).
    pub backend_up: Gauge,
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
        let relay_sockets = Gauge::default();
        registry.register(
            "relay_sockets",
            "Relayed socket.io WebSockets open now",
            relay_sockets.clone(),
        );
        let frames_family = Family::<Labels, Counter>::default();
        let relay_frames =
            ["backend", "client"].map(|to| frames_family.get_or_create(&vec![("to", to)]).clone());
        registry.register(
            "relay_frames",
            "WebSocket messages relayed, by the side they were sent to",
            frames_family,
        );
        let closes_family = Family::<Labels, Counter>::default();
        let relay_closes = CloseReason::ALL.map(|reason| {
            closes_family
                .get_or_create(&vec![("reason", reason.as_str())])
                .clone()
        });
        registry.register(
            "relay_closes",
            "Relayed sockets closed (or refused at upgrade), by reason",
            closes_family,
        );
        let build_info = Family::<Labels, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version of this authgate in a label",
            build_info,
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "1 while the state store answers the revocation sync, 0 while it does not",
            store_up.clone(),
        );
        let backend_up = Gauge::default();
        registry.register(
            "backend_up",
            "0 while the last call to the login backend failed (unreachable, timed out), else 1",
            backend_up.clone(),
        );
        let login_family =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(call_histogram);
        let login_duration = LOGIN_STEPS
            .iter()
            .map(|step| login_family.get_or_create(&vec![("step", *step)]).clone())
            .collect();
        registry.register(
            "login_duration_seconds",
            "Time to answer one login step (password, otp), whatever the result",
            login_family,
        );
        let backend_family =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(call_histogram);
        let backend_duration = BACKEND_OPERATIONS
            .iter()
            .map(|op| {
                backend_family
                    .get_or_create(&vec![("operation", *op)])
                    .clone()
            })
            .collect();
        registry.register(
            "backend_request_duration_seconds",
            "Time of one call to the login backend, by operation, whatever the result",
            backend_family,
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
            login_duration,
            backend_duration,
            cached_tokens,
            revoked_sessions,
            relay_sockets,
            relay_frames,
            relay_closes,
            store_up,
            backend_up,
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

    pub fn record_relay_close(&self, reason: CloseReason) {
        self.relay_closes[reason as usize].inc();
    }

    pub fn record_login_duration(&self, step: LoginStep, elapsed: Duration) {
        self.login_duration[step as usize].observe(elapsed.as_secs_f64());
    }

    pub fn record_backend_request(&self, operation: BackendOperation, elapsed: Duration) {
        self.backend_duration[operation as usize].observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition, with the `process_*` metrics of this process.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
            return out;
        }
        // The registry prefixes every name with `authgate_`; the process metrics have their
        // standard names, so they go in by hand, before the terminating `# EOF`.
        if let Some(body) = out.strip_suffix("# EOF\n") {
            let mut text = body.to_owned();
            process::encode(&mut text);
            text.push_str("# EOF\n");
            out = text;
        }
        out
    }
}

/// The standard process metrics (as the Prometheus client libraries name them), read from
/// `/proc/self` when asked. Where `/proc` is missing (not Linux), they are left out.
mod process {
    use std::fmt::Write as _;

    /// The unit of the CPU times in `/proc/<pid>/stat`: USER_HZ, which Linux fixes at 100 on
    /// the architectures authgate runs on.
    const TICKS_PER_SECOND: f64 = 100.0;

    pub(super) fn encode(out: &mut String) {
        if let Some(seconds) = cpu_seconds() {
            metric(
                out,
                "process_cpu_seconds",
                "counter",
                "Total user and system CPU time spent in seconds.",
                "process_cpu_seconds_total",
                seconds,
            );
        }
        if let Some(bytes) = status_kib("VmRSS:") {
            metric(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                "process_resident_memory_bytes",
                bytes * 1024.0,
            );
        }
        if let Some(bytes) = status_kib("VmSize:") {
            metric(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                "process_virtual_memory_bytes",
                bytes * 1024.0,
            );
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries: not counted.
            let open = dir.count().saturating_sub(1);
            metric(
                out,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                "process_open_fds",
                open as f64,
            );
        }
        if let Some(max) = max_fds() {
            metric(
                out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                "process_max_fds",
                max,
            );
        }
    }

    fn metric(out: &mut String, family: &str, kind: &str, help: &str, sample: &str, value: f64) {
        let _ = write!(
            out,
            "# HELP {family} {help}\n# TYPE {family} {kind}\n{sample} {value}\n"
        );
    }

    /// utime + stime of `/proc/self/stat`, in seconds.
    fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses: count after its end.
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 (utime) and 15 (stime); `fields[0]` is field 3.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) as f64 / TICKS_PER_SECOND)
    }

    /// A `kB` line of `/proc/self/status`.
    fn status_kib(key: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    }

    /// The soft limit on open files, from `/proc/self/limits`.
    fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::decision::Denial;

    /// The value of the sample `name` (no labels) in `text`.
    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
            .parse()
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_this_process() {
        let m = Metrics::new();
        let before = sample(&m.render(), "process_open_fds");
        let files: Vec<std::fs::File> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let text = m.render();
        // Other test threads open and close a few files meanwhile: half of them is enough.
        assert!(sample(&text, "process_open_fds") >= before + 32.0, "{text}");
        drop(files);
        assert!(sample(&text, "process_resident_memory_bytes") > 1_000_000.0);
        assert!(sample(&text, "process_max_fds") >= 1.0);
        // Burn some CPU: the counter moves (it counts in 10 ms ticks).
        let cpu = sample(&text, "process_cpu_seconds_total");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(sample(&m.render(), "process_cpu_seconds_total") > cpu);
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
    }

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
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        // Operators' metrics are there from the start.
        for line in [
            concat!(
                r#"authgate_build_info{version=""#,
                env!("CARGO_PKG_VERSION"),
                r#""} 1"#
            ),
            "authgate_store_up 0",
            r#"authgate_login_duration_seconds_count{step="password"} 0"#,
            r#"authgate_login_duration_seconds_count{step="otp"} 0"#,
            r#"authgate_backend_request_duration_seconds_count{operation="authenticate"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
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
