//! The rustls configuration of a server port, from `[server.tls]` or `[metrics.tls]`.

use std::sync::Arc;

use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::WebPkiClientVerifier;

use super::certificate::ReloadingCertificate;
use super::{TlsError, pem};
use crate::config::{ClientAuth, ServerTlsConfig, TlsKeys};

/// gRPC needs HTTP/2, which TLS clients ask for with ALPN (grpc-go refuses a server that does
/// not answer `h2`).
pub(crate) const ALPN_GRPC: &[&[u8]] = &[b"h2"];

/// With gRPC-Web on, the gRPC port speaks HTTP/1.1 too (browsers over TLS
/// mostly ask for `h2` anyway).
pub(crate) const ALPN_GRPC_WEB: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The HTTP port speaks HTTP/1.1 (Prometheus, curl).
pub(crate) const ALPN_HTTP: &[&[u8]] = &[b"http/1.1"];

/// A port's rustls configuration: its reloading certificate, and client certificate
/// verification against `client_ca_file` when that is set; problems name the keys `keys`.
pub(crate) fn server_config(
    tls: &ServerTlsConfig,
    keys: &TlsKeys,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = super::provider();
    let unusable = |key: &'static str| {
        move |e: tokio_rustls::rustls::Error| TlsError::Unusable {
            key,
            reason: e.to_string(),
        }
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(unusable(keys.section))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let key = keys.client_ca_file;
            let roots = pem::roots(key, path)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match tls.client_auth.unwrap_or_default() {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| TlsError::Unusable {
                key,
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certificate = ReloadingCertificate::load(&tls.cert_file, &tls.key_file, keys, provider)?;
    let mut config = builder.with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}
