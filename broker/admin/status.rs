//! The status model: what `/api/status` returns, what the page and `referral-broker status`
//! show. Plain serde types (no I/O, no tokio), serialised by the daemon and read back by the
//! CLI, so both ends agree by construction.
//!
//! Times are RFC 3339 UTC; durations are whole seconds. Fields that can be unknown (an inbox
//! not polled yet, no checkpoint yet) are `null`, never a made-up zero.
//!
//! [`StatusReport::attention`] says what needs an operator, for a given inbox-age threshold:
//! the daemon uses its configured threshold, the CLI the one it is given.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Everything `/api/status` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The broker's participant id.
    pub broker: String,
    /// `referral-broker` version.
    pub version: String,
    pub generated_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub readiness: Readiness,
    pub connection: ConnectionStatus,
    /// Messages being processed now, and held back by flood control.
    pub in_flight: u64,
    pub held: u64,
    /// The daemon's own threshold for inbox age (seconds).
    pub inbox_age_warn_secs: u64,
    pub participants: Vec<ParticipantStatus>,
    /// Broker-side queues (`ingress`, `quarantine`, `parked`) as last polled.
    pub queues: Vec<QueueStatus>,
    pub takedown: TakedownStatus,
    pub checkpoint: Option<CheckpointStatus>,
    /// Seconds since the latest checkpoint (or, with none yet, since the first entry); null
    /// when the log is empty.
    pub checkpoint_age_secs: Option<u64>,
    pub checkpoint_age_warn_secs: u64,
    pub audit_log: AuditLogStatus,
    /// Newest first.
    pub recent_rejections: Vec<RejectionStatus>,
    /// How much of the log the figures cover (the daemon reads the log once at start).
    pub history: HistoryStatus,
}

/// `/readyz` in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, one line each; empty when ready.
    pub reasons: Vec<String>,
}

/// The AMQP connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// `starting`, `up`, `reconnecting`, `closed`.
    pub state: String,
    /// Connections made (1 = the first one still holds).
    pub generation: Option<u64>,
    pub reconnections: u64,
    pub failed_attempts: u64,
    /// RabbitMQ blocks publishes (memory or disk alarm).
    pub blocked: bool,
    pub last_error: Option<String>,
}

/// Counts over a time window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Messages this participant sent that the broker accepted.
    pub received: u64,
    /// Messages forwarded to this participant's inbox (referrals, receipts, statuses,
    /// retractions; notices are counted apart).
    pub delivered: u64,
    /// Messages of this participant that were refused.
    pub rejected: u64,
    /// Items of this participant's referrals not forwarded because the URL was already open
    /// at the destination.
    pub duplicates: u64,
    /// Broker notices sent to this participant.
    pub notices: u64,
}

/// One participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantStatus {
    pub id: String,
    pub name: String,
    pub role: String,
    pub country: Option<String>,
    /// Null until the inbox was polled (or when it could not be).
    pub inbox: Option<InboxStatus>,
    pub last_hour: Counts,
    pub last_day: Counts,
}

/// A participant's inbox, as last polled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxStatus {
    /// Messages waiting to be read (RabbitMQ's ready count; messages handed to a connected
    /// reader and not yet acknowledged are not in it).
    pub depth: u64,
    /// Readers connected to it.
    pub consumers: u64,
    /// The oldest unread message, when depth > 0 (see the method in `admin::history`).
    pub oldest: Option<OldestUnread>,
    pub checked_at: DateTime<Utc>,
}

/// The oldest unread message of an inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldestUnread {
    /// When the broker delivered it (its `delivered`/`notice` entry).
    pub delivered_at: DateTime<Utc>,
    pub age_secs: u64,
    /// Envelope id (the referral, or the notice), when known.
    pub envelope: Option<String>,
    /// `referral`, `receipt`, `status`, `retraction`, `notice`, or `message` if unknown.
    pub kind: String,
    /// True when the inbox holds more messages than the broker remembers delivering (e.g.
    /// older than its memory): the message is at least this old.
    pub at_least: bool,
}

/// A broker-side queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub name: String,
    pub depth: u64,
    pub consumers: u64,
}

