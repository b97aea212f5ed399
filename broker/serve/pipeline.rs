//! One ingress message, start to finish: verify → (per kind) authorise, route, deduplicate
//! → audit append → publish with confirms → audit `delivered` / `notice` → the caller acks.
//!
//! # Guarantees
//!
//! - [`Pipeline::handle`] returns `Ok` only when everything the message calls for is done:
//!   every publish confirmed (a returned message is a failure) and every audit entry durable.
//!   Only then does the server ack. `Err(Failure::Transient)` means "not finished, nothing
//!   lost": the message is redelivered and the next attempt resumes.
//! - **Idempotent redelivery.** Each step first reads the envelope's recorded outcome
//!   ([`crate::store::EnvelopeRecord`]) and skips what is recorded: `received` is appended
//!   once, `routed`/`duplicate` once per destination (the recorded split is reused, the URL
//!   keys are not asked again), a destination with a `delivered` entry is not published to
//!   again, a notice code recorded for a recipient is not sent again.
//! - **Redelivery or replay.** A known envelope id is the same message again only when the
//!   delivery is redelivered by RabbitMQ (or is the broker's own held copy) *and* its bytes
//!   hash to what `received` recorded; anything else is a replay (`replayed` notice). One
//!   envelope id is processed by one task at a time (an in-memory lock), so two copies in
//!   the window never both pass as new.
//! - A redelivered message whose first attempt was accepted is not refused for clock skew
//!   (the skew was checked when it was first received).
//! - Rejections: a `notice` to the authenticated sender (never to an unauthenticated one),
//!   the raw bytes to `quarantine` (confirmed) and to the body store, a `rejected` entry.
//!
//! # Not guaranteed
//!
//! - Between a confirmed publish and its durable `delivered` entry, a crash means the
//!   destination gets the message again, with the same envelope id (it drops it).
//! - Notices are at least once: after a partial failure a notice may be sent twice.
//! - Order between kinds: a retraction or status processed before its referral's `routed`
//!   entries exist finds no destinations (or no referral: `unknown_referral`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use chrono::Utc;
use lapin::BasicProperties;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::{debug, info, warn};

use super::message::{self, QuarantineFacts, Sender};
use super::notice;
use crate::ids::{EnvelopeId, ParticipantId};
use crate::ingress::{self, Policy, Rejection};
use crate::reason::ReasonCode;
use crate::registry::Registry;
use crate::route::{self, RoutingTable};
use crate::signing::Signer;
use crate::store::{
    Delivered, Duplicate as DuplicateEvent, DuplicateItem, EnvelopeRecord, Event, HashRef,
    ItemFacts, NewEntry, NoticeSent, ReceiptEvent, Received, Rejected, RetractionEvent, Routed,
    Seq, Sha256Digest, StatusEvent, Store, StoreError, UrlCheck, UrlKey,
};
use crate::transport::topology::{DELIVER_EXCHANGE, QUARANTINE_EXCHANGE, QUARANTINE_ROUTING_KEY};
use crate::transport::{PendingConfirm, PublishError, Publisher};
use crate::urlnorm;
use crate::wire::attestation::{
    Attestation, AttestedItem, Duplicate, KnownHash, MAX_KNOWN_HASHES, sha256_hex,
};
use crate::wire::{self, Body, Envelope, Kind, Notice, Referral, State};

/// Attempts of one publish before the message is given back for redelivery.
const PUBLISH_ATTEMPTS: u32 = 3;
/// Pause before the second attempt (doubled each time).
const PUBLISH_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What happened to a message that was handled to the end (the server acks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Passed every check; `delivered` publishes to destinations (this attempt), `resumed`
    /// if an earlier attempt had recorded part of the work.
    Accepted {
        kind: Kind,
        delivered: usize,
        duplicates: usize,
        resumed: bool,
    },
    /// Refused with `code` (notice, quarantine, audit done — or done by an earlier attempt).
    Rejected { code: ReasonCode },
}

/// Why a message was not handled to the end (the server does not ack it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A publish failed or timed out: give it back, the next attempt resumes.
    Transient(String),
    /// The audit store cannot write now (a full disk, an I/O error): keep the message
    /// unacknowledged and in hand, pause, reopen the store, then try it again. Not given back
    /// to RabbitMQ: that would count against the queue's delivery limit.
    Store(String),
    /// Something that retrying cannot mend (a damaged log, a bug): stop the daemon (nothing
    /// more can be acked correctly).
    Fatal(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { .. }
            | StoreError::Index { .. }
            | StoreError::WriteFailed(_)
            | StoreError::Poisoned(_)
            | StoreError::Closed => Failure::Store(format!("store: {e}")),
            StoreError::Corrupt { .. }
            | StoreError::BadEntry { .. }
            | StoreError::Gap { .. }
            | StoreError::Entry(_) => Failure::Fatal(format!("store: {e}")),
        }
    }
}

