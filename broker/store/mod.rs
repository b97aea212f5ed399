//! The broker's store: the audit log (the write-ahead log and the source of truth), the sled
//! indexes derived from it, and message bodies under retention. The rest of the broker sees
//! typed operations ([`Store`], [`LogReader`]), never files or trees.
//!
//! # Layout of a data directory
//!
//! - `log/<first seq, 20 digits>.seg`: append-only segment files (a new one after
//!   [`StoreConfig::segment_bytes`]) of frames `len: u32 LE | check: u32 LE | entry bytes`,
//!   where `check` is the first 4 bytes of the entry's leaf hash. Entry bytes: [`entry`].
//! - `index/`: sled, derived from the log; holds the last seq it reflects. Also
//!   `index/urls.snap`, the snapshot of the open URL keys, which live in memory: see below.
//! - `bodies/`: sled, message bytes by SHA-256 with the time stored; not derived from the log
//!   (entries keep only hashes), kept until `audit purge`.
//!
//! # Writing: group commit
//!
//! [`Store::append`] hands entries to one writer thread, which takes every request waiting
//! (up to [`StoreConfig::commit_max_entries`]), assigns seqs and times, writes the frames
//! with one `write`, makes them durable with one `sync_data`, applies them to the indexes,
//! and only then answers every caller of the batch. Throughput comes from many callers
//! sharing one fsync, never from answering before it. If the write or the fsync fails,
//! every caller of the batch gets the error, the segment is cut back to its last durable
//! length, and after a failed fsync the store refuses all further writes
//! ([`StoreError::Poisoned`]): the page cache can no longer be trusted, a restart rescans.
//!
//! # URL dedup: in memory, the log as its write-ahead log
//!
//! [`Store::url_check_and_open`] never touches sled: it answers from an in-memory table of
//! the OPEN URL keys (`urls.rs`), so a check costs about the same at 100 k and at 10 M keys.
//! The table is updated where the writer applies each batch, and that is all the batch does
//! for an opened or counted key: no sled write (`index.rs`), so making decisions durable
//! costs the log's fsync and a few sled writes per referral at time-ordered keys, whatever
//! the number of keys. Only a close (a `removed` status, a retraction: rare) writes the
//! closed key's record to sled, where [`Store::url_key`] finds it.
//!
//! The log is the table's write-ahead log: the entries' URL effects rebuild it. So that a
//! restart does not replay them all, the writer saves the table as a snapshot file
//! (`index/urls.snap`, `urlsnap.rs`: the logged records only, never a reservation, in 256
//! shards, each as of an entry seq, with a checksum) whenever the URL effects since the
//! last one reach max(keys open at the last one, 100 000), and when the store closes. It
//! copies a few shards after each batch (milliseconds, whatever the size) and writes the
//! file on a background thread. [`Store::open`] reads the snapshot, replays the URL effects
//! alone of the entries from the smallest shard seq to what sled has applied, each on the
//! keys of the shards that do not hold it yet (each entry's effect on each key applied
//! once), then replays whatever sled has not applied, in full. Time and keys are in
//! [`OpenReport::url_load`]. A missing or damaged snapshot only costs time: the URL effects
//! of the whole log are replayed instead (and `audit rebuild-index` deletes it with the
//! rest of `index/`). `referral-broker bench` measures the check, the logged rate, the
//! snapshot and the reopen.
//!
//! Memory: about 100 bytes per open key (66–133 depending on how full the hash table is:
//! a 16-byte slot digest + 41 bytes of record + 1 control byte per bucket), so 1 M open
//! keys take about 0.1 GB and 10 M about 1 GB (measured: 928 MiB for 10.1 M, 96 bytes per
//! key), on top of sled's cache, and 57 bytes per key while a snapshot is copied and
//! written. [`Store::url_index`] reports the current figure.
//!
//! # After a crash, guaranteed
//!
//! - Every entry whose `append` returned `Ok` is durable, in order, with its seq.
//! - A torn tail (a batch written but not fully fsynced, hence never acknowledged) is
//!   detected by its length/check and truncated on open. Damage anywhere else (a bad frame
//!   followed by more than one batch of data, or in a segment that is not the last) is an
//!   error ([`StoreError::Corrupt`]), never silently skipped.
//! - sled is at worst behind the log (it is flushed by itself every 500 ms and on close, not
//!   with each batch unless [`StoreConfig::flush_index_each_batch`]): it records the last seq
//!   it applied in the same atomic batch as the effects of that entry, and open replays every
//!   entry after it. Each entry is applied exactly once. A lost or damaged `index/` costs a
//!   rebuild ([`rebuild_index`]), never evidence.
//! - The open URL keys come back as the log has them: the last snapshot (written whole or
//!   not at all: temp file, fsync, rename; never ahead of sled, which is flushed first) plus
//!   the URL effects of every entry after it, each once per key. The URL work on open is
//!   bounded by the snapshot (a sequential read) and, after a crash, fewer than
//!   max(K, 100 000) URL effects, K the keys the snapshot holds, plus those applied while
//!   the next one was being copied and written (`urlsnap.rs`); none after a close. A
//!   damaged snapshot is ignored (logged), at the cost of replaying every URL effect in the
//!   log.
//!
//! # Not guaranteed
//!
//! - An entry can be durable although what it records was not acked or, for `routed`, not
//!   yet published: the ingress message is redelivered and the daemon resumes from the
//!   envelope's recorded outcome. Between a confirmed publish and its durable `delivered`
//!   entry a crash means the message is published again (the participant client drops the
//!   second copy by envelope id).
//! - [`Store::url_check_and_open`] keeps its reservation in memory only, ahead of the log,
//!   until the `routed` entry that makes it part of the log is applied. If the process stops
//!   first, the reservation is lost (the referral, not yet acked, is redelivered and checks
//!   again; another referral may have opened the key meanwhile, and then it is the first).
//!   An entry's effect ignores reservations: if the log opens a key that another referral
//!   holds only reserved, the log's holder wins, and that referral's `routed` entry then
//!   counts as a report of it.
//! - Replaying URL effects after the snapshot reads a referral's items and destinations as
//!   sled has them now, not as they were at each entry; that is the same as long as a
//!   referral's `received` and `routed` entries come before its later entries, as the
//!   daemon writes them (`index.rs`).
//! - Bodies are flushed with the batch but are not evidence: a body lost in a crash belongs
//!   to a message not yet acked, which is redelivered and stored again.
//! - One process at a time: sled locks `index/`; a second [`Store::open`] fails with
//!   [`StoreError::Index`]. A [`LogReader`] takes no lock and can read a live log (it stops
//!   at the first incomplete frame).

