//! Message bodies under retention: raw bytes by SHA-256, with the time they were stored, in
//! their own sled database (`bodies/`). Not derived from the log — entries hold only the
//! hashes — so `audit rebuild-index` leaves it alone, and `audit purge` drops what is past
//! retention without touching the log.
//!
//! Value layout: stored-at in milliseconds since the epoch (8 bytes, big-endian) then the
//! bytes. A body stored twice keeps its first time.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::StoreError;
use super::entry::Sha256Digest;

pub(super) struct Bodies {
    db: sled::Db,
    path: PathBuf,
}

impl Bodies {
    pub fn open(path: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open()
            .map_err(|e| StoreError::Index {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    fn err(&self, e: sled::Error) -> StoreError {
        StoreError::Index {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Stores `bytes` (if not already there) and returns their SHA-256.
    pub fn put(&self, bytes: &[u8], now: DateTime<Utc>) -> Result<Sha256Digest, StoreError> {
        let d = Sha256Digest::of(bytes);
        let mut v = Vec::with_capacity(8 + bytes.len());
        v.extend_from_slice(&now.timestamp_millis().to_be_bytes());
        v.extend_from_slice(bytes);
        // Keep the first copy (and its time): compare-and-swap against "absent".
        let _ = self
            .db
            .compare_and_swap(d.0, None::<&[u8]>, Some(v))
            .map_err(|e| self.err(e))?;
        Ok(d)
    }

    pub fn get(&self, d: &Sha256Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get(d.0)
            .map_err(|e| self.err(e))?
            .filter(|v| v.len() >= 8)
            .map(|v| v[8..].to_vec()))
    }

    /// Removes every body stored before `cutoff`: (count, bytes).
    pub fn purge(&self, cutoff: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
        let cut = cutoff.timestamp_millis();
        let (mut n, mut bytes) = (0u64, 0u64);
        for kv in self.db.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let at = v
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(i64::MIN, i64::from_be_bytes);
            if at < cut {
                self.db.remove(&k).map_err(|e| self.err(e))?;
                n += 1;
                bytes += v.len().saturating_sub(8) as u64;
            }
        }
        self.flush()?;
        Ok((n, bytes))
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }
}
