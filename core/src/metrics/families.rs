//! Every metric family the engine exports, registered once in one process-wide registry
//! under the `plue_` prefix.
//!
//! Invariants: names follow the Prometheus conventions (counters end in `_total`, which the
//! encoder appends; durations are histograms in seconds, named `_seconds` by their unit);
//! label values come from closed sets (statuses, kinds, forges, route templates) or from
//! runner labels, whose grammar the engine already bounds, so the series stay few.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// A label set: name/value pairs (names are fixed per family).
pub(super) type Labels = Vec<(&'static str, String)>;

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

pub(super) struct Families {
    pub(super) registry: Registry,
    pub(super) runs_finished: Family<Labels, Counter>,
    pub(super) steps_finished: Family<Labels, Counter>,
    pub(super) step_duration: Histograms,
    pub(super) step_start_latency: Histogram,
    pub(super) queued_steps: Family<Labels, Gauge>,
    pub(super) runners: Family<Labels, Gauge>,
    pub(super) pool_runners: Family<Labels, Gauge>,
    pub(super) pod_failures: Family<Labels, Counter>,
    pub(super) start_failures: Family<Labels, Counter>,
    pub(super) backing_off: Family<Labels, Gauge>,
    pub(super) webhook_deliveries: Family<Labels, Counter>,
    pub(super) evaluations: Family<Labels, Counter>,
    pub(super) evaluation_duration: Histograms,
    pub(super) log_lines: Counter,
    pub(super) http_requests: Family<Labels, Counter>,
    pub(super) http_duration: Histograms,
    pub(super) leader: Gauge,
    pub(super) draining: Gauge,
    pub(super) network_refused: Counter,
    pub(super) claims_unacknowledged: Counter,
    pub(super) proposals: Family<Labels, Counter>,
    pub(super) threat_checks: Family<Labels, Counter>,
    /// `model` is a price-table key or `other` (`crate::pricing::Prices::label`).
    pub(super) llm_tokens: Family<Labels, Counter>,
    pub(super) llm_cost: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Counted by `plue_forge` (which cannot see this registry), copied here at each
    /// scrape (`super::forge_token_refusals`); `use` and `result` are closed sets.
    pub(super) forge_token_refusals: Family<Labels, Counter>,
}

/// 5 ms … ~85 min: steps run from milliseconds to an hour.
fn step_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 4.0, 11))
}

/// 1 ms … ~33 s: queue waits, evaluations and HTTP requests (long-polls land in +Inf).
fn short_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub(super) static FAMILIES: LazyLock<Families> = LazyLock::new(Families::new);

impl Families {
    fn new() -> Families {
        let mut registry = Registry::with_prefix("plue");
        let families = Families {
            registry: Registry::default(),
            runs_finished: Family::default(),
            steps_finished: Family::default(),
            step_duration: Family::new_with_constructor(step_buckets),
            step_start_latency: short_buckets(),
            queued_steps: Family::default(),
            runners: Family::default(),
            pool_runners: Family::default(),
            pod_failures: Family::default(),
            start_failures: Family::default(),
            backing_off: Family::default(),
            webhook_deliveries: Family::default(),
            evaluations: Family::default(),
            evaluation_duration: Family::new_with_constructor(short_buckets),
            log_lines: Counter::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(short_buckets),
            leader: Gauge::default(),
            draining: Gauge::default(),
            network_refused: Counter::default(),
            claims_unacknowledged: Counter::default(),
            proposals: Family::default(),
            threat_checks: Family::default(),
            llm_tokens: Family::default(),
            llm_cost: Family::default(),
            forge_token_refusals: Family::default(),
        };
        let f = &families;
        registry.register(
            "network_refused",
            "Connections a step's egress proxy refused (a host not in the step's network allow-list)",
            f.network_refused.clone(),
        );
        registry.register(
            "claims_unacknowledged",
            "Claims returned to the queue because their runner never acknowledged them (no retry used; the runner became suspect)",
            f.claims_unacknowledged.clone(),
        );
        registry.register(
            "proposals",
            "Proposals of llm steps' safe outputs, by kind and result (refused, waiting, ready, applied, failed)",
            f.proposals.clone(),
        );
        registry.register(
            "threat_checks",
            "Proposals the threat check judged, by verdict (pass, needs_approval, refused)",
            f.threat_checks.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs that reached a final status, by status",
            f.runs_finished.clone(),
        );
        registry.register(
            "steps_finished",
            "Step runs that reached a final status, by status and kind (bash, python, llm)",
            f.steps_finished.clone(),
        );
        registry.register_with_unit(
            "step_duration",
            "Time from a step's first start to its final status, by kind and status",
            Unit::Seconds,
            f.step_duration.clone(),
        );
        registry.register_with_unit(
            "step_ready_to_started",
            "Time from a step becoming ready (queued, due) to its runner starting it",
            Unit::Seconds,
            f.step_start_latency.clone(),
        );
        registry.register(
            "queued_steps",
            "Steps ready and waiting for a runner, by the labels they need and the pool class serving them",
            f.queued_steps.clone(),
        );
        registry.register(
            "runners",
            "Live runners registered with the engines, by state (idle, busy) and labels",
            f.runners.clone(),
        );
        registry.register(
            "pool_runners",
            "Runners (processes or pods) of this engine's pool, by class and state",
            f.pool_runners.clone(),
        );
        registry.register(
            "pool_pod_failures",
            "Pool runners that failed to start or died, by class and reason",
            f.pod_failures.clone(),
        );
        registry.register(
            "pool_start_failures",
            "Pool runners (processes or pods) that ended before registering, by class",
            f.start_failures.clone(),
        );
        registry.register(
            "pool_backing_off",
            "1 while a pool class waits before starting runners after start failures",
            f.backing_off.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Forge webhook deliveries, by forge and result",
            f.webhook_deliveries.clone(),
        );
        registry.register(
            "evaluations",
            "Workflow file evaluations, by result (ok, invalid, unavailable)",
            f.evaluations.clone(),
        );
        registry.register_with_unit(
            "evaluation_duration",
            "Time one workflow file evaluation took, by result",
            Unit::Seconds,
            f.evaluation_duration.clone(),
        );
        registry.register(
            "log_lines_ingested",
            "Step log lines stored (repeated deliveries of a line count once)",
            f.log_lines.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code",
            f.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (to its headers, for streams), by method and route",
            Unit::Seconds,
            f.http_duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this engine holds the pool's leader lease",
            f.leader.clone(),
        );
        registry.register(
            "draining",
            "1 once this engine is shutting down (its readiness fails)",
            f.draining.clone(),
        );
        registry.register(
            "llm_tokens",
            "Tokens llm steps used, by model (a price-table key or other) and kind (input, output, cache_write, cache_read)",
            f.llm_tokens.clone(),
        );
        registry.register(
            "llm_cost_usd",
            "What llm steps cost in USD by the engine's price table, by model (a price-table key or other)",
            f.llm_cost.clone(),
        );
        registry.register(
            "forge_token_refusals",
            "GitHub App installation tokens the forge refused before their planned refresh (revoked), by use (read-code, lookup, report, answer, write) and what followed (reminted: forgotten and a new one minted; refused_again: the new one was refused too, the exchange failed)",
            f.forge_token_refusals.clone(),
        );
        Families {
            registry,
            ..families
        }
    }
}
