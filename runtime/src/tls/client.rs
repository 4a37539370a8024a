//! tonic's client TLS, from `[client.tls]`.

use tonic::transport::{Certificate, ClientTlsConfig as TonicTls, Identity};

use super::{TlsError, pem};
use crate::config::ClientTlsConfig;

/// The TLS of calls to `https://` endpoints: `ca_file`'s CAs (else the system's trust store),
/// the client certificate when one is configured, and `server_name` in place of the host. The
/// files are read (and checked) now, so that a bad one fails when the client is built.
pub(crate) fn client_tls(config: &ClientTlsConfig) -> Result<TonicTls, TlsError> {
    let mut tls = TonicTls::new();
    tls = match &config.ca_file {
        Some(path) => tls.ca_certificate(Certificate::from_pem(pem::certificates_text(
            "client.tls.ca_file",
            path,
        )?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) {
        let identity = Identity::from_pem(
            pem::certificates_text("client.tls.cert_file", cert_file)?,
            pem::private_key_text("client.tls.key_file", key_file)?,
        );
        tls = tls.identity(identity);
    }
    if let Some(name) = &config.server_name {
        tls = tls.domain_name(name);
    }
    Ok(tls)
}

/// A rustls client configuration trusting `ca_file`'s CAs (else the system's trust store),
/// for HTTPS requests Keel makes itself (`auth.jwks_url`).
pub(crate) fn https_roots(
    config: &ClientTlsConfig,
) -> Result<tokio_rustls::rustls::ClientConfig, TlsError> {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let roots = match &config.ca_file {
        Some(path) => pem::roots("client.tls.ca_file", path)?,
        None => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            roots
        }
    };
    let provider = super::provider();
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Unusable {
            key: "client.tls",
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tls)
}
