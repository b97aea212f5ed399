//! ed25519 signatures over the exact body bytes, key ids, key files and the `x-sig` /
//! `x-key-id` headers.
//!
//! What this module guarantees:
//! - A signature covers the body bytes exactly as sent: nothing is canonicalised or
//!   re-serialised, so any language that holds the same bytes can verify them.
//! - Verification is always [`VerifyingKey::verify_strict`]: a non-canonical `S`, a
//!   small-order `R` or a small-order (weak) public key is refused, so one message has one
//!   valid signature per key and signatures cannot be malleated.
//! - Encodings are canonical: the signature in `x-sig` and the keys in key files and in the
//!   registry are standard base64 *with* padding, and a non-canonical spelling (missing
//!   padding, stray trailing bits) is refused.
//! - A [`Signer`] never shows its secret: its `Debug` prints only the key id, no error of this
//!   module carries key material, and the seed is wiped when the key is dropped
//!   (ed25519-dalek's `zeroize`).
//!
//! Key files, simple for every language:
//! - `<DIR>/<participant id>.key`: standard base64 of the 32-byte seed and a newline, mode
//!   0600, created with `create_new` (an existing key is never overwritten), fsync'd.
//! - `<DIR>/<participant id>.pub`: standard base64 of the 32-byte public key and a newline.
//!
//! On Unix, [`Signer::load`] refuses a private key file that group or others may read, as
//! OpenSSH does: a key that may have leaked must be replaced, not used.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer as _;
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use thiserror::Error;

use crate::ids::{KeyId, ParticipantId};

/// AMQP header carrying the standard base64 (with padding) of the 64-byte signature.
pub const HEADER_SIG: &str = "x-sig";
/// AMQP header carrying the [`KeyId`] of the signing key.
pub const HEADER_KEY_ID: &str = "x-key-id";

/// Extension of a private key file (base64 of the 32-byte seed).
pub const PRIVATE_KEY_EXT: &str = "key";
/// Extension of a public key file (base64 of the 32-byte public key).
pub const PUBLIC_KEY_EXT: &str = "pub";

/// Why a key or a signature could not be used. No variant carries key material.
#[derive(Debug, Error)]
pub enum SigningError {
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: already exists; refusing to overwrite a key")]
    KeyExists { path: PathBuf },
    #[error("{path}: not a private key file (expected standard base64 of a 32-byte seed)")]
    MalformedKeyFile { path: PathBuf },
    #[error(
        "{path}: mode {mode:o} lets group or others read the private key; \
         it must be 0600 (or stricter), and a key that may have leaked must be replaced"
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("signature is not standard base64 (with padding) of 64 bytes")]
    MalformedSignature,
    #[error("public key is not standard base64 (with padding) of 32 bytes")]
    MalformedPublicKey,
    #[error("public key is not a valid ed25519 point")]
    InvalidPublicKey,
    #[error("public key is weak (small order) and cannot be used")]
    WeakPublicKey,
    #[error("signature does not verify over the body bytes")]
    BadSignature,
}

/// A participant's signing key with its key id. `Debug` shows the key id only.
pub struct Signer {
    key: SigningKey,
    key_id: KeyId,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh key, its seed from the operating system's random number generator.
    pub fn generate() -> Result<Signer, SigningError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(SigningError::Random)?;
        let signer = Signer::from_seed(seed);
        seed.fill(0);
        Ok(signer)
    }

    /// The key of a 32-byte seed (RFC 8032's private key).
    pub fn from_seed(seed: [u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(&seed);
        let key_id = KeyId::of_public_key(key.verifying_key().as_bytes());
        Signer { key, key_id }
    }

    /// Loads a private key file (standard base64 of the 32-byte seed, surrounding whitespace
    /// ignored). On Unix, refuses a file that group or others may read.
    pub fn load(path: &Path) -> Result<Signer, SigningError> {
        let io = |source| SigningError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SigningError::KeyFilePermissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        // A key file is ~45 bytes; read at most a little more so a wrong path cannot eat memory.
        let mut text = String::new();
        (&mut file)
            .take(256)
            .read_to_string(&mut text)
            .map_err(|_| SigningError::MalformedKeyFile {
                path: path.to_owned(),
            })?;
        let decoded = B64.decode(text.trim());
        text.clear();
        let mut seed: [u8; 32] = match decoded {
            Ok(bytes) => bytes
                .try_into()
                .map_err(|_| SigningError::MalformedKeyFile {
                    path: path.to_owned(),
                })?,
            Err(_) => {
                return Err(SigningError::MalformedKeyFile {
                    path: path.to_owned(),
                });
            }
        };
        let signer = Signer::from_seed(seed);
        seed.fill(0);
        Ok(signer)
    }

    /// Writes `<dir>/<participant>.key` (mode 0600) and `<dir>/<participant>.pub`, each
    /// created new (never overwriting) and fsync'd, then fsyncs the directory. Refuses before
    /// writing anything if either file exists.
    pub fn write_key_files(
        &self,
        dir: &Path,
        participant: &ParticipantId,
    ) -> Result<KeyFilePaths, SigningError> {
        let paths = KeyFilePaths::new(dir, participant);
        for path in [&paths.private, &paths.public] {
            if path.symlink_metadata().is_ok() {
                return Err(SigningError::KeyExists { path: path.clone() });
            }
        }
        let seed_b64 = B64.encode(self.key.as_bytes());
        write_new(&paths.private, format!("{seed_b64}\n").as_bytes(), 0o600)?;
        write_new(
            &paths.public,
            format!("{}\n", self.public_key_b64()).as_bytes(),
            0o644,
        )?;
        #[cfg(unix)]
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| SigningError::Io {
                path: dir.to_owned(),
                source,
            })?;
        Ok(paths)
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Standard base64 (with padding) of the 32-byte public key, as in the registry.
    pub fn public_key_b64(&self) -> String {
        encode_public_key_b64(&self.key.verifying_key())
    }

    /// Signs the body bytes exactly as they will be sent.
    pub fn sign(&self, body: &[u8]) -> Signature {
        self.key.sign(body)
    }

    /// [`Signer::sign`], encoded for the `x-sig` header.
    pub fn sign_b64(&self, body: &[u8]) -> String {
        encode_signature_b64(&self.sign(body))
    }
}

