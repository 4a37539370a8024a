//! [`ReloadingCertificate`]: the server's certificate, read again when its files change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::{TlsError, pem};
use crate::config::TlsKeys;

/// Gives every handshake the certificate and key of two PEM files, loading them again when
/// either file has changed since the last load.
///
/// The files are looked at (two `stat`s) at each handshake rather than watched: a handshake
/// costs far more, and there is no watcher thread to lose track of a Kubernetes Secret volume's
/// symlink swap. A change that does not load (a certificate written before its key, a
/// truncated file) keeps the previous certificate and is logged; the next change is tried
/// again.
#[derive(Debug)]
pub(super) struct ReloadingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    keys: TlsKeys,
    provider: Arc<CryptoProvider>,
    loaded: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// The files as they were when `key` was loaded (or last failed to load).
    stamps: [Option<Stamp>; 2],
    key: Arc<CertifiedKey>,
}

/// What tells a file's content changed without reading it: replaced (inode), rewritten
/// (modification time) or resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    // `metadata` follows symlinks: a Secret volume's `..data` swap changes the inode.
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: metadata.ino(),
        modified: metadata.modified().ok(),
        len: metadata.len(),
    })
}

impl ReloadingCertificate {
    /// Loads the files now: a certificate that does not load is an error at startup.
    pub(super) fn load(
        cert_file: &Path,
        key_file: &Path,
        keys: &TlsKeys,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamps = [stamp(cert_file), stamp(key_file)];
        let key = certified_key(cert_file, key_file, keys, &provider)?;
        Ok(ReloadingCertificate {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            keys: *keys,
            provider,
            loaded: RwLock::new(Loaded { stamps, key }),
        })
    }

    /// The certificate for a new handshake.
    fn current(&self) -> Arc<CertifiedKey> {
        let stamps = [stamp(&self.cert_file), stamp(&self.key_file)];
        {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if loaded.stamps == stamps {
                return loaded.key.clone();
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        // Another handshake may have reloaded meanwhile.
        if loaded.stamps != stamps {
            loaded.stamps = stamps;
            let section = self.keys.section;
            match certified_key(&self.cert_file, &self.key_file, &self.keys, &self.provider) {
                Ok(key) => {
                    loaded.key = key;
                    let cert_file = self.cert_file.display();
                    tracing::info!(%cert_file, "{section}: certificate reloaded");
                }
                Err(error) => tracing::warn!(
                    %error,
                    "{section}: the changed certificate files do not load; serving the previous \
                     certificate"
                ),
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The certificate chain of `cert_file` with the key of `key_file`, which must be its key.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    keys: &TlsKeys,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = pem::certificates(keys.cert_file, cert_file)?;
    let key = pem::private_key(keys.key_file, key_file)?;
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Unusable {
            key: keys.key_file,
            reason: format!(
                "{}: not a usable key of {}: {e}",
                key_file.display(),
                keys.cert_file
            ),
        })?;
    Ok(Arc::new(certified))
}
