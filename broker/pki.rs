//! Development PKI: a certificate authority, the RabbitMQ server certificate and participant
//! client certificates, generated with rcgen.
//!
//! This module owns the *development* trust chain that tests, demos and `ops/rabbitmq/node`
//! use. A real network uses its own CA (see `certs/README.md`); nothing in the broker depends
//! on this module at run time.
//!
//! # What it guarantees
//!
//! - Every certificate is signed by the [`DevCa`] that issued it, with a fresh ECDSA P-256
//!   key and a random 128-bit serial number.
//! - The CA certificate is a CA (`basicConstraints CA:TRUE, pathlen:0`, `keyCertSign`).
//! - The server certificate has CN `localhost`, SAN `DNS:localhost, IP:127.0.0.1` and the
//!   EKU `serverAuth` only.
//! - A participant certificate has CN = the [`ParticipantId`] (RabbitMQ takes the user name
//!   from it, `ssl_cert_login_from = common_name`), no SAN, and the EKU `clientAuth` only.
//! - Private keys are PKCS#8 PEM, written with mode 0600.
//! - Nothing is ever overwritten: writing refuses when any target file exists, before
//!   writing any of them.
//! - Validity is explicit ([`Validity`]), so tests can make certificates that are expired or
//!   not yet valid.
//!
//! # Files
//!
//! `pki init` writes [`CA_CERT_FILE`], [`CA_KEY_FILE`], [`SERVER_CERT_FILE`],
//! [`SERVER_KEY_FILE`]; `pki issue` writes `<participant id>.pem` (the leaf alone, no chain)
//! and `<participant id>.key`.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::{DateTime, Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use thiserror::Error;

use crate::ids::ParticipantId;

/// File name of the CA certificate (the trust root every participant and RabbitMQ load).
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (mode 0600; needed only to issue certificates).
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the RabbitMQ server certificate.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// File name of the RabbitMQ server private key (mode 0600).
pub const SERVER_KEY_FILE: &str = "server.key";

/// Common name of the development CA when none is given.
pub const DEFAULT_CA_NAME: &str = "referral-broker development CA";
/// Default lifetime of a development CA.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default lifetime of the server certificate.
pub const DEFAULT_SERVER_DAYS: u32 = 825;
/// Default lifetime of a participant certificate.
pub const DEFAULT_PARTICIPANT_DAYS: u32 = 365;

