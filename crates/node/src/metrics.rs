//! The node's Prometheus metrics (`GET /metrics`), with `prometheus-client`: HTTP requests by
//! route and status with latency, live rule calls, failures and refusals by component and
//! version, update steps with the time from a push's arrival to live, and the root of trust (its
//! version, and whether a fresh statement of what is current has been heard).
//!
//! Beside them, a [`Window`] of the traffic since the last sample (requests, server errors, p99
//! latency), which the link sends to the update server every few seconds so its console can
//! chart what each update cost.

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
use prometheus_client::metrics::gauge::Gauge;
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
    window: Window,
    trust: std::sync::Arc<crate::NodeTrust>,
    root_version: Gauge,
    freshness: Gauge,
    statement_age: Gauge,
    /// Requests answered, and of them server errors other than load shedding: the program's
    /// watch window judges a new program on these ([`Metrics::totals`]).
    answered: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

/// The traffic since the last [`Window::take`]: counts, and the latencies in an HDR histogram
/// (microseconds, 2 significant digits) for a percentile that is not an average of averages.
pub struct Window(Mutex<WindowState>);

struct WindowState {
    started: Instant,
    requests: u64,
    errors: u64,
    micros: hdrhistogram::Histogram<u64>,
}

impl Window {
    fn new() -> Window {
        Window(Mutex::new(WindowState {
            started: Instant::now(),
            requests: 0,
            errors: 0,
            // 1 µs to 1 hour at 2 significant digits: about 20 KiB, allocated once.
            micros: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("valid histogram bounds"),
        }))
    }

    fn record(&self, status: u16, seconds: f64) {
        let mut w = self.0.lock().expect("metrics window");
        w.requests += 1;
        if status >= 500 {
            w.errors += 1;
        }
        w.micros.saturating_record((seconds * 1e6) as u64);
    }

    /// The traffic since the last call, as a sample ending now; starts the next window.
    pub fn take(&self) -> nonstop_link::Sample {
        let mut w = self.0.lock().expect("metrics window");
        let p99_ms = if w.requests == 0 {
            0.0
        } else {
            w.micros.value_at_quantile(0.99) as f64 / 1000.0
        };
        let sample = nonstop_link::Sample {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            ms: w.started.elapsed().as_millis() as u64,
            requests: w.requests,
            errors: w.errors,
            p99_ms,
        };
        w.started = Instant::now();
        w.requests = 0;
        w.errors = 0;
        w.micros.reset();
        sample
    }
}

impl Metrics {
    /// Metrics over `rules` and the node's root of trust.
    pub fn new(rules: Rules, trust: std::sync::Arc<crate::NodeTrust>) -> Metrics {
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
        let (root_version, freshness, statement_age) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "trust_root_version",
            "The root of trust's version (0: none, the trusted keys alone)",
            root_version.clone(),
        );
        registry.register(
            "trust_freshness",
            "1: a fresh signed statement of what is current was heard; 0: none within \
             freshness_secs (updates may be withheld); -1: the root names no timestamp key",
            freshness.clone(),
        );
        registry.register(
            "trust_statement_age_seconds",
            "Age of the newest signed statement of what is current (-1: none heard)",
            statement_age.clone(),
        );
        Metrics {
            trust,
            root_version,
            freshness,
            statement_age,
            answered: Default::default(),
            failed: Default::default(),
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
            window: Window::new(),
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

    /// The traffic since the last sample.
    pub fn window(&self) -> &Window {
        &self.window
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
        let trust = self.trust.status();
        self.root_version.set(trust.root_version as i64);
        let f = &trust.freshness;
        self.freshness
            .set(if !f.checked { -1 } else { i64::from(f.fresh) });
        self.statement_age.set(f.age_secs.unwrap_or(-1));
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
    let seconds = started.elapsed().as_secs_f64();
    // Scrapes of `/metrics` are the monitor's traffic, not the hospital's.
    if route != "/metrics" {
        let status = response.status().as_u16();
        m.window.record(status, seconds);
        m.answered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A 503 is load shedding or a rule's standby answering, said to the client with a
        // retry; other server errors are the program failing.
        if status >= 500 && status != 503 {
            m.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    m.requests
        .get_or_create(&Route {
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    m.latency
        .get_or_create(&RouteOnly { route })
        .observe(seconds);
    response
}

impl Metrics {
    /// Requests answered since this program started, and of them those that failed (5xx other
    /// than 503).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.answered.load(std::sync::atomic::Ordering::Relaxed),
            self.failed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
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