/// Where the key files of one participant live in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilePaths {
    /// `<dir>/<participant>.key`
    pub private: PathBuf,
    /// `<dir>/<participant>.pub`
    pub public: PathBuf,
}

impl KeyFilePaths {
    pub fn new(dir: &Path, participant: &ParticipantId) -> KeyFilePaths {
        KeyFilePaths {
            private: dir.join(format!("{participant}.{PRIVATE_KEY_EXT}")),
            public: dir.join(format!("{participant}.{PUBLIC_KEY_EXT}")),
        }
    }
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), SigningError> {
    let io = |source| SigningError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            SigningError::KeyExists {
                path: path.to_owned(),
            }
        } else {
            io(source)
        }
    })?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Standard base64 (with padding) of a signature, for the `x-sig` header.
pub fn encode_signature_b64(sig: &Signature) -> String {
    B64.encode(sig.to_bytes())
}

/// Decodes an `x-sig` header: canonical standard base64 (with padding) of exactly 64 bytes.
pub fn decode_signature_b64(text: &str) -> Result<Signature, SigningError> {
    let bytes = B64
        .decode(text)
        .map_err(|_| SigningError::MalformedSignature)?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| SigningError::MalformedSignature)?;
    Ok(Signature::from_bytes(&bytes))
}

/// Standard base64 (with padding) of a 32-byte public key.
pub fn encode_public_key_b64(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// Decodes a public key: canonical standard base64 (with padding) of 32 bytes that are a
/// valid, non-weak ed25519 point.
pub fn decode_public_key_b64(text: &str) -> Result<VerifyingKey, SigningError> {
    let bytes = B64
        .decode(text)
        .map_err(|_| SigningError::MalformedPublicKey)?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| SigningError::MalformedPublicKey)?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| SigningError::InvalidPublicKey)?;
    if key.is_weak() {
        return Err(SigningError::WeakPublicKey);
    }
    Ok(key)
}

/// Verifies a signature over the exact body bytes, strictly (see the module documentation).
pub fn verify(key: &VerifyingKey, body: &[u8], sig: &Signature) -> Result<(), SigningError> {
    key.verify_strict(body, sig)
        .map_err(|_| SigningError::BadSignature)
}

