//! TLS with rustls (the `ring` provider, no OpenSSL): the gRPC server's certificate, re-read
//! when its files change; client certificate verification (mTLS); and the TLS of generated
//! clients' calls to `https://` endpoints.
//!
//! The server side is Keel's own rather than tonic's `ServerTlsConfig`, which fixes the
//! certificate when the server is built: certificates rotated in place by cert-manager or Vault
//! must reach new connections without a restart. On the gRPC port each connection's handshake
//! runs in the connection's own task ([`serve`](crate::serve)), within
//! `server.handshake_timeout`; on the HTTP port, in tasks of `TlsIncoming`. Either way a slow
//! or silent client holds up no other, and `tonic::Request::peer_certs` gives a handler the
//! client's verified certificate chain.
//!
//! ```no_run
//! # async fn run() -> Result<(), keel_rpc::Error> {
//! // keel.toml (or KEEL_SERVER__TLS__CERT_FILE=… and so on):
//! //   [server.tls]
//! //   cert_file = "/etc/tls/tls.crt"
//! //   key_file = "/etc/tls/tls.key"
//! //   client_ca_file = "/etc/tls/ca.crt"   # mTLS: clients need a certificate of this CA
//! let config: keel_rpc::config::Config = keel_rpc::config::Config::load("", None)?;
//! let keel = keel_rpc::Keel::new(&config, &[])?;
//! keel.server(&config).serve().await?; // TLS on server.addr when [server.tls] is set
//! # Ok(()) }
//! ```

mod accept;
mod certificate;
mod client;
mod error;
mod listener;
mod pem;
mod pinned;
mod server;

pub(crate) use accept::TlsIncoming;
pub(crate) use client::{client_tls, https_roots};
pub use error::TlsError;
pub(crate) use listener::TlsListener;
pub(crate) use pinned::PinnedCertificate;
pub(crate) use server::{ALPN_GRPC, ALPN_GRPC_WEB, ALPN_HTTP, server_config};

/// The crypto provider of every TLS configuration Keel makes: *ring*, the
/// provider tonic (`tls-ring`), sqlx and the OTLP exporter are built with
/// here too, so a process links one.
///
/// rustls 0.23.48 deprecates `ring::default_provider` because *ring* has no
/// post-quantum key exchange (aws-lc-rs has); the deprecation is a nudge to
/// move, not a fault, and without this `allow` every crate depending on Keel
/// by path saw the warning in Keel's code on each build. Moving the tree to
/// aws-lc-rs is a choice of its own (a C build, every TLS dependency's
/// feature at once), not made here.
#[allow(deprecated)]
pub(crate) fn provider() -> std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}
