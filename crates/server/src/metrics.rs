//! The server's Prometheus metrics (`GET /metrics`), with `prometheus-client`: HTTP requests by
//! route and status with latency, connected nodes, pushes sent, and update steps nodes reported.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram>,
    connected: Gauge,
    pushes: Counter,
    steps: Family<StepLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nonstop_server");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let connected = Gauge::default();
        let pushes = Counter::default();
        let steps = Family::<StepLabels, Counter>::default();
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
            "connected_nodes",
            "Nodes connected to this server process",
            connected.clone(),
        );
        registry.register(
            "pushes",
            "Install and rollback orders pushed to nodes",
            pushes.clone(),
        );
        registry.register(
            "update_steps",
            "Update steps reported by nodes",
            steps.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            connected,
            pushes,
            steps,
        }
    }
}

impl Metrics {
    /// Counts one HTTP request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteOnly {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub(crate) fn connected(&self, n: usize) {
        self.connected.set(n as i64);
    }

    pub(crate) fn pushed(&self, n: usize) {
        self.pushes.inc_by(n as u64);
    }

    pub(crate) fn step(&self, step: &str) {
        self.steps
            .get_or_create(&StepLabels {
                step: step.to_owned(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry");
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
