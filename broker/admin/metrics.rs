//! The Prometheus metrics of the daemon (prometheus-client, OpenMetrics text), every name
//! prefixed `refbroker_`. What each one means is in its help text; the alert rules in
//! `ops/prometheus/alerts.yml` and the dashboard in `ops/grafana/` use these names.
//!
//! Counters and histograms count since the process started (Prometheus's `rate()` and
//! `increase()` handle restarts); gauges are set from the latest poll of RabbitMQ and the
//! store, and from the figures of [`super::history`] (which cover the log found at start).
//!
//! Label `participant` is a participant id (`unknown` for a refused message whose sender was
//! not authenticated); `reason` a stable reason code; `kind` an envelope kind; `country` an
//! ISO 3166-1 alpha-2 code.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::history::Observed;
use super::status::TakedownStatus;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParticipantLabel {
    pub participant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub participant: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub participant: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CountryLabel {
    pub country: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Latency buckets, seconds: 5 ms … 2 min.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Time-to-removal buckets, seconds: 1 h … 30 days.
const REMOVAL_BUCKETS: [f64; 11] = [
    3600.0,
    6.0 * 3600.0,
    12.0 * 3600.0,
    86_400.0,
    2.0 * 86_400.0,
    3.0 * 86_400.0,
    5.0 * 86_400.0,
    7.0 * 86_400.0,
    14.0 * 86_400.0,
    21.0 * 86_400.0,
    30.0 * 86_400.0,
];

fn removal_histogram() -> Histogram {
    Histogram::new(REMOVAL_BUCKETS)
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    pub received: Family<KindLabels, Counter>,
    pub delivered: Family<KindLabels, Counter>,
    pub rejected: Family<ReasonLabels, Counter>,
    pub duplicates: Family<ParticipantLabel, Counter>,
    pub notices: Family<ReasonLabels, Counter>,
    pub routing_latency: Histogram,
    pub time_to_removal: Family<CountryLabel, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
    pub held: Gauge,
    pub inbox_depth: Family<ParticipantLabel, Gauge>,
    pub inbox_consumers: Family<ParticipantLabel, Gauge>,
    pub inbox_oldest_age: Family<ParticipantLabel, FloatGauge>,
    pub queue_depth: Family<QueueLabel, Gauge>,
    pub queue_consumers: Family<QueueLabel, Gauge>,
    pub log_entries: Gauge,
    pub log_bytes: Gauge,
    pub checkpoint_age: FloatGauge,
    pub checkpoint_size: Gauge,
    pub checkpoint_time: Gauge,
    pub connected: Gauge,
    pub blocked: Gauge,
    pub reconnections: Counter,
    pub connect_failures: Counter,
    pub ready: Gauge,
    pub history_complete: Gauge,
    pub takedown_removed: Family<CountryLabel, Gauge>,
    pub takedown_median: Family<CountryLabel, Gauge>,
    pub takedown_p90: Family<CountryLabel, Gauge>,
    pub takedown_within_3_days: Family<CountryLabel, FloatGauge>,
    pub takedown_unknown: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("refbroker");
        let m = Metrics {
            received: Family::default(),
            delivered: Family::default(),
            rejected: Family::default(),
            duplicates: Family::default(),
            notices: Family::default(),
            routing_latency: Histogram::new(LATENCY_BUCKETS),
            time_to_removal: Family::new_with_constructor(removal_histogram),
            in_flight: Gauge::default(),
            held: Gauge::default(),
            inbox_depth: Family::default(),
            inbox_consumers: Family::default(),
            inbox_oldest_age: Family::default(),
            queue_depth: Family::default(),
            queue_consumers: Family::default(),
            log_entries: Gauge::default(),
            log_bytes: Gauge::default(),
            checkpoint_age: FloatGauge::default(),
            checkpoint_size: Gauge::default(),
            checkpoint_time: Gauge::default(),
            connected: Gauge::default(),
            blocked: Gauge::default(),
            reconnections: Counter::default(),
            connect_failures: Counter::default(),
            ready: Gauge::default(),
            history_complete: Gauge::default(),
            takedown_removed: Family::default(),
            takedown_median: Family::default(),
            takedown_p90: Family::default(),
            takedown_within_3_days: Family::default(),
            takedown_unknown: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "messages_received",
            "Messages accepted from a participant (received entries), by sender and kind",
            m.received.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages forwarded to a participant's inbox and confirmed (delivered entries), by destination and kind",
            m.delivered.clone(),
        );
        r.register(
            "messages_rejected",
            "Messages refused, by authenticated sender (unknown if none) and reason code",
            m.rejected.clone(),
        );
        r.register(
            "duplicates",
            "Referral items not forwarded because the URL was already open at the destination, by origin",
            m.duplicates.clone(),
        );
        r.register(
            "notices_sent",
            "Broker-signed notices sent, by recipient and reason code",
            m.notices.clone(),
        );
        r.register(
            "routing_latency_seconds",
            "Time from a message's received entry to its delivered entry (verified, routed, published, confirmed), per delivery",
            m.routing_latency.clone(),
        );
        r.register(
            "time_to_removal_seconds",
            "Time from public_report_received_at to the removed status, per destination country (removals reported since start)",
            m.time_to_removal.clone(),
        );
        r.register(
            "messages_in_flight",
            "Ingress messages being processed now",
            m.in_flight.clone(),
        );
        r.register(
            "messages_held",
            "Ingress messages held back by flood control",
            m.held.clone(),
        );
        r.register(
            "inbox_depth",
            "Messages waiting unread in a participant's inbox (RabbitMQ ready count)",
            m.inbox_depth.clone(),
        );
        r.register(
            "inbox_consumers",
            "Readers connected to a participant's inbox",
            m.inbox_consumers.clone(),
        );
        r.register(
            "inbox_oldest_unread_age_seconds",
            "Age of the oldest unread message of a participant's inbox (0 when empty)",
            m.inbox_oldest_age.clone(),
        );
        r.register(
            "queue_depth",
            "Messages in a broker queue (ingress, quarantine, parked)",
            m.queue_depth.clone(),
        );
        r.register(
            "queue_consumers",
            "Consumers of a broker queue",
            m.queue_consumers.clone(),
        );
        r.register(
            "audit_log_entries",
            "Entries in the audit log (the tree size)",
            m.log_entries.clone(),
        );
        r.register(
            "audit_log_bytes",
            "Bytes of the audit log's segment files",
            m.log_bytes.clone(),
        );
        r.register(
            "checkpoint_age_seconds",
            "Seconds since the latest checkpoint (with none yet: since the first entry; 0 for an empty log)",
            m.checkpoint_age.clone(),
        );
        r.register(
            "checkpoint_tree_size",
            "Tree size covered by the latest checkpoint",
            m.checkpoint_size.clone(),
        );
        r.register(
            "checkpoint_timestamp_seconds",
            "Unix time of the latest checkpoint (0: none)",
            m.checkpoint_time.clone(),
        );
        r.register(
            "amqp_connected",
            "1 while the connection to RabbitMQ is up",
            m.connected.clone(),
        );
        r.register(
            "amqp_blocked",
            "1 while RabbitMQ blocks the broker's publishes (memory or disk alarm)",
            m.blocked.clone(),
        );
        r.register(
            "amqp_reconnections",
            "Reconnections to RabbitMQ after a lost connection",
            m.reconnections.clone(),
        );
        r.register(
            "amqp_connect_failures",
            "Failed reconnection attempts",
            m.connect_failures.clone(),
        );
        r.register(
            "ready",
            "1 when /readyz answers ready (connected, topology declared, store writable, serving)",
            m.ready.clone(),
        );
        r.register(
            "history_complete",
            "1 once the log found at start has been read into the status figures",
            m.history_complete.clone(),
        );
        r.register(
            "takedown_removed",
            "Items reported removed in the takedown window, per destination country",
            m.takedown_removed.clone(),
        );
        r.register(
            "takedown_median_seconds",
            "Median time from public report to removal in the takedown window, per destination country",
            m.takedown_median.clone(),
        );
        r.register(
            "takedown_p90_seconds",
            "90th percentile time from public report to removal in the takedown window, per destination country",
            m.takedown_p90.clone(),
        );
        r.register(
            "takedown_removed_within_3_days_ratio",
            "Share of removals within 3 days of the public report, per destination country",
            m.takedown_within_3_days.clone(),
        );
        r.register(
            "takedown_unknown",
            "Removed statuses whose times could not be read (bodies purged)",
            m.takedown_unknown.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Counts one live observation.
    pub fn observe(&self, o: &Observed) {
        match o {
            Observed::Received { participant, kind } => {
                self.received
                    .get_or_create(&KindLabels {
                        participant: participant.as_str().to_owned(),
                        kind: (*kind).to_owned(),
                    })
                    .inc();
            }
            Observed::Delivered {
                destination,
                kind,
                latency,
            } => {
                self.delivered
                    .get_or_create(&KindLabels {
                        participant: destination.as_str().to_owned(),
                        kind: (*kind).to_owned(),
                    })
                    .inc();
                if let Some(s) = latency {
                    self.routing_latency.observe(*s);
                }
            }
            Observed::Rejected { participant, code } => {
                self.rejected
                    .get_or_create(&ReasonLabels {
                        participant: participant
                            .as_ref()
                            .map_or("unknown", |p| p.as_str())
                            .to_owned(),
                        reason: code.as_str().to_owned(),
                    })
                    .inc();
            }
            Observed::Duplicates { participant, items } => {
                self.duplicates
                    .get_or_create(&ParticipantLabel {
                        participant: participant.as_str().to_owned(),
                    })
                    .inc_by(*items);
            }
            Observed::Notice { destination, code } => {
                self.notices
                    .get_or_create(&ReasonLabels {
                        participant: destination.as_str().to_owned(),
                        reason: code.as_str().to_owned(),
                    })
                    .inc();
            }
            Observed::Removed { country, secs } => {
                self.time_to_removal
                    .get_or_create(&CountryLabel {
                        country: country.clone(),
                    })
                    .observe(*secs as f64);
            }
        }
    }

    /// Sets the takedown gauges from the current figures.
    pub fn set_takedown(&self, t: &TakedownStatus) {
        for f in [
            &self.takedown_removed,
            &self.takedown_median,
            &self.takedown_p90,
        ] {
            f.clear();
        }
        self.takedown_within_3_days.clear();
        for c in &t.countries {
            let l = CountryLabel {
                country: c.country.clone(),
            };
            self.takedown_removed
                .get_or_create(&l)
                .set(gauge(c.removed));
            self.takedown_median
                .get_or_create(&l)
                .set(gauge(c.median_secs));
            self.takedown_p90.get_or_create(&l).set(gauge(c.p90_secs));
            self.takedown_within_3_days
                .get_or_create(&l)
                .set(c.within_3_days);
        }
        self.takedown_unknown.set(gauge(t.unknown));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A count as a gauge value (saturating; gauges are i64).
pub fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::ReasonCode;

    /// Every `refbroker_*` name the alert rules and the dashboard use is a metric here.
    #[test]
    fn ops_files_use_only_metrics_that_exist() {
        // Every family with one series (an empty family is not written at all).
        let m = Metrics::new();
        let p: crate::ids::ParticipantId = "nl.hotline".parse().expect("id");
        for o in [
            Observed::Received {
                participant: p.clone(),
                kind: "referral",
            },
            Observed::Delivered {
                destination: p.clone(),
                kind: "referral",
                latency: Some(1.0),
            },
            Observed::Rejected {
                participant: None,
                code: ReasonCode::BadSignature,
            },
            Observed::Duplicates {
                participant: p.clone(),
                items: 1,
            },
            Observed::Notice {
                destination: p.clone(),
                code: ReasonCode::Duplicate,
            },
            Observed::Removed {
                country: "NL".into(),
                secs: 1,
            },
        ] {
            m.observe(&o);
        }
        let pl = ParticipantLabel {
            participant: p.as_str().into(),
        };
        m.inbox_depth.get_or_create(&pl).set(1);
        m.inbox_consumers.get_or_create(&pl).set(1);
        m.inbox_oldest_age.get_or_create(&pl).set(1.0);
        let ql = QueueLabel {
            queue: "parked".into(),
        };
        m.queue_depth.get_or_create(&ql).set(1);
        m.queue_consumers.get_or_create(&ql).set(1);
        let figures = crate::admin::status::TakedownFigures {
            country: "NL".into(),
            removed: 1,
            median_secs: 1,
            p90_secs: 1,
            within_3_days: 1.0,
        };
        m.set_takedown(&TakedownStatus {
            window_days: 365,
            countries: vec![figures.clone()],
            all: Some(figures),
            unknown: 0,
        });
        let text = m.encode();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for (file, content) in [
            (
                "ops/prometheus/alerts.yml",
                include_str!("../../ops/prometheus/alerts.yml"),
            ),
            (
                "ops/grafana/referral-broker.json",
                include_str!("../../ops/grafana/referral-broker.json"),
            ),
        ] {
            let mut used = 0;
            for (i, _) in content.match_indices("refbroker_") {
                let name: String = content[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    families.contains(&family),
                    "{file} uses {name}, which /metrics does not have:\n{text}"
                );
                used += 1;
            }
            assert!(used > 5, "{file}: {used} metric names");
        }
    }

    #[test]
    fn observations_become_labelled_series() {
        let m = Metrics::new();
        let nl: crate::ids::ParticipantId = "nl.hotline".parse().expect("id");
        m.observe(&Observed::Delivered {
            destination: nl.clone(),
            kind: "referral",
            latency: Some(0.02),
        });
        m.observe(&Observed::Rejected {
            participant: None,
            code: ReasonCode::BadSignature,
        });
        m.observe(&Observed::Duplicates {
            participant: nl,
            items: 3,
        });
        m.observe(&Observed::Removed {
            country: "NL".into(),
            secs: 7200,
        });
        let text = m.encode();
        for want in [
            "refbroker_messages_delivered_total{participant=\"nl.hotline\",kind=\"referral\"} 1",
            "refbroker_messages_rejected_total{participant=\"unknown\",reason=\"bad_signature\"} 1",
            "refbroker_duplicates_total{participant=\"nl.hotline\"} 3",
            "refbroker_routing_latency_seconds_count 1",
            "refbroker_routing_latency_seconds_bucket{le=\"0.025\"} 1",
            "refbroker_time_to_removal_seconds_bucket{le=\"21600.0\",country=\"NL\"} 1",
            "# TYPE refbroker_ready gauge",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
