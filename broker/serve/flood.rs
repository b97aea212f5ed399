//! Flood control: a participant that sends faster than its rate, or has too many messages in
//! process, waits; the others do not. Pure bookkeeping (no tokio, no I/O; time is passed in),
//! driven by the server loop.
//!
//! # Design
//!
//! Every participant sends to the one `ingress` queue, so the broker cannot consume one
//! participant's messages and not another's; it can only decide, message by message, what
//! to do with what it took. Per participant (the flood key: the `user_id` RabbitMQ
//! authenticated, or `""` for messages without one, so they share one budget):
//!
//! 1. **Process**: a token is available in its bucket (rate [`FloodLimits::rate_per_sec`],
//!    size [`FloodLimits::burst`]), fewer than [`FloodLimits::max_in_flight`] of its
//!    messages are being processed, and none of its messages is held (order is kept).
//! 2. **Hold**: otherwise the message stays unacknowledged in memory, in the participant's
//!    FIFO, up to [`FloodLimits::max_held`] for it and [`FloodLimits::max_held_total`] for
//!    all (= prefetch − window: held messages occupy prefetch slots, and the window's worth
//!    always stays free for everyone else). Held messages are released in order as tokens
//!    and in-flight slots come back ([`FloodControl::release`], at
//!    [`FloodControl::next_release_at`]).
//! 3. **Spill**: beyond that, the server republishes the message to the back of `ingress` as
//!    a *held copy* (publish with confirm, then ack the original: never lost) carrying its
//!    sender in `x-held-for` (see [`super::message`]); it comes round again later and meets
//!    the same rules. A long flood therefore circulates through `ingress` at the broker's
//!    pace while the other participants' messages, interleaved with it, are processed at
//!    once.
//!
//! The first time a participant is held or spilled, and then at most once per
//! [`FloodLimits::notice_every`], the server sends it a `rate_limited` notice.
//!
//! So a flood of bad (or good) messages from one participant costs the others at most the
//! time to read and set aside each flooding message, never a place in the window.
//!
//! Not guaranteed: the order of one participant's messages once some are spilled (a held
//! copy goes to the back of the queue), nor fairness between participants that are all
//! over their rates (they share the queue in arrival order).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::config::FloodLimits;

/// What to do with one arriving message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<T> {
    /// Process it now (a token and an in-flight slot were taken).
    Process(T),
    /// Kept in the participant's FIFO; it comes back from [`FloodControl::release`].
    Held,
    /// Republish it to the back of `ingress` (then ack the original).
    Spill(T),
}

/// The outcome of [`FloodControl::offer`].
#[derive(Debug, PartialEq, Eq)]
pub struct Offer<T> {
    pub admission: Admission<T>,
    /// Send the participant a `rate_limited` notice now.
    pub notify: bool,
}

struct Participant<T> {
    tokens: f64,
    refilled: Instant,
    in_flight: usize,
    held: VecDeque<T>,
    last_notice: Option<Instant>,
}

/// Per-participant rate and in-flight bookkeeping; see the module documentation.
pub struct FloodControl<T> {
    limits: FloodLimits,
    participants: HashMap<String, Participant<T>>,
    held_total: usize,
}

/// Counts, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloodStats {
    pub held: usize,
    pub in_flight: usize,
}

impl<T> FloodControl<T> {
    pub fn new(limits: FloodLimits) -> Self {
        Self {
            limits,
            participants: HashMap::new(),
            held_total: 0,
        }
    }

    fn participant(&mut self, key: &str, now: Instant) -> &mut Participant<T> {
        let burst = f64::from(self.limits.burst);
        self.participants
            .entry(key.to_owned())
            .or_insert_with(|| Participant {
                tokens: burst,
                refilled: now,
                in_flight: 0,
                held: VecDeque::new(),
                last_notice: None,
            })
    }

    fn refill(p: &mut Participant<T>, limits: &FloodLimits, now: Instant) {
        let elapsed = now.saturating_duration_since(p.refilled).as_secs_f64();
        p.tokens = (p.tokens + elapsed * limits.rate_per_sec).min(f64::from(limits.burst));
        p.refilled = now;
    }

