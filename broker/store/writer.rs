//! The writer thread: group commit of appends.
//!
//! One OS thread owns the open segment file. It takes every request waiting (up to
//! [`StoreConfig::commit_max_entries`]), assigns consecutive seqs and one time, writes the
//! frames, `sync_data`s, applies the entries to the indexes (one atomic sled batch with the
//! new frontier, and the in-memory URL table), flushes the body store (and sled's index only
//! if [`StoreConfig::flush_index_each_batch`]), and then answers every request of the batch. Then it starts a snapshot of the URL table if one is due
//! ([`super::urlsnap`]), and it writes one when the store closes.
//! On a failure nothing of the batch stays: the file is cut back to where the batch began.
//! A failed fsync, a failed cut or a failed index update poisons the writer: every later
//! request gets [`StoreError::Poisoned`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::bodies::Bodies;
use super::entry::{Entry, Event, NewEntry, Seq};
use super::index::Index;
use super::records::{EntryPos, TreeHead};
use super::segment::{self, MAX_CHUNK_BYTES};
use super::tree::Frontier;
use super::urlsnap::{self, Snapshots};
use super::{StoreConfig, StoreError};

/// What the store shares with the writer: the tree as of the last durable batch, and when
/// the last checkpoint entry was written.
#[derive(Debug, Default)]
pub(super) struct TreeState {
    pub frontier: Frontier,
    /// Seq and time of the latest `checkpoint` entry.
    pub last_checkpoint: Option<(Seq, DateTime<Utc>)>,
    /// Group commits (one fsync each, or more for a batch over the chunk size) since open.
    pub batches: u64,
    /// Entries appended since open.
    pub appended: u64,
}