/// Counters, for the logs and the final summary.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub notices: AtomicU64,
    pub resumed: AtomicU64,
    pub transient: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The publishers of the daemon, one channel per concern (a refusal on one does not close
/// the others).
pub struct Outbound {
    pub deliver: Publisher,
    pub notices: Publisher,
    pub quarantine: Publisher,
}

/// One ingress message as the pipeline sees it.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub body: &'a [u8],
    pub props: &'a BasicProperties,
    pub sender: &'a Sender,
    /// RabbitMQ's `redelivered` flag.
    pub redelivered: bool,
}

impl Inbound<'_> {
    /// May be the same message as an earlier attempt (RabbitMQ redelivered it, or it is the
    /// broker's own held copy of it).
    fn may_repeat(&self) -> bool {
        self.redelivered || self.sender.held_copy
    }
}

/// Everything a message needs; shared by every task of the window.
pub struct Pipeline {
    pub broker: ParticipantId,
    pub registry: Registry,
    pub table: RoutingTable,
    pub signer: Signer,
    pub policy: Policy,
    pub store: Store,
    pub out: Outbound,
    pub stats: Stats,
    /// Hands what was appended to the operators' figures ([`crate::admin`]).
    pub observer: crate::admin::Observer,
    locks: Locks,
}

/// Per-envelope-id mutual exclusion.
#[derive(Default)]
struct Locks {
    map: StdMutex<HashMap<EnvelopeId, Arc<Mutex<()>>>>,
}

struct LockGuard<'a> {
    locks: &'a Locks,
    id: EnvelopeId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Locks {
    async fn lock(&self, id: &EnvelopeId) -> LockGuard<'_> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.clone()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        LockGuard {
            locks: self,
            id: id.clone(),
            guard: Some(guard),
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        // The map and this guard hold the only references: nobody waits, forget the id.
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) <= 2) {
            map.remove(&self.id);
        }
        self.guard.take();
    }
}

/// What an earlier attempt left for this envelope id.
enum Prior {
    /// Nothing was received under this id.
    New(EnvelopeRecord),
    /// This very message was received before: finish what is missing.
    Resume(EnvelopeRecord),
    /// Another message with this id was received before.
    Replay,
}

/// One publish to do: where, what, and what to record once it is confirmed.
struct Publish {
    exchange: &'static str,
    routing_key: String,
    body: Vec<u8>,
    props: BasicProperties,
    record: NewEntry,
}