/// Notice-and-takedown figures, from `removed` statuses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TakedownStatus {
    /// Removals reported in the last `window_days` days count.
    pub window_days: u32,
    /// Per destination country, sorted by country.
    pub countries: Vec<TakedownFigures>,
    /// All countries together.
    pub all: Option<TakedownFigures>,
    /// `removed` statuses whose times could not be read (the bodies were purged).
    pub unknown: u64,
}

/// Time from `public_report_received_at` to `removed`, for one country.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TakedownFigures {
    /// ISO 3166-1 alpha-2, or `all`.
    pub country: String,
    pub removed: u64,
    pub median_secs: u64,
    pub p90_secs: u64,
    /// Share removed within 3 days (0..=1).
    pub within_3_days: f64,
}

/// The latest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// Tree size it covers.
    pub size: u64,
    /// Root hash, hex.
    pub root: String,
    pub time: DateTime<Utc>,
    /// Its own entry in the log.
    pub seq: u64,
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLogStatus {
    pub entries: u64,
    /// Bytes of its segment files.
    pub bytes: u64,
}

/// One refused message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionStatus {
    pub time: DateTime<Utc>,
    /// The stable reason code.
    pub code: String,
    /// The authenticated sender, if any.
    pub participant: Option<String>,
    pub envelope: Option<String>,
    pub seq: u64,
}

/// How much of the log is behind the figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryStatus {
    /// False while the daemon is still reading the log it found at start.
    pub complete: bool,
    /// Entries read so far.
    pub entries: u64,
}

/// One thing that needs an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    /// `not_ready`, `inbox_backlog`, `no_checkpoint`, `parked`.
    pub what: String,
    pub detail: String,
}

impl StatusReport {
    /// What needs attention, judged with `max_inbox_age` (seconds) for inboxes.
    pub fn attention(&self, max_inbox_age: u64) -> Vec<Attention> {
        let mut out = Vec::new();
        if !self.readiness.ready {
            out.push(Attention {
                what: "not_ready".into(),
                detail: self.readiness.reasons.join("; "),
            });
        }
        for p in &self.participants {
            let Some(oldest) = p.inbox.as_ref().and_then(|i| i.oldest.as_ref()) else {
                continue;
            };
            if oldest.age_secs > max_inbox_age {
                let depth = p.inbox.as_ref().map(|i| i.depth).unwrap_or(0);
                out.push(Attention {
                    what: "inbox_backlog".into(),
                    detail: format!(
                        "{}: {depth} unread, the oldest {}{} old (threshold {})",
                        p.id,
                        if oldest.at_least { "at least " } else { "" },
                        human_duration(oldest.age_secs),
                        human_duration(max_inbox_age)
                    ),
                });
            }
        }
        if let Some(age) = self.checkpoint_age_secs
            && age > self.checkpoint_age_warn_secs
        {
            out.push(Attention {
                what: "no_checkpoint".into(),
                detail: format!(
                    "no checkpoint for {} (threshold {})",
                    human_duration(age),
                    human_duration(self.checkpoint_age_warn_secs)
                ),
            });
        }
        for q in &self.queues {
            if q.name == crate::transport::topology::PARKED_QUEUE && q.depth > 0 {
                out.push(Attention {
                    what: "parked".into(),
                    detail: format!(
                        "{} message(s) parked after too many failed deliveries",
                        q.depth
                    ),
                });
            }
        }
        out
    }
}

/// `93784` → `1d 2h`, `45` → `45s`: the largest unit and the next one, for people.
pub fn human_duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let Some(i) = UNITS.iter().position(|(size, _)| secs >= *size) else {
        return "0s".into();
    };
    let (size, name) = UNITS[i];
    let mut out = format!("{}{name}", secs / size);
    if let Some((next, next_name)) = UNITS.get(i + 1) {
        let n = (secs % size) / next;
        if n > 0 {
            out.push_str(&format!(" {n}{next_name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(60), "1m");
        assert_eq!(human_duration(61), "1m 1s");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(3 * 3600 + 125), "3h 2m");
        assert_eq!(human_duration(93_784), "1d 2h");
        assert_eq!(human_duration(86_400 + 5), "1d");
    }
}
