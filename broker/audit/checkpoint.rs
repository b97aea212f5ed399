//! The broker's checkpoint: a C2SP signed note (<https://c2sp.org/signed-note>) whose text is
//! a C2SP checkpoint (<https://c2sp.org/tlog-checkpoint>), signed with the broker's ed25519 key.
//!
//! ```text
//! broker.example/audit                           origin line
//! 1042                                           tree size (decimal)
//! 3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=   root hash (standard base64)
//! time 2026-11-25T10:05:00Z                      extension line: when it was cut
//!
//! — broker.example <base64(key hash ‖ ed25519 signature over the text above the blank line)>
//! ```
//!
//! - Key hash = the first 4 bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)
//!   (signature type 0x01 = ed25519); the signature covers the text exactly, final newline
//!   included. The reference implementation's known answer (golang.org/x/mod/sumdb/note) is
//!   in `tests/vectors/merkle/signed-note.json` and reproduced byte for byte by the tests.
//! - The broker writes one extension line, `time <RFC 3339 UTC>` in the wire's timestamp
//!   form ([`crate::wire::time`]); the `checkpoint` message body ([`crate::wire::Checkpoint`])
//!   repeats `log`, `size`, `root` and `time`, and [`BrokerCheckpoint::verify_wire`] refuses a
//!   body that does not agree with its note.
//!
//! What this module guarantees:
//! - **Signature first.** [`open_note`] finds the signature lines (the envelope of the note),
//!   checks the broker's signature with `verify_strict`, and only then hands back the text;
//!   [`BrokerCheckpoint::verify`] parses that text after, never before. Signatures by other
//!   keys (witness cosignatures) are ignored, a bad signature by the broker's key is an error.
//! - Bounded input: a note larger than [`MAX_NOTE_BYTES`] or with more than
//!   [`MAX_SIGNATURES`] signature lines is refused before any signature is checked.
//! - One spelling: size in decimal without leading zeros, canonical padded base64, no control
//!   character but line feed. Pure code: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SubsecRound as _, Utc};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::merkle::Hash;
use crate::signing::{Signature, Signer, VerifyingKey};
use crate::wire;
use crate::wire::limits::{MAX_NAME_CHARS, MAX_SIGNED_NOTE_CHARS, MAX_TREE_SIZE};

/// Largest note accepted, in bytes (the wire allows 4096 characters; 4 bytes each at most).
pub const MAX_NOTE_BYTES: usize = 4 * MAX_SIGNED_NOTE_CHARS;
/// Most signature lines accepted on one note (the reference implementation's limit).
pub const MAX_SIGNATURES: usize = 100;
/// C2SP signed-note signature type of ed25519.
pub const SIG_TYPE_ED25519: u8 = 0x01;
/// Prefix of every signature line: U+2014 EM DASH and a space.
pub const SIG_LINE_PREFIX: &str = "\u{2014} ";
/// Prefix of the broker's time extension line.
pub const TIME_LINE_PREFIX: &str = "time ";

