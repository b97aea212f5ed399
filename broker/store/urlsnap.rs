//! The snapshot of the open URL keys: the file that lets a restart load the in-memory table
//! ([`super::urls`]) with one sequential read instead of replaying every URL effect in the
//! log, and when the writer takes one.
//!
//! # The file: `index/urls.snap`
//!
//! ```text
//! magic "RBURLSNP" | version u32 LE (3) | salt [16] | shards u32 LE (256)
//! per shard: seq u64 LE | keys u64 LE | keys × (slot [16] | record [41])
//! SHA-256 of everything above [32]
//! ```
//!
//! Shard `i` holds exactly the effects, on the keys of that shard, of the entries before its
//! `seq` (never a reservation: see [`super::urls`]); the slots are those of `salt`. The seqs
//! differ because the writer copies the shards one after the other, between batches (below);
//! an entry's URL effect on a key depends only on that key's own state (its record, its
//! closes, the referral's items: `index.rs`), so opening replays the log from the smallest
//! seq and applies each entry to the keys of the shards that do not hold it yet: every
//! entry's effect on every key exactly once.
//!
//! The file sits inside `index/`, so `audit rebuild-index` (which deletes `index/`) drops
//! it with the rest. It is written to `urls.snap.tmp`, fsynced, sled is flushed (so the
//! index's `applied` marker is at least every shard's seq on disk), then renamed over the old
//! one and the directory fsynced: a crash leaves the old snapshot or the new one, whole. A
//! file that is missing, damaged (checksum, size, a record that does not decode or sits in
//! the wrong shard) or ahead of the index is not an error: opening logs why and rebuilds the
//! table from the log (all URL effects from seq 0).
//!
//! # When
//!
//! The writer thread, after applying a batch, starts a snapshot once the URL effects applied
//! since the last one (replayed ones included) reach max(K, 100 000), K the open keys at the
//! last one (after open: those loaded). The cost of a snapshot is proportional to the keys
//! open now, at most K plus one per event since: so it is spread over at least as many
//! events, O(1) per event, like a doubling array (while keys only open, every event adds
//! one, and the snapshots come at K, 2K, 4K, …). It then copies shards after each batch, at
//! least [`COPY_KEYS_PER_BATCH`] keys' worth each time (about 40 000 keys per shard at 10 M
//! keys: a few milliseconds of the writer, and of checks, which wait for the table's lock
//! while one shard is copied), and once every shard is copied a background thread writes
//! the file; one snapshot at a time. On close the writer copies what is left (or all of it)
//! and writes the file itself, unless the newest on disk already covers the whole log. A
//! failed write is logged and tried again once as many events have passed again; it is
//! never fatal (the log is the truth, the snapshot only saves replay).
//!
//! Bound on a restart's URL work: the snapshot, plus the URL effects of the entries from its
//! smallest seq, which after a crash are fewer than max(K, 100 000) plus those applied while
//! the next snapshot was being copied and written, and none after a close; more only while
//! snapshot writes fail.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::index::Index;
use super::urls::{OpenUrls, RECORD_BYTES, Row, SHARDS, Salt, Slot};

/// The snapshot's file name inside `index/`.
pub(super) const FILE: &str = "urls.snap";
const TMP: &str = "urls.snap.tmp";
const MAGIC: &[u8; 8] = b"RBURLSNP";
/// 3: the rows include hash sightings (flagged in their record, see
/// [`super::urls::OpenUrls::sighting`]); a version 2 file has none and still reads (its
/// index has them under `h`, which opening moves over). A build that reads only 2 refuses
/// a 3 and replays the log instead.
const VERSION: u32 = 3;
const READS: std::ops::RangeInclusive<u32> = 2..=VERSION;
const HEADER: usize = 8 + 4 + 16 + 4;
const SHARD_HEADER: usize = 8 + 8;
const ROW: usize = 16 + RECORD_BYTES;
const SUM: usize = 32;

