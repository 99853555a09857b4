//! criusd's own metrics, exposed in the Prometheus/OpenMetrics text format on `/metrics`.
//!
//! One process-wide set ([`global`]) so that the crates doing the work (the gRPC layer, the
//! image puller, CNI, the monitor supervisor) record with one call and no handle threaded
//! through their constructors. Pods and containers by state are counted at scrape time by a
//! callback the daemon installs ([`Metrics::set_state_source`]).
//!
//! Label values that come from outside (the gRPC method) are bounded: after
//! [`MAX_METHODS`] distinct methods the rest are counted as `other`.

mod layer;
mod server;

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use layer::{GrpcMetrics, GrpcMetricsLayer};
pub use server::{MetricsServer, serve};

/// Distinct gRPC method labels kept; more fold into `other`.
pub const MAX_METHODS: usize = 128;
/// Longest method label kept.
const MAX_METHOD_LEN: usize = 96;

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms .. ~33 s: RPCs, CNI plugins.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// 50 ms .. ~27 min: image pulls.
fn pull_time() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// How many pods and containers are in each state, at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub pods: Vec<(String, i64)>,
    pub containers: Vec<(String, i64)>,
}

type StateSource = Box<dyn Fn() -> StateCounts + Send + Sync>;

pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<Labels2, Counter>,
    rpc_duration: Histograms<Labels1>,
    pull_bytes: Counter,
    pull_duration: Histograms<Labels1>,
    pods: Family<Labels1, Gauge>,
    containers: Family<Labels1, Gauge>,
    monitor_restarts: Counter,
    cni_duration: Histograms<Labels2>,
    methods: Mutex<HashSet<String>>,
    states: Mutex<Option<StateSource>>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("crius");
        let rpc_requests = Family::<Labels2, Counter>::default();
        registry.register(
            "grpc_requests",
            "CRI gRPC requests handled, by method and gRPC status code",
            rpc_requests.clone(),
        );
        let rpc_duration = Histograms::<Labels1>::new_with_constructor(latency);
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a CRI gRPC request to its response headers, by method",
            rpc_duration.clone(),
        );
        let pull_bytes = Counter::default();
        registry.register(
            "image_pull_bytes",
            "Bytes of image layers, configs and manifests downloaded",
            pull_bytes.clone(),
        );
        let pull_duration = Histograms::<Labels1>::new_with_constructor(pull_time);
        registry.register(
            "image_pull_duration_seconds",
            "Time an image pull took, by result (ok, error)",
            pull_duration.clone(),
        );
        let pods = Family::<Labels1, Gauge>::default();
        registry.register("pods", "Pod sandboxes by state", pods.clone());
        let containers = Family::<Labels1, Gauge>::default();
        registry.register("containers", "Containers by state", containers.clone());
        let monitor_restarts = Counter::default();
        registry.register(
            "monitor_restarts",
            "Pod monitors started again after the previous one was gone",
            monitor_restarts.clone(),
        );
        let cni_duration = Histograms::<Labels2>::new_with_constructor(latency);
        registry.register(
            "cni_duration_seconds",
            "Time CNI ADD and DEL of a pod network took, by operation and result",
            cni_duration.clone(),
        );
        Metrics {
            registry,
            rpc_requests,
            rpc_duration,
            pull_bytes,
            pull_duration,
            pods,
            containers,
            monitor_restarts,
            cni_duration,
            methods: Mutex::default(),
            states: Mutex::default(),
        }
    }

    /// One gRPC request: its method (the last path segment), its code name, its latency.
    pub fn rpc(&self, method: &str, code: &str, elapsed: Duration) {
        let method = self.method_label(method);
        self.rpc_requests
            .get_or_create(&[("method", method.clone()), ("code", code.to_string())])
            .inc();
        self.rpc_duration
            .get_or_create(&[("method", method)])
            .observe(elapsed.as_secs_f64());
    }

    fn method_label(&self, method: &str) -> String {
        let ok = !method.is_empty()
            && method.len() <= MAX_METHOD_LEN
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return "other".into();
        }
        let mut seen = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(method) || (seen.len() < MAX_METHODS && seen.insert(method.to_string())) {
            method.to_string()
        } else {
            "other".into()
        }
    }

    /// Bytes downloaded by a pull, counted as they arrive.
    pub fn pull_bytes(&self, n: u64) {
        self.pull_bytes.inc_by(n);
    }

    /// A pull that ended.
    pub fn pull_done(&self, ok: bool, elapsed: Duration) {
        self.pull_duration
            .get_or_create(&[("result", result(ok))])
            .observe(elapsed.as_secs_f64());
    }

    /// A pod's monitor was started again after the previous one died.
    pub fn monitor_restarted(&self) {
        self.monitor_restarts.inc();
    }

    /// One CNI operation (`add` or `del`) on a pod's network.
    pub fn cni(&self, op: &'static str, ok: bool, elapsed: Duration) {
        self.cni_duration
            .get_or_create(&[("op", op.to_string()), ("result", result(ok))])
            .observe(elapsed.as_secs_f64());
    }

    /// What counts pods and containers by state on each scrape.
    pub fn set_state_source(&self, f: impl Fn() -> StateCounts + Send + Sync + 'static) {
        *self.states.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// The OpenMetrics text of every metric now.
    pub fn render(&self) -> String {
        if let Some(f) = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let counts = f();
            // States with nothing in them any more disappear rather than keep an old value.
            self.pods.clear();
            self.containers.clear();
            for (state, n) in counts.pods {
                self.pods.get_or_create(&[("state", state)]).set(n);
            }
            for (state, n) in counts.containers {
                self.containers.get_or_create(&[("state", state)]).set(n);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn result(ok: bool) -> String {
    if ok { "ok" } else { "error" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_states() {
        let m = Metrics::new();
        m.rpc("Version", "Ok", Duration::from_millis(3));
        m.rpc("Version", "Ok", Duration::from_millis(1));
        m.rpc("RunPodSandbox", "NotFound", Duration::from_millis(1));
        m.pull_bytes(1234);
        m.pull_done(true, Duration::from_secs(2));
        m.cni("add", true, Duration::from_millis(40));
        m.monitor_restarted();
        m.set_state_source(|| StateCounts {
            pods: vec![("ready".into(), 2)],
            containers: vec![("running".into(), 3), ("exited".into(), 1)],
        });
        let text = m.render();
        for line in [
            "crius_grpc_requests_total{method=\"Version\",code=\"Ok\"} 2",
            "crius_grpc_requests_total{method=\"RunPodSandbox\",code=\"NotFound\"} 1",
            "crius_grpc_request_duration_seconds_count{method=\"Version\"} 2",
            "crius_image_pull_bytes_total 1234",
            "crius_image_pull_duration_seconds_count{result=\"ok\"} 1",
            "crius_cni_duration_seconds_count{op=\"add\",result=\"ok\"} 1",
            "crius_monitor_restarts_total 1",
            "crius_pods{state=\"ready\"} 2",
            "crius_containers{state=\"running\"} 3",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // A state that empties disappears.
        m.set_state_source(StateCounts::default);
        assert!(!m.render().contains("crius_pods{"));
    }

    #[test]
    fn method_labels_are_bounded() {
        let m = Metrics::new();
        assert_eq!(m.method_label("Version"), "Version");
        assert_eq!(m.method_label("a\"b"), "other");
        assert_eq!(m.method_label(&"x".repeat(200)), "other");
        for i in 0..MAX_METHODS * 2 {
            m.method_label(&format!("M{i}"));
        }
        assert_eq!(m.method_label("Brand_new"), "other");
        // Those seen first keep their name.
        assert_eq!(m.method_label("Version"), "Version");
    }
}