/// The [`KeyId`] of a public key.
pub fn key_id_of(key: &VerifyingKey) -> KeyId {
    KeyId::of_public_key(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1, TEST 1.
    const RFC_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC_SIG_EMPTY: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn hex32(s: &str) -> [u8; 32] {
        let v = hex::decode(s).unwrap_or_default();
        v.try_into().unwrap_or([0u8; 32])
    }

    fn rfc_signer() -> Signer {
        Signer::from_seed(hex32(RFC_SEED))
    }

    #[test]
    fn rfc8032_test1_known_answer() {
        let signer = rfc_signer();
        assert_eq!(hex::encode(signer.verifying_key().as_bytes()), RFC_PUBLIC);
        let sig = signer.sign(b"");
        assert_eq!(hex::encode(sig.to_bytes()), RFC_SIG_EMPTY);
        assert!(verify(&signer.verifying_key(), b"", &sig).is_ok());
        assert!(verify(&signer.verifying_key(), b"x", &sig).is_err());
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Vector {
        #[allow(dead_code)]
        description: String,
        seed_hex: String,
        public_key_b64: String,
        key_id: String,
        body: String,
        signature_b64: String,
    }

    fn vector() -> Vector {
        let text = include_str!("../schemas/test-vectors/signature.json");
        serde_json::from_str(text).unwrap_or_else(|e| panic!("signature.json: {e}"))
    }

    #[test]
    fn signature_vector_file_agrees() {
        let v = vector();
        assert_eq!(v.seed_hex, RFC_SEED);
        let signer = Signer::from_seed(hex32(&v.seed_hex));
        assert_eq!(signer.public_key_b64(), v.public_key_b64);
        assert_eq!(signer.key_id().as_str(), v.key_id);
        assert_eq!(signer.sign_b64(v.body.as_bytes()), v.signature_b64);
        let key = decode_public_key_b64(&v.public_key_b64).unwrap_or_else(|e| panic!("{e}"));
        let sig = decode_signature_b64(&v.signature_b64).unwrap_or_else(|e| panic!("{e}"));
        assert!(verify(&key, v.body.as_bytes(), &sig).is_ok());
        // The body is a valid envelope of the contract.
        if let Err(e) = crate::wire::decode(v.body.as_bytes()) {
            panic!("signature.json body does not decode: {e}");
        }
        // One byte more (a trailing newline) and it no longer verifies: bytes, not JSON.
        assert!(verify(&key, format!("{}\n", v.body).as_bytes(), &sig).is_err());
    }

    /// ed25519's group order L, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    #[test]
    fn malleated_signature_s_plus_l_is_rejected() {
        let signer = rfc_signer();
        let body = b"{\"kind\":\"referral\"}";
        let sig = signer.sign(body).to_bytes();
        // S' = S + L (little-endian add over the last 32 bytes). S < L < 2^253, so no overflow.
        let mut malleated = sig;
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
            malleated[32 + i] = (sum & 0xff) as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        assert_ne!(malleated, sig);
        let key = signer.verifying_key();
        assert!(verify(&key, body, &Signature::from_bytes(&sig)).is_ok());
        assert!(matches!(
            verify(&key, body, &Signature::from_bytes(&malleated)),
            Err(SigningError::BadSignature)
        ));
    }

    #[test]
    fn weak_public_key_is_refused() {
        // The identity point (y = 1): small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            decode_public_key_b64(&B64.encode(identity)),
            Err(SigningError::WeakPublicKey)
        ));
    }

    #[test]
    fn encodings_are_canonical() {
        let signer = rfc_signer();
        let b64 = signer.sign_b64(b"abc");
        assert_eq!(b64.len(), 88);
        assert!(decode_signature_b64(&b64).is_ok());
        assert!(decode_signature_b64(b64.trim_end_matches('=')).is_err());
        assert!(decode_signature_b64(&format!(" {b64}")).is_err());
        assert!(decode_signature_b64(&B64.encode([0u8; 63])).is_err());
        let pk = signer.public_key_b64();
        assert!(decode_public_key_b64(&pk).is_ok());
        assert!(decode_public_key_b64(pk.trim_end_matches('=')).is_err());
        assert!(decode_public_key_b64(&B64.encode([1u8; 31])).is_err());
        // Non-zero trailing bits: another spelling of the same 32 bytes is refused.
        assert_eq!(pk, "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
        assert!(decode_public_key_b64("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURp=").is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let signer = rfc_signer();
        let shown = format!("{signer:?}");
        assert!(shown.contains(signer.key_id().as_str()));
        assert!(!shown.contains("9d61"), "{shown}");
        assert!(!shown.to_lowercase().contains(&RFC_SEED[..8]));
    }

    #[test]
    fn key_files_round_trip_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let participant: ParticipantId = "fr.hotline".parse().unwrap_or_else(|e| panic!("{e}"));
        let signer = Signer::generate().unwrap_or_else(|e| panic!("{e}"));
        let paths = signer
            .write_key_files(dir.path(), &participant)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(paths.private, dir.path().join("fr.hotline.key"));
        assert_eq!(paths.public, dir.path().join("fr.hotline.pub"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&paths.private)
                .unwrap_or_else(|e| panic!("{e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = Signer::load(&paths.private).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.key_id(), signer.key_id());
        let public = std::fs::read_to_string(&paths.public).unwrap_or_default();
        assert_eq!(public, format!("{}\n", signer.public_key_b64()));

        let before = std::fs::read(&paths.private).unwrap_or_default();
        let other = Signer::generate().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            other.write_key_files(dir.path(), &participant),
            Err(SigningError::KeyExists { .. })
        ));
        assert_eq!(std::fs::read(&paths.private).unwrap_or_default(), before);
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_a_readable_key_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("x.key");
        std::fs::write(&path, format!("{}\n", B64.encode([5u8; 32])))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Signer::load(&path).map(|_| ()).unwrap_err();
        assert!(matches!(
            err,
            SigningError::KeyFilePermissions { mode: 0o644, .. }
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(Signer::load(&path).is_ok());
    }

    #[test]
    fn load_refuses_garbage_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("x.key");
        let mut f = OpenOptions::new();
        f.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            f.mode(0o600);
        }
        let mut file = f.open(&path).unwrap_or_else(|e| panic!("{e}"));
        file.write_all(b"c2VjcmV0LXNob3J0\n")
            .unwrap_or_else(|e| panic!("{e}"));
        drop(file);
        let err = Signer::load(&path).map(|_| ()).unwrap_err();
        assert!(matches!(err, SigningError::MalformedKeyFile { .. }));
        assert!(!err.to_string().contains("c2VjcmV0"));
    }
}