    /// A message from `key` arrives.
    pub fn offer(&mut self, key: &str, item: T, now: Instant) -> Offer<T> {
        let limits = self.limits.clone();
        let held_total = self.held_total;
        let p = self.participant(key, now);
        Self::refill(p, &limits, now);
        if p.held.is_empty() && p.tokens >= 1.0 && p.in_flight < limits.max_in_flight {
            p.tokens -= 1.0;
            p.in_flight += 1;
            return Offer {
                admission: Admission::Process(item),
                notify: false,
            };
        }
        let notify = p
            .last_notice
            .is_none_or(|t| now.saturating_duration_since(t) >= limits.notice_every);
        if notify {
            p.last_notice = Some(now);
        }
        if p.held.len() < limits.max_held && held_total < limits.max_held_total {
            p.held.push_back(item);
            self.held_total += 1;
            Offer {
                admission: Admission::Held,
                notify,
            }
        } else {
            Offer {
                admission: Admission::Spill(item),
                notify,
            }
        }
    }

    /// A message of `key` that was processed (admitted or released) is done.
    pub fn finished(&mut self, key: &str) {
        if let Some(p) = self.participants.get_mut(key) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }

    /// Held messages that may be processed now, at most `capacity`, oldest first per
    /// participant, participants taken in turn. Each takes a token and an in-flight slot.
    pub fn release(&mut self, now: Instant, capacity: usize) -> Vec<(String, T)> {
        let mut out = Vec::new();
        if self.held_total == 0 {
            return out;
        }
        let limits = self.limits.clone();
        let mut keys: Vec<String> = self
            .participants
            .iter()
            .filter(|(_, p)| !p.held.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        let mut progress = true;
        while out.len() < capacity && progress {
            progress = false;
            for key in &keys {
                if out.len() >= capacity {
                    break;
                }
                let Some(p) = self.participants.get_mut(key) else {
                    continue;
                };
                Self::refill(p, &limits, now);
                if p.held.is_empty() || p.tokens < 1.0 || p.in_flight >= limits.max_in_flight {
                    continue;
                }
                if let Some(item) = p.held.pop_front() {
                    p.tokens -= 1.0;
                    p.in_flight += 1;
                    self.held_total -= 1;
                    out.push((key.clone(), item));
                    progress = true;
                }
            }
        }
        out
    }

    /// When the next held message can be released by time alone (a token refilled), if
    /// any participant with held messages waits for a token. Participants that wait for an
    /// in-flight slot are released by [`FloodControl::finished`] instead.
    pub fn next_release_at(&self, now: Instant) -> Option<Instant> {
        self.participants
            .values()
            .filter(|p| !p.held.is_empty() && p.in_flight < self.limits.max_in_flight)
            .map(|p| {
                let elapsed = now.saturating_duration_since(p.refilled).as_secs_f64();
                let tokens = p.tokens + elapsed * self.limits.rate_per_sec;
                if tokens >= 1.0 {
                    now
                } else {
                    let wait = (1.0 - tokens) / self.limits.rate_per_sec;
                    // A microsecond more, so the refill computed then is not a rounding short of 1.
                    now + Duration::from_secs_f64(wait.min(3600.0)) + Duration::from_micros(1)
                }
            })
            .min()
    }

    /// Takes every held message (at shutdown: they are left unacknowledged and RabbitMQ
    /// delivers them again).
    pub fn drain_held(&mut self) -> Vec<T> {
        self.held_total = 0;
        self.participants
            .values_mut()
            .flat_map(|p| p.held.drain(..).collect::<Vec<_>>())
            .collect()
    }

    pub fn stats(&self) -> FloodStats {
        FloodStats {
            held: self.held_total,
            in_flight: self.participants.values().map(|p| p.in_flight).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FloodLimits {
        FloodLimits {
            rate_per_sec: 10.0,
            burst: 3,
            max_in_flight: 2,
            max_held: 2,
            max_held_total: 3,
            notice_every: Duration::from_secs(60),
        }
    }

    fn processed<T>(o: &Offer<T>) -> bool {
        matches!(o.admission, Admission::Process(_))
    }

    #[test]
    fn burst_then_hold_then_spill_and_one_notice() {
        let t0 = Instant::now();
        let mut f = FloodControl::new(limits());
        // In-flight bound 2: the first two are processed, the third held.
        assert!(processed(&f.offer("a", 1, t0)));
        assert!(processed(&f.offer("a", 2, t0)));
        let third = f.offer("a", 3, t0);
        assert_eq!(
            third,
            Offer {
                admission: Admission::Held,
                notify: true
            }
        );
        assert_eq!(
            f.offer("a", 4, t0),
            Offer {
                admission: Admission::Held,
                notify: false
            }
        );
        // max_held 2 for a: spill.
        assert_eq!(
            f.offer("a", 5, t0),
            Offer {
                admission: Admission::Spill(5),
                notify: false
            }
        );
        // Another participant is not affected.
        assert!(processed(&f.offer("b", 10, t0)));
        // One finished: a's oldest held comes back (a token is left from the burst).
        f.finished("a");
        assert_eq!(f.release(t0, 10), vec![("a".to_owned(), 3)]);
        assert_eq!(
            f.stats(),
            FloodStats {
                held: 1,
                in_flight: 3
            }
        );
    }

    #[test]
    fn rate_limits_and_releases_in_time() {
        let t0 = Instant::now();
        let mut l = limits();
        l.max_in_flight = 100;
        let mut f = FloodControl::new(l);
        for i in 0..3 {
            assert!(processed(&f.offer("a", i, t0)), "burst {i}");
        }
        assert_eq!(f.offer("a", 3, t0).admission, Admission::Held);
        let at = f.next_release_at(t0).expect("waits for a token");
        assert!(
            at > t0 && at <= t0 + Duration::from_millis(101),
            "{:?}",
            at - t0
        );
        assert!(f.release(t0, 10).is_empty());
        assert_eq!(f.release(at, 10), vec![("a".to_owned(), 3)]);
        assert_eq!(f.next_release_at(at), None);
        // Order is kept: with a token available but a message held, a new one waits too.
        assert_eq!(f.offer("a", 4, at).admission, Admission::Held);
        let later = at + Duration::from_secs(1);
        assert_eq!(f.offer("a", 5, later).admission, Admission::Held);
        assert_eq!(
            f.release(later, 10),
            vec![("a".to_owned(), 4), ("a".to_owned(), 5)]
        );
    }

    #[test]
    fn total_held_bound_leaves_room_for_others() {
        let t0 = Instant::now();
        let mut l = limits();
        l.max_in_flight = 1;
        let mut f = FloodControl::new(l);
        for key in ["a", "b"] {
            assert!(processed(&f.offer(key, 0, t0)));
        }
        assert_eq!(f.offer("a", 1, t0).admission, Admission::Held);
        assert_eq!(f.offer("a", 2, t0).admission, Admission::Held);
        assert_eq!(f.offer("b", 1, t0).admission, Admission::Held);
        // Total bound 3 reached: b's next one spills although b holds only one.
        assert_eq!(f.offer("b", 2, t0).admission, Admission::Spill(2));
        assert_eq!(f.drain_held().len(), 3);
        assert_eq!(f.stats().held, 0);
    }

    #[test]
    fn release_takes_participants_in_turn() {
        let t0 = Instant::now();
        let mut l = limits();
        l.max_in_flight = 1;
        l.max_held = 5;
        l.max_held_total = 10;
        let mut f = FloodControl::new(l);
        for key in ["a", "b"] {
            assert!(processed(&f.offer(key, 0, t0)));
            assert_eq!(f.offer(key, 1, t0).admission, Admission::Held);
            assert_eq!(f.offer(key, 2, t0).admission, Admission::Held);
        }
        f.finished("a");
        f.finished("b");
        let released = f.release(t0, 10);
        assert_eq!(released, vec![("a".to_owned(), 1), ("b".to_owned(), 1)]);
    }

    #[test]
    fn notices_are_spaced() {
        let t0 = Instant::now();
        let mut l = limits();
        l.burst = 1;
        let mut f = FloodControl::new(l);
        assert!(processed(&f.offer("a", 0, t0)));
        assert!(f.offer("a", 1, t0).notify);
        assert!(!f.offer("a", 2, t0 + Duration::from_secs(59)).notify);
        assert!(f.offer("a", 3, t0 + Duration::from_secs(61)).notify);
    }
}