mod bodies;
pub mod entry;
mod index;
mod reader;
pub mod records;
mod segment;
mod tree;
mod urls;
mod urlsnap;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use thiserror::Error;

pub use entry::{
    CheckpointEvent, Delivered, Duplicate, DuplicateItem, Entry, EntryError, Event, HashRef,
    ItemFacts, KeyChange, MAX_ENTRY_BYTES, NewEntry, NoticeSent, ParticipantChange, PurgeEvent,
    ReceiptEvent, Received, Rejected, RetractionEvent, Routed, Seq, Sha256Digest, StatusEvent,
    UrlKey,
};
pub use reader::{LogEntry, LogReader};
pub use records::{
    CheckpointRecord, DestinationOutcome, EntryPos, EnvelopeRecord, HashSighting, NoticeRecord,
    QuarantineRecord, ReferralRecord, TreeHead, UrlCheck, UrlKeyRecord,
};

use crate::ids::{EnvelopeId, ParticipantId};

/// Store settings (the `[store]` table of the daemon's config). Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// sled's page cache, bytes (sled: "a bounded cache"). Default 256 MiB.
    pub cache_capacity: u64,
    /// A segment file is closed and a new one started once it reaches this size. 64 MiB.
    pub segment_bytes: u64,
    /// Most entries one group commit writes. Default 4096.
    pub commit_max_entries: usize,
    /// How long the writer waits for more requests after the first one of a batch, in
    /// microseconds. 0 (default): no wait; requests that arrive during an fsync form the
    /// next batch anyway.
    pub commit_wait_us: u64,
    /// Flush the index (sled) after applying each batch, before answering. Default false:
    /// the index is derived from the log, which is fsynced before every answer, and open
    /// replays whatever sled lost in a crash (see the module documentation); sled flushes
    /// itself every 500 ms, a URL snapshot flushes it first, and closing the store flushes it.
    /// The body store is flushed after every batch whatever this says: bodies are not in the
    /// log. True costs one more fsync and a smaller sled write per batch.
    pub flush_index_each_batch: bool,
    /// A checkpoint is due after this many entries since the last one (default 1000).
    pub checkpoint_every_entries: u64,
    /// … or this many seconds (default 300), whichever comes first.
    pub checkpoint_every_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_capacity: 256 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            commit_max_entries: 4096,
            commit_wait_us: 0,
            flush_index_each_batch: false,
            checkpoint_every_entries: 1000,
            checkpoint_every_secs: 300,
        }
    }
}

