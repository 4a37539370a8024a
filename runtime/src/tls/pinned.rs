//! [`PinnedCertificate`]: a verifier that trusts exactly one certificate, for `probe`.
//!
//! A container's health check asks its own process on 127.0.0.1, where no name of the
//! server's certificate applies and the CA may be anywhere. What it must know is that the port
//! answers with this service's certificate: the leaf of `server.tls.cert_file`, compared byte
//! for byte, with the handshake's signature checked against its key as usual.

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, Error, SignatureScheme};

/// Accepts the server whose end-entity certificate is `certificate`, and no other.
#[derive(Debug)]
pub(crate) struct PinnedCertificate {
    certificate: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertificate {
    /// The leaf of the PEM chain in `cert_file` (configuration key `key`).
    pub(crate) fn from_file(
        key: &'static str,
        cert_file: &std::path::Path,
    ) -> Result<Self, super::TlsError> {
        let mut chain = super::pem::certificates(key, cert_file)?;
        Ok(PinnedCertificate {
            certificate: chain.swap_remove(0),
            provider: super::provider(),
        })
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(
                "not the certificate of server.tls.cert_file".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