impl TreeState {
    pub fn head(&self) -> TreeHead {
        TreeHead {
            size: self.frontier.size(),
            root: self.frontier.root(),
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Entry>, StoreError>>;

enum Msg {
    Append(Vec<NewEntry>, Reply),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// Test-only fault injection: make the next write or fsync fail.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct Faults {
    pub fail_write: AtomicBool,
    pub fail_sync: AtomicBool,
    /// Write no URL snapshot, not even on close (as if the process were killed).
    pub no_url_snapshots: AtomicBool,
    /// If not 0: a snapshot after this many URL events (instead of max(open keys,
    /// [`urlsnap::MIN_EVENTS`])), and the writer waits for each snapshot it starts.
    pub url_snapshot_every: std::sync::atomic::AtomicU64,
    /// If not 0: keys (an empty shard counts one) a snapshot copies per batch.
    pub url_copy_budget: std::sync::atomic::AtomicUsize,
}

/// The store's side of the writer.
pub(super) struct Handle {
    tx: Mutex<Option<Sender<Msg>>>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    #[cfg(test)]
    pub faults: Arc<Faults>,
}

/// Where the writer starts.
pub(super) struct Start {
    pub log_dir: PathBuf,
    pub segment_first: u64,
    pub segment_len: u64,
    pub next_seq: u64,
    pub frontier: Frontier,
}

struct Writer {
    log_dir: PathBuf,
    file: File,
    segment_path: PathBuf,
    segment_first: u64,
    segment_len: u64,
    next_seq: u64,
    last_time: DateTime<Utc>,
    frontier: Frontier,
    config: StoreConfig,
    index: Arc<Index>,
    bodies: Arc<Bodies>,
    state: Arc<Mutex<TreeState>>,
    poisoned: Option<String>,
    snapshots: Snapshots,
    #[cfg(test)]
    faults: Arc<Faults>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data consistent (plain assignments), so a panic
    // elsewhere while holding the lock does not make it unusable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Handle {
    /// Opens the last segment for appending and starts the writer thread.
    pub fn start(
        start: Start,
        config: StoreConfig,
        index: Arc<Index>,
        bodies: Arc<Bodies>,
        state: Arc<Mutex<TreeState>>,
    ) -> Result<Self, StoreError> {
        let segment_path = segment::path(&start.log_dir, start.segment_first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&segment_path)
            .map_err(|e| StoreError::io(&segment_path, e))?;
        #[cfg(test)]
        let faults = Arc::new(Faults::default());
        let writer = Writer {
            log_dir: start.log_dir,
            file,
            segment_path,
            segment_first: start.segment_first,
            segment_len: start.segment_len,
            next_seq: start.next_seq,
            last_time: DateTime::<Utc>::MIN_UTC,
            frontier: start.frontier,
            config,
            snapshots: Snapshots::new(index.clone()),
            index,
            bodies,
            state,
            poisoned: None,
            #[cfg(test)]
            faults: faults.clone(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io(std::path::Path::new("store-writer thread"), e))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            #[cfg(test)]
            faults,
        })
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        match &*lock(&self.tx) {
            Some(tx) => tx.send(msg).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Queues `entries`; the receiver answers once they are durable and indexed.
    pub fn append(
        &self,
        entries: Vec<NewEntry>,
    ) -> Result<oneshot::Receiver<Result<Vec<Entry>, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Append(entries, tx))?;
        Ok(rx)
    }

    /// Asks the writer to finish what it has and stop; later appends fail with `Closed`.
    pub fn close(&self) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Close(tx))?;
        self.closed.store(true, Ordering::SeqCst);
        Ok(rx)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Dropping the sender ends the writer's loop once it has answered what it holds;
        // joining makes sure its files and sled handles are released when the store is.
        lock(&self.tx).take();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let max = self.config.commit_max_entries.max(1);
        let wait = self.config.commit_wait();
        while let Ok(first) = rx.recv() {
            let mut batch: Vec<(Vec<NewEntry>, Reply)> = Vec::new();
            let mut count = 0usize;
            let mut close = None;
            let take =
                |m: Msg, batch: &mut Vec<_>, count: &mut usize, close: &mut Option<_>| match m {
                    Msg::Append(e, r) => {
                        *count += e.len();
                        batch.push((e, r));
                    }
                    Msg::Close(c) => *close = Some(c),
                };
            take(first, &mut batch, &mut count, &mut close);
            if !wait.is_zero() && close.is_none() {
                let deadline = Instant::now() + wait;
                while count < max && close.is_none() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(m) => take(m, &mut batch, &mut count, &mut close),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            while count < max && close.is_none() {
                match rx.try_recv() {
                    Ok(m) => take(m, &mut batch, &mut count, &mut close),
                    Err(_) => break,
                }
            }
            self.commit(batch);
            if let Some(c) = close {
                let r = self.finish();
                while let Ok(m) = rx.try_recv() {
                    if let Msg::Append(_, reply) = m {
                        let _ = reply.send(Err(StoreError::Closed));
                    }
                }
                drop(self);
                let _ = c.send(r);
                return;
            }
        }
        let _ = self.finish();
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        let flushed = self.index.flush().and_then(|()| self.bodies.flush());
        // Not after a failure: the table may hold effects of a batch sled did not take.
        #[allow(unused_mut)]
        let mut snapshot = flushed.is_ok() && self.poisoned.is_none();
        #[cfg(test)]
        {
            snapshot &= !self.faults.no_url_snapshots.load(Ordering::SeqCst);
        }
        if snapshot {
            // A failed snapshot is logged and costs a longer replay on open, nothing more.
            self.snapshots.finish(self.frontier.size());
        } else {
            self.snapshots.reap(true);
        }
        flushed
    }

    /// After a batch applied without error: a URL snapshot, if one is due. Called before
    /// the batch is answered (`answered` false) and after; acts after, except in tests that
    /// ask for frequent snapshots, which want each on disk when their append returns.
    fn snapshot_if_due(&mut self, answered: bool) {
        #[allow(unused_mut)]
        let mut budget = urlsnap::COPY_KEYS_PER_BATCH;
        #[cfg(test)]
        {
            if self.faults.no_url_snapshots.load(Ordering::SeqCst) {
                return;
            }
            match self.faults.url_copy_budget.load(Ordering::SeqCst) {
                0 => {}
                b => budget = b,
            }
            let every = self.faults.url_snapshot_every.load(Ordering::SeqCst);
            if every > 0 {
                if !answered {
                    self.snapshots
                        .after_batch(self.frontier.size(), Some(every), budget);
                    self.snapshots.reap(true);
                }
                return;
            }
        }
        if answered {
            self.snapshots
                .after_batch(self.frontier.size(), None, budget);
        }
    }

    fn poison(&mut self, why: String) {
        tracing::error!("audit store stops accepting writes: {why}");
        self.poisoned = Some(why);
    }

    /// Starts a new segment if the current one is full.
    fn rotate(&mut self) -> Result<(), StoreError> {
        if self.segment_len < self.config.segment_bytes || self.segment_len == 0 {
            return Ok(());
        }
        let path = segment::path(&self.log_dir, self.next_seq);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        segment::sync_dir(&self.log_dir)?;
        self.file = file;
        self.segment_path = path;
        self.segment_first = self.next_seq;
        self.segment_len = 0;
        Ok(())
    }

    fn write_chunks(&mut self, buf: &[u8], frame_ends: &[usize]) -> Result<(), (bool, String)> {
        let mut start = 0;
        while start < buf.len() {
            // The largest run of whole frames that fits in a chunk (at least one frame).
            let end = frame_ends
                .iter()
                .copied()
                .filter(|&e| e > start && e - start <= MAX_CHUNK_BYTES)
                .max()
                .unwrap_or_else(|| {
                    frame_ends
                        .iter()
                        .copied()
                        .find(|&e| e > start)
                        .unwrap_or(buf.len())
                });
            #[cfg(test)]
            if self.faults.fail_write.swap(false, Ordering::SeqCst) {
                // Write half the chunk, then fail, as a full disk would.
                let _ = self.file.write_all(&buf[start..start + (end - start) / 2]);
                return Err((
                    false,
                    "injected write failure (no space left on device)".into(),
                ));
            }
            self.file
                .write_all(&buf[start..end])
                .map_err(|e| (false, format!("{}: {e}", self.segment_path.display())))?;
            #[cfg(test)]
            if self.faults.fail_sync.swap(false, Ordering::SeqCst) {
                return Err((true, "injected fsync failure".into()));
            }
            self.file
                .sync_data()
                .map_err(|e| (true, format!("fsync {}: {e}", self.segment_path.display())))?;
            start = end;
        }
        Ok(())
    }

    fn commit(&mut self, batch: Vec<(Vec<NewEntry>, Reply)>) {
        if batch.is_empty() {
            return;
        }
        if let Some(p) = &self.poisoned {
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Poisoned(p.clone())));
            }
            return;
        }
        if let Err(e) = self.rotate() {
            let msg = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::WriteFailed(msg.clone())));
            }
            return;
        }
        let now = Utc::now().max(self.last_time);
        let mut seq = self.next_seq;
        let mut buf = Vec::new();
        let mut frame_ends = Vec::new();
        let mut accepted: Vec<(Vec<(Entry, EntryPos)>, Reply)> = Vec::new();
        for (news, reply) in batch {
            let built: Result<Vec<Entry>, _> = news
                .into_iter()
                .enumerate()
                .map(|(i, n)| Entry::new(Seq(seq + i as u64), now, n))
                .collect();
            match built {
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
                Ok(entries) => {
                    let mut with_pos = Vec::with_capacity(entries.len());
                    for e in entries {
                        let pos = EntryPos {
                            seq: e.seq,
                            segment: self.segment_first,
                            offset: self.segment_len + buf.len() as u64,
                        };
                        segment::encode(e.bytes(), e.leaf_hash(), &mut buf);
                        frame_ends.push(buf.len());
                        with_pos.push((e, pos));
                    }
                    seq += with_pos.len() as u64;
                    accepted.push((with_pos, reply));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        if let Err((sync_failed, why)) = self.write_chunks(&buf, &frame_ends) {
            // Cut the file back to where this batch began, so nothing of it survives.
            let cut = self
                .file
                .set_len(self.segment_len)
                .and_then(|()| self.file.sync_data());
            let why = match cut {
                Ok(()) if !sync_failed => why,
                Ok(()) => {
                    self.poison(why.clone());
                    why
                }
                Err(e) => {
                    let why = format!("{why}; cutting the segment back also failed: {e}");
                    self.poison(why.clone());
                    why
                }
            };
            for (_, reply) in accepted {
                let _ = reply.send(Err(StoreError::WriteFailed(why.clone())));
            }
            return;
        }
        self.segment_len += buf.len() as u64;
        self.next_seq = seq;
        self.last_time = now;
        let mut last_checkpoint = None;
        let all: Vec<(Entry, EntryPos)> = accepted
            .iter()
            .flat_map(|(v, _)| v.iter().cloned())
            .collect();
        for (e, _) in &all {
            self.frontier.push(*e.leaf_hash());
            if matches!(e.event, Event::Checkpoint(_)) {
                last_checkpoint = Some((e.seq, e.time));
            }
        }
        let indexed = self.index.apply(&all, &self.frontier).and_then(|()| {
            if self.config.flush_index_each_batch {
                self.index.flush()?;
            }
            // The bodies are not in the log: the ones this batch names (stored just before it
            // was appended) must be durable before it is answered. The index need not be: it
            // is derived from the log, and open replays what sled lost.
            self.bodies.flush()
        });
        {
            let mut st = lock(&self.state);
            st.frontier = self.frontier.clone();
            st.batches += 1;
            st.appended += all.len() as u64;
            if last_checkpoint.is_some() {
                st.last_checkpoint = last_checkpoint;
            }
        }
        if let Err(e) = indexed {
            // The entries are durable; sled is behind and a restart replays them.
            self.poison(format!("updating the index failed: {e}"));
            for (_, reply) in accepted {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        self.snapshot_if_due(false);
        for (entries, reply) in accepted {
            let _ = reply.send(Ok(entries.into_iter().map(|(e, _)| e).collect()));
        }
        self.snapshot_if_due(true);
    }
}
