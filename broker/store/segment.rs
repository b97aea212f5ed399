//! Segment files and frames: naming, listing, encoding a frame, parsing frames back, and
//! the open-time scan that truncates a torn tail (and refuses anything worse).
//!
//! A frame is `len: u32 LE | check: u32 LE | entry bytes`, `check` being the first 4 bytes
//! of the entry's leaf hash, so a frame proves its own integrity without another checksum.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::entry::{MAX_ENTRY_BYTES, leaf_hash};

/// Bytes before the entry in a frame.
pub(super) const HEADER: usize = 8;

/// The most bytes the writer puts down between two fsyncs. Only such a chunk can be torn by
/// a crash, so a bad frame followed by more than this is damage, not a torn tail.
pub(super) const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Extension of segment files.
const EXT: &str = "seg";

/// `log_dir/<first seq, 20 digits>.seg`.
pub(super) fn path(log_dir: &Path, first_seq: u64) -> PathBuf {
    log_dir.join(format!("{first_seq:020}.{EXT}"))
}

/// The segments of a log directory, by first seq. Other files are ignored; a `.seg` file
/// whose name is not a seq is an error.
pub(super) fn list(log_dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(log_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io(log_dir, e)),
    };
    for item in rd {
        let item = item.map_err(|e| StoreError::io(log_dir, e))?;
        let p = item.path();
        if p.extension().and_then(|e| e.to_str()) != Some(EXT) {
            continue;
        }
        let first = p
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Corrupt {
                path: p.clone(),
                offset: 0,
                why: "segment file name is not a 20-digit sequence number".into(),
            })?;
        out.push((first, p));
    }
    out.sort();
    Ok(out)
}

/// Appends the frame of `bytes` (whose leaf hash is `leaf`) to `out`.
pub(super) fn encode(bytes: &[u8], leaf: &[u8; 32], out: &mut Vec<u8>) {
    // Entries are at most MAX_ENTRY_BYTES (checked at construction), far below u32::MAX.
    let len = u32::try_from(bytes.len()).expect("entries are bounded by MAX_ENTRY_BYTES");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&leaf[..4]);
    out.extend_from_slice(bytes);
}

/// One frame parsed from a buffer.
#[derive(Debug)]
pub(super) enum Frame<'a> {
    /// A whole frame: its entry bytes, recomputed leaf hash, whether the check matched and
    /// where the next frame starts.
    Whole {
        bytes: &'a [u8],
        leaf: [u8; 32],
        check_ok: bool,
        next: usize,
    },
    /// The buffer ends inside the frame.
    Incomplete,
    /// The length prefix is impossible (0 or over the entry limit).
    BadLength(u32),
}

/// Parses the frame at `offset` of `buf` (`offset < buf.len()`).
pub(super) fn parse(buf: &[u8], offset: usize) -> Frame<'_> {
    let rest = &buf[offset..];
    if rest.len() < HEADER {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    if len == 0 || len as usize > MAX_ENTRY_BYTES {
        return Frame::BadLength(len);
    }
    let end = HEADER + len as usize;
    if rest.len() < end {
        return Frame::Incomplete;
    }
    let bytes = &rest[HEADER..end];
    let leaf = leaf_hash(bytes);
    Frame::Whole {
        bytes,
        leaf,
        check_ok: rest[4..8] == leaf[..4],
        next: offset + end,
    }
}

/// Reads a whole segment file.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| StoreError::io(path, e))?;
    Ok(buf)
}

/// What the open-time scan of the last segment found.
#[derive(Debug)]
pub(super) struct Tail {
    /// Whole, good frames.
    pub frames: u64,
    /// Length of the good prefix (the file is cut to it).
    pub len: u64,
    /// Bytes cut off.
    pub truncated: u64,
}

/// Scans the last segment: every frame must be whole with a matching check. The first one
/// that is not starts a torn tail if at most [`MAX_CHUNK_BYTES`] follow it: the file is cut
/// there and synced. Otherwise the segment is damaged: [`StoreError::Corrupt`].
pub(super) fn recover_last(path: &Path) -> Result<Tail, StoreError> {
    let buf = read(path)?;
    let mut offset = 0usize;
    let mut frames = 0u64;
    let mut why = None;
    while offset < buf.len() {
        match parse(&buf, offset) {
            Frame::Whole {
                check_ok: true,
                next,
                ..
            } => {
                frames += 1;
                offset = next;
            }
            Frame::Whole {
                check_ok: false, ..
            } => {
                why = Some("frame check does not match the entry bytes".to_owned());
                break;
            }
            Frame::Incomplete => {
                why = Some("the file ends inside a frame".to_owned());
                break;
            }
            Frame::BadLength(n) => {
                why = Some(format!("impossible frame length {n}"));
                break;
            }
        }
    }
    let tail = (buf.len() - offset) as u64;
    if let Some(why) = why {
        if tail > MAX_CHUNK_BYTES as u64 {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                offset: offset as u64,
                why: format!("{why}, with {tail} bytes after it"),
            });
        }
        tracing::warn!(
            segment = %path.display(),
            offset,
            bytes = tail,
            "truncating a torn tail of the audit log ({why}); it was never acknowledged"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        f.set_len(offset as u64)
            .and_then(|()| f.sync_all())
            .map_err(|e| StoreError::io(path, e))?;
    }
    Ok(Tail {
        frames,
        len: offset as u64,
        truncated: tail,
    })
}

/// fsync a directory, so a file created (or removed) in it stays.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(s, &leaf_hash(s), &mut out);
        out
    }

    #[test]
    fn frames_parse_back() {
        let mut buf = frame_of(b"{\"a\":1}");
        buf.extend(frame_of(b"{\"b\":2}"));
        let Frame::Whole {
            bytes,
            check_ok,
            next,
            ..
        } = parse(&buf, 0)
        else {
            panic!("first frame")
        };
        assert_eq!(bytes, b"{\"a\":1}");
        assert!(check_ok);
        assert!(matches!(
            parse(&buf, next),
            Frame::Whole { check_ok: true, .. }
        ));
        assert!(matches!(parse(&buf[..next + 5], next), Frame::Incomplete));
        assert!(matches!(parse(&[0; 12], 0), Frame::BadLength(0)));
    }

    #[test]
    fn torn_tail_is_cut_and_damage_mid_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.seg");
        let mut buf = frame_of(b"one");
        buf.extend(frame_of(b"two"));
        let good = buf.len() as u64;
        buf.extend(&frame_of(b"three")[..6]);
        fs::write(&p, &buf).unwrap();
        let t = recover_last(&p).unwrap();
        assert_eq!((t.frames, t.len, t.truncated), (2, good, 6));
        assert_eq!(fs::metadata(&p).unwrap().len(), good);

        // A flipped byte in the first frame followed by more than a chunk: damage.
        let mut buf = frame_of(b"one");
        buf[9] ^= 1;
        while buf.len() <= MAX_CHUNK_BYTES + 16 {
            buf.extend(frame_of(&[b'x'; 60_000]));
        }
        fs::write(&p, &buf).unwrap();
        assert!(matches!(
            recover_last(&p),
            Err(StoreError::Corrupt { offset: 0, .. })
        ));
    }
}
