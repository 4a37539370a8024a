//! [`TlsError`]: certificates and keys that do not load.

use std::path::PathBuf;

/// A TLS setting whose files do not make a usable certificate, key or CA list. Each names the
/// configuration key and the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{key}: {path}: {reason}")]
    File {
        /// The configuration key (`server.tls.cert_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files load, but rustls refuses them together (a key that is not the certificate's,
    /// an unusable CA).
    #[error("{key}: {reason}")]
    Unusable {
        /// The configuration key the problem is about.
        key: &'static str,
        /// rustls' reason.
        reason: String,
    },
}
