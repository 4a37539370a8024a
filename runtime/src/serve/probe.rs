//! The container health check: asking a server's standard health service
//! whether it is serving, over TLS when the server speaks it.

use std::time::Duration;

use crate::Error;
use crate::config::{Config, TlsKeys};

/// Asks the standard health service at `addr` whether `service` (`""`: the
/// whole server) is serving, within `timeout`. For container health checks:
/// `user-service probe` exits 0 only when this returns `Ok(true)`.
pub async fn probe(
    addr: std::net::SocketAddr,
    service: &str,
    timeout: Duration,
) -> Result<bool, Error> {
    probe_with(addr, None, service, timeout).await
}

/// [`probe`], over TLS when `tls` is given: the server must present exactly
/// the certificate of `server.tls.cert_file` (its own, in a container).
async fn probe_with(
    addr: std::net::SocketAddr,
    tls: Option<&crate::config::ServerTlsConfig>,
    service: &str,
    timeout: Duration,
) -> Result<bool, Error> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let failed = |reason: String| Error::Probe { addr, reason };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| failed(e.to_string()))?;
    if let Some(tls) = tls {
        let pinned =
            crate::tls::PinnedCertificate::from_file(TlsKeys::SERVER.cert_file, &tls.cert_file)?;
        let config = tonic::transport::ClientTlsConfig::new().domain_name("localhost");
        endpoint = endpoint
            .tls_config_with_verifier(config, std::sync::Arc::new(pinned))
            .map_err(|e| failed(e.to_string()))?;
    }
    let ask = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|s| failed(format!("{:?}: {}", s.code(), s.message())))?;
        Ok(reply.get_ref().status()
            == tonic_health::pb::health_check_response::ServingStatus::Serving)
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| failed(format!("no answer within {timeout:?}")))?
}

/// The container health check of a service binary (`<binary> probe`):
/// `Ok(())` when the server on `config.server.addr`'s port at 127.0.0.1
/// reports `service` (`""`: the whole server) SERVING within 2 seconds, over
/// TLS when `[server.tls]` is set.
pub async fn probe_local<App>(config: &Config<App>, service: &str) -> Result<(), Error> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], config.server.addr.port()));
    let tls = config.server.tls.as_ref();
    match probe_with(addr, tls, service, Duration::from_secs(2)).await? {
        true => Ok(()),
        false => Err(Error::Probe {
            addr,
            reason: format!("{service:?} is not SERVING"),
        }),
    }
}