/// URL effects between snapshots, at least (see the module documentation).
pub(super) const MIN_EVENTS: u64 = 100_000;

/// Keys copied after each batch while a snapshot is being taken, at least (whole shards).
pub(super) const COPY_KEYS_PER_BATCH: usize = 65_536;

/// A snapshot read back.
pub(super) struct Snapshot {
    /// Per shard: it holds the effects of the entries before this seq.
    pub seqs: Vec<u64>,
    pub salt: Salt,
    pub urls: OpenUrls,
}

impl Snapshot {
    /// The first entry whose effects some shard does not hold.
    pub fn from(&self) -> u64 {
        self.seqs.iter().copied().min().unwrap_or(0)
    }
}

/// The copied shards of a snapshot: per shard, its seq and its logged records.
pub(super) struct Copy {
    pub salt: Salt,
    pub shards: Vec<(u64, Vec<Row>)>,
    /// Time spent copying (under the table's lock, in the writer).
    pub time: Duration,
}

impl Copy {
    fn keys(&self) -> u64 {
        self.shards.iter().map(|(_, v)| v.len() as u64).sum()
    }

    fn from(&self) -> u64 {
        self.shards.iter().map(|(s, _)| *s).min().unwrap_or(0)
    }
}

/// A snapshot written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Written {
    /// The smallest shard seq.
    pub from: u64,
    pub keys: u64,
    pub bytes: u64,
    pub time: Duration,
}

