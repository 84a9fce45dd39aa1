//! `deploy/grafana-dashboard.json` queries exactly the metrics operators were promised (build
//! info, process metrics, login and backend call durations, the store's state, checks by
//! outcome), and each one is exported by a running authgate's `/metrics`: a dashboard panel
//! can never go blank because a metric was renamed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::app::TestApp;
use support::process::repo_path;

/// What the dashboard is about (SPEC 2, HTTP listener `/metrics`; issue 15 item 5).
const PROMISED: &[&str] = &[
    "authgate_build_info",
    "authgate_checks_total",
    "authgate_store_up",
    "authgate_login_duration_seconds_bucket",
    "authgate_backend_request_duration_seconds_bucket",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
];

/// Every PromQL expression in the dashboard: panel targets and template variable queries.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The metric names in a PromQL expression: identifiers of authgate's and the process
/// metrics' namespaces (functions, labels and keywords are neither).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            current.push(c);
            continue;
        }
        if current.starts_with("authgate_") || current.starts_with("process_") {
            names.push(current.clone());
        }
        current.clear();
    }
    names
}

/// The sample names of a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le) (rate(authgate_login_duration_seconds_bucket{job=~"authgate_x"}[5m])))"#
        ),
        ["authgate_login_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names("process_open_fds + process_max_fds"),
        ["process_open_fds", "process_max_fds"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let raw = std::fs::read_to_string(repo_path("deploy/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&raw).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "no query found in the dashboard");
    let queried: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let promised: BTreeSet<String> = PROMISED.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        queried, promised,
        "the dashboard must query exactly the promised metrics"
    );

    // Freshly started, over the socket, before any login or check: every series is there.
    let app = TestApp::start().await;
    let response = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let exported = exported(&text);
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried by deploy/grafana-dashboard.json but not exported: {missing:?}\n{text}"
    );
}
