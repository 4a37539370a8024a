//! The rustls configuration of the gRPC server, from `[server.tls]`.

use std::sync::Arc;

use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use super::certificate::ReloadingCertificate;
use super::{TlsError, pem};
use crate::config::{ClientAuth, ServerTlsConfig};

/// gRPC needs HTTP/2, which TLS clients ask for with ALPN (grpc-go refuses a server that does
/// not answer `h2`).
const ALPN_H2: &[u8] = b"h2";

/// The server's rustls configuration: its reloading certificate, and client certificate
/// verification against `client_ca_file` when that is set.
pub(crate) fn server_config(tls: &ServerTlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let unusable = |key: &'static str| {
        move |e: tokio_rustls::rustls::Error| TlsError::Unusable {
            key,
            reason: e.to_string(),
        }
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(unusable("server.tls"))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            const KEY: &str = "server.tls.client_ca_file";
            let mut roots = RootCertStore::empty();
            for ca in pem::certificates(KEY, path)? {
                roots.add(ca).map_err(unusable(KEY))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match tls.client_auth.unwrap_or_default() {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| TlsError::Unusable {
                key: KEY,
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certificate = ReloadingCertificate::load(&tls.cert_file, &tls.key_file, provider)?;
    let mut config = builder.with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