/// Why a note or checkpoint is not believed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("the note is {0} bytes; at most {MAX_NOTE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("not a signed note: {0}")]
    MalformedNote(&'static str),
    #[error("key name {0:?} is not usable (non-empty, no spaces, no '+', at most 256 characters)")]
    BadKeyName(String),
    #[error("the note carries no signature by the broker's key")]
    NoSignatureByKey,
    #[error("the signature by {name:?} (the broker's key) does not verify: the note was changed")]
    BadSignature { name: String },
    #[error("the signed text is not a checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    #[error("the checkpoint's origin is {got:?}, expected {expected:?}")]
    WrongOrigin { expected: String, got: String },
    #[error("tree size {0} is larger than the largest the wire allows (2^53 - 1)")]
    SizeTooLarge(u64),
    #[error("time {0} cannot be written as a wire timestamp")]
    BadTime(String),
    #[error("the checkpoint message's `{field}` does not agree with its signed note")]
    WireDisagrees { field: &'static str },
    #[error("verifier key {0:?} is not `<name>+<8 hex>+<base64(0x01 || 32-byte key)>`")]
    BadVerifierKey(String),
}

/// Whether `name` can name a key in a signed note: non-empty, no Unicode whitespace, no `+`,
/// no control character, at most 256 characters.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The 4-byte key hash of an ed25519 key under `name` (C2SP signed-note).
pub fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', SIG_TYPE_ED25519]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The verifier key string other tools take (`<name>+<hex key hash>+<base64(0x01 ‖ key)>`),
/// e.g. to check the broker's checkpoints with transparency-dev or golang.org/x/mod tools.
pub fn verifier_key_string(name: &str, key: &VerifyingKey) -> Result<String, CheckpointError> {
    if !valid_key_name(name) {
        return Err(CheckpointError::BadKeyName(name.to_owned()));
    }
    let mut typed = vec![SIG_TYPE_ED25519];
    typed.extend_from_slice(key.as_bytes());
    Ok(format!(
        "{name}+{}+{}",
        hex::encode(key_hash(name, key)),
        B64.encode(typed)
    ))
}

/// Parses a verifier key string; the key hash must match the name and key.
pub fn parse_verifier_key(s: &str) -> Result<(String, VerifyingKey), CheckpointError> {
    let bad = || CheckpointError::BadVerifierKey(s.to_owned());
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if !valid_key_name(name) || hash.len() != 8 || !crate::wire::check::lower_hex(hash, 8) {
        return Err(bad());
    }
    let typed = B64.decode(key).map_err(|_| bad())?;
    let Some((&SIG_TYPE_ED25519, raw)) = typed.split_first() else {
        return Err(bad());
    };
    let raw: [u8; 32] = raw.try_into().map_err(|_| bad())?;
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad())?;
    if key.is_weak() || hex::encode(key_hash(name, &key)) != hash {
        return Err(bad());
    }
    Ok((name.to_owned(), key))
}

/// Note text rules shared by signing and opening: non-empty, ends in a newline, no control
/// character but line feed.
fn check_text_chars(text: &str) -> Result<(), CheckpointError> {
    if text
        .chars()
        .any(|c| (c < ' ' && c != '\n') || c == '\u{7f}')
    {
        return Err(CheckpointError::MalformedNote(
            "control character other than line feed",
        ));
    }
    Ok(())
}

/// Signs note `text` (non-empty, ending in a newline, without a blank line) as `name`: returns
/// the text, a blank line and the signature line.
pub fn sign_note(text: &str, name: &str, signer: &Signer) -> Result<String, CheckpointError> {
    if !valid_key_name(name) {
        return Err(CheckpointError::BadKeyName(name.to_owned()));
    }
    if text.is_empty() || !text.ends_with('\n') {
        return Err(CheckpointError::MalformedNote(
            "text must be non-empty and end in a newline",
        ));
    }
    if text.starts_with('\n') || text.contains("\n\n") {
        return Err(CheckpointError::MalformedNote(
            "text must not contain a blank line",
        ));
    }
    check_text_chars(text)?;
    let sig = signer.sign(text.as_bytes());
    let mut blob = key_hash(name, &signer.verifying_key()).to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    let note = format!("{text}\n{SIG_LINE_PREFIX}{name} {}\n", B64.encode(blob));
    if note.len() > MAX_NOTE_BYTES || note.chars().count() > MAX_SIGNED_NOTE_CHARS {
        return Err(CheckpointError::TooLarge(note.len()));
    }
    Ok(note)
}

/// A note whose signature by the broker's key verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedNote<'a> {
    /// The signed text (final newline included).
    pub text: &'a str,
    /// The name on the broker's signature line.
    pub key_name: &'a str,
}

/// One signature line, split but not yet believed.
struct SigLine<'a> {
    name: &'a str,
    hash: [u8; 4],
    sig: Vec<u8>,
}