/// Writes `copy` (all [`SHARDS`] shards) as the snapshot in `dir` (`index/`);
/// `before_rename` runs once the new file is durable, before it replaces the old one.
pub(super) fn write(
    dir: &Path,
    copy: &Copy,
    before_rename: impl FnOnce() -> Result<(), String>,
) -> Result<Written, String> {
    let t = Instant::now();
    let tmp = dir.join(TMP);
    let written = write_tmp(&tmp, copy).and_then(|bytes| {
        before_rename()?;
        let path = dir.join(FILE);
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("fsync {}: {e}", dir.display()))?;
        Ok(bytes)
    });
    match written {
        Ok(bytes) => Ok(Written {
            from: copy.from(),
            keys: copy.keys(),
            bytes,
            time: t.elapsed(),
        }),
        Err(e) => {
            // Leave no half-written file behind (a full disk wants its space back).
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A writer that hashes what it writes.
struct Hashing<W> {
    inner: W,
    sum: Sha256,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sum.update(b);
        self.inner.write_all(b)
    }
}

fn write_tmp(tmp: &Path, copy: &Copy) -> Result<u64, String> {
    let fail = |e: std::io::Error| format!("{}: {e}", tmp.display());
    if copy.shards.len() != SHARDS {
        return Err(format!("{} shards copied of {SHARDS}", copy.shards.len()));
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(fail)?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        sum: Sha256::new(),
    };
    w.put(MAGIC).map_err(fail)?;
    w.put(&VERSION.to_le_bytes()).map_err(fail)?;
    w.put(&copy.salt.0).map_err(fail)?;
    w.put(&(SHARDS as u32).to_le_bytes()).map_err(fail)?;
    for (seq, rows) in &copy.shards {
        w.put(&seq.to_le_bytes()).map_err(fail)?;
        w.put(&(rows.len() as u64).to_le_bytes()).map_err(fail)?;
        for (slot, record) in rows {
            w.put(slot).map_err(fail)?;
            w.put(record).map_err(fail)?;
        }
    }
    let sum = w.sum.finalize();
    let mut file = w.inner.into_inner().map_err(|e| fail(e.into_error()))?;
    file.write_all(&sum).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    Ok((HEADER + SHARDS * SHARD_HEADER + ROW * copy.keys() as usize + SUM) as u64)
}

/// Reads the snapshot in `dir` (`index/`): `Ok(None)` if there is none, `Err(why)` if it
/// cannot be used.
pub(super) fn read(dir: &Path) -> Result<Option<Snapshot>, String> {
    let path = dir.join(FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    read_from(file)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads `n` bytes, hashing them.
fn take<const N: usize>(r: &mut impl Read, sum: &mut Sha256) -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)
        .map_err(|e| format!("cut short ({e})"))?;
    sum.update(b);
    Ok(b)
}

fn read_from(file: File) -> Result<Snapshot, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut sum = Sha256::new();
    if &take::<8>(&mut r, &mut sum)? != MAGIC {
        return Err("not a URL snapshot".into());
    }
    let version = u32::from_le_bytes(take(&mut r, &mut sum)?);
    if !READS.contains(&version) {
        return Err(format!(
            "version {version}, this build reads {} to {VERSION}",
            READS.start()
        ));
    }
    let salt = Salt(take(&mut r, &mut sum)?);
    let shards = u32::from_le_bytes(take(&mut r, &mut sum)?);
    if shards as usize != SHARDS {
        return Err(format!("{shards} shards, this build has {SHARDS}"));
    }
    let mut left = size.checked_sub((HEADER + SUM) as u64).ok_or("cut short")?;
    let mut urls = OpenUrls::new();
    let mut seqs = Vec::with_capacity(SHARDS);
    for i in 0..SHARDS {
        let seq = u64::from_le_bytes(take(&mut r, &mut sum)?);
        let keys = u64::from_le_bytes(take(&mut r, &mut sum)?);
        left = keys
            .checked_mul(ROW as u64)
            .and_then(|n| left.checked_sub(n + SHARD_HEADER as u64))
            .ok_or_else(|| format!("shard {i} says {keys} keys, more than the file holds"))?;
        urls.reserve_shard(i, usize::try_from(keys).map_err(|e| e.to_string())?);
        for _ in 0..keys {
            let row: [u8; ROW] = take(&mut r, &mut sum)?;
            let mut slot = [0u8; 16];
            slot.copy_from_slice(&row[..16]);
            let mut record = [0u8; RECORD_BYTES];
            record.copy_from_slice(&row[16..]);
            if OpenUrls::shard(&Slot(slot)) != i {
                return Err(format!("a record of another shard in shard {i}"));
            }
            urls.insert_logged((slot, record))?;
        }
        seqs.push(seq);
    }
    if left != 0 {
        return Err(format!("{left} bytes more than its shards hold"));
    }
    let mut stored = [0u8; SUM];
    r.read_exact(&mut stored)
        .map_err(|e| format!("cut short ({e})"))?;
    if stored[..] != sum.finalize()[..] {
        return Err("checksum does not match".into());
    }
    Ok(Snapshot { seqs, salt, urls })
}

/// The writer's side: when a snapshot is due, the one being copied or written, and the
/// newest on disk.
pub(super) struct Snapshots {
    index: Arc<Index>,
    /// `index/`.
    dir: PathBuf,
    /// The smallest shard seq of the newest snapshot on disk (none usable: `None`).
    on_disk: Option<u64>,
    /// URL effects applied (as counted by the index) when the last snapshot was started.
    events_at_start: u64,
    /// Open keys then (after open: the keys loaded).
    open_at_start: u64,
    /// The shards copied so far of the snapshot being taken.
    copying: Option<Copy>,
    /// The thread writing the last one copied.
    writing: Option<JoinHandle<(Duration, Result<Written, String>)>>,
}

impl Snapshots {
    pub fn new(index: Arc<Index>) -> Self {
        let on_disk = *index.snapshot_seq();
        Self {
            dir: index.path().to_owned(),
            on_disk,
            events_at_start: 0,
            open_at_start: index.url_memory().records(),
            copying: None,
            writing: None,
            index,
        }
    }

