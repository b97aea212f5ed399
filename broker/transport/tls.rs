//! The TLS client configuration: the network's CA as the only trusted root, and the
//! participant's certificate and key as the client identity.
//!
//! Guarantees: no operating-system or bundled root is ever trusted (the root store starts
//! empty and holds only the certificates of the CA file), so a server certificate from any
//! other CA is refused; every file problem is reported with the file's path and role before
//! anything connects (unreadable, no PEM block of the right type, a key that does not match
//! the certificate).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::config::TransportConfig;
use super::error::TransportError;

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

fn bad(what: &'static str, path: &Path, problem: impl Into<String>) -> TransportError {
    TransportError::BadPem {
        what,
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(what, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(what, path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// Builds the rustls client configuration from the files named in `config`.
pub fn client_config(config: &TransportConfig) -> Result<Arc<ClientConfig>, TransportError> {
    const CA: &str = "CA certificate";
    const CERT: &str = "client certificate";
    const KEY: &str = "client key";

    let mut roots = RootCertStore::empty();
    for cert in certificates(CA, &config.ca_pem)? {
        roots.add(cert).map_err(|e| {
            bad(
                CA,
                &config.ca_pem,
                format!("not a usable CA certificate: {e}"),
            )
        })?;
    }

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);

    let client = match &config.identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = certificates(CERT, &id.cert_pem)?;
            let key_pem = read(KEY, &id.key_pem)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                bad(
                    KEY,
                    &id.key_pem,
                    format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM block): {e}"),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                bad(
                    CERT,
                    &id.cert_pem,
                    format!("does not go with the key {}: {e}", id.key_pem.display()),
                )
            })?
        }
    };
    Ok(Arc::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        let config = TransportConfig::new(
            5671,
            "v",
            &ca,
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
        );
        let err = client_config(&config).expect_err("missing CA");
        assert!(
            matches!(
                err,
                TransportError::ReadFile {
                    what: "CA certificate",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("ca.pem"), "{err}");

        std::fs::write(&ca, "not a certificate\n").expect("write");
        let err = client_config(&config).expect_err("empty CA");
        assert!(
            matches!(
                err,
                TransportError::BadPem {
                    what: "CA certificate",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_real_ca_and_identity_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("ca");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf_params = rcgen::CertificateParams::new(vec!["x.test".to_owned()]).expect("params");
        let issuer = rcgen::Issuer::from_params(&params, &ca_key);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
        let (ca_path, cert, key) = (
            dir.path().join("ca.pem"),
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
        );
        std::fs::write(&ca_path, ca.pem()).expect("write");
        std::fs::write(&cert, leaf.pem()).expect("write");
        std::fs::write(&key, leaf_key.serialize_pem()).expect("write");
        let config = TransportConfig::new(5671, "v", &ca_path, &cert, &key);
        client_config(&config).expect("loads");

        // The CA's key with the leaf certificate: refused, naming the certificate file.
        std::fs::write(&key, ca_key.serialize_pem()).expect("write");
        let err = client_config(&config).expect_err("mismatched key");
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
