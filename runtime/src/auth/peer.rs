//! [`Peer`]: the workload identity of a connection's verified client certificate (mTLS).

use std::sync::Arc;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The identity a client proved with its certificate: the URI SANs (SPIFFE IDs) and DNS SANs
/// of the leaf certificate that the server's mTLS verified against `server.tls.client_ca_file`.
///
/// Methods annotated `auth: { peers: [...] }` admit a call only when one of the listed
/// identities is among these; their handlers read it with
/// [`RequestExt::peer`](super::RequestExt::peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    uris: Vec<String>,
    dns_names: Vec<String>,
}

impl Peer {
    /// A peer with these SANs (for tests and hand-made stacks).
    pub fn new(uris: Vec<String>, dns_names: Vec<String>) -> Self {
        Peer { uris, dns_names }
    }

    /// The identity of a DER-encoded leaf certificate, `None` when it does not parse.
    pub fn from_certificate(der: &[u8]) -> Option<Peer> {
        use x509_parser::extensions::GeneralName;
        let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut peer = Peer::new(Vec::new(), Vec::new());
        if let Ok(Some(san)) = certificate.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => peer.uris.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => peer.dns_names.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        Some(peer)
    }

    /// The verified client certificate's identity of a request's connection (the connection
    /// info tonic puts in the extensions of a TLS request), if it presented one.
    pub(crate) fn of_request(extensions: &http::Extensions) -> Option<Arc<Peer>> {
        let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
        let certificates = info.peer_certs()?;
        Peer::from_certificate(certificates.first()?).map(Arc::new)
    }

    /// The URI SANs, such as `spiffe://example.org/ns/prod/sa/gateway`.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The DNS SANs.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// Whether the certificate names `identity`, written as in `auth.peers`: a URI matches a
    /// URI SAN exactly; `dns:name` a DNS SAN, ignoring ASCII case.
    pub fn is(&self, identity: &str) -> bool {
        match identity.strip_prefix("dns:") {
            Some(name) => self.dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)),
            None => self.uris.iter().any(|uri| uri == identity),
        }
    }
}

impl std::fmt::Display for Peer {
    /// The first URI SAN, else the first DNS SAN as `dns:name`: how logs name the caller.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.uris.first(), self.dns_names.first()) {
            (Some(uri), _) => f.write_str(uri),
            (None, Some(dns)) => write!(f, "dns:{dns}"),
            (None, None) => f.write_str("(a certificate without URI or DNS names)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Peer;

    #[test]
    fn identities_match_uri_sans_exactly_and_dns_sans_in_any_case() {
        let peer = Peer::new(
            vec!["spiffe://example.org/ns/prod/sa/gateway".into()],
            vec!["gateway.example.org".into()],
        );
        assert!(peer.is("spiffe://example.org/ns/prod/sa/gateway"));
        assert!(!peer.is("spiffe://example.org/ns/prod/sa/gateway/x"));
        assert!(!peer.is("spiffe://example.org/ns/prod/sa/Gateway"));
        assert!(peer.is("dns:gateway.example.org"));
        assert!(peer.is("dns:GATEWAY.example.org"));
        assert!(!peer.is("dns:example.org"));
        assert!(!peer.is("gateway.example.org"), "a DNS name needs dns:");
        assert_eq!(peer.to_string(), "spiffe://example.org/ns/prod/sa/gateway");
    }
}