    /// After the writer applied a batch (the log and the index hold `size` entries):
    /// continues the copy in progress, or starts one if a snapshot is due and none is being
    /// written. Due: after max(open keys at the last one, [`MIN_EVENTS`]) URL effects since,
    /// or (tests) `every`. Copies at least `budget` keys (an empty shard counts one) per
    /// batch: [`COPY_KEYS_PER_BATCH`] except in tests.
    pub fn after_batch(&mut self, size: u64, every: Option<u64>, budget: usize) {
        self.reap(false);
        if self.copying.is_none() {
            if self.writing.is_some() {
                return;
            }
            let events = self.index.url_events();
            let due = every.unwrap_or_else(|| self.open_at_start.max(MIN_EVENTS));
            if events - self.events_at_start < due {
                return;
            }
            self.events_at_start = events;
            self.open_at_start = self.index.url_memory().records();
            self.copying = Some(Copy {
                salt: self.index.url_salt(),
                shards: Vec::with_capacity(SHARDS),
                time: Duration::ZERO,
            });
        }
        if self.copy(size, budget) {
            self.start_writing();
        }
    }

    /// Copies shards at `size` until at least `keys` keys are copied or every shard is;
    /// true once every shard is.
    fn copy(&mut self, size: u64, keys: usize) -> bool {
        let Some(c) = &mut self.copying else {
            return false;
        };
        let t = Instant::now();
        let mut copied = 0;
        while c.shards.len() < SHARDS && copied < keys {
            let rows = self.index.url_copy_shard(c.shards.len());
            copied += rows.len().max(1);
            c.shards.push((size, rows));
        }
        c.time += t.elapsed();
        c.shards.len() == SHARDS
    }

    fn start_writing(&mut self) {
        let Some(copy) = self.copying.take() else {
            return;
        };
        let index = self.index.clone();
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("url-snapshot".into())
            .spawn(move || {
                let w = write(&dir, &copy, || index.flush().map_err(|e| e.to_string()));
                (copy.time, w)
            });
        match spawned {
            Ok(h) => self.writing = Some(h),
            Err(e) => tracing::warn!("cannot start the URL snapshot thread: {e}"),
        }
    }

    /// Waits for the snapshot being written (`wait`), or collects it if it is done.
    pub fn reap(&mut self, wait: bool) {
        if !self
            .writing
            .as_ref()
            .is_some_and(|h| wait || h.is_finished())
        {
            return;
        }
        if let Some(h) = self.writing.take() {
            let (copy, r) = h
                .join()
                .unwrap_or_else(|_| (Duration::ZERO, Err("the snapshot thread panicked".into())));
            self.record(copy, r);
        }
    }

    fn record(&mut self, copy: Duration, r: Result<Written, String>) {
        match r {
            Ok(w) => {
                self.on_disk = Some(w.from);
                tracing::info!(
                    from = w.from,
                    keys = w.keys,
                    bytes = w.bytes,
                    copy_secs = copy.as_secs_f64(),
                    write_secs = w.time.as_secs_f64(),
                    "wrote the URL snapshot"
                );
            }
            Err(e) => tracing::warn!(
                "writing the URL snapshot failed (the log replays instead; tried again later): {e}"
            ),
        }
    }