impl Pipeline {
    /// A pipeline over the given parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: Registry,
        table: RoutingTable,
        signer: Signer,
        policy: Policy,
        store: Store,
        out: Outbound,
    ) -> Self {
        Self {
            broker: registry.broker().id.clone(),
            registry,
            table,
            signer,
            policy,
            store,
            out,
            stats: Stats::default(),
            observer: Default::default(),
            locks: Locks::default(),
        }
    }

    /// Handles one ingress message to the end; see the module documentation.
    pub async fn handle(&self, msg: Inbound<'_>) -> Result<Handled, Failure> {
        let now = Utc::now();
        let meta = message::meta(msg.props, msg.sender);
        let sha = Sha256Digest::of(msg.body);
        // Replays are judged below, under the envelope's lock, with the redelivered flag.
        let verified = ingress::verify(
            msg.body,
            &meta,
            &self.registry,
            now,
            &|_| false,
            &self.policy,
        );
        match verified {
            Ok(v) => {
                let _lock = self.locks.lock(&v.envelope.id).await;
                match self.prior(&v.envelope.id, &msg, sha)? {
                    Prior::Replay => self.replayed(&msg, &v.envelope, sha).await,
                    Prior::New(rec) => self.accepted(&msg, v.envelope, sha, rec, false).await,
                    Prior::Resume(rec) => self.accepted(&msg, v.envelope, sha, rec, true).await,
                }
            }
            Err(mut rej) => {
                // The size is checked before the sender is looked up; the sender is known all
                // the same (RabbitMQ authenticated `user_id`), so it is told.
                if rej.sender.is_none() {
                    rej.sender = meta
                        .user_id
                        .and_then(|u| u.parse::<ParticipantId>().ok())
                        .filter(|id| self.registry.get(id).is_some());
                }
                // Clock skew is the last check: the signature verified and the body decoded.
                if rej.code == ReasonCode::ClockSkew
                    && let Some(id) = rej.envelope_id.clone()
                {
                    let _lock = self.locks.lock(&id).await;
                    let envelope = wire::decode(msg.body)
                        .map_err(|e| Failure::Fatal(format!("decoding a verified body: {e}")))?;
                    return match self.prior(&id, &msg, sha)? {
                        Prior::Resume(rec) => self.accepted(&msg, envelope, sha, rec, true).await,
                        Prior::Replay => self.replayed(&msg, &envelope, sha).await,
                        Prior::New(_) => self.reject(&msg, rej, sha).await,
                    };
                }
                match &rej.envelope_id {
                    Some(id) => {
                        let id = id.clone();
                        let _lock = self.locks.lock(&id).await;
                        self.reject(&msg, rej, sha).await
                    }
                    None => self.reject(&msg, rej, sha).await,
                }
            }
        }
    }

    fn prior(
        &self,
        id: &EnvelopeId,
        msg: &Inbound<'_>,
        sha: Sha256Digest,
    ) -> Result<Prior, Failure> {
        let rec = self.store.envelope(id)?.unwrap_or_default();
        if rec.received.is_none() {
            return Ok(Prior::New(rec));
        }
        if msg.may_repeat() && self.recorded_sha(id, "received")? == Some(sha) {
            return Ok(Prior::Resume(rec));
        }
        Ok(Prior::Replay)
    }

    /// The `sha256` of the first entry named `event` about envelope `id`.
    fn recorded_sha(&self, id: &EnvelopeId, event: &str) -> Result<Option<Sha256Digest>, Failure> {
        Ok(self
            .store
            .entries_of(id)?
            .into_iter()
            .find(|e| e.envelope.as_ref() == Some(id) && e.event.name() == event)
            .and_then(|e| e.sha256))
    }

    /// The seq of the first entry named `event` whose envelope is `id`.
    fn recorded_seq(&self, id: &EnvelopeId, event: &str) -> Result<Option<Seq>, Failure> {
        Ok(self
            .store
            .entries_of(id)?
            .into_iter()
            .find(|e| e.envelope.as_ref() == Some(id) && e.event.name() == event)
            .map(|e| e.seq))
    }

    async fn replayed(
        &self,
        msg: &Inbound<'_>,
        envelope: &Envelope,
        sha: Sha256Digest,
    ) -> Result<Handled, Failure> {
        let rej = Rejection {
            code: ReasonCode::Replayed,
            envelope_id: Some(envelope.id.clone()),
            sender: Some(envelope.origin.clone()),
            detail: format!("envelope {} was already received", envelope.id),
        };
        self.reject(msg, rej, sha).await
    }

    /// A verified envelope: dispatch on its kind.
    async fn accepted(
        &self,
        msg: &Inbound<'_>,
        envelope: Envelope,
        sha: Sha256Digest,
        rec: EnvelopeRecord,
        resumed: bool,
    ) -> Result<Handled, Failure> {
        if resumed {
            Stats::add(&self.stats.resumed, 1);
            debug!(envelope = %envelope.id, "resuming a redelivered envelope");
        }
        let outcome = match &envelope.body {
            Body::Referral(r) => self.referral(msg, &envelope, r, sha, rec).await,
            Body::Receipt(r) => {
                let targets = FollowUp::receipt(&r.referral);
                self.follow_up(
                    msg,
                    &envelope,
                    sha,
                    rec,
                    targets,
                    Event::Receipt(ReceiptEvent {
                        referral: r.referral.clone(),
                        outcome: r.outcome,
                    }),
                )
                .await
            }
            Body::Status(s) => {
                let event = Event::Status(StatusEvent {
                    referral: s.referral.clone(),
                    item: s.item,
                    state: s.state,
                    url_key: None,
                });
                self.follow_up(
                    msg,
                    &envelope,
                    sha,
                    rec,
                    FollowUp::status(&s.referral, s.item, s.state),
                    event,
                )
                .await
            }
            Body::Retraction(r) => {
                let event = Event::Retraction(RetractionEvent {
                    referral: r.referral.clone(),
                    items: Vec::new(),
                });
                self.follow_up(
                    msg,
                    &envelope,
                    sha,
                    rec,
                    FollowUp::retraction(&r.referral),
                    event,
                )
                .await
            }
            Body::Notice(_) | Body::Checkpoint(_) => {
                let rej = Rejection {
                    code: ReasonCode::NotAuthorized,
                    envelope_id: Some(envelope.id.clone()),
                    sender: Some(envelope.origin.clone()),
                    detail: format!(
                        "only the broker sends {} envelopes; a participant may send referral, \
                         receipt, status and retraction",
                        envelope.kind
                    ),
                };
                return self.reject(msg, rej, sha).await;
            }
        };
        match &outcome {
            Ok(Handled::Accepted {
                delivered,
                duplicates,
                ..
            }) => {
                Stats::add(&self.stats.accepted, 1);
                Stats::add(&self.stats.delivered, *delivered);
                Stats::add(&self.stats.duplicates, *duplicates);
            }
            Ok(Handled::Rejected { .. }) => {}
            Err(Failure::Transient(_)) => Stats::add(&self.stats.transient, 1),
            Err(Failure::Store(_) | Failure::Fatal(_)) => {}
        }
        outcome
    }

    // ---------------------------------------------------------------------------------
    // Referrals

    async fn referral(
        &self,
        msg: &Inbound<'_>,
        envelope: &Envelope,
        referral: &Referral,
        sha: Sha256Digest,
        rec: EnvelopeRecord,
    ) -> Result<Handled, Failure> {
        let id = &envelope.id;
        let origin = &envelope.origin;
        let resumed = rec.received.is_some();
        let mut keys = Vec::with_capacity(referral.items.len());
        for (i, item) in referral.items.iter().enumerate() {
            match urlnorm::normalise(&item.url) {
                Ok(u) => keys.push(UrlKey(u.dedup_key())),
                Err(e) => {
                    // The wire accepted it as a WHATWG http(s) URL; the normaliser should too.
                    let rej = Rejection {
                        code: ReasonCode::SchemaViolation,
                        envelope_id: Some(id.clone()),
                        sender: Some(origin.clone()),
                        detail: format!("/body/items/{i}/url: {e}"),
                    };
                    return self.reject(msg, rej, sha).await;
                }
            }
        }
        let plan = route::plan(referral, origin, &self.table);
        let now = Utc::now();

        // Per destination: items routed (URL opened there by this referral) and duplicates.
        struct Split {
            routed: Vec<u16>,
            duplicates: Vec<(u16, EnvelopeId)>,
            recorded: bool,
        }
        let mut splits: BTreeMap<ParticipantId, Split> = BTreeMap::new();
        for (dest, items) in &plan.destinations {
            let recorded = rec.destinations.get(dest);
            let split = match recorded {
                Some(r) if r.routed.is_some() || r.duplicates.is_some() => {
                    let routed = r
                        .routed
                        .as_ref()
                        .map(|(i, _)| i.clone())
                        .unwrap_or_default();
                    let mut duplicates = Vec::new();
                    for &i in r
                        .duplicates
                        .as_ref()
                        .map(|(i, _)| i.as_slice())
                        .unwrap_or(&[])
                    {
                        let first = keys
                            .get(usize::from(i))
                            .map(|k| self.store.url_key(dest, k))
                            .transpose()?
                            .flatten()
                            .map(|k| k.first_referral)
                            .unwrap_or_else(|| id.clone());
                        duplicates.push((i, first));
                    }
                    Split {
                        routed,
                        duplicates,
                        recorded: true,
                    }
                }
                _ => {
                    let mut split = Split {
                        routed: Vec::new(),
                        duplicates: Vec::new(),
                        recorded: false,
                    };
                    for item in items {
                        let index = item.index as u16;
                        match self
                            .store
                            .url_check_and_open(dest, &keys[item.index], id, now)?
                        {
                            UrlCheck::Opened => split.routed.push(index),
                            UrlCheck::Duplicate { first_referral, .. } => {
                                split.duplicates.push((index, first_referral))
                            }
                        }
                    }
                    split
                }
            };
            splits.insert(dest.clone(), split);
        }

        // Batch 1: received, routed, duplicate.
        let mut entries = Vec::new();
        if !resumed {
            self.store.put_body(msg.body, now)?;
            let items = referral
                .items
                .iter()
                .zip(&keys)
                .map(|(item, key)| ItemFacts {
                    url_key: *key,
                    hashes: item
                        .hashes
                        .iter()
                        .map(|h| HashRef {
                            algorithm: h.algorithm,
                            value: h.value.clone(),
                        })
                        .collect(),
                })
                .collect();
            entries.push(
                NewEntry::new(Event::Received(Received {
                    kind: Kind::Referral,
                    items,
                }))
                .envelope(id.clone())
                .participant(origin.clone())
                .hashed(sha),
            );
        }
        let mut routed_entry: Vec<ParticipantId> = Vec::new();
        for (dest, split) in &splits {
            if split.recorded {
                continue;
            }
            if !split.routed.is_empty() {
                let reasons: BTreeSet<&'static str> = plan
                    .items_for(dest)
                    .iter()
                    .filter(|i| split.routed.contains(&(i.index as u16)))
                    .flat_map(|i| i.reasons.iter().map(|r| r.as_str()))
                    .collect();
                entries.push(
                    NewEntry::new(Event::Routed(Routed {
                        items: split.routed.clone(),
                        reason: reasons.into_iter().collect::<Vec<_>>().join(","),
                    }))
                    .envelope(id.clone())
                    .participant(origin.clone())
                    .destination(dest.clone())
                    .hashed(sha),
                );
                routed_entry.push(dest.clone());
            }
            if !split.duplicates.is_empty() {
                entries.push(
                    NewEntry::new(Event::Duplicate(DuplicateEvent {
                        items: split
                            .duplicates
                            .iter()
                            .map(|(i, first)| DuplicateItem {
                                item: *i,
                                url_key: keys[usize::from(*i)],
                                first_referral: first.clone(),
                            })
                            .collect(),
                    }))
                    .envelope(id.clone())
                    .participant(origin.clone())
                    .destination(dest.clone())
                    .hashed(sha),
                );
            }
        }
        let appended = self.store.append(entries).await?;
        let mut routed_seq: BTreeMap<ParticipantId, Seq> = appended
            .iter()
            .filter(|e| e.event.name() == "routed")
            .filter_map(|e| Some((e.destination.clone()?, e.seq)))
            .collect();
        self.observer.record(appended);
        for (dest, outcome) in &rec.destinations {
            if let Some((_, seq)) = &outcome.routed {
                routed_seq.entry(dest.clone()).or_insert(*seq);
            }
        }

        // Hashes seen before (by an earlier referral: this one's own `received` is now in).
        let mut known = Vec::new();
        let mut truncated = false;
        'items: for (i, item) in referral.items.iter().enumerate() {
            for (j, h) in item.hashes.iter().enumerate() {
                let first = self.store.hash_first_referral(&HashRef {
                    algorithm: h.algorithm,
                    value: h.value.clone(),
                })?;
                if let Some(first) = first
                    && &first != id
                {
                    if known.len() == MAX_KNOWN_HASHES {
                        truncated = true;
                        break 'items;
                    }
                    known.push(KnownHash {
                        item: i as u16,
                        hash: j as u16,
                        first_referral: first,
                    });
                }
            }
        }

        // Publishes: the referral to each destination not yet delivered.
        let mut publishes = Vec::new();
        let body_hex = sha256_hex(msg.body);
        for (dest, split) in &splits {
            let delivered = rec
                .destinations
                .get(dest)
                .is_some_and(|o| o.delivered.is_some());
            if split.routed.is_empty() || delivered {
                continue;
            }
            let Some(seq) = routed_seq.get(dest) else {
                return Err(Failure::Fatal(format!(
                    "no routed entry for {dest} after appending it"
                )));
            };
            let reasons = plan.items_for(dest);
            let attestation = Attestation {
                v: 1,
                envelope: id.clone(),
                kind: Kind::Referral,
                origin: origin.clone(),
                destination: dest.clone(),
                body_sha256: body_hex.clone(),
                referral: None,
                items: split
                    .routed
                    .iter()
                    .map(|&i| AttestedItem {
                        index: i,
                        reasons: reasons
                            .iter()
                            .find(|r| r.index == usize::from(i))
                            .map(|r| r.reasons.iter().copied().collect())
                            .unwrap_or_default(),
                    })
                    .collect(),
                duplicates: split
                    .duplicates
                    .iter()
                    .map(|(i, first)| Duplicate {
                        index: *i,
                        first_referral: first.clone(),
                    })
                    .collect(),
                known_hashes: known.clone(),
                known_hashes_truncated: truncated,
                audit_seq: seq.get(),
                attested_at: now,
            };
            publishes.push(self.forward(msg, envelope, dest, &attestation, sha, resumed)?);
        }

        // Notices to the origin: duplicates (one per first referral), unroutable items.
        let mut notices: Vec<Notice> = Vec::new();
        let mut by_first: BTreeMap<EnvelopeId, (BTreeSet<u16>, BTreeSet<&ParticipantId>)> =
            BTreeMap::new();
        for (dest, split) in &splits {
            for (i, first) in &split.duplicates {
                let e = by_first.entry(first.clone()).or_default();
                e.0.insert(*i);
                e.1.insert(dest);
            }
        }
        let mut duplicate_items = 0;
        for (first, (items, dests)) in by_first {
            duplicate_items += items.len();
            let mut n = notice::notice(
                ReasonCode::Duplicate,
                Some(id),
                &format!(
                    "not forwarded again: the URL is already open at {} under referral {first}",
                    dests
                        .iter()
                        .map(|d| d.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            n.first_referral = Some(first);
            n.items = Some(items.into_iter().collect());
            notices.push(n);
        }
        if !plan.unroutable.is_empty() {
            let causes: Vec<String> = plan
                .unroutable
                .iter()
                .map(|u| match &u.cause {
                    route::UnroutableCause::NotAReceiver { to } => {
                        format!(
                            "item {}: `to` {to} is not a hotline or LEA of the network",
                            u.index
                        )
                    }
                    route::UnroutableCause::NoDestination { country } => {
                        format!(
                            "item {}: no hotline covers {country} and no fallback is configured",
                            u.index
                        )
                    }
                    route::UnroutableCause::OnlyOrigin { country } => {
                        format!("item {}: you are the only hotline for {country}", u.index)
                    }
                })
                .collect();
            let mut n = notice::notice(ReasonCode::Unroutable, Some(id), &causes.join("; "));
            n.items = Some(plan.unroutable.iter().map(|u| u.index as u16).collect());
            notices.push(n);
        }
        if !plan.urgent_without_lea.is_empty() {
            warn!(envelope = %id, items = ?plan.urgent_without_lea, "urgent items with no LEA to copy to");
        }
        for n in notices {
            if rec
                .notices
                .iter()
                .any(|r| &r.to == origin && r.code == n.code)
            {
                continue;
            }
            publishes.push(self.notice_publish(origin, Some(id), n)?);
        }

        let delivered = publishes
            .iter()
            .filter(|p| p.exchange == DELIVER_EXCHANGE && is_delivered(&p.record))
            .count();
        self.publish_and_record(publishes).await?;
        Ok(Handled::Accepted {
            kind: Kind::Referral,
            delivered,
            duplicates: duplicate_items,
            resumed,
        })
    }

    // ---------------------------------------------------------------------------------
    // Receipts, statuses, retractions

    async fn follow_up(
        &self,
        msg: &Inbound<'_>,
        envelope: &Envelope,
        sha: Sha256Digest,
        rec: EnvelopeRecord,
        what: FollowUp<'_>,
        mut event: Event,
    ) -> Result<Handled, Failure> {
        let id = &envelope.id;
        let sender = &envelope.origin;
        let resumed = rec.received.is_some();
        let refuse = |code: ReasonCode, detail: String| Rejection {
            code,
            envelope_id: Some(id.clone()),
            sender: Some(sender.clone()),
            detail,
        };
        let Some(referral) = self.store.referral(what.referral)? else {
            let rej = refuse(
                ReasonCode::UnknownReferral,
                format!("referral {} is not known to the broker", what.referral),
            );
            return self.reject(msg, rej, sha).await;
        };
        let targets: Vec<ParticipantId> = match what.kind {
            FollowUpKind::Receipt | FollowUpKind::Status { .. } => {
                let Some(items) = referral.destinations.get(sender) else {
                    let rej = refuse(
                        ReasonCode::NotAuthorized,
                        format!(
                            "{sender} is not a destination of referral {}: only its destinations \
                             report on it",
                            what.referral
                        ),
                    );
                    return self.reject(msg, rej, sha).await;
                };
                if let FollowUpKind::Status { item, state } = what.kind {
                    if !items.contains(&item) {
                        let rej = refuse(
                            ReasonCode::NotAuthorized,
                            format!(
                                "item {item} of referral {} was not routed to {sender} (routed: {items:?})",
                                what.referral
                            ),
                        );
                        return self.reject(msg, rej, sha).await;
                    }
                    if let Event::Status(s) = &mut event
                        && state == State::Removed
                    {
                        s.url_key = referral.items.get(usize::from(item)).map(|f| f.url_key);
                    }
                }
                vec![referral.origin.clone()]
            }
            FollowUpKind::Retraction => {
                if sender != &referral.origin {
                    let rej = refuse(
                        ReasonCode::NotAuthorized,
                        format!(
                            "only the origin of referral {} ({}) may retract it",
                            what.referral, referral.origin
                        ),
                    );
                    return self.reject(msg, rej, sha).await;
                }
                if let Event::Retraction(r) = &mut event {
                    r.items = (0..referral.items.len() as u16).collect();
                }
                referral.destinations.keys().cloned().collect()
            }
        };
        let event_name = event.name();

        // Batch 1: received + the event (one append: consecutive, durable together).
        let event_seq = if resumed {
            match self.recorded_seq(id, event_name)? {
                Some(seq) => seq,
                None => {
                    return Err(Failure::Fatal(format!(
                        "{id}: received but no {event_name} entry"
                    )));
                }
            }
        } else {
            let now = Utc::now();
            self.store.put_body(msg.body, now)?;
            let mut entry = NewEntry::new(event)
                .envelope(id.clone())
                .participant(sender.clone())
                .hashed(sha);
            if targets.len() == 1 {
                entry = entry.destination(targets[0].clone());
            }
            let appended = self
                .store
                .append(vec![
                    NewEntry::new(Event::Received(Received {
                        kind: envelope.kind,
                        items: Vec::new(),
                    }))
                    .envelope(id.clone())
                    .participant(sender.clone())
                    .hashed(sha),
                    entry,
                ])
                .await?;
            let seq = appended.get(1).map(|e| e.seq);
            self.observer.record(appended);
            match seq {
                Some(seq) => seq,
                None => {
                    return Err(Failure::Fatal(
                        "append returned fewer entries than given".into(),
                    ));
                }
            }
        };

        let now = Utc::now();
        let body_hex = sha256_hex(msg.body);
        let mut publishes = Vec::new();
        for dest in &targets {
            if rec
                .destinations
                .get(dest)
                .is_some_and(|o| o.delivered.is_some())
            {
                continue;
            }
            let attestation = Attestation {
                v: 1,
                envelope: id.clone(),
                kind: envelope.kind,
                origin: sender.clone(),
                destination: dest.clone(),
                body_sha256: body_hex.clone(),
                referral: Some(what.referral.clone()),
                items: Vec::new(),
                duplicates: Vec::new(),
                known_hashes: Vec::new(),
                known_hashes_truncated: false,
                audit_seq: event_seq.get(),
                attested_at: now,
            };
            publishes.push(self.forward(msg, envelope, dest, &attestation, sha, resumed)?);
        }
        let delivered = publishes.len();
        self.publish_and_record(publishes).await?;
        Ok(Handled::Accepted {
            kind: envelope.kind,
            delivered,
            duplicates: 0,
            resumed,
        })
    }

    // ---------------------------------------------------------------------------------
    // Rejections

    async fn reject(
        &self,
        msg: &Inbound<'_>,
        rej: Rejection,
        sha: Sha256Digest,
    ) -> Result<Handled, Failure> {
        let code = rej.code;
        // An earlier attempt of this very message may have done it all.
        if msg.may_repeat()
            && let Some(id) = &rej.envelope_id
        {
            let done = self.store.entries_of(id)?.into_iter().any(|e| {
                e.event.name() == "rejected"
                    && e.sha256 == Some(sha)
                    && e.envelope.as_ref() == Some(id)
            });
            if done {
                debug!(envelope = %id, %code, "rejection already recorded");
                return Ok(Handled::Rejected { code });
            }
        }
        info!(
            code = %code,
            sender = rej.sender.as_ref().map(|s| s.as_str()).unwrap_or("-"),
            envelope = rej.envelope_id.as_ref().map(|e| e.as_str()).unwrap_or("-"),
            detail = %rej.detail,
            "refused"
        );
        let now = Utc::now();
        self.store.put_body(msg.body, now)?;
        let sender = rej.sender.as_ref().map(|s| s.as_str());
        let facts = QuarantineFacts {
            code,
            detail: &rej.detail,
            sender,
            envelope: rej.envelope_id.as_ref().map(|e| e.as_str()),
            redelivered: msg.redelivered,
        };
        let mut record = NewEntry::new(Event::Rejected(Rejected {
            code,
            quarantined: true,
        }))
        .hashed(sha);
        if let Some(id) = &rej.envelope_id {
            record = record.envelope(id.clone());
        }
        if let Some(p) = &rej.sender {
            record = record.participant(p.clone());
        }
        let mut publishes = vec![Publish {
            exchange: QUARANTINE_EXCHANGE,
            routing_key: QUARANTINE_ROUTING_KEY.to_owned(),
            body: msg.body.to_vec(),
            props: message::quarantine_properties(msg.props, &facts, &self.broker),
            record,
        }];
        if let Some(to) = &rej.sender
            && to != &self.broker
        {
            let n = notice::notice(code, rej.envelope_id.as_ref(), &rej.detail);
            publishes.push(self.notice_publish(to, rej.envelope_id.as_ref(), n)?);
        }
        Stats::add(&self.stats.rejected, 1);
        self.publish_and_record(publishes).await?;
        Ok(Handled::Rejected { code })
    }

    // ---------------------------------------------------------------------------------
    // Publishing

    /// Sends a broker-signed notice that is about no envelope (e.g. `rate_limited`), with
    /// its audit entry.
    pub async fn send_notice(&self, to: &ParticipantId, body: Notice) -> Result<(), Failure> {
        let p = self.notice_publish(to, None, body)?;
        self.publish_and_record(vec![p]).await
    }

    /// Publishes one broker-signed envelope to each of `to` (confirmed, with the usual
    /// retries), all at once; one outcome per recipient, in order. Records nothing.
    pub async fn broadcast(
        &self,
        signed: &notice::Signed,
        to: &[ParticipantId],
    ) -> Vec<Result<(), PublishError>> {
        let props = message::own_properties(
            signed.kind.as_str(),
            signed.id.as_str(),
            &self.broker,
            &signed.sig_b64,
            signed.key_id.as_str(),
        );
        let publishes: Vec<Publish> = to
            .iter()
            .map(|id| Publish {
                exchange: DELIVER_EXCHANGE,
                routing_key: id.as_str().to_owned(),
                body: signed.bytes.clone(),
                props: props.clone(),
                record: NewEntry::new(Event::Delivered(Delivered {
                    items: Vec::new(),
                    attestation_sha256: None,
                })),
            })
            .collect();
        futures_util::future::join_all(publishes.iter().map(|p| self.publish_one(p))).await
    }

    /// A forward of `envelope`'s bytes to `dest` with `attestation`.
    fn forward(
        &self,
        msg: &Inbound<'_>,
        envelope: &Envelope,
        dest: &ParticipantId,
        attestation: &Attestation,
        sha: Sha256Digest,
        again: bool,
    ) -> Result<Publish, Failure> {
        let items = attestation.items.iter().map(|i| i.index).collect();
        let signed = attestation
            .sign(&self.signer)
            .map_err(|e| Failure::Fatal(format!("building the attestation for {dest}: {e}")))?;
        let props =
            message::forward_properties(msg.props, &envelope.origin, &self.broker, &signed, again);
        Ok(Publish {
            exchange: DELIVER_EXCHANGE,
            routing_key: dest.as_str().to_owned(),
            body: msg.body.to_vec(),
            props,
            record: NewEntry::new(Event::Delivered(Delivered {
                items,
                attestation_sha256: Some(Sha256Digest::of(&signed.bytes)),
            }))
            .envelope(envelope.id.clone())
            .participant(envelope.origin.clone())
            .destination(dest.clone())
            .hashed(sha),
        })
    }

    /// A broker-signed notice to `to`, about `about`.
    fn notice_publish(
        &self,
        to: &ParticipantId,
        about: Option<&EnvelopeId>,
        body: Notice,
    ) -> Result<Publish, Failure> {
        let code = body.code;
        let first_referral = body.first_referral.clone();
        let signed = notice::sign(&self.broker, &self.signer, body)
            .map_err(|e| Failure::Fatal(format!("building a {code} notice: {e}")))?;
        let props = message::own_properties(
            signed.kind.as_str(),
            signed.id.as_str(),
            &self.broker,
            &signed.sig_b64,
            signed.key_id.as_str(),
        );
        let mut record = NewEntry::new(Event::NoticeSent(NoticeSent {
            notice: signed.id.clone(),
            code,
            first_referral,
        }))
        .participant(self.broker.clone())
        .destination(to.clone())
        .hashed(Sha256Digest::of(&signed.bytes));
        if let Some(a) = about {
            record = record.envelope(a.clone());
        }
        Ok(Publish {
            exchange: DELIVER_EXCHANGE,
            routing_key: to.as_str().to_owned(),
            body: signed.bytes,
            props,
            record,
        })
    }

    /// Publishes everything at once, waits for every confirm (retrying what fails and may
    /// succeed later), appends the records of what was confirmed, durably. `Err` if any
    /// publish did not succeed, after recording the others.
    async fn publish_and_record(&self, publishes: Vec<Publish>) -> Result<(), Failure> {
        if publishes.is_empty() {
            return Ok(());
        }
        let outcomes =
            futures_util::future::join_all(publishes.iter().map(|p| self.publish_one(p))).await;
        let mut records = Vec::new();
        let mut failures = Vec::new();
        let mut notices = 0;
        for (p, outcome) in publishes.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    if matches!(p.record.event, Event::NoticeSent(_)) {
                        notices += 1;
                    }
                    records.push(p.record);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Stats::add(&self.stats.notices, notices);
        if !records.is_empty() {
            let appended = self.store.append(records).await?;
            self.observer.record(appended);
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Failure::Transient(failures.join("; ")))
        }
    }

    fn publisher(&self, exchange: &str, props: &BasicProperties) -> &Publisher {
        if exchange == QUARANTINE_EXCHANGE {
            &self.out.quarantine
        } else if props.kind().as_ref().is_some_and(|k| {
            [Kind::Notice.as_str(), Kind::Checkpoint.as_str()].contains(&k.as_str())
        }) {
            // What the broker says in its own name.
            &self.out.notices
        } else {
            &self.out.deliver
        }
    }

    async fn publish_one(&self, p: &Publish) -> Result<(), PublishError> {
        let publisher = self.publisher(p.exchange, &p.props);
        let mut pause = PUBLISH_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            let sent: Result<PendingConfirm, PublishError> = publisher
                .send(p.exchange, &p.routing_key, &p.body, p.props.clone())
                .await;
            let outcome = match sent {
                Ok(pending) => pending.wait().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if e.is_recoverable() && attempt < PUBLISH_ATTEMPTS => {
                    warn!(error = %e, attempt, "publish failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    warn!(error = %e, "publish failed");
                    return Err(e);
                }
            }
        }
    }
}

/// Sets an entry's `sha256` from a digest already computed.
trait Hashed {
    fn hashed(self, digest: Sha256Digest) -> Self;
}

impl Hashed for NewEntry {
    fn hashed(mut self, digest: Sha256Digest) -> Self {
        self.sha256 = Some(digest);
        self
    }
}

fn is_delivered(record: &NewEntry) -> bool {
    matches!(record.event, Event::Delivered(_))
}

/// What a receipt, status or retraction is about, and what it may do.
struct FollowUp<'a> {
    referral: &'a EnvelopeId,
    kind: FollowUpKind,
}

#[derive(Clone, Copy)]
enum FollowUpKind {
    Receipt,
    Status { item: u16, state: State },
    Retraction,
}

impl<'a> FollowUp<'a> {
    fn receipt(referral: &'a EnvelopeId) -> Self {
        Self {
            referral,
            kind: FollowUpKind::Receipt,
        }
    }
    fn status(referral: &'a EnvelopeId, item: u16, state: State) -> Self {
        Self {
            referral,
            kind: FollowUpKind::Status { item, state },
        }
    }
    fn retraction(referral: &'a EnvelopeId) -> Self {
        Self {
            referral,
            kind: FollowUpKind::Retraction,
        }
    }
}