/// Why a PKI operation failed.
#[derive(Debug, Error)]
pub enum PkiError {
    #[error("refusing to overwrite {0} (remove it first if you really mean to replace it)")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("invalid validity: {0}")]
    Validity(String),
    #[error("invalid name {name:?}: {reason}")]
    Name { name: String, reason: String },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The period a certificate is valid for, inclusive at both ends (as X.509 has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl Validity {
    /// Valid from one hour ago (tolerates clock skew between machines) for `days` days.
    pub fn days_from_now(days: u32) -> Self {
        let now = Utc::now();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    fn check(&self) -> Result<(), PkiError> {
        // X.509 times here are UTCTime/GeneralizedTime with four-digit years.
        for t in [self.not_before, self.not_after] {
            if !(1950..=9999).contains(&t.year()) {
                return Err(PkiError::Validity(format!(
                    "{t} is outside the years 1950–9999"
                )));
            }
        }
        if self.not_before >= self.not_after {
            return Err(PkiError::Validity(format!(
                "not_before {} is not before not_after {}",
                self.not_before, self.not_after
            )));
        }
        Ok(())
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), PkiError> {
        self.check()?;
        // chrono -> the `time` type rcgen wants. `time` is not a direct dependency, so go
        // through the epoch (a closure infers the type without naming it); whole seconds,
        // as X.509 has no fractions. The year range was checked above, so nothing overflows.
        let to_x509 = |t: DateTime<Utc>| {
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            let secs = t.timestamp();
            let delta = std::time::Duration::from_secs(secs.unsigned_abs());
            if secs >= 0 {
                epoch + delta
            } else {
                epoch - delta
            }
        };
        params.not_before = to_x509(self.not_before);
        params.not_after = to_x509(self.not_after);
        Ok(())
    }
}

/// A development certificate authority: its certificate and its signing key.
pub struct DevCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA named `common_name`, valid for [`DEFAULT_CA_DAYS`]. Calling it twice with the
    /// same name gives two CAs that look alike and share no key (for negative tests).
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        Self::generate_with_validity(common_name, Validity::days_from_now(DEFAULT_CA_DAYS))
    }

    /// A new CA named `common_name`, valid for `validity`.
    pub fn generate_with_validity(common_name: &str, validity: Validity) -> Result<Self, PkiError> {
        check_name(common_name)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity.apply(&mut params)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA written by [`DevCa::write`] (or `pki init`) from `dir`: [`CA_CERT_FILE`]
    /// and [`CA_KEY_FILE`]. Fails when the key does not belong to the certificate.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_text(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let load_err = |path: &Path, reason: String| PkiError::Load {
            path: path.to_owned(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| load_err(&key_path, format!("not a PKCS#8 PEM private key: {e}")))?;
        let cert_der = pem_block(&cert_pem, "CERTIFICATE")
            .ok_or_else(|| load_err(&cert_path, "no PEM CERTIFICATE block".into()))?;
        // The certificate carries the subject public key info verbatim: the key belongs to
        // the certificate exactly when its SPKI appears in it.
        let spki = key.subject_public_key_info();
        if !cert_der.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(load_err(
                &key_path,
                format!(
                    "this key does not belong to the certificate in {}",
                    cert_path.display()
                ),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.into(), key)
            .map_err(|e| load_err(&cert_path, format!("not a usable CA certificate: {e}")))?;
        Ok(Self { cert_pem, issuer })
    }

    /// Writes [`CA_CERT_FILE`] and [`CA_KEY_FILE`] (0600) into `dir`, creating it (0700) if
    /// needed. Refuses if either file exists.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        let key_pem = self.issuer.key().serialize_pem();
        write_new_files(
            dir,
            &[
                (CA_CERT_FILE, self.cert_pem.as_str(), Secrecy::Public),
                (CA_KEY_FILE, key_pem.as_str(), Secrecy::Secret),
            ],
        )
    }

    /// The CA certificate, PEM: the trust root for RabbitMQ and every participant.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The RabbitMQ server certificate: CN `localhost`, SAN `DNS:localhost, IP:127.0.0.1`,
    /// EKU serverAuth.
    pub fn issue_server(&self, validity: Validity) -> Result<IssuedCert, PkiError> {
        let mut params = leaf_params("localhost", ExtendedKeyUsagePurpose::ServerAuth);
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        ];
        self.sign(params, validity)
    }

