//! The operators' figures as a fold over audit entries: every count, window, backlog and
//! takedown time on the page comes from the log, the broker's own record of what it did.
//! Pure: no tokio, no I/O; what the entries do not carry (a referral's report time, the time
//! a status names) comes through [`Facts`], which the daemon implements over the store.
//!
//! The daemon feeds [`History::apply`] twice: once with the log it finds at start (so the
//! last hour/day, backlogs and takedown figures survive a restart) and then with every entry
//! the pipeline appends. [`Observed`] tells the caller what a live entry means for the
//! Prometheus counters (which count since the process started, as Prometheus expects).
//!
//! # The oldest unread message of an inbox — method and limits
//!
//! RabbitMQ tells how many messages wait in a queue (a passive declare's message count) but
//! not how old they are, and nothing in AMQP 0-9-1 peeks at a queue without taking the
//! message. The broker is the only writer of every inbox and records each message it puts
//! there (`delivered` and `notice` entries, with their time). An inbox is FIFO, so when it
//! holds `depth` unread messages, they are the last `depth` the broker delivered to it, and
//! the oldest of them is the `depth`-th most recent delivery ([`History::oldest_unread`]).
//! A `checkpoint` entry counts as a delivery to every participant's inbox (the daemon sends
//! each checkpoint to all of them right after recording it).
//!
//! Limits, stated plainly:
//! - The count is RabbitMQ's *ready* count: messages handed to a connected reader and not
//!   yet acknowledged are not in it (they come back, and count, if the reader goes away).
//! - It assumes FIFO: a reader that rejects a message back to the queue reorders it, and a
//!   message dead-lettered after too many deliveries leaves from the front; both make the
//!   figure approximate, never wildly wrong (it stays an age of a real delivery).
//! - Checkpoint sends are best effort and have no entry of their own: one that failed for an
//!   inbox makes that inbox's figure one message too recent until it is read.
//! - A delivery confirmed by RabbitMQ but whose entry is not appended yet is in the depth and
//!   not in the record for a moment: the figure is then one delivery too old, until the next
//!   poll.
//! - The broker remembers the last [`MAX_TRACKED`] deliveries per inbox; a deeper inbox is
//!   reported as "at least" the age of the oldest one remembered.
//!
//! # Time to removal
//!
//! For each item reported `removed` (the first such status per referral item), the time from
//! the item's `public_report_received_at` (in the referral, read from the retained body) to the
//! status's `at`, grouped by destination country: the registry country of the participant
//! that reported it, or the item's hosting country when that participant has none (e.g. an
//! international law-enforcement agency). Median and 90th percentile are nearest-rank
//! (always an observed value). A removal whose referral or status body was purged is counted
//! as `unknown`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};

use super::status::{Counts, OldestUnread, RejectionStatus, TakedownFigures, TakedownStatus};
use crate::ids::{EnvelopeId, ParticipantId};
use crate::reason::ReasonCode;
use crate::store::{Entry, Event, Sha256Digest};
use crate::wire::{Kind, State};

/// Deliveries remembered per inbox.
pub const MAX_TRACKED: usize = 100_000;
/// Deliveries kept beyond the last polled depth (deliveries in flight during a poll).
const TRIM_MARGIN: usize = 256;
/// Recent rejections kept.
pub const MAX_REJECTIONS: usize = 50;
/// Received envelopes remembered for the latency and kind of their deliveries.
const MAX_RECEIVED: usize = 50_000;
/// Three days, the threshold of the "removed within 3 days" share.
pub const THREE_DAYS_SECS: u64 = 3 * 86_400;

/// What the entries do not say, looked up elsewhere (the daemon: bodies in the store and the
/// registry).
pub trait Facts {
    /// Referral `referral`'s item `item`: when the public report came in and where it is hosted.
    fn item_clock(&self, referral: &EnvelopeId, item: u16) -> Option<ItemClock>;
    /// The `at` of the status message whose bytes hash to `body`.
    fn status_at(&self, body: &Sha256Digest) -> Option<DateTime<Utc>>;
    /// A participant's country in the registry.
    fn country_of(&self, participant: &ParticipantId) -> Option<String>;
}

