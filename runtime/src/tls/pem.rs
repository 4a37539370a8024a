//! Reading PEM files into rustls' types, with errors that name the key and file.

use std::path::Path;

use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Every certificate of the PEM file `path` (of configuration key `key`); at least one.
pub(super) fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(key, path, &read(key, path)?)
}

/// The private key of the PEM file `path` (PKCS#8, PKCS#1 or SEC1).
pub(super) fn private_key(
    key: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_private_key(key, path, &read(key, path)?)
}

/// The certificates of `path` as a trust store (`client_ca_file`, `ca_file`).
pub(super) fn roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(key, path)? {
        roots.add(ca).map_err(|e| TlsError::Unusable {
            key,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The PEM text of a certificate file, checked to hold a certificate, for tonic's client types,
/// which take PEM text and parse it only when a channel is made.
pub(super) fn certificates_text(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let text = read(key, path)?;
    parse_certificates(key, path, &text)?;
    Ok(text)
}

/// The PEM text of a private key file, checked to hold a key (see [`certificates_text`]).
pub(super) fn private_key_text(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let text = read(key, path)?;
    parse_private_key(key, path, &text)?;
    Ok(text)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(key, path, e.to_string()))
}

fn parse_certificates(
    key: &'static str,
    path: &Path,
    text: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e.to_string()))?;
    if certificates.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate".to_owned()));
    }
    Ok(certificates)
}

fn parse_private_key(
    key: &'static str,
    path: &Path,
    text: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(text).map_err(|e| file_error(key, path, e.to_string()))
}

fn file_error(key: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::File {
        key,
        path: path.to_owned(),
        reason,
    }
}
