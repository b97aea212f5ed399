//! The participant's data directory: the envelope ids already handed over (so a second copy is
//! dropped), and copies of the messages refused as not genuine (so the hotline can investigate).
//!
//! ```text
//! <data_dir>/handed-over/   sled database: envelope id → {"at": …, "kind": …}
//! <data_dir>/refused/       one JSON file per refused delivery (raw bytes in base64, headers,
//!                           why it was refused); never read back by the client
//! ```
//!
//! Guarantees:
//! - [`DataDir::record_handed_over`] returns only once the id is durable (sled flushed to disk):
//!   the client acknowledges a message only after that, so a crash never loses the fact that a
//!   message was handed over *and* acknowledged.
//! - One process at a time: sled locks its database, and a second reader of the same data
//!   directory is refused with [`DataDirError::Locked`] (two readers would each believe the
//!   other's handovers never happened).
//!
//! Not guaranteed: exactly-once across a crash *between* the handover and the flush of its id.
//! The message was not acknowledged then, so RabbitMQ delivers it again and it is handed over a
//! second time, marked `redelivered`. The handover itself is the hotline's system; the client
//! cannot make it atomic with this record, and says so rather than pretend. Ids are kept forever
//! (about 100 bytes each: ten million messages are about a gigabyte).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::EnvelopeId;
use crate::wire::Kind;

/// sled's page cache for the handed-over ids; small, the working set is the recent ids.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// The data directory could not be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    #[error(
        "{path}: in use by another process (another `inbox` reader with the same data_dir?); \
         one reader per data directory"
    )]
    Locked { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the handed-over ids database failed: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
}

/// What is recorded about a handed-over envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverRecord {
    /// When it was handed over.
    pub at: DateTime<Utc>,
    pub kind: Kind,
}

/// A copy of a refused delivery, as written to `refused/`.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedCopy<'a> {
    pub received_at: String,
    /// [`Problem`](super::verify::Problem) as a snake_case word.
    pub problem: &'a str,
    pub detail: &'a str,
    pub redelivered: bool,
    pub message_id: Option<&'a str>,
    pub kind: Option<&'a str>,
    /// Every header whose value is text or bytes, as text (lossy for bytes that are not UTF-8).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Standard base64 of the body exactly as received.
    pub body_base64: String,
    /// Lowercase hex SHA-256 of the body.
    pub body_sha256: String,
}

/// An open data directory; see the module documentation.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    db_path: PathBuf,
    tree: sled::Db,
}

impl DataDir {
    /// Opens (creating if needed, mode 0700) the data directory and its handed-over database.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        create_private_dir(root)?;
        let db_path = root.join("handed-over");
        let tree = sled::Config::new()
            .path(&db_path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| match &source {
                sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                    DataDirError::Locked {
                        path: db_path.clone(),
                    }
                }
                _ => DataDirError::Db {
                    path: db_path.clone(),
                    source,
                },
            })?;
        Ok(Self {
            root: root.to_owned(),
            db_path,
            tree,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn db_err(&self) -> impl Fn(sled::Error) -> DataDirError + '_ {
        |source| DataDirError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    /// The record of an id handed over before, if it was.
    pub fn handed_over(&self, id: &EnvelopeId) -> Result<Option<HandoverRecord>, DataDirError> {
        let Some(bytes) = self.tree.get(id.as_str()).map_err(self.db_err())? else {
            return Ok(None);
        };
        // A record we cannot read still says the id was handed over.
        Ok(Some(serde_json::from_slice(&bytes).unwrap_or(
            HandoverRecord {
                at: DateTime::<Utc>::UNIX_EPOCH,
                kind: Kind::Referral,
            },
        )))
    }

    /// Records that `id` was handed over, and waits until that is on disk.
    pub fn record_handed_over(
        &self,
        id: &EnvelopeId,
        record: &HandoverRecord,
    ) -> Result<(), DataDirError> {
        let value = serde_json::to_vec(record)
            .expect("serialising a HandoverRecord cannot fail: a timestamp and an enum");
        self.tree
            .insert(id.as_str(), value)
            .map_err(self.db_err())?;
        self.tree.flush().map_err(self.db_err())?;
        Ok(())
    }

    /// How many ids have been handed over.
    pub fn handed_over_count(&self) -> usize {
        self.tree.len()
    }

    /// Writes a copy of a refused delivery to `refused/`; returns its path.
    pub fn keep_refused(&self, copy: &RefusedCopy<'_>) -> Result<PathBuf, DataDirError> {
        let dir = self.root.join("refused");
        create_private_dir(&dir)?;
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
        let path = dir.join(format!(
            "{stamp}-{}.json",
            &copy.body_sha256[..copy.body_sha256.len().min(16)]
        ));
        let text = serde_json::to_vec_pretty(copy)
            .expect("serialising a RefusedCopy cannot fail: strings, bools and a string map");
        std::fs::write(&path, text).map_err(|source| DataDirError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), DataDirError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| DataDirError::Io {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_second_opener_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = EnvelopeId::new_v7();
        {
            let dir = DataDir::open(tmp.path()).expect("open");
            assert_eq!(dir.handed_over(&id).expect("get"), None);
            let rec = HandoverRecord {
                at: Utc::now(),
                kind: Kind::Status,
            };
            dir.record_handed_over(&id, &rec).expect("record");
            assert_eq!(dir.handed_over(&id).expect("get"), Some(rec));
            assert_eq!(dir.handed_over_count(), 1);
            match DataDir::open(tmp.path()) {
                Err(DataDirError::Locked { .. }) => {}
                other => panic!("expected Locked, got {other:?}"),
            }
        }
        let again = DataDir::open(tmp.path()).expect("reopen");
        assert!(again.handed_over(&id).expect("get").is_some());
    }

    #[test]
    fn refused_copies_are_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(tmp.path()).expect("open");
        let copy = RefusedCopy {
            received_at: "2026-11-25T10:00:00Z".into(),
            problem: "bad_signature",
            detail: "does not verify",
            redelivered: false,
            message_id: Some("x"),
            kind: None,
            headers: Default::default(),
            body_base64: "e30=".into(),
            body_sha256: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".into(),
        };
        let path = dir.keep_refused(&copy).expect("write");
        let text = std::fs::read_to_string(path).expect("read");
        assert!(text.contains("bad_signature"));
    }
}