impl StoreConfig {
    pub fn commit_wait(&self) -> Duration {
        Duration::from_micros(self.commit_wait_us)
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error(
        "the index database {path}: {message} (is another referral-broker using this data \
         directory? a damaged index can be rebuilt with `audit rebuild-index`)"
    )]
    Index { path: PathBuf, message: String },
    #[error(
        "log segment {path} is damaged at byte {offset}: {why}; this is not a torn tail \
         (refusing to drop evidence)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("entry {seq}: {source}")]
    BadEntry { seq: Seq, source: EntryError },
    #[error("the log has a gap: expected seq {expected}, found {found} in {path}")]
    Gap {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("writing the audit log failed, nothing of this batch was committed: {0}")]
    WriteFailed(String),
    #[error("the store refuses writes after an earlier failure ({0}); restart to rescan the log")]
    Poisoned(String),
    #[error("the store is closed")]
    Closed,
    #[error("entry rejected before writing: {0}")]
    Entry(#[from] EntryError),
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }
}

/// The store of one data directory. Cheap to clone (shared); every clone talks to the same
/// writer. Reads go straight to sled and are quick synchronous calls.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: StoreConfig,
    /// The open files: `None` only while [`Store::reopen`] swaps them.
    parts: RwLock<Option<Arc<Parts>>>,
    /// Tree head and counters as they were when the parts were last taken out (answered
    /// while `parts` is `None`).
    last_seen: Mutex<(TreeHead, StoreStats)>,
}

/// What one opening of the data directory holds; replaced whole by [`Store::reopen`].
struct Parts {
    // Field order matters: the writer (joined on drop) goes before the sled handles.
    writer: writer::Handle,
    index: Arc<index::Index>,
    bodies: Arc<bodies::Bodies>,
    state: Arc<Mutex<writer::TreeState>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Parts {
    fn head(&self) -> TreeHead {
        lock(&self.state).head()
    }

    fn stats(&self) -> StoreStats {
        let st = lock(&self.state);
        StoreStats {
            appended: st.appended,
            batches: st.batches,
            size: st.frontier.size(),
        }
    }
}

/// What [`Store::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Entries in the log (= tree size).
    pub entries: u64,
    /// Entries replayed into sled because it was behind.
    pub replayed: u64,
    /// Bytes of a torn tail that were truncated (0 normally).
    pub truncated_bytes: u64,
    /// Open URL keys loaded into memory (the snapshot, then the URL effects of the entries
    /// sled applied after it), and how long that took (before the replay of `replayed`).
    pub url_load: UrlIndexLoad,
}

/// Loading the in-memory URL index on open (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlIndexLoad {
    pub keys: u64,
    pub time: Duration,
}

/// The in-memory index of open URL keys (and hash sightings) now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlIndexStats {
    /// Open keys held (logged, or reserved by a check whose entry is not applied yet).
    pub open_keys: u64,
    /// Content hashes seen (their sightings share the table).
    pub hash_sightings: u64,
    /// Approximate heap bytes of its table (both kinds).
    pub approx_bytes: u64,
}

/// What [`Store::purge_bodies`] dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub bodies: u64,
    pub bytes: u64,
    /// The `purge` entry that records it.
    pub entry: Seq,
}

/// Counters since [`Store::open`] (for metrics and the benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Entries appended.
    pub appended: u64,
    /// Group commits that wrote them (entries / batches = the mean batch size).
    pub batches: u64,
    /// Tree size.
    pub size: u64,
}