/// Verifies the signature of `key` on `note` and only then returns its text.
///
/// The name on the signature line is not signed (C2SP signed-note): the key hash binds it to
/// the key, so any name works as long as its key hash matches `key`; callers that expect a
/// particular name compare [`OpenedNote::key_name`].
pub fn open_note<'a>(note: &'a str, key: &VerifyingKey) -> Result<OpenedNote<'a>, CheckpointError> {
    if note.len() > MAX_NOTE_BYTES || note.chars().count() > MAX_SIGNED_NOTE_CHARS {
        return Err(CheckpointError::TooLarge(note.len()));
    }
    check_text_chars(note)?;
    let Some(blank) = note.rfind("\n\n") else {
        return Err(CheckpointError::MalformedNote(
            "no blank line before the signatures",
        ));
    };
    let text = &note[..blank + 1];
    let sigs = &note[blank + 2..];
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(CheckpointError::MalformedNote(
            "no signature line, or the last one does not end in a newline",
        ));
    };
    let mut lines = Vec::new();
    for line in sigs.split('\n') {
        if lines.len() == MAX_SIGNATURES {
            return Err(CheckpointError::MalformedNote("too many signature lines"));
        }
        let Some(rest) = line.strip_prefix(SIG_LINE_PREFIX) else {
            return Err(CheckpointError::MalformedNote(
                "a signature line does not start with '— '",
            ));
        };
        let Some((name, b64)) = rest.split_once(' ') else {
            return Err(CheckpointError::MalformedNote(
                "a signature line has no name and signature",
            ));
        };
        if !valid_key_name(name) {
            return Err(CheckpointError::MalformedNote(
                "a signature line has an invalid key name",
            ));
        }
        let blob = B64
            .decode(b64)
            .map_err(|_| CheckpointError::MalformedNote("a signature is not base64"))?;
        if blob.len() < 5 {
            return Err(CheckpointError::MalformedNote("a signature is too short"));
        }
        let (hash, sig) = blob.split_at(4);
        lines.push(SigLine {
            name,
            hash: [hash[0], hash[1], hash[2], hash[3]],
            sig: sig.to_vec(),
        });
    }
    // The envelope is well formed; now the signature, before anything reads the text.
    let mut verified = None;
    for line in &lines {
        if key_hash(line.name, key) != line.hash {
            continue; // another signer (a witness): not ours to judge
        }
        let bad = || CheckpointError::BadSignature {
            name: line.name.to_owned(),
        };
        let sig: [u8; 64] = line.sig.as_slice().try_into().map_err(|_| bad())?;
        crate::signing::verify(key, text.as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| bad())?;
        verified.get_or_insert(line.name);
    }
    match verified {
        Some(key_name) => Ok(OpenedNote { text, key_name }),
        None => Err(CheckpointError::NoSignatureByKey),
    }
}

/// The lines of a checkpoint text (C2SP tlog-checkpoint), parsed only from verified text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointText<'a> {
    pub origin: &'a str,
    pub size: u64,
    pub root: Hash,
    /// Extension lines, in order (each non-empty).
    pub extensions: Vec<&'a str>,
}

/// Parses checkpoint text. Call it on [`OpenedNote::text`] only.
pub fn parse_checkpoint_text(text: &str) -> Result<CheckpointText<'_>, CheckpointError> {
    let bad = CheckpointError::MalformedCheckpoint;
    let Some(body) = text.strip_suffix('\n') else {
        return Err(bad("text does not end in a newline"));
    };
    let mut lines = body.split('\n');
    let origin = lines.next().unwrap_or_default();
    if origin.is_empty() || origin.chars().count() > MAX_NAME_CHARS {
        return Err(bad("origin line empty or longer than 256 characters"));
    }
    let size_line = lines.next().ok_or(bad("no tree size line"))?;
    let canonical_decimal = !size_line.is_empty()
        && size_line.len() <= 20
        && size_line.bytes().all(|b| b.is_ascii_digit())
        && (size_line == "0" || !size_line.starts_with('0'));
    if !canonical_decimal {
        return Err(bad(
            "tree size is not a decimal number without leading zeros",
        ));
    }
    let size: u64 = size_line
        .parse()
        .map_err(|_| bad("tree size does not fit 64 bits"))?;
    let root_line = lines.next().ok_or(bad("no root hash line"))?;
    let root: Hash = B64
        .decode(root_line)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(bad("root hash is not canonical base64 of 32 bytes"))?;
    let extensions: Vec<&str> = lines.collect();
    if extensions.iter().any(|l| l.is_empty()) {
        return Err(bad("empty extension line"));
    }
    Ok(CheckpointText {
        origin,
        size,
        root,
        extensions,
    })
}

