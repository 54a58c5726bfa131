//! The node's Prometheus metrics (`GET /metrics`), with `prometheus-client`: HTTP requests by
//! route and status with latency, live rule calls, failures and refusals by component and
//! version, and update steps with the time from a push's arrival to live.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nonstop_runtime::Rules;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rule {
    component: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<Route, Counter>,
    latency: Family<RouteOnly, Histogram>,
    rule_calls: Family<Rule, Counter>,
    rule_failures: Family<Rule, Counter>,
    rule_refusals: Family<Rule, Counter>,
    steps: Family<StepLabel, Counter>,
    push_to_live: Histogram,
    /// What the rule counters were last raised to, per (component, version): the runtime keeps
    /// totals, Prometheus counters take increments.
    seen: Mutex<HashMap<Rule, (u64, u64, u64)>>,
    rules: Rules,
}

impl Metrics {
    /// Metrics over `rules`.
    pub fn new(rules: Rules) -> Metrics {
        let mut registry = Registry::with_prefix("nonstop_node");
        let requests = Family::<Route, Counter>::default();
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let (rule_calls, rule_failures, rule_refusals) =
            (Family::default(), Family::default(), Family::default());
        let steps = Family::<StepLabel, Counter>::default();
        let push_to_live = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "rule_calls",
            "Live rule calls by component and version",
            rule_calls.clone(),
        );
        registry.register(
            "rule_failures",
            "Live rule calls that failed (answered by the standby)",
            rule_failures.clone(),
        );
        registry.register(
            "rule_refusals",
            "Live rule calls the rule refused",
            rule_refusals.clone(),
        );
        registry.register("update_steps", "Update steps by step", steps.clone());
        registry.register(
            "update_push_to_live_seconds",
            "From a pushed update's arrival to live",
            push_to_live.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            rule_calls,
            rule_failures,
            rule_refusals,
            steps,
            push_to_live,
            seen: Mutex::new(HashMap::new()),
            rules,
        }
    }

    /// Counts one update step; `live_after` is the push-to-live time of a `live` step.
    pub fn step(&self, step: &str, live_after: Option<f64>) {
        self.steps
            .get_or_create(&StepLabel { step: step.into() })
            .inc();
        if let Some(s) = live_after {
            self.push_to_live.observe(s);
        }
    }

    /// The text exposition format, with the rule counters brought up to date.
    pub fn render(&self) -> String {
        let mut seen = self.seen.lock().expect("metrics");
        for slot in self.rules.slots() {
            let Some((tag, counts)) = slot.live_counts() else {
                continue;
            };
            let key = Rule {
                component: tag.component.clone(),
                version: tag.version.to_string(),
            };
            let last = seen.entry(key.clone()).or_default();
            self.rule_calls
                .get_or_create(&key)
                .inc_by(counts.calls.saturating_sub(last.0));
            self.rule_failures
                .get_or_create(&key)
                .inc_by(counts.failures.saturating_sub(last.1));
            self.rule_refusals
                .get_or_create(&key)
                .inc_by(counts.refusals.saturating_sub(last.2));
            *last = (
                counts.calls.max(last.0),
                counts.failures.max(last.1),
                counts.refusals.max(last.2),
            );
        }
        drop(seen);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Middleware: counts every request by its route template and status.
pub async fn count(State(m): State<std::sync::Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    m.requests
        .get_or_create(&Route {
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    m.latency
        .get_or_create(&RouteOnly { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn serve(State(m): State<std::sync::Arc<Metrics>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
