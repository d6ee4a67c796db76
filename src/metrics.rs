//! Prometheus metrics for `GET /metrics`, kept in memory by the process (the `prometheus-client`
//! crate, the Prometheus project's own Rust client). Counters and histograms grow as work
//! flows; the gauges of queued and parked work are refreshed once per pass from counts over
//! the unfinished rows only (an index range, never a whole table), and scraping never touches
//! the store.
//!
//! Names follow Prometheus conventions: `deskbridge_` prefix, `_total` counters, base units
//! (`_seconds`).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabel {
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision_point: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionPointLabel {
    decision_point: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    connector: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    connector: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    connector: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric deskbridge exports.
pub struct Metrics {
    registry: Registry,
    tickets_read: Family<ConnectorLabel, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    decision_failures: Family<DecisionPointLabel, Counter>,
    decision_latency: Family<DecisionPointLabel, Histogram, fn() -> Histogram>,
    comment_posts: Family<ResultLabels, Counter>,
    itsm_latency: Family<CallLabels, Histogram, fn() -> Histogram>,
    itsm_responses: Family<StatusLabels, Counter>,
    rate_limited: Family<ConnectorLabel, Counter>,
    poll_lag: Family<ConnectorLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    webhooks: Family<ResultLabels, Counter>,
    inbox: Family<StateLabel, Gauge>,
    outbox: Family<StateLabel, Gauge>,
    findings: Family<KindLabel, Gauge>,
    access_deliveries: Family<SourceLabels, Counter>,
    access_changes: Family<OutcomeLabel, Counter>,
    passes: Counter,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        let metrics = Metrics::new();
        deskbridge_connector::http::observe_calls(Box::new(|connector, method, status, elapsed| {
            global().itsm_call(connector, method, status, elapsed)
        }));
        metrics
    });
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("deskbridge");
        let m = Self {
            tickets_read: Family::default(),
            decisions: Family::default(),
            decision_failures: Family::default(),
            decision_latency: Family::new_with_constructor(latency_histogram),
            comment_posts: Family::default(),
            itsm_latency: Family::new_with_constructor(latency_histogram),
            itsm_responses: Family::default(),
            rate_limited: Family::default(),
            poll_lag: Family::default(),
            webhooks: Family::default(),
            inbox: Family::default(),
            outbox: Family::default(),
            findings: Family::default(),
            access_deliveries: Family::default(),
            access_changes: Family::default(),
            passes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("tickets_read", "New ticket versions stored, by connector", m.tickets_read.clone());
        registry.register("decisions", "Decisions made, by decision point and outcome", m.decisions.clone());
        registry.register(
            "decision_failures",
            "Decisions that failed (the request stays pending), by decision point",
            m.decision_failures.clone(),
        );
        registry.register_with_unit(
            "decision_duration",
            "Time the decision point took to answer (failures included)",
            Unit::Seconds,
            m.decision_latency.clone(),
        );
        registry.register(
            "comment_posts",
            "Comment post attempts by result: posted, found_existing (an earlier attempt had landed), failed, parked",
            m.comment_posts.clone(),
        );
        registry.register_with_unit(
            "itsm_request_duration",
            "ITSM requests by connector and method, retries included",
            Unit::Seconds,
            m.itsm_latency.clone(),
        );
        registry.register(
            "itsm_responses",
            "ITSM responses by connector, method and HTTP status (\"none\" when no answer came)",
            m.itsm_responses.clone(),
        );
        registry.register(
            "itsm_rate_limited",
            "ITSM answers 429 Too Many Requests, by connector",
            m.rate_limited.clone(),
        );
        registry.register_with_unit(
            "poll_lag",
            "Seconds since the connector's poll last reached the end of its changes",
            Unit::Seconds,
            m.poll_lag.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by connector and result",
            m.webhooks.clone(),
        );
        registry.register(
            "access_deliveries",
            "Entitlement-change deliveries (SETs, IGA webhooks) by source and result (accepted, duplicate, or the refusal's error code)",
            m.access_deliveries.clone(),
        );
        registry.register(
            "access_changes",
            "Entitlement changes processed, by outcome (granted, revoked, unmatched, already_granted, …)",
            m.access_changes.clone(),
        );
        registry.register(
            "inbox_rows",
            "Ticket versions not finished, by state (received, pending, parked), as of the last pass",
            m.inbox.clone(),
        );
        registry.register(
            "outbox_rows",
            "Comments not yet on their ticket, by state (queued, parked), as of the last pass",
            m.outbox.clone(),
        );
        registry.register(
            "drift_findings",
            "Findings of the drift report by kind, as of its last run",
            m.findings.clone(),
        );
        registry.register("passes", "Pipeline passes completed", m.passes.clone());
        Self { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `n` new ticket versions stored from `connector`.
    pub fn tickets_read(&self, connector: &str, n: usize) {
        if n > 0 {
            self.tickets_read
                .get_or_create(&ConnectorLabel {
                    connector: connector.to_owned(),
                })
                .inc_by(n as u64);
        }
    }

    /// A decision point answered (`Ok(outcome)`) or failed, after `elapsed`.
    pub fn decision(&self, decision_point: &str, outcome: Result<&str, ()>, elapsed: Duration) {
        let label = DecisionPointLabel {
            decision_point: decision_point.to_owned(),
        };
        self.decision_latency.get_or_create(&label).observe(elapsed.as_secs_f64());
        match outcome {
            Ok(outcome) => self.own_decision(decision_point, outcome),
            Err(()) => {
                self.decision_failures.get_or_create(&label).inc();
            }
        }
    }

    /// A decision counted by its maker: the decision point, or deskbridge itself (a needs-info
    /// for missing fields, which is not timed).
    pub fn own_decision(&self, decision_point: &str, outcome: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision_point: decision_point.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A comment post attempt's result.
    pub fn comment_post(&self, connector: &str, result: &str) {
        self.comment_posts
            .get_or_create(&ResultLabels {
                connector: connector.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// One ITSM request.
    pub fn itsm_call(&self, connector: &str, method: &str, status: Option<u16>, elapsed: Duration) {
        self.itsm_latency
            .get_or_create(&CallLabels {
                connector: connector.to_owned(),
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        self.itsm_responses
            .get_or_create(&StatusLabels {
                connector: connector.to_owned(),
                method: method.to_owned(),
                status: status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
            })
            .inc();
        if status == Some(429) {
            self.rate_limited
                .get_or_create(&ConnectorLabel {
                    connector: connector.to_owned(),
                })
                .inc();
        }
    }

    /// The connector's poll lag now.
    pub fn poll_lag(&self, connector: &str, lag: Duration) {
        self.poll_lag
            .get_or_create(&ConnectorLabel {
                connector: connector.to_owned(),
            })
            .set(lag.as_secs_f64());
    }

    /// A webhook delivery's result.
    pub fn webhook(&self, connector: &str, result: &str) {
        self.webhooks
            .get_or_create(&ResultLabels {
                connector: connector.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// An entitlement-change delivery's result.
    pub fn access_delivery(&self, source: &str, result: &str) {
        self.access_deliveries
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// One processed entitlement change.
    pub fn access_change(&self, outcome: &str) {
        self.access_changes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Unfinished work as counted after a pass.
    pub fn backlog(&self, backlog: &crate::store::Backlog) {
        for (state, n) in [
            ("received", backlog.received),
            ("pending", backlog.pending),
            ("parked", backlog.parked_tickets),
        ] {
            self.inbox.get_or_create(&StateLabel { state: state.into() }).set(n);
        }
        for (state, n) in [("queued", backlog.queued), ("parked", backlog.parked_comments)] {
            self.outbox.get_or_create(&StateLabel { state: state.into() }).set(n);
        }
    }

    /// The drift report's findings, counted by kind (every kind, zeros included).
    pub fn findings(&self, findings: &[crate::report::drift::Finding]) {
        for kind in crate::report::drift::KINDS {
            let n = findings.iter().filter(|f| f.kind == *kind).count();
            self.findings.get_or_create(&KindLabel { kind: (*kind).into() }).set(n as i64);
        }
    }

    /// A pass completed.
    pub fn pass(&self) {
        self.passes.inc();
    }
}