/// The origin line of a broker's log: `<broker participant id>/audit`.
pub fn origin_for(broker: &crate::ids::ParticipantId) -> String {
    format!("{broker}/audit")
}

/// A checkpoint signed by the broker, believed (built by [`BrokerCheckpoint::sign`] or checked
/// by [`BrokerCheckpoint::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub time: DateTime<Utc>,
    /// The name on the broker's signature line.
    pub key_name: String,
    /// The signed note, exactly as sent.
    pub note: String,
}

impl BrokerCheckpoint {
    /// Cuts and signs a checkpoint of the tree of `size` entries with head `root` at `time`
    /// (truncated to milliseconds, like the log's entries, and written in the wire's
    /// timestamp form, so [`Self::time`] reads back exactly).
    pub fn sign(
        origin: &str,
        size: u64,
        root: Hash,
        time: DateTime<Utc>,
        key_name: &str,
        signer: &Signer,
    ) -> Result<BrokerCheckpoint, CheckpointError> {
        if size > MAX_TREE_SIZE {
            return Err(CheckpointError::SizeTooLarge(size));
        }
        if origin.is_empty()
            || origin.chars().count() > MAX_NAME_CHARS
            || origin.chars().any(char::is_control)
        {
            return Err(CheckpointError::MalformedCheckpoint(
                "origin must be one line of 1 to 256 characters",
            ));
        }
        let time = time.trunc_subsecs(3);
        if !wire::time::representable(&time) {
            return Err(CheckpointError::BadTime(time.to_rfc3339()));
        }
        let stamp = wire::time::format(&time);
        let time = wire::time::parse(&stamp).ok_or(CheckpointError::BadTime(stamp.clone()))?;
        let text = format!(
            "{origin}\n{size}\n{}\n{TIME_LINE_PREFIX}{stamp}\n",
            B64.encode(root)
        );
        let note = sign_note(&text, key_name, signer)?;
        Ok(BrokerCheckpoint {
            origin: origin.to_owned(),
            size,
            root,
            time,
            key_name: key_name.to_owned(),
            note,
        })
    }

    /// Verifies the broker's signature on `note` (signature first), then parses the checkpoint
    /// and its `time` line. `origin`, when given, must match the note's origin line.
    pub fn verify(
        note: &str,
        key: &VerifyingKey,
        origin: Option<&str>,
    ) -> Result<BrokerCheckpoint, CheckpointError> {
        let opened = open_note(note, key)?;
        let cp = parse_checkpoint_text(opened.text)?;
        if let Some(expected) = origin
            && cp.origin != expected
        {
            return Err(CheckpointError::WrongOrigin {
                expected: expected.to_owned(),
                got: cp.origin.to_owned(),
            });
        }
        if cp.size > MAX_TREE_SIZE {
            return Err(CheckpointError::SizeTooLarge(cp.size));
        }
        let mut times = cp
            .extensions
            .iter()
            .filter_map(|l| l.strip_prefix(TIME_LINE_PREFIX));
        let (Some(stamp), None) = (times.next(), times.next()) else {
            return Err(CheckpointError::MalformedCheckpoint(
                "a broker checkpoint has exactly one `time` line",
            ));
        };
        let time = wire::time::parse(stamp).ok_or(CheckpointError::MalformedCheckpoint(
            "the `time` line is not a wire timestamp",
        ))?;
        // Exactly the form `sign` writes (millisecond precision at most, shortest digits),
        // so that a checkpoint has one text and signs again to the same values (found by
        // the `checkpoint` fuzz target: 7 fraction digits verified, then re-signed as 3).
        if time.trunc_subsecs(3) != time || wire::time::format(&time) != stamp {
            return Err(CheckpointError::MalformedCheckpoint(
                "the `time` line is not in the broker's form (UTC, at most millisecond precision)",
            ));
        }
        Ok(BrokerCheckpoint {
            origin: cp.origin.to_owned(),
            size: cp.size,
            root: cp.root,
            time,
            key_name: opened.key_name.to_owned(),
            note: note.to_owned(),
        })
    }

