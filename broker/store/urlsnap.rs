//! The snapshot of the open URL keys: the file that lets a restart load the in-memory table
//! ([`super::urls`]) with one sequential read instead of replaying every URL effect in the
//! log, and when the writer takes one.
//!
//! # The file: `index/urls.snap`
//!
//! ```text
//! magic "RBURLSNP" | version u32 LE (1) | seq u64 LE | keys u64 LE | salt [16]
//! keys × (slot [16] | record [41])          -- the table's logged records, table order
//! SHA-256 of everything above [32]
//! ```
//!
//! It holds exactly the effects of the entries `0..seq` (never a reservation: see
//! [`super::urls`]), with the salt the slots were computed with. It sits inside `index/`, so
//! `audit rebuild-index` (which deletes `index/`) drops it with the rest. It is written to
//! `urls.snap.tmp`, fsynced, sled is flushed (so the index's `applied` marker is at least
//! `seq` on disk), then renamed over the old one and the directory fsynced: a crash leaves the
//! old snapshot or the new one, whole. A file that is missing, damaged (checksum, size,
//! a record that does not decode) or ahead of the index is not an error: opening logs why and
//! rebuilds the table from the log (all URL effects from seq 0).
//!
//! # When
//!
//! The writer thread, after applying a batch, takes a snapshot once the URL effects applied
//! since the last one (replayed ones included) reach max(open keys, 100 000): the cost of a
//! snapshot (proportional to the open keys) is spread over at least as many events, O(1) per
//! event, like a doubling array. It copies the table under its lock (a bucket-by-bucket
//! clone, no rehashing: about 0.1 s per million open keys, during which checks wait), then a
//! background thread writes the file; one at a time. The writer also takes one when the store
//! closes, unless the newest on disk already covers the whole log. A failed write is logged
//! and tried again once as many events have passed again; it is never fatal (the log is the
//! truth, the snapshot only saves replay).
//!
//! Bound on a restart's URL work: the snapshot, plus the URL effects of the entries after
//! it, which are at most about twice max(open keys, 100 000) (the events before a snapshot
//! falls due, plus those applied while it is written) after a crash, and none after a close.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::index::Index;
use super::urls::{OpenUrls, RECORD_BYTES, Salt};

/// The snapshot's file name inside `index/`.
pub(super) const FILE: &str = "urls.snap";
const TMP: &str = "urls.snap.tmp";
const MAGIC: &[u8; 8] = b"RBURLSNP";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 8 + 16;
const ROW: usize = 16 + RECORD_BYTES;
const SUM: usize = 32;

/// URL effects between snapshots, at least (see the module documentation).
pub(super) const MIN_EVENTS: u64 = 100_000;

/// A snapshot read back.
pub(super) struct Snapshot {
    /// It holds the effects of entries `0..seq`.
    pub seq: u64,
    pub salt: Salt,
    pub urls: OpenUrls,
}

/// A snapshot written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Written {
    pub seq: u64,
    pub keys: u64,
    pub bytes: u64,
    pub time: Duration,
}