/// Facts of one referral item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemClock {
    pub public_report_received_at: DateTime<Utc>,
    pub hosting_country: String,
}

/// What one live entry means for the Prometheus counters.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Received {
        participant: ParticipantId,
        kind: &'static str,
    },
    Delivered {
        destination: ParticipantId,
        kind: &'static str,
        /// Seconds from the envelope's `received` entry to this `delivered` entry.
        latency: Option<f64>,
    },
    Rejected {
        participant: Option<ParticipantId>,
        code: ReasonCode,
    },
    Duplicates {
        participant: ParticipantId,
        items: u64,
    },
    Notice {
        destination: ParticipantId,
        code: ReasonCode,
    },
    Removed {
        country: String,
        secs: u64,
    },
}

/// One delivery to an inbox, remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    time: DateTime<Utc>,
    envelope: Option<EnvelopeId>,
    kind: &'static str,
}

#[derive(Debug, Clone)]
struct Removal {
    country: String,
    secs: u64,
    at: DateTime<Utc>,
}

/// The fold; see the module documentation.
#[derive(Debug, Default)]
pub struct History {
    /// Per participant: counts per minute (minutes since the epoch), last day only.
    minutes: BTreeMap<ParticipantId, BTreeMap<i64, Counts>>,
    inboxes: BTreeMap<ParticipantId, VecDeque<Pending>>,
    received: HashMap<EnvelopeId, (DateTime<Utc>, Kind)>,
    removals: HashMap<(EnvelopeId, u16), Removal>,
    unknown_removals: HashSet<(EnvelopeId, u16)>,
    rejections: VecDeque<RejectionStatus>,
    first_time: Option<DateTime<Utc>>,
    entries: u64,
    /// Who receives every checkpoint (every participant but the broker).
    broadcast_to: Vec<ParticipantId>,
}

