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
        Some(path) => {
            pem::certificates("client.tls.ca_file", path)?;
            tls.ca_certificate(Certificate::from_pem(pem::read(
                "client.tls.ca_file",
                path,
            )?))
        }
        None => tls.with_native_roots(),
    };
    if let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) {
        pem::certificates("client.tls.cert_file", cert_file)?;
        pem::private_key("client.tls.key_file", key_file)?;
        let identity = Identity::from_pem(
            pem::read("client.tls.cert_file", cert_file)?,
            pem::read("client.tls.key_file", key_file)?,
        );
        tls = tls.identity(identity);
    }
    if let Some(name) = &config.server_name {
        tls = tls.domain_name(name);
    }
    Ok(tls)
}