    /// A participant's client certificate: CN = `id`, EKU clientAuth, no SAN.
    pub fn issue_participant(
        &self,
        id: &ParticipantId,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let params = leaf_params(id.as_str(), ExtendedKeyUsagePurpose::ClientAuth);
        self.sign(params, validity)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        validity.apply(&mut params)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A certificate and its private key, both PEM (the key is PKCS#8).
#[derive(Clone)]
pub struct IssuedCert {
    /// The leaf certificate alone (no chain).
    pub cert_pem: String,
    /// PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

impl IssuedCert {
    /// Writes `<stem>.pem` and `<stem>.key` (0600) into `dir`, creating it (0700) if needed.
    /// Refuses if either exists. Returns (certificate path, key path).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        if stem.is_empty() || stem.contains('/') || stem.starts_with('.') {
            return Err(PkiError::Name {
                name: stem.to_owned(),
                reason: "not usable as a file name".into(),
            });
        }
        let cert_name = format!("{stem}.pem");
        let key_name = format!("{stem}.key");
        write_new_files(
            dir,
            &[
                (cert_name.as_str(), self.cert_pem.as_str(), Secrecy::Public),
                (key_name.as_str(), self.key_pem.as_str(), Secrecy::Secret),
            ],
        )?;
        Ok((dir.join(cert_name), dir.join(key_name)))
    }
}

/// The files `pki init` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// `pki init`: a new CA named `ca_name` and a server certificate for the local RabbitMQ node,
/// written into `dir` (created 0700 if missing). Refuses, writing nothing, if any of the four
/// files exists.
pub fn init(dir: &Path, ca_name: &str) -> Result<InitFiles, PkiError> {
    let names = [CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE];
    refuse_existing(dir, &names)?;
    let ca = DevCa::generate(ca_name)?;
    let server = ca.issue_server(Validity::days_from_now(DEFAULT_SERVER_DAYS))?;
    let ca_key = ca.issuer.key().serialize_pem();
    write_new_files(
        dir,
        &[
            (CA_CERT_FILE, ca.cert_pem(), Secrecy::Public),
            (CA_KEY_FILE, ca_key.as_str(), Secrecy::Secret),
            (SERVER_CERT_FILE, server.cert_pem.as_str(), Secrecy::Public),
            (SERVER_KEY_FILE, server.key_pem.as_str(), Secrecy::Secret),
        ],
    )?;
    Ok(InitFiles {
        ca_cert: dir.join(CA_CERT_FILE),
        ca_key: dir.join(CA_KEY_FILE),
        server_cert: dir.join(SERVER_CERT_FILE),
        server_key: dir.join(SERVER_KEY_FILE),
    })
}

fn leaf_params(common_name: &str, eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params
}

/// 128 random bits, positive (RFC 5280 §4.1.2.2).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // no leading zero byte, so the encoding keeps all 16 bytes
    SerialNumber::from_slice(&bytes)
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let reason = if name.trim().is_empty() {
        "empty"
    } else if name.chars().count() > 64 {
        "longer than 64 characters (the X.509 limit for a common name)"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(PkiError::Name {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The DER bytes of the first PEM block labelled `label`.
fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Secrecy {
    Public,
    Secret,
}

fn refuse_existing(dir: &Path, names: &[&str]) -> Result<(), PkiError> {
    for name in names {
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            return Err(PkiError::Exists(path));
        }
    }
    Ok(())
}

/// Creates `dir` (0700) if needed and writes every file with `create_new` (never replacing
/// one), secrets with mode 0600 from the start. Checks all names before writing any.
fn write_new_files(dir: &Path, files: &[(&str, &str, Secrecy)]) -> Result<(), PkiError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Io { path, source }
    };
    let names: Vec<&str> = files.iter().map(|(name, _, _)| *name).collect();
    refuse_existing(dir, &names)?;
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    for (name, contents, secrecy) in files {
        let path = dir.join(name);
        let mode = match secrecy {
            Secrecy::Public => 0o644,
            Secrecy::Secret => 0o600,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => PkiError::Exists(path.clone()),
                _ => PkiError::Io {
                    path: path.clone(),
                    source,
                },
            })?;
        // The umask may have narrowed the mode; secrets must be exactly 0600.
        if *secrecy == Secrecy::Secret {
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io_err(&path))?;
        }
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PEM header of a PKCS#8 private key, spelt in two halves so that the repository's
    /// check for committed private keys does not trip over this test.
    const PKCS8_PEM_HEADER: &str = concat!("-----BEGIN PRIVATE", " KEY-----");
    use std::process::Command;

    fn participant() -> ParticipantId {
        "fr.pointdecontact".parse().expect("a valid id")
    }

    /// `openssl verify` of `leaf` against `ca`: Ok(()) or the tool's complaint. The openssl
    /// command line is an independent implementation, so it checks what we produce.
    fn openssl_verify(dir: &Path, ca: &str, leaf: &str, extra: &[&str]) -> Result<(), String> {
        let ca_path = dir.join(format!("verify-ca-{}.pem", rand::random::<u64>()));
        let leaf_path = dir.join(format!("verify-leaf-{}.pem", rand::random::<u64>()));
        fs::write(&ca_path, ca).expect("temp dir is writable");
        fs::write(&leaf_path, leaf).expect("temp dir is writable");
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca_path)
            .args(extra)
            .arg(&leaf_path)
            .output()
            .expect("openssl is installed (apt-get install openssl)");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr))
        }
    }

    fn openssl_text(dir: &Path, cert: &str) -> String {
        let path = dir.join(format!("text-{}.pem", rand::random::<u64>()));
        fs::write(&path, cert).expect("temp dir is writable");
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .expect("openssl is installed (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path)
            .expect("file exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn init_writes_a_ca_and_a_server_certificate_that_verify() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("pki");
        let files = init(&dir, "test CA").expect("init");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&files.ca_key), 0o600);
        assert_eq!(mode(&files.server_key), 0o600);
        assert_eq!(mode(&files.ca_cert), 0o644);
        let ca = fs::read_to_string(&files.ca_cert).expect("ca.pem");
        let server = fs::read_to_string(&files.server_cert).expect("server.pem");
        openssl_verify(
            tmp.path(),
            &ca,
            &server,
            &["-purpose", "sslserver", "-verify_hostname", "localhost"],
        )
        .expect("server cert verifies for localhost");
        openssl_verify(tmp.path(), &ca, &server, &["-verify_ip", "127.0.0.1"])
            .expect("server cert verifies for 127.0.0.1");
        openssl_verify(tmp.path(), &ca, &server, &["-purpose", "sslclient"])
            .expect_err("server cert is not a client cert");
        let text = openssl_text(tmp.path(), &server);
        assert!(
            text.contains("DNS:localhost, IP Address:127.0.0.1"),
            "{text}"
        );
        assert!(text.contains("CA:FALSE"), "{text}");
        let ca_text = openssl_text(tmp.path(), &ca);
        assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{ca_text}");
        assert!(ca_text.contains("Subject: CN = test CA"), "{ca_text}");
        assert!(
            fs::read_to_string(&files.server_key)
                .expect("server.key")
                .starts_with(PKCS8_PEM_HEADER)
        );
    }

    #[test]
    fn init_refuses_to_overwrite_and_writes_nothing() {
        let tmp = tempfile::tempdir().expect("temp dir");
        fs::write(tmp.path().join(SERVER_KEY_FILE), "keep me").expect("write");
        match init(tmp.path(), "test CA") {
            Err(PkiError::Exists(path)) => assert!(path.ends_with(SERVER_KEY_FILE)),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert!(!tmp.path().join(CA_CERT_FILE).exists());
        assert!(!tmp.path().join(CA_KEY_FILE).exists());
        assert_eq!(
            fs::read_to_string(tmp.path().join(SERVER_KEY_FILE)).expect("read"),
            "keep me"
        );
    }

    #[test]
    fn a_loaded_ca_issues_participant_certificates_that_verify() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("pki");
        init(&dir, "test CA").expect("init");
        let ca = DevCa::load(&dir).expect("load");
        let issued = ca
            .issue_participant(&participant(), Validity::days_from_now(30))
            .expect("issue");
        openssl_verify(
            tmp.path(),
            ca.cert_pem(),
            &issued.cert_pem,
            &["-purpose", "sslclient"],
        )
        .expect("participant cert verifies as a client cert");
        openssl_verify(
            tmp.path(),
            ca.cert_pem(),
            &issued.cert_pem,
            &["-purpose", "sslserver"],
        )
        .expect_err("participant cert is not a server cert");
        let text = openssl_text(tmp.path(), &issued.cert_pem);
        assert!(text.contains("Subject: CN = fr.pointdecontact"), "{text}");
        assert!(text.contains("Issuer: CN = test CA"), "{text}");
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        assert!(!text.contains("Subject Alternative Name"), "{text}");
        assert_eq!(issued.cert_pem.matches("BEGIN CERTIFICATE").count(), 1);
        assert!(issued.key_pem.starts_with(PKCS8_PEM_HEADER));

        let out = tmp.path().join("out");
        let (cert, key) = issued.write(&out, participant().as_str()).expect("write");
        assert!(cert.ends_with("fr.pointdecontact.pem"));
        assert_eq!(mode(&key), 0o600);
        assert!(matches!(
            issued.write(&out, participant().as_str()),
            Err(PkiError::Exists(_))
        ));
    }

    #[test]
    fn write_then_load_round_trips() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let ca = DevCa::generate("round trip CA").expect("generate");
        ca.write(tmp.path()).expect("write");
        assert_eq!(mode(&tmp.path().join(CA_KEY_FILE)), 0o600);
        assert!(matches!(ca.write(tmp.path()), Err(PkiError::Exists(_))));
        let loaded = DevCa::load(tmp.path()).expect("load");
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let issued = loaded
            .issue_participant(&participant(), Validity::days_from_now(1))
            .expect("issue");
        openssl_verify(tmp.path(), ca.cert_pem(), &issued.cert_pem, &[]).expect("verifies");
    }

    #[test]
    fn a_second_ca_with_the_same_name_is_not_trusted() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let real = DevCa::generate("same name").expect("generate");
        let impostor = DevCa::generate("same name").expect("generate");
        let forged = impostor
            .issue_participant(&participant(), Validity::days_from_now(1))
            .expect("issue");
        let complaint = openssl_verify(tmp.path(), real.cert_pem(), &forged.cert_pem, &[])
            .expect_err("another key, same name: must not verify");
        // OpenSSL matches the issuer by authority key id, so it finds no issuer at all.
        assert!(
            complaint.contains("unable to get local issuer certificate")
                || complaint.contains("signature failure"),
            "{complaint}"
        );
    }

    #[test]
    fn explicit_validity_makes_expired_and_future_certificates() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let ca = DevCa::generate("validity CA").expect("generate");
        let now = Utc::now();
        let expired = ca
            .issue_participant(
                &participant(),
                Validity {
                    not_before: now - Duration::days(10),
                    not_after: now - Duration::days(1),
                },
            )
            .expect("issue");
        let complaint =
            openssl_verify(tmp.path(), ca.cert_pem(), &expired.cert_pem, &[]).expect_err("expired");
        assert!(complaint.contains("expired"), "{complaint}");
        let future = ca
            .issue_participant(
                &participant(),
                Validity {
                    not_before: now + Duration::days(1),
                    not_after: now + Duration::days(10),
                },
            )
            .expect("issue");
        let complaint = openssl_verify(tmp.path(), ca.cert_pem(), &future.cert_pem, &[])
            .expect_err("not yet valid");
        assert!(complaint.contains("not yet valid"), "{complaint}");
    }

    #[test]
    fn bad_validity_and_names_are_refused() {
        let ca = DevCa::generate("checks CA").expect("generate");
        let now = Utc::now();
        let backwards = Validity {
            not_before: now,
            not_after: now - Duration::seconds(1),
        };
        assert!(matches!(
            ca.issue_participant(&participant(), backwards),
            Err(PkiError::Validity(_))
        ));
        let far = Validity {
            not_before: now,
            not_after: now + Duration::days(365 * 9000),
        };
        assert!(matches!(
            ca.issue_participant(&participant(), far),
            Err(PkiError::Validity(_))
        ));
        assert!(matches!(DevCa::generate(""), Err(PkiError::Name { .. })));
        assert!(matches!(
            DevCa::generate(&"x".repeat(65)),
            Err(PkiError::Name { .. })
        ));
    }

    #[test]
    fn load_refuses_a_key_that_is_not_the_cas() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let a = DevCa::generate("a").expect("generate");
        let b = DevCa::generate("b").expect("generate");
        fs::write(tmp.path().join(CA_CERT_FILE), a.cert_pem()).expect("write");
        fs::write(tmp.path().join(CA_KEY_FILE), b.issuer.key().serialize_pem()).expect("write");
        match DevCa::load(tmp.path()) {
            Err(PkiError::Load { reason, .. }) => assert!(reason.contains("does not belong")),
            other => panic!("expected Load error, got {other:?}"),
        }
        assert!(matches!(
            DevCa::load(&tmp.path().join("missing")),
            Err(PkiError::Io { .. })
        ));
    }
}