    /// On close (the log and the index hold `size` entries): waits for the one being
    /// written, finishes the one being copied, or takes one covering the whole log unless
    /// the newest on disk does; writes it here.
    pub fn finish(&mut self, size: u64) {
        self.reap(true);
        if self.copying.is_none() {
            if self.on_disk == Some(size) {
                return;
            }
            self.copying = Some(Copy {
                salt: self.index.url_salt(),
                shards: Vec::with_capacity(SHARDS),
                time: Duration::ZERO,
            });
        }
        self.copy(size, usize::MAX);
        if let Some(copy) = self.copying.take() {
            let index = &self.index;
            let r = write(&self.dir, &copy, || {
                index.flush().map_err(|e| e.to_string())
            });
            self.record(copy.time, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EnvelopeId;
    use crate::store::records::UrlKeyRecord;
    use chrono::{SubsecRound, Utc};

    fn table(salt: &Salt, n: u16) -> OpenUrls {
        let now = Utc::now().trunc_subsecs(3);
        let mut m = OpenUrls::new();
        for i in 0..n {
            let r = UrlKeyRecord {
                open: true,
                first_referral: EnvelopeId::new_v7(),
                count: u64::from(i) + 1,
                first_seen: now,
                last_seen: now,
            };
            m.put(salt.slot(&[&b"d\x00"[..], &i.to_le_bytes()].concat()), &r)
                .unwrap();
        }
        m
    }

    /// Every shard copied, shard `i` at seq `base + i`.
    fn copy(salt: &Salt, urls: &OpenUrls, base: u64) -> Copy {
        Copy {
            salt: *salt,
            shards: (0..SHARDS)
                .map(|i| (base + i as u64, urls.copy_shard(i)))
                .collect(),
            time: Duration::ZERO,
        }
    }

    #[test]
    fn a_snapshot_reads_back_whole_with_its_shard_seqs_and_without_reservations() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let salt = Salt::random().unwrap();
        let mut urls = table(&salt, 2000);
        let reserved = salt.slot(b"d\x00reserved");
        urls.check_and_open(reserved, &EnvelopeId::new_v7(), Utc::now())
            .unwrap();
        let mut flushed = false;
        let w = write(dir.path(), &copy(&salt, &urls, 77), || {
            flushed = true;
            Ok(())
        })
        .unwrap();
        assert!(flushed);
        assert_eq!((w.from, w.keys), (77, 2000));
        let len = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert_eq!(len, w.bytes);
        assert!(!dir.path().join(TMP).exists());
        let snap = read(dir.path()).unwrap().unwrap();
        assert_eq!(snap.from(), 77);
        assert_eq!(snap.seqs, (77..77 + SHARDS as u64).collect::<Vec<_>>());
        assert!(snap.salt == salt);
        assert_eq!(snap.urls.len(), 2000);
        assert_eq!(snap.urls.get(&reserved).unwrap(), None);
        let sorted = |m: &OpenUrls| {
            let mut v = m.logged_list();
            v.sort_by_key(|r| r.count);
            v
        };
        assert_eq!(sorted(&urls), sorted(&snap.urls));
        for i in 0..2000u16 {
            let s = salt.slot(&[&b"d\x00"[..], &i.to_le_bytes()].concat());
            assert_eq!(snap.urls.logged(&s).unwrap(), urls.logged(&s).unwrap());
        }
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_a_failed_write_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let salt = Salt::random().unwrap();
        let urls = table(&salt, 300);
        write(dir.path(), &copy(&salt, &urls, 5), || Ok(())).unwrap();
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).unwrap();
        // One bit anywhere: the checksum (or the header) says so.
        for at in [
            0,
            9,
            20,
            HEADER + 3,
            HEADER + 40,
            good.len() / 2,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(dir.path()).is_err(), "byte {at}");
        }
        // Cut short, or one record too many.
        std::fs::write(&path, &good[..good.len() - 7]).unwrap();
        assert!(read(dir.path()).is_err());
        let mut long = good.clone();
        long.extend_from_slice(&[0; ROW]);
        std::fs::write(&path, &long).unwrap();
        assert!(read(dir.path()).is_err());
        // A write that fails before the rename leaves the previous file and no temp file.
        std::fs::write(&path, &good).unwrap();
        let err = write(dir.path(), &copy(&salt, &table(&salt, 3), 9), || {
            Err("flush failed".into())
        });
        assert!(err.is_err());
        assert!(!dir.path().join(TMP).exists());
        assert_eq!(read(dir.path()).unwrap().unwrap().from(), 5);
        // Not every shard copied: refused before anything is written.
        let mut partial = copy(&salt, &urls, 9);
        partial.shards.pop();
        assert!(write(dir.path(), &partial, || Ok(())).is_err());
        assert_eq!(read(dir.path()).unwrap().unwrap().from(), 5);
    }
}
