//! Reading the log back, without the store open and without a lock: for `audit verify`,
//! `audit prove`, `audit consistency`, the benchmark and the store's own replay.
//!
//! The reader reports what is on disk and judges as little as it can: every frame comes
//! back with its position-derived seq, its bytes, the leaf hash recomputed from those bytes
//! and whether the frame's check matched, so `audit verify` can name the first bad seq.
//! An incomplete frame at the very end of the last segment is the end of the log (a live
//! writer, or a torn tail the next open truncates); anything that breaks the framing
//! elsewhere is [`StoreError::Corrupt`].

use std::path::{Path, PathBuf};

use super::StoreError;
use super::entry::{Entry, Seq};
use super::records::EntryPos;
use crate::ids::EnvelopeId;

/// One frame of the log as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry's position in the log (= leaf index), counted by the reader; compare with
    /// the `seq` inside the bytes to catch deleted or swapped entries.
    pub seq: Seq,
    pub pos: EntryPos,
    /// The entry's bytes exactly as stored.
    pub bytes: Vec<u8>,
    /// SHA-256(0x00 || bytes), recomputed here.
    pub leaf_hash: [u8; 32],
    /// Whether the frame's stored check matches `leaf_hash` (false: the bytes changed).
    pub check_ok: bool,
}

/// Reads the log of a data directory.
#[derive(Debug, Clone)]
pub struct LogReader {
    log_dir: PathBuf,
}

/// Iterator over frames from a given seq; see [`LogReader::iter_from`].
pub struct LogIter {
    _todo: (),
}

impl Iterator for LogIter {
    type Item = Result<LogEntry, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        todo!()
    }
}

impl LogReader {
    /// A reader of `data_dir/log`. Does not create anything.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            log_dir: data_dir.join("log"),
        })
    }

    /// Every frame from `from` (inclusive) to the end, in order.
    pub fn iter_from(&self, from: Seq) -> Result<LogIter, StoreError> {
        let _ = (from, &self.log_dir);
        todo!()
    }

    /// Number of complete frames (= tree size).
    pub fn size(&self) -> Result<u64, StoreError> {
        todo!()
    }

    /// Leaf hashes of the first `size` entries (recomputed from the bytes).
    pub fn leaf_hashes(&self, size: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let _ = size;
        todo!()
    }

    /// The frame at `pos` (from the store's referral index).
    pub fn read_at(&self, pos: EntryPos) -> Result<LogEntry, StoreError> {
        let _ = pos;
        todo!()
    }

    /// Every entry about `id` (see [`Entry::referral`]) by scanning the whole log; for when
    /// the store (and its index) cannot be opened.
    pub fn entries_of(&self, id: &EnvelopeId) -> Result<Vec<Entry>, StoreError> {
        let _ = id;
        todo!()
    }
}
