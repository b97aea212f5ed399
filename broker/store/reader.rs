//! Reading the log back, without the store open and without a lock: for `audit verify`,
//! `audit prove`, `audit consistency`, the benchmark and the store's own replay.
//!
//! The reader reports what is on disk and judges as little as it can: every frame comes
//! back with its position-derived seq, its bytes, the leaf hash recomputed from those bytes
//! and whether the frame's check matched, so `audit verify` can name the first bad seq.
//! An incomplete frame at the very end of the last segment is the end of the log (a live
//! writer, or a torn tail the next open truncates); anything that breaks the framing
//! elsewhere, or a segment whose name is not the count of entries before it, is
//! [`StoreError::Corrupt`] / [`StoreError::Gap`].

use std::path::{Path, PathBuf};

use super::StoreError;
use super::entry::{Entry, Seq};
use super::records::EntryPos;
use super::segment::{self, Frame};
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

impl LogEntry {
    /// Decodes the bytes into an [`Entry`] and checks that its `seq` is its position.
    pub fn decode(&self) -> Result<Entry, StoreError> {
        let e = Entry::decode(&self.bytes).map_err(|source| StoreError::BadEntry {
            seq: self.seq,
            source,
        })?;
        if e.seq != self.seq {
            return Err(StoreError::Gap {
                path: PathBuf::from(format!("segment {}", self.pos.segment)),
                expected: self.seq.0,
                found: e.seq.0,
            });
        }
        Ok(e)
    }
}

/// Reads the log of a data directory.
#[derive(Debug, Clone)]
pub struct LogReader {
    log_dir: PathBuf,
}

/// Iterator over frames from a given seq; see [`LogReader::iter_from`].
pub struct LogIter {
    segments: Vec<(u64, PathBuf)>,
    /// Index in `segments` of the one in `buf`.
    current: usize,
    buf: Vec<u8>,
    offset: usize,
    next_seq: u64,
    from: u64,
    done: bool,
}

impl LogIter {
    fn load(&mut self, i: usize) -> Result<(), StoreError> {
        let (first, path) = &self.segments[i];
        if *first != self.next_seq {
            return Err(StoreError::Gap {
                path: path.clone(),
                expected: self.next_seq,
                found: *first,
            });
        }
        self.buf = segment::read(path)?;
        self.current = i;
        self.offset = 0;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<LogEntry>, StoreError> {
        loop {
            if self.offset >= self.buf.len() {
                let next = self.current + 1;
                if next >= self.segments.len() {
                    return Ok(None);
                }
                self.load(next)?;
                continue;
            }
            let last = self.current + 1 == self.segments.len();
            let (first, path) = &self.segments[self.current];
            match segment::parse(&self.buf, self.offset) {
                Frame::Whole {
                    bytes,
                    leaf,
                    check_ok,
                    next,
                } => {
                    let seq = self.next_seq;
                    let offset = self.offset as u64;
                    self.next_seq += 1;
                    self.offset = next;
                    if seq < self.from {
                        continue;
                    }
                    return Ok(Some(LogEntry {
                        seq: Seq(seq),
                        pos: EntryPos {
                            seq: Seq(seq),
                            segment: *first,
                            offset,
                        },
                        bytes: bytes.to_vec(),
                        leaf_hash: leaf,
                        check_ok,
                    }));
                }
                Frame::Incomplete if last => return Ok(None),
                Frame::Incomplete => {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        offset: self.offset as u64,
                        why: format!(
                            "segment ends inside the frame of entry {} and is not the last",
                            self.next_seq
                        ),
                    });
                }
                Frame::BadLength(n) => {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        offset: self.offset as u64,
                        why: format!("impossible frame length {n} for entry {}", self.next_seq),
                    });
                }
            }
        }
    }
}

impl Iterator for LogIter {
    type Item = Result<LogEntry, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

impl LogReader {
    /// A reader of `data_dir/log`. Does not create anything.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self::at_log_dir(data_dir.join("log")))
    }

    pub(super) fn at_log_dir(log_dir: PathBuf) -> Self {
        Self { log_dir }
    }

    /// Every frame from `from` (inclusive) to the end, in order. Starts reading at the
    /// segment holding `from`.
    pub fn iter_from(&self, from: Seq) -> Result<LogIter, StoreError> {
        let segments = segment::list(&self.log_dir)?;
        let start = segments
            .iter()
            .rposition(|(first, _)| *first <= from.0)
            .unwrap_or(0);
        let mut it = LogIter {
            next_seq: segments.get(start).map_or(0, |s| s.0),
            segments,
            current: start,
            buf: Vec::new(),
            offset: 0,
            from: from.0,
            done: false,
        };
        if !it.segments.is_empty() {
            if start == 0 && it.segments[0].0 != 0 {
                // The first segment must start at 0: anything else means segments are gone.
                it.next_seq = 0;
            }
            it.load(start)?;
        }
        Ok(it)
    }

    /// Number of complete frames (= tree size): the last segment's first seq plus its
    /// whole frames.
    pub fn size(&self) -> Result<u64, StoreError> {
        let segments = segment::list(&self.log_dir)?;
        let Some((first, _)) = segments.last() else {
            return Ok(0);
        };
        let mut n = *first;
        for e in self.iter_from(Seq(*first))? {
            e?;
            n += 1;
        }
        Ok(n)
    }

    /// Leaf hashes of the first `size` entries (recomputed from the bytes); fewer if the
    /// log is shorter.
    pub fn leaf_hashes(&self, size: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 24));
        for e in self.iter_from(Seq(0))? {
            if out.len() as u64 >= size {
                break;
            }
            out.push(e?.leaf_hash);
        }
        Ok(out)
    }

    /// The frame at `pos` (from the store's referral index).
    pub fn read_at(&self, pos: EntryPos) -> Result<LogEntry, StoreError> {
        let path = segment::path(&self.log_dir, pos.segment);
        let buf = segment::read(&path)?;
        let offset = usize::try_from(pos.offset).unwrap_or(usize::MAX);
        let bad = |why: &str| StoreError::Corrupt {
            path: path.clone(),
            offset: pos.offset,
            why: format!("{why} where the index places entry {}", pos.seq),
        };
        if offset >= buf.len() {
            return Err(bad("no frame"));
        }
        match segment::parse(&buf, offset) {
            Frame::Whole {
                bytes,
                leaf,
                check_ok,
                ..
            } => Ok(LogEntry {
                seq: pos.seq,
                pos,
                bytes: bytes.to_vec(),
                leaf_hash: leaf,
                check_ok,
            }),
            _ => Err(bad("no whole frame")),
        }
    }

    /// Every entry about `id` (see [`Entry::referral`], and entries whose own envelope is
    /// `id`) by scanning the whole log; for when the store (and its index) cannot be opened.
    pub fn entries_of(&self, id: &EnvelopeId) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for e in self.iter_from(Seq(0))? {
            let e = e?.decode()?;
            if e.referral() == Some(id) || e.envelope.as_ref() == Some(id) {
                out.push(e);
            }
        }
        Ok(out)
    }
}