    /// The body of the `checkpoint` message sent to participants.
    pub fn to_wire(&self) -> wire::Checkpoint {
        wire::Checkpoint {
            log: self.origin.clone(),
            size: self.size,
            root: self.root,
            time: self.time,
            note: self.note.clone(),
        }
    }

    /// Verifies a received `checkpoint` body: its note (signature first), then that `log`,
    /// `size`, `root` and `time` repeat what the note says.
    pub fn verify_wire(
        body: &wire::Checkpoint,
        key: &VerifyingKey,
    ) -> Result<BrokerCheckpoint, CheckpointError> {
        let cp = BrokerCheckpoint::verify(&body.note, key, None)?;
        let disagree = |field| Err(CheckpointError::WireDisagrees { field });
        if body.log != cp.origin {
            return disagree("log");
        }
        if body.size != cp.size {
            return disagree("size");
        }
        if !super::merkle::ct_eq(&body.root, &cp.root) {
            return disagree("root");
        }
        if body.time != cp.time {
            return disagree("time");
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct NoteVector {
        verifier_key: String,
        signer_key: String,
        name: String,
        key_hash: String,
        text: String,
        note: String,
        other_signer: OtherSigner,
        malformed_notes: Malformed,
    }
    #[derive(Deserialize)]
    struct OtherSigner {
        verifier_key: String,
        signature_line: String,
    }
    #[derive(Deserialize)]
    struct Malformed {
        cases: Vec<MalformedCase>,
    }
    #[derive(Deserialize)]
    struct MalformedCase {
        desc: String,
        note: String,
    }

    fn vector() -> NoteVector {
        serde_json::from_str(include_str!("../../tests/vectors/merkle/signed-note.json"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The seed of the reference implementation's published test signer key.
    fn vector_signer(v: &NoteVector) -> Signer {
        // PRIVATE+KEY+<name>+<hash>+<base64>; the base64 itself may contain '+'.
        let b64 = v
            .signer_key
            .splitn(5, '+')
            .nth(4)
            .unwrap_or_else(|| panic!("signer key"));
        let typed = B64.decode(b64).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(typed[0], SIG_TYPE_ED25519);
        let seed: [u8; 32] = typed[1..].try_into().unwrap_or_else(|_| panic!("seed"));
        Signer::from_seed(seed)
    }

    #[test]
    fn signed_note_known_answer() {
        let v = vector();
        let (name, key) = parse_verifier_key(&v.verifier_key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(name, v.name);
        assert_eq!(hex::encode(key_hash(&name, &key)), v.key_hash);
        let signer = vector_signer(&v);
        assert_eq!(signer.verifying_key(), key);
        assert_eq!(
            verifier_key_string(&name, &key).as_deref(),
            Ok(v.verifier_key.as_str())
        );
        // ed25519 is deterministic: our signing reproduces the reference note byte for byte.
        assert_eq!(
            sign_note(&v.text, &name, &signer).as_deref(),
            Ok(v.note.as_str())
        );
        let opened = open_note(&v.note, &key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.text, v.text);
        assert_eq!(opened.key_name, "PeterNeumann");
        // One changed character of the text: refused.
        let changed = v.note.replace("cryptography", "cryptographY");
        assert!(matches!(
            open_note(&changed, &key),
            Err(CheckpointError::BadSignature { .. })
        ));
        // A second signer's line is ignored when checking with our key, and checks with its own.
        let both = format!("{}{}", v.note, v.other_signer.signature_line);
        assert_eq!(open_note(&both, &key).map(|o| o.text), Ok(v.text.as_str()));
        let (_, enoch) =
            parse_verifier_key(&v.other_signer.verifier_key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            open_note(&both, &enoch).map(|o| o.key_name),
            Ok("EnochRoot")
        );
        // Only Enoch's signature, checked with Peter's key: no signature by that key.
        let enoch_only = format!("{}\n{}", v.text, v.other_signer.signature_line);
        assert_eq!(
            open_note(&enoch_only, &key),
            Err(CheckpointError::NoSignatureByKey)
        );
        for case in &v.malformed_notes.cases {
            assert!(open_note(&case.note, &key).is_err(), "{}", case.desc);
        }
        // The source's 101 copies of a signature line: too many.
        let sig_line = &v.note[v.text.len() + 1..];
        let many = format!("{}\n{}", v.text, sig_line.repeat(101));
        assert!(open_note(&many, &key).is_err());
        // A signature line with 4 extra base64 characters in the middle (TestOpen).
        let mangled = format!("{}\n{}ABCD{}", v.text, &sig_line[..60], &sig_line[60..]);
        assert!(open_note(&mangled, &key).is_err());
    }

    #[test]
    fn verifier_key_manglings_are_refused() {
        let v = vector();
        let good = v.verifier_key.as_bytes();
        for i in 0..good.len() {
            let mut b = good.to_vec();
            b[i] = b[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&b) {
                assert!(parse_verifier_key(s).is_err(), "{s}");
            }
            for j in i + 1..=good.len() {
                if (i, j) != (0, good.len()) {
                    let s = std::str::from_utf8(&good[i..j]).unwrap_or_default();
                    assert!(parse_verifier_key(s).is_err(), "{s}");
                }
            }
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        wire::time::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    /// Regression (fuzz target `checkpoint`, fuzz/corpus/checkpoint/regression-subms-time):
    /// a `time` finer than the broker writes verified, and signed again as another time.
    #[test]
    fn a_time_not_in_the_brokers_form_is_refused() {
        let signer = Signer::generate().unwrap_or_else(|e| panic!("{e}"));
        let key = signer.verifying_key();
        let root = B64.encode(super::super::merkle::leaf_hash(b"x"));
        for (stamp, ok) in [
            ("2026-11-25T10:00:00.166Z", true),
            ("2026-11-25T10:00:00.500Z", true),
            ("2026-11-25T10:00:00Z", true),
            ("2026-11-25T10:00:00.5Z", false),
            ("2026-11-25T10:00:00.1666623Z", false),
            ("2026-11-25T10:00:00.1660Z", false),
            ("2026-11-25T10:00:00.000Z", false),
        ] {
            let text = format!("broker.example/audit\n4096\n{root}\ntime {stamp}\n");
            let note =
                sign_note(&text, "broker.example", &signer).unwrap_or_else(|e| panic!("{e}"));
            let got = BrokerCheckpoint::verify(&note, &key, None);
            assert_eq!(got.is_ok(), ok, "{stamp}: {got:?}");
            if let Ok(cp) = got {
                let again = BrokerCheckpoint::sign(
                    &cp.origin,
                    cp.size,
                    cp.root,
                    cp.time,
                    &cp.key_name,
                    &signer,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(again.note, note, "{stamp} signs again to the same note");
            }
        }
    }

    #[test]
    fn broker_checkpoint_round_trip_and_wire_agreement() {
        let signer = Signer::generate().unwrap_or_else(|e| panic!("{e}"));
        let key = signer.verifying_key();
        let root = super::super::merkle::leaf_hash(b"x");
        let cp = BrokerCheckpoint::sign(
            "broker.example/audit",
            42,
            root,
            t("2026-11-25T10:05:00.5Z"),
            "broker.example",
            &signer,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(cp.note.starts_with(&format!(
            "broker.example/audit\n42\n{}\ntime 2026-11-25T10:05:00.500Z\n\n\u{2014} broker.example ",
            B64.encode(root)
        )));
        let back = BrokerCheckpoint::verify(&cp.note, &key, Some("broker.example/audit"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, cp);
        assert!(matches!(
            BrokerCheckpoint::verify(&cp.note, &key, Some("other.example/audit")),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        // The wire body validates against the schema's rules and agrees with the note.
        let body = cp.to_wire();
        body.validate("/body").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(BrokerCheckpoint::verify_wire(&body, &key), Ok(cp.clone()));
        let mut bad = body.clone();
        bad.size = 43;
        assert_eq!(
            BrokerCheckpoint::verify_wire(&bad, &key),
            Err(CheckpointError::WireDisagrees { field: "size" })
        );
        let mut bad = body.clone();
        bad.root[0] ^= 1;
        assert_eq!(
            BrokerCheckpoint::verify_wire(&bad, &key),
            Err(CheckpointError::WireDisagrees { field: "root" })
        );
        let mut bad = body.clone();
        bad.time = t("2026-11-25T10:05:01Z");
        assert_eq!(
            BrokerCheckpoint::verify_wire(&bad, &key),
            Err(CheckpointError::WireDisagrees { field: "time" })
        );
        let mut bad = body;
        bad.log = "x.example/audit".into();
        assert_eq!(
            BrokerCheckpoint::verify_wire(&bad, &key),
            Err(CheckpointError::WireDisagrees { field: "log" })
        );
        // Another key: no signature by it.
        let other = Signer::generate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            BrokerCheckpoint::verify(&cp.note, &other.verifying_key(), None),
            Err(CheckpointError::NoSignatureByKey)
        );
    }

    #[test]
    fn every_changed_byte_of_a_checkpoint_is_refused() {
        let signer = Signer::from_seed([7; 32]);
        let key = signer.verifying_key();
        let cp = BrokerCheckpoint::sign(
            "broker.example/audit",
            1000,
            [9; 32],
            t("2026-01-01T00:00:00Z"),
            "broker.example",
            &signer,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let bytes = cp.note.as_bytes();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut b = bytes.to_vec();
                b[i] ^= flip;
                let Ok(s) = std::str::from_utf8(&b) else {
                    continue; // not text: cannot even be offered
                };
                match BrokerCheckpoint::verify(s, &key, None) {
                    Err(_) => {}
                    Ok(other) => {
                        // Only the unsigned name may change, and only to a name whose key
                        // hash still matches, which a single bit flip cannot produce.
                        panic!("byte {i} ^ {flip:#x} accepted: {other:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn signature_checked_before_text_is_parsed() {
        // Garbage text with a valid signature parses as an error of the checkpoint, not of
        // the signature; garbage text with an invalid signature is a signature error.
        let signer = Signer::from_seed([3; 32]);
        let key = signer.verifying_key();
        let note = sign_note("not a checkpoint\n", "k", &signer).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            BrokerCheckpoint::verify(&note, &key, None),
            Err(CheckpointError::MalformedCheckpoint(_))
        ));
        let forged = note.replacen("not a", "NOT A", 1);
        assert!(matches!(
            BrokerCheckpoint::verify(&forged, &key, None),
            Err(CheckpointError::BadSignature { .. })
        ));
    }

    #[test]
    fn checkpoint_text_rules() {
        let r = B64.encode([0u8; 32]);
        let ok = |s: &str| parse_checkpoint_text(s).is_ok();
        assert!(ok(&format!("o\n0\n{r}\n")));
        assert!(ok(&format!("o\n18446744073709551615\n{r}\nx\ny\n")));
        for bad in [
            format!("o\n01\n{r}\n"),
            format!("o\n-1\n{r}\n"),
            format!("o\n18446744073709551616\n{r}\n"),
            format!("o\n1\n{r}"),
            format!("\n1\n{r}\n"),
            format!("o\n1\n{}\n", &r[..43]),
            format!("o\n1\n{r}\n\n"),
            "o\n1\n".to_string(),
        ] {
            assert!(!ok(&bad), "{bad:?}");
        }
        let signer = Signer::from_seed([1; 32]);
        assert!(sign_note("a\n\nb\n", "k", &signer).is_err());
        assert!(sign_note("a", "k", &signer).is_err());
        assert!(sign_note("a\tb\n", "k", &signer).is_err());
        assert!(sign_note("a\n", "bad name", &signer).is_err());
        assert!(sign_note("a\n", "a+b", &signer).is_err());
        assert!(
            BrokerCheckpoint::sign("o", MAX_TREE_SIZE + 1, [0; 32], Utc::now(), "k", &signer)
                .is_err()
        );
        let huge = "x".repeat(MAX_NOTE_BYTES + 1);
        assert_eq!(
            open_note(&huge, &signer.verifying_key()),
            Err(CheckpointError::TooLarge(huge.len()))
        );
    }
}