fn minute(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// The participants whose inboxes receive every checkpoint the broker cuts.
    pub fn broadcasting_to(mut self, participants: Vec<ParticipantId>) -> Self {
        self.broadcast_to = participants;
        self
    }

    /// Entries applied so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Time of the first entry applied.
    pub fn first_time(&self) -> Option<DateTime<Utc>> {
        self.first_time
    }

    fn bump(
        &mut self,
        who: &ParticipantId,
        t: DateTime<Utc>,
        now: DateTime<Utc>,
        f: impl Fn(&mut Counts),
    ) {
        if t < now - Duration::days(1) {
            return;
        }
        let m = self
            .minutes
            .entry(who.clone())
            .or_default()
            .entry(minute(t))
            .or_default();
        f(m);
    }

    fn remember_delivery(&mut self, to: &ParticipantId, p: Pending) {
        let q = self.inboxes.entry(to.clone()).or_default();
        // Appends finish out of order by a little: keep the queue sorted by time.
        let at = q
            .iter()
            .rposition(|x| x.time <= p.time)
            .map_or(0, |i| i + 1);
        q.insert(at, p);
        if q.len() > MAX_TRACKED {
            q.pop_front();
        }
    }

    /// Folds one entry in; `now` bounds the windows. Returns what it means for the counters.
    pub fn apply(&mut self, e: &Entry, facts: &dyn Facts, now: DateTime<Utc>) -> Vec<Observed> {
        self.entries += 1;
        if self.first_time.is_none_or(|t| e.time < t) {
            self.first_time = Some(e.time);
        }
        let mut out = Vec::new();
        match &e.event {
            Event::Received(r) => {
                if let Some(id) = &e.envelope {
                    if self.received.len() >= MAX_RECEIVED {
                        let horizon = e.time - Duration::hours(1);
                        self.received.retain(|_, (t, _)| *t >= horizon);
                        if self.received.len() >= MAX_RECEIVED {
                            self.received.clear();
                        }
                    }
                    self.received.insert(id.clone(), (e.time, r.kind));
                }
                if let Some(p) = &e.participant {
                    self.bump(p, e.time, now, |c| c.received += 1);
                    out.push(Observed::Received {
                        participant: p.clone(),
                        kind: r.kind.as_str(),
                    });
                }
            }
            Event::Delivered(_) => {
                let known = e.envelope.as_ref().and_then(|id| self.received.get(id));
                let kind = known.map_or("message", |(_, k)| k.as_str());
                let latency =
                    known.map(|(t, _)| (e.time - *t).num_milliseconds().max(0) as f64 / 1000.0);
                if let Some(d) = &e.destination {
                    self.bump(d, e.time, now, |c| c.delivered += 1);
                    self.remember_delivery(
                        d,
                        Pending {
                            time: e.time,
                            envelope: e.envelope.clone(),
                            kind,
                        },
                    );
                    out.push(Observed::Delivered {
                        destination: d.clone(),
                        kind,
                        latency,
                    });
                }
            }
            Event::NoticeSent(n) => {
                if let Some(d) = &e.destination {
                    self.bump(d, e.time, now, |c| c.notices += 1);
                    self.remember_delivery(
                        d,
                        Pending {
                            time: e.time,
                            envelope: Some(n.notice.clone()),
                            kind: Kind::Notice.as_str(),
                        },
                    );
                    out.push(Observed::Notice {
                        destination: d.clone(),
                        code: n.code,
                    });
                }
            }
            Event::Rejected(r) => {
                if let Some(p) = &e.participant {
                    self.bump(p, e.time, now, |c| c.rejected += 1);
                }
                self.rejections.push_front(RejectionStatus {
                    time: e.time,
                    code: r.code.as_str().to_owned(),
                    participant: e.participant.as_ref().map(|p| p.as_str().to_owned()),
                    envelope: e.envelope.as_ref().map(|x| x.as_str().to_owned()),
                    seq: e.seq.get(),
                });
                self.rejections.truncate(MAX_REJECTIONS);
                out.push(Observed::Rejected {
                    participant: e.participant.clone(),
                    code: r.code,
                });
            }
            Event::Duplicate(d) => {
                if let Some(p) = &e.participant {
                    let n = d.items.len() as u64;
                    self.bump(p, e.time, now, |c| c.duplicates += n);
                    out.push(Observed::Duplicates {
                        participant: p.clone(),
                        items: n,
                    });
                }
            }
            Event::Checkpoint(_) => {
                // Sent to every inbox right after its entry (best effort; no entry per send).
                for to in self.broadcast_to.clone() {
                    self.remember_delivery(
                        &to,
                        Pending {
                            time: e.time,
                            envelope: None,
                            kind: Kind::Checkpoint.as_str(),
                        },
                    );
                }
            }
            Event::Status(s) if s.state == State::Removed => {
                let key = (s.referral.clone(), s.item);
                if self.removals.contains_key(&key) {
                    return out;
                }
                let clock = facts.item_clock(&s.referral, s.item);
                let at = e.sha256.as_ref().and_then(|sha| facts.status_at(sha));
                match (clock, at) {
                    (Some(clock), Some(at)) => {
                        self.unknown_removals.remove(&key);
                        let secs =
                            (at - clock.public_report_received_at).num_seconds().max(0) as u64;
                        let country = e
                            .participant
                            .as_ref()
                            .and_then(|p| facts.country_of(p))
                            .unwrap_or(clock.hosting_country);
                        self.removals.insert(
                            key,
                            Removal {
                                country: country.clone(),
                                secs,
                                at,
                            },
                        );
                        out.push(Observed::Removed { country, secs });
                    }
                    _ => {
                        self.unknown_removals.insert(key);
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// Drops what fell out of the windows.
    pub fn prune(&mut self, now: DateTime<Utc>, window_days: u32) {
        let oldest_minute = minute(now - Duration::days(1));
        for m in self.minutes.values_mut() {
            *m = m.split_off(&oldest_minute);
        }
        self.minutes.retain(|_, m| !m.is_empty());
        let horizon = now - Duration::days(i64::from(window_days));
        self.removals.retain(|_, r| r.at >= horizon);
    }

    /// Counts of the last hour and the last day.
    pub fn counts(&self, who: &ParticipantId, now: DateTime<Utc>) -> (Counts, Counts) {
        let mut hour = Counts::default();
        let mut day = Counts::default();
        let Some(m) = self.minutes.get(who) else {
            return (hour, day);
        };
        // Whole minutes: the window is the current minute and the 59 (1439) before it.
        let this = minute(now);
        for (&at, c) in m.range(this - 1439..) {
            add(&mut day, c);
            if at > this - 60 {
                add(&mut hour, c);
            }
        }
        (hour, day)
    }

    /// The oldest unread message of `who`'s inbox when it holds `depth` unread messages.
    pub fn oldest_unread(
        &self,
        who: &ParticipantId,
        depth: u64,
        now: DateTime<Utc>,
    ) -> Option<OldestUnread> {
        if depth == 0 {
            return None;
        }
        let q = self.inboxes.get(who)?;
        let depth = usize::try_from(depth).unwrap_or(usize::MAX);
        let (p, at_least) = if depth <= q.len() {
            (&q[q.len() - depth], false)
        } else {
            (q.front()?, true)
        };
        Some(OldestUnread {
            delivered_at: p.time,
            age_secs: (now - p.time).num_seconds().max(0) as u64,
            envelope: p.envelope.as_ref().map(|e| e.as_str().to_owned()),
            kind: p.kind.to_owned(),
            at_least,
        })
    }

    /// Forgets deliveries that can no longer be unread: all but the last `depth` (and a margin).
    pub fn trim_inbox(&mut self, who: &ParticipantId, depth: u64) {
        if let Some(q) = self.inboxes.get_mut(who) {
            let keep = usize::try_from(depth)
                .unwrap_or(usize::MAX)
                .saturating_add(TRIM_MARGIN);
            while q.len() > keep {
                q.pop_front();
            }
        }
    }

    /// Newest first.
    pub fn rejections(&self) -> Vec<RejectionStatus> {
        self.rejections.iter().cloned().collect()
    }

    /// Takedown figures per country and overall, over removals of the last `window_days`.
    pub fn takedown(&self, now: DateTime<Utc>, window_days: u32) -> TakedownStatus {
        let horizon = now - Duration::days(i64::from(window_days));
        let mut by_country: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut all = Vec::new();
        for r in self.removals.values().filter(|r| r.at >= horizon) {
            by_country.entry(&r.country).or_default().push(r.secs);
            all.push(r.secs);
        }
        TakedownStatus {
            window_days,
            countries: by_country
                .into_iter()
                .filter_map(|(c, v)| figures(c, v))
                .collect(),
            all: figures("all", all),
            unknown: self.unknown_removals.len() as u64,
        }
    }
}

fn add(to: &mut Counts, c: &Counts) {
    to.received += c.received;
    to.delivered += c.delivered;
    to.rejected += c.rejected;
    to.duplicates += c.duplicates;
    to.notices += c.notices;
}

/// Nearest-rank percentile `p` (0 < p ≤ 1) of sorted values.
pub fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn figures(country: &str, mut secs: Vec<u64>) -> Option<TakedownFigures> {
    secs.sort_unstable();
    let within = secs.iter().filter(|s| **s <= THREE_DAYS_SECS).count();
    Some(TakedownFigures {
        country: country.to_owned(),
        removed: secs.len() as u64,
        median_secs: nearest_rank(&secs, 0.5)?,
        p90_secs: nearest_rank(&secs, 0.9)?,
        within_3_days: within as f64 / secs.len() as f64,
    })
}

#[cfg(test)]
mod tests;