/// Writes the logged records of `urls` as the snapshot of entries `0..seq` in `dir`
/// (`index/`); `before_rename` runs once the new file is durable, before it replaces the
/// old one.
pub(super) fn write(
    dir: &Path,
    seq: u64,
    salt: &Salt,
    urls: &OpenUrls,
    before_rename: impl FnOnce() -> Result<(), String>,
) -> Result<Written, String> {
    let t = Instant::now();
    let tmp = dir.join(TMP);
    let written = write_tmp(&tmp, seq, salt, urls).and_then(|w| {
        before_rename()?;
        let path = dir.join(FILE);
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("fsync {}: {e}", dir.display()))?;
        Ok(w)
    });
    match written {
        Ok((keys, bytes)) => Ok(Written {
            seq,
            keys,
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

fn write_tmp(tmp: &Path, seq: u64, salt: &Salt, urls: &OpenUrls) -> Result<(u64, u64), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let keys = urls.logged_records().count() as u64;
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
    w.put(&seq.to_le_bytes()).map_err(fail)?;
    w.put(&keys.to_le_bytes()).map_err(fail)?;
    w.put(&salt.0).map_err(fail)?;
    for (slot, record) in urls.logged_records() {
        w.put(slot).map_err(fail)?;
        w.put(record).map_err(fail)?;
    }
    let sum = w.sum.finalize();
    let mut file = w.inner.into_inner().map_err(|e| fail(e.into_error()))?;
    file.write_all(&sum).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    Ok((keys, (HEADER + ROW * keys as usize + SUM) as u64))
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
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let size = file.metadata().map_err(fail)?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut sum = Sha256::new();
    let mut header = [0u8; HEADER];
    r.read_exact(&mut header)
        .map_err(|_| format!("{}: shorter than its header", path.display()))?;
    sum.update(header);
    let int = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if &header[..8] != MAGIC {
        return Err(format!("{}: not a URL snapshot", path.display()));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&header[8..12]);
    if u32::from_le_bytes(v) != VERSION {
        return Err(format!(
            "{}: version {}, this build reads {VERSION}",
            path.display(),
            u32::from_le_bytes(v)
        ));
    }
    let (seq, keys) = (int(12), int(20));
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&header[28..44]);
    let expected = keys
        .checked_mul(ROW as u64)
        .and_then(|n| n.checked_add((HEADER + SUM) as u64));
    if expected != Some(size) {
        return Err(format!(
            "{}: {size} bytes, but its header says {keys} keys",
            path.display()
        ));
    }
    let mut urls = OpenUrls::new();
    urls.reserve(usize::try_from(keys).map_err(|_| "too many keys".to_owned())?);
    let mut row = [0u8; ROW];
    for _ in 0..keys {
        r.read_exact(&mut row).map_err(fail)?;
        sum.update(row);
        let mut slot = [0u8; 16];
        slot.copy_from_slice(&row[..16]);
        let mut record = [0u8; RECORD_BYTES];
        record.copy_from_slice(&row[16..]);
        urls.insert_logged(slot, record)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut stored = [0u8; SUM];
    r.read_exact(&mut stored).map_err(fail)?;
    if stored[..] != sum.finalize()[..] {
        return Err(format!("{}: checksum does not match", path.display()));
    }
    Ok(Some(Snapshot {
        seq,
        salt: Salt(salt),
        urls,
    }))
}

/// The writer's side: when a snapshot is due, the one in flight, and the newest on disk.
pub(super) struct Snapshots {
    index: Arc<Index>,
    /// `index/`.
    dir: PathBuf,
    /// Seq of the newest snapshot on disk (none usable: `None`).
    on_disk: Option<u64>,
    /// URL effects applied (as counted by the index) when the last snapshot was copied.
    events_at_copy: u64,
    /// Seq, how long copying the table took, the thread writing it.
    in_flight: Option<(u64, Duration, JoinHandle<Result<Written, String>>)>,
}

impl Snapshots {
    pub fn new(index: Arc<Index>) -> Self {
        let on_disk = *index.snapshot_seq();
        Self {
            dir: index.path().to_owned(),
            on_disk,
            events_at_copy: 0,
            in_flight: None,
            index,
        }
    }

    /// After the writer applied a batch (the log and the index hold `size` entries): starts
    /// a snapshot in the background if one is due and none is in flight. Due: after
    /// max(open keys, [`MIN_EVENTS`]) URL effects since the last one, or (tests) `every`.
    pub fn after_batch(&mut self, size: u64, every: Option<u64>) {
        self.reap(false);
        if self.in_flight.is_some() {
            return;
        }
        let events = self.index.url_events();
        let due = every.unwrap_or_else(|| self.index.url_memory().0.max(MIN_EVENTS));
        if events - self.events_at_copy < due {
            return;
        }
        let t = Instant::now();
        let (salt, urls) = self.index.url_snapshot_copy();
        let copy = t.elapsed();
        self.events_at_copy = events;
        let (index, dir) = (self.index.clone(), self.dir.clone());
        let spawned = std::thread::Builder::new()
            .name("url-snapshot".into())
            .spawn(move || {
                write(&dir, size, &salt, &urls, || {
                    index.flush().map_err(|e| e.to_string())
                })
            });
        match spawned {
            Ok(h) => self.in_flight = Some((size, copy, h)),
            Err(e) => tracing::warn!("cannot start the URL snapshot thread: {e}"),
        }
    }

    /// Waits for the snapshot in flight (`wait`), or collects it if it is done.
    pub fn reap(&mut self, wait: bool) {
        let done = self
            .in_flight
            .as_ref()
            .is_some_and(|(_, _, h)| wait || h.is_finished());
        if !done {
            return;
        }
        if let Some((seq, copy, h)) = self.in_flight.take() {
            let r = h
                .join()
                .unwrap_or_else(|_| Err("the snapshot thread panicked".into()));
            self.record(seq, copy, r);
        }
    }

    fn record(&mut self, seq: u64, copy: Duration, r: Result<Written, String>) {
        match r {
            Ok(w) => {
                self.on_disk = Some(w.seq);
                tracing::info!(
                    seq = w.seq,
                    keys = w.keys,
                    bytes = w.bytes,
                    copy_secs = copy.as_secs_f64(),
                    write_secs = w.time.as_secs_f64(),
                    "wrote the URL snapshot"
                );
            }
            Err(e) => tracing::warn!(
                seq,
                "writing the URL snapshot failed (the log replays instead; tried again later): {e}"
            ),
        }
    }

    /// On close (the log and the index hold `size` entries): waits for the one in flight,
    /// then writes one covering the whole log unless the newest on disk does.
    pub fn finish(&mut self, size: u64) {
        self.reap(true);
        if self.on_disk == Some(size) {
            return;
        }
        let t = Instant::now();
        let (salt, urls) = self.index.url_snapshot_copy();
        let copy = t.elapsed();
        self.events_at_copy = self.index.url_events();
        let index = &self.index;
        let r = write(&self.dir, size, &salt, &urls, || {
            index.flush().map_err(|e| e.to_string())
        });
        self.record(size, copy, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EnvelopeId;
    use crate::store::records::UrlKeyRecord;
    use chrono::{SubsecRound, Utc};

    fn table(salt: &Salt, n: u8) -> OpenUrls {
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
            m.put(salt.slot(&[b'd', 0, i]), &r).unwrap();
        }
        m
    }

    #[test]
    fn a_snapshot_reads_back_whole_and_without_reservations() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let salt = Salt::random().unwrap();
        let mut urls = table(&salt, 200);
        let reserved = salt.slot(b"d\x00reserved");
        urls.check_and_open(reserved, &EnvelopeId::new_v7(), Utc::now())
            .unwrap();
        let mut flushed = false;
        let w = write(dir.path(), 77, &salt, &urls, || {
            flushed = true;
            Ok(())
        })
        .unwrap();
        assert!(flushed);
        assert_eq!((w.seq, w.keys), (77, 200));
        let len = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert_eq!(len, w.bytes);
        assert!(!dir.path().join(TMP).exists());
        let snap = read(dir.path()).unwrap().unwrap();
        assert_eq!(snap.seq, 77);
        assert!(snap.salt == salt);
        assert_eq!(snap.urls.len(), 200);
        assert_eq!(snap.urls.get(&reserved).unwrap(), None);
        let mut a = urls.logged_list();
        let mut b = snap.urls.logged_list();
        a.sort_by_key(|r| r.count);
        b.sort_by_key(|r| r.count);
        assert_eq!(a, b);
        for i in 0..200u8 {
            let s = salt.slot(&[b'd', 0, i]);
            assert_eq!(snap.urls.logged(&s).unwrap(), urls.logged(&s).unwrap());
        }
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_a_failed_write_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let salt = Salt::random().unwrap();
        let urls = table(&salt, 10);
        write(dir.path(), 5, &salt, &urls, || Ok(())).unwrap();
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).unwrap();
        // One bit anywhere: the checksum (or the header) says so.
        for at in [0, 13, HEADER + 3, HEADER + ROW * 4 + 20, good.len() - 1] {
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
        let err = write(dir.path(), 9, &salt, &table(&salt, 3), || {
            Err("flush failed".into())
        });
        assert!(err.is_err());
        assert!(!dir.path().join(TMP).exists());
        assert_eq!(read(dir.path()).unwrap().unwrap().seq, 5);
    }
}