/// Entries applied to sled per atomic batch during replay.
const REPLAY_BATCH: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The tree state is replaced whole under the lock; a panic elsewhere cannot leave it
    // half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Opens (creating if needed) the data directory `dir`: scans the log, truncates a torn
    /// tail, opens sled and replays the entries it has not seen, starts the writer thread.
    /// `progress` is called with (done, total) during the replay.
    pub fn open(
        dir: &Path,
        config: StoreConfig,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Self, OpenReport), StoreError> {
        let log_dir = dir.join("log");
        std::fs::create_dir_all(&log_dir).map_err(|e| StoreError::io(&log_dir, e))?;
        let index = Arc::new(index::Index::open(
            &dir.join("index"),
            config.cache_capacity,
        )?);
        let bodies = Arc::new(bodies::Bodies::open(
            &dir.join("bodies"),
            (config.cache_capacity / 4).max(1 << 20),
        )?);

        let segments = segment::list(&log_dir)?;
        let (segment_first, segment_len, entries, truncated_bytes) = match segments.last() {
            None => {
                let p = segment::path(&log_dir, 0);
                std::fs::File::create(&p).map_err(|e| StoreError::io(&p, e))?;
                segment::sync_dir(&log_dir)?;
                (0, 0, 0, 0)
            }
            Some((first, path)) => {
                if segments[0].0 != 0 {
                    return Err(StoreError::Gap {
                        path: segments[0].1.clone(),
                        expected: 0,
                        found: segments[0].0,
                    });
                }
                let tail = segment::recover_last(path)?;
                (*first, tail.len, first + tail.frames, tail.truncated)
            }
        };

        let meta = index.meta()?;
        if meta.applied > entries || meta.frontier.size() != meta.applied {
            return Err(StoreError::Index {
                path: dir.join("index"),
                message: format!(
                    "it reflects {} entries but the log holds {entries}: the log lost entries \
                     (run `audit verify`) or the index belongs to another log \
                     (run `audit rebuild-index`)",
                    meta.applied
                ),
            });
        }
        let mut frontier = meta.frontier;
        // The open URL keys as of `applied`: the snapshot, then the URL effects of the
        // entries after it; the replay below brings them up to date with the rest.
        let url_load = index.load_urls(dir, meta.applied)?;
        let replayed = entries - meta.applied;
        if replayed > 0 {
            tracing::info!(
                from = meta.applied,
                entries = replayed,
                "replaying the audit log into the index"
            );
            let reader = LogReader::open(dir)?;
            let mut chunk = Vec::with_capacity(REPLAY_BATCH);
            let mut done = 0u64;
            progress(0, replayed);
            for le in reader.iter_from(Seq(meta.applied))? {
                let le = le?;
                if le.seq.0 >= entries {
                    break;
                }
                if !le.check_ok {
                    return Err(StoreError::Corrupt {
                        path: segment::path(&log_dir, le.pos.segment),
                        offset: le.pos.offset,
                        why: format!("entry {} does not match its frame check", le.seq),
                    });
                }
                let e = le.decode()?;
                frontier.push(*e.leaf_hash());
                chunk.push((e, le.pos));
                if chunk.len() == REPLAY_BATCH {
                    index.apply(&chunk, &frontier)?;
                    done += chunk.len() as u64;
                    chunk.clear();
                    progress(done, replayed);
                }
            }
            if !chunk.is_empty() {
                index.apply(&chunk, &frontier)?;
                done += chunk.len() as u64;
                progress(done, replayed);
            }
            if frontier.size() != entries {
                return Err(StoreError::Gap {
                    path: log_dir.clone(),
                    expected: entries,
                    found: frontier.size(),
                });
            }
            index.flush()?;
        }

        let last_checkpoint = index.latest_checkpoint()?.map(|c| (c.seq, c.time));
        let state = Arc::new(Mutex::new(writer::TreeState {
            frontier: frontier.clone(),
            last_checkpoint,
            ..Default::default()
        }));
        let writer = writer::Handle::start(
            writer::Start {
                log_dir,
                segment_first,
                segment_len,
                next_seq: entries,
                frontier,
            },
            config.clone(),
            index.clone(),
            bodies.clone(),
            state.clone(),
        )?;
        let parts = Parts {
            writer,
            index,
            bodies,
            state,
        };
        let store = Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                config,
                last_seen: Mutex::new((parts.head(), parts.stats())),
                parts: RwLock::new(Some(Arc::new(parts))),
            }),
        };
        Ok((
            store,
            OpenReport {
                entries,
                replayed,
                truncated_bytes,
                url_load,
            },
        ))
    }

    /// The open parts, or [`StoreError::Closed`] while [`Self::reopen`] swaps them.
    fn parts(&self) -> Result<Arc<Parts>, StoreError> {
        self.current().ok_or(StoreError::Closed)
    }

    fn current(&self) -> Option<Arc<Parts>> {
        self.inner
            .parts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Closes the files and opens the data directory again, in this process: the way back
    /// after a write failure (a full disk: [`StoreError::WriteFailed`], or a writer that
    /// refuses writes, [`StoreError::Poisoned`], or sled reporting an I/O error, which it
    /// keeps reporting until reopened). Like a restart: the log is rescanned (a torn tail
    /// cut), sled replays what it missed, reservations held only in memory are dropped.
    /// Blocking (call from `spawn_blocking`); meanwhile every operation answers
    /// [`StoreError::Closed`]. Call it with no operation of this store in flight. If the
    /// open fails (the disk still full, say) the store stays closed and `reopen` can be
    /// called again later.
    pub fn reopen(&self) -> Result<OpenReport, StoreError> {
        let old = self
            .inner
            .parts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            *lock(&self.inner.last_seen) = (old.head(), old.stats());
            // Finish (or fail) what the writer holds; errors here are the failure we recover from.
            if let Ok(rx) = old.writer.close() {
                let _ = rx.blocking_recv();
            }
            // Callers still holding the parts keep sled's lock until they let go: the open
            // below waits for it.
            drop(old);
        }
        // sled releases its file lock a moment after its last handle is dropped (and only
        // once nobody holds the old parts any more).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (fresh, report) = loop {
            match Store::open(&self.inner.dir, self.inner.config.clone(), &mut |_, _| {}) {
                Ok(opened) => break opened,
                Err(StoreError::Index { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        };
        let parts = fresh
            .inner
            .parts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        *self
            .inner
            .parts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = parts;
        Ok(report)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Appends `entries` (in this order, consecutive seqs) and returns once they are durable
    /// and applied to the indexes. Many concurrent calls share one fsync. An error means
    /// "not known to be committed": the caller must not ack what depended on it.
    pub async fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Entry>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let rx = self.parts()?.writer.append(entries)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Self::append`] for synchronous callers (CLI, tests, benchmark threads). Panics if
    /// called on an async runtime's worker thread (tokio forbids blocking there).
    pub fn append_blocking(&self, entries: Vec<NewEntry>) -> Result<Vec<Entry>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let rx = self.parts()?.writer.append(entries)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// The tree head covering every durable entry.
    pub fn tree_head(&self) -> TreeHead {
        match self.current() {
            Some(p) => p.head(),
            None => lock(&self.inner.last_seen).0,
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> StoreStats {
        match self.current() {
            Some(p) => p.stats(),
            None => lock(&self.inner.last_seen).1,
        }
    }

    /// A tree head if a checkpoint is due by [`StoreConfig::checkpoint_every_entries`] /
    /// `checkpoint_every_secs` (counted from the latest `checkpoint` entry), else `None`.
    /// With no checkpoint yet, one is due as soon as the log is not empty.
    pub fn checkpoint_due(&self, now: DateTime<Utc>) -> Option<TreeHead> {
        let parts = self.current()?;
        let st = lock(&parts.state);
        let head = st.head();
        let due = match st.last_checkpoint {
            None => head.size > 0,
            Some((seq, time)) => {
                // Entries written after the checkpoint entry itself.
                let since = head.size.saturating_sub(seq.0 + 1);
                let age = now.signed_duration_since(time).num_seconds();
                since >= self.inner.config.checkpoint_every_entries.max(1)
                    || (since > 0
                        && u64::try_from(age).unwrap_or(0)
                            >= self.inner.config.checkpoint_every_secs)
            }
        };
        due.then_some(head)
    }

    /// What was recorded for this envelope id, if anything.
    pub fn envelope(&self, id: &EnvelopeId) -> Result<Option<EnvelopeRecord>, StoreError> {
        self.parts()?.index.envelope(id)
    }

    /// Atomically: if `key` is closed or unknown at `destination` (or already opened by this
    /// same `referral`), open it with `referral` as first and answer [`UrlCheck::Opened`];
    /// otherwise answer [`UrlCheck::Duplicate`]. Two concurrent calls for the same key and
    /// different referrals never both get `Opened`. The daemon then appends `routed` (or
    /// `duplicate`) entries, which make the decision part of the log. Answered from memory
    /// (no I/O); the reservation is in memory until the `routed` entry is applied.
    pub fn url_check_and_open(
        &self,
        destination: &ParticipantId,
        key: &UrlKey,
        referral: &EnvelopeId,
        now: DateTime<Utc>,
    ) -> Result<UrlCheck, StoreError> {
        self.parts()?
            .index
            .url_check_and_open(destination, key, referral, now)
    }

    /// The state of `key` at `destination`, without changing it (from memory if open,
    /// else from sled).
    pub fn url_key(
        &self,
        destination: &ParticipantId,
        key: &UrlKey,
    ) -> Result<Option<UrlKeyRecord>, StoreError> {
        self.parts()?.index.url(destination, key)
    }

    /// The in-memory index of open URL keys: size and approximate memory.
    pub fn url_index(&self) -> UrlIndexStats {
        self.current().map(|p| p.index.url_memory()).map_or(
            UrlIndexStats {
                open_keys: 0,
                hash_sightings: 0,
                approx_bytes: 0,
            },
            |m| UrlIndexStats {
                open_keys: m.open_keys,
                hash_sightings: m.sightings,
                approx_bytes: m.approx_bytes,
            },
        )
    }

    /// The first sighting of a content hash (from `received` entries of referrals).
    pub fn hash_sighting(&self, hash: &HashRef) -> Result<Option<HashSighting>, StoreError> {
        self.parts()?.index.hash_sighting(hash)
    }

    /// The referral that brought a content hash first (what [`Self::hash_sighting`] says,
    /// answered from memory for the hashes of the latest appends).
    pub fn hash_first_referral(&self, hash: &HashRef) -> Result<Option<EnvelopeId>, StoreError> {
        self.parts()?.index.hash_first_referral(hash)
    }

    /// What is known of a referral: origin, items, destinations.
    pub fn referral(&self, id: &EnvelopeId) -> Result<Option<ReferralRecord>, StoreError> {
        self.parts()?.index.referral(id)
    }

    /// Every entry about this envelope (its own entries, and receipts, statuses and
    /// retractions naming it as referral), in log order, read back from the log.
    pub fn entries_of(&self, id: &EnvelopeId) -> Result<Vec<Entry>, StoreError> {
        let reader = self.reader();
        self.parts()?
            .index
            .positions(id)?
            .into_iter()
            .map(|pos| reader.read_at(pos)?.decode())
            .collect()
    }

    /// The latest checkpoint entry, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>, StoreError> {
        self.parts()?.index.latest_checkpoint()
    }

    /// Every checkpoint entry, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.parts()?.index.checkpoints()
    }

    /// Quarantine records (rejected messages), oldest first, at most `limit`.
    pub fn quarantine(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        self.parts()?.index.quarantine(limit)
    }

    /// Keeps message bytes under retention, keyed by their SHA-256 (returned). Call before
    /// appending the entry that names the hash; it is flushed with that batch.
    pub fn put_body(&self, bytes: &[u8], now: DateTime<Utc>) -> Result<Sha256Digest, StoreError> {
        self.parts()?.bodies.put(bytes, now)
    }

    /// Message bytes by SHA-256, while retained.
    pub fn body(&self, sha256: &Sha256Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.parts()?.bodies.get(sha256)
    }

    /// Drops every body stored before `older_than` and appends a `purge` entry saying so
    /// (blocking: call from a synchronous context or `spawn_blocking`). Entries keep their
    /// hashes: the log still verifies.
    pub fn purge_bodies(&self, older_than: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        let (bodies, bytes) = self.parts()?.bodies.purge(older_than)?;
        let e = self.append_blocking(vec![NewEntry::new(Event::Purge(PurgeEvent {
            older_than: chrono::SubsecRound::trunc_subsecs(older_than, 0),
            bodies,
        }))])?;
        Ok(PurgeReport {
            bodies,
            bytes,
            entry: e[0].seq,
        })
    }

    /// A reader of this store's log (for `audit verify`/`prove`).
    pub fn reader(&self) -> LogReader {
        LogReader::at_log_dir(self.inner.dir.join("log"))
    }

    /// Finishes every append already accepted, flushes sled and the bodies, stops the writer.
    /// Later appends fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        let rx = self.parts()?.writer.close()?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Test hook: the writer's fault injection.
    #[cfg(test)]
    fn faults(&self) -> Arc<writer::Faults> {
        // Tests hold the store open; the parts are there.
        #[allow(clippy::expect_used)]
        let parts = self.current().expect("the store is open");
        parts.writer.faults.clone()
    }
}

/// Deletes `dir/index` and rebuilds it from the log alone; `progress(done, total)`.
/// The store must not be open (the daemon stopped). Bodies are left as they are.
pub fn rebuild_index(
    dir: &Path,
    config: StoreConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<OpenReport, StoreError> {
    let log_dir = dir.join("log");
    if !log_dir.is_dir() {
        return Err(StoreError::io(
            &log_dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no audit log here"),
        ));
    }
    let index_dir = dir.join("index");
    match std::fs::remove_dir_all(&index_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&index_dir, e)),
    }
    let (store, report) = Store::open(dir, config, progress)?;
    drop(store);
    Ok(report)
}

#[cfg(test)]
mod tests;
