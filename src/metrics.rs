//! Prometheus metrics, one typed family per thing we count, so the names and labels cannot
//! drift between the places that record them. Exposed at `GET /metrics`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::outbox::{FSYNC_BUCKETS, LogStats, WritePart, WriteState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorePart {
    pub part: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceOutcome {
    pub source: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationOutcome {
    pub destination: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Source {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Destination {
    pub destination: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Webhooks by source and outcome (accepted, duplicate, ignored, rejected_*, shed).
    pub webhooks: Family<SourceOutcome, Counter>,
    /// Match decisions by how they were made (alarm, rule, text, none).
    pub matches: Family<Outcome, Counter>,
    /// Decisions answered from the coalescing cache instead of a search.
    pub coalesced: Counter,
    pub outbox_pending: Gauge,
    /// Accepts acknowledged (in the ingest log) and not yet applied to the store's tables.
    pub ingest_backlog: Gauge,
    /// Delivery attempts by destination and outcome (delivered, retry, dead, found_marker).
    pub deliveries: Family<DestinationOutcome, Counter>,
    pub dead_letters: Family<Destination, Counter>,
    pub ingest_seconds: Family<Source, Histogram, fn() -> Histogram>,
    pub delivery_seconds: Family<Destination, Histogram, fn() -> Histogram>,
    /// Runbook reloads by outcome (ok, refused).
    pub reloads: Family<Outcome, Counter>,
    /// Tickets decided by both the live and the candidate index, by whether they differ.
    pub canary: Family<Outcome, Counter>,
    /// Operators' `/runlink` commands by kind (right, wrong, use, none, refused).
    pub feedback: Family<Kind, Counter>,
    /// The ingest log's totals, copied from the store at each scrape (`set_log_stats`).
    log_writes: Counter,
    log_records: Counter,
    log_fsyncs: LogFsyncs,
    /// 1 while the store can be written, 0 while it cannot (`WriteState`).
    store_writable: Family<StorePart, Gauge>,
    store_write_failures: Counter,
    /// Pending items, kept in memory for the backpressure check on every webhook.
    pending: Arc<AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runlink");
        let m = Metrics {
            webhooks: Family::default(),
            matches: Family::default(),
            coalesced: Counter::default(),
            outbox_pending: Gauge::default(),
            ingest_backlog: Gauge::default(),
            deliveries: Family::default(),
            dead_letters: Family::default(),
            ingest_seconds: Family::new_with_constructor(latency_histogram),
            delivery_seconds: Family::new_with_constructor(latency_histogram),
            reloads: Family::default(),
            feedback: Family::default(),
            canary: Family::default(),
            log_writes: Counter::default(),
            log_records: Counter::default(),
            log_fsyncs: LogFsyncs::default(),
            store_writable: Family::default(),
            store_write_failures: Counter::default(),
            pending: Arc::new(AtomicI64::new(0)),
            registry: Registry::default(),
        };
        registry.register(
            "webhooks",
            "Webhooks received, by source and outcome",
            m.webhooks.clone(),
        );
        registry.register(
            "matches",
            "Match decisions, by how the answer was found",
            m.matches.clone(),
        );
        registry.register(
            "canary_decisions",
            "Tickets decided by the live and the candidate runbook index, by outcome (same, changed)",
            m.canary.clone(),
        );
        registry.register(
            "feedback",
            "Operators' /runlink commands recorded, by kind",
            m.feedback.clone(),
        );
        registry.register(
            "coalesced_matches",
            "Decisions reused from the coalescing cache",
            m.coalesced.clone(),
        );
        registry.register(
            "outbox_pending",
            "Enrichments waiting to be delivered",
            m.outbox_pending.clone(),
        );
        registry.register(
            "ingest_backlog",
            "Accepted webhooks durable in the ingest log, not yet applied to the store",
            m.ingest_backlog.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by destination and outcome",
            m.deliveries.clone(),
        );
        registry.register(
            "dead_letters",
            "Deliveries given up, by destination",
            m.dead_letters.clone(),
        );
        registry.register(
            "runbook_reloads",
            "Runbook corpus reloads, by outcome",
            m.reloads.clone(),
        );
        registry.register(
            "ingest_seconds",
            "Time from webhook received to answered",
            m.ingest_seconds.clone(),
        );
        registry.register(
            "delivery_seconds",
            "Time of one delivery attempt",
            m.delivery_seconds.clone(),
        );
        registry.register(
            "ingest_log_writes",
            "Writes to the ingest log, each made durable by one fsync",
            m.log_writes.clone(),
        );
        registry.register(
            "ingest_log_records",
            "Records written to the ingest log (per write: how well group commit gathers)",
            m.log_records.clone(),
        );
        registry.register(
            "ingest_log_fsync_seconds",
            "Duration of the ingest log's fsyncs (each write waits for one)",
            m.log_fsyncs.clone(),
        );
        registry.register(
            "store_writable",
            "1 while this part of the store (ingest_log, tables) can be written, 0 while it cannot (a full disk)",
            m.store_writable.clone(),
        );
        registry.register(
            "store_write_failures",
            "Failed writes to the store (each retry counts)",
            m.store_write_failures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Copied from the store at each scrape, as `set_log_stats`.
    pub fn set_write_state(&self, state: &WriteState) {
        for part in [WritePart::IngestLog, WritePart::Tables] {
            let failing = state.failure.as_ref().is_some_and(|f| f.part == part);
            let label = StorePart {
                part: match part {
                    WritePart::IngestLog => "ingest_log",
                    WritePart::Tables => "tables",
                },
            };
            self.store_writable
                .get_or_create(&label)
                .set(i64::from(!failing));
        }
        self.store_write_failures
            .inner()
            .store(state.failures_total, Ordering::Relaxed);
    }

    /// Totals kept by the store: stored as they are, they stay monotonic as counters must.
    pub fn set_log_stats(&self, stats: LogStats) {
        self.log_writes
            .inner()
            .store(stats.writes, Ordering::Relaxed);
        self.log_records
            .inner()
            .store(stats.records, Ordering::Relaxed);
        *self.log_fsyncs.0.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    pub fn webhook(&self, source: &str, outcome: &str) {
        self.webhooks
            .get_or_create(&SourceOutcome {
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn delivery(&self, destination: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DestinationOutcome {
                destination: destination.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn set_pending(&self, n: i64) {
        self.pending.store(n, Ordering::Relaxed);
        self.outbox_pending.set(n);
    }

    pub fn add_pending(&self, delta: i64) {
        let n = self.pending.fetch_add(delta, Ordering::Relaxed) + delta;
        self.outbox_pending.set(n);
    }

    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The ingest log's fsync durations as a histogram. The store counts them in its own
/// buckets (`LogStats::fsyncs`, on the flusher thread, without a lock shared with HTTP);
/// this shows the copy taken at the last scrape.
#[derive(Debug, Clone, Default)]
struct LogFsyncs(Arc<Mutex<LogStats>>);

impl EncodeMetric for LogFsyncs {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let stats = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Per-bucket counts, the last one unbounded: the encoder makes them cumulative.
        let buckets: Vec<(f64, u64)> = FSYNC_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(stats.fsyncs)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(stats.fsync_seconds, stats.writes, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_the_text_format() {
        let m = Metrics::new();
        m.webhook("github", "accepted");
        m.add_pending(3);
        m.add_pending(-1);
        let text = m.encode();
        assert!(
            text.contains(r#"runlink_webhooks_total{source="github",outcome="accepted"} 1"#),
            "{text}"
        );
        assert!(text.contains("runlink_outbox_pending 2"), "{text}");
        assert_eq!(m.pending(), 2);
    }
}
