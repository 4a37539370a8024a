//! [`Dns`]: the replicas of a `dns:///name:port` target, one per A and AAAA
//! record, with hickory-resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ProtocolConfig, ResolveHosts,
    ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use http::Uri;
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::{Found, ResolveError};
use crate::config::DnsConfig;

/// What a replica's endpoint is made of, besides its address.
#[derive(Debug, Clone)]
pub(in crate::client) struct Template {
    /// Called over TLS with this configuration (its server name the
    /// target's), else plaintext.
    pub(in crate::client) tls: Option<ClientTlsConfig>,
    /// `client.balance.connect_timeout`.
    pub(in crate::client) connect_timeout: Duration,
}

/// A `dns:///name:port` target's resolver.
pub(in crate::client) struct Dns {
    resolver: TokioResolver,
    host: String,
    port: u16,
    /// `:authority` of every call (`name:port`, not the replica's address).
    origin: Uri,
    template: Template,
    timeout: Duration,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Why a resolver could not be made.
#[derive(Debug, thiserror::Error)]
pub(in crate::client) enum DnsSetupError {
    /// The system's configuration (`/etc/resolv.conf`) did not read.
    #[error("reading the system's DNS configuration: {0}")]
    System(String),
    /// `name:port` does not make a URI.
    #[error("{0}")]
    Origin(String),
}

impl Dns {
    /// A resolver of `host` asking `config.nameservers`, else the
    /// system's DNS servers.
    pub(in crate::client) fn new(
        host: &str,
        port: u16,
        config: &DnsConfig,
        template: Template,
    ) -> Result<Self, DnsSetupError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match config.nameservers.is_empty() {
            true => TokioResolver::builder(provider)
                .map_err(|e| DnsSetupError::System(e.to_string()))?,
            false => {
                let servers = config.nameservers.iter().map(|server| {
                    let at = |protocol| {
                        let mut connection = ConnectionConfig::new(protocol);
                        connection.port = server.port();
                        connection
                    };
                    NameServerConfig::new(
                        server.ip(),
                        true,
                        vec![at(ProtocolConfig::Udp), at(ProtocolConfig::Tcp)],
                    )
                });
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers.collect()),
                    provider,
                )
            }
        };
        let options = builder.options_mut();
        // Every record is a replica, of either family.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // One query per resolution, bounded by `client.dns.timeout`.
        options.timeout = config.timeout;
        options.attempts = 1;
        // The driver asks every `refresh`: an answer is used once, never
        // cached past its refresh (a TTL longer than `refresh` would hide a
        // change).
        options.cache_size = 0;
        options.positive_max_ttl = Some(Duration::ZERO);
        options.negative_max_ttl = Some(Duration::ZERO);
        // Replicas are in DNS, not in /etc/hosts.
        options.use_hosts_file = ResolveHosts::Never;
        let resolver = builder
            .build()
            .map_err(|e| DnsSetupError::System(e.to_string()))?;
        let authority = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        let scheme = if template.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let origin = format!("{scheme}://{authority}")
            .parse()
            .map_err(|e| DnsSetupError::Origin(format!("{authority}: {e}")))?;
        Ok(Dns {
            resolver,
            host: host.to_owned(),
            port,
            origin,
            template,
            timeout: config.timeout,
        })
    }

    /// One endpoint per address the name has now.
    pub(super) async fn resolve(&self) -> Result<Vec<Found>, ResolveError> {
        let lookup = tokio::time::timeout(
            // The resolver's own timeout, and a little for the rest.
            self.timeout + Duration::from_millis(100),
            self.resolver.lookup_ip(self.host.as_str()),
        )
        .await
        .map_err(|_| ResolveError::Timeout {
            name: self.host.clone(),
            timeout: self.timeout,
        })?
        .map_err(|e| ResolveError::Lookup {
            name: self.host.clone(),
            message: e.to_string(),
        })?;
        let mut found: Vec<Found> = Vec::new();
        for ip in lookup.iter() {
            let address = SocketAddr::new(ip, self.port).to_string();
            if found.iter().any(|(key, _)| *key == address) {
                continue;
            }
            let endpoint = self.endpoint(&address)?;
            found.push((address, endpoint));
        }
        if found.is_empty() {
            return Err(ResolveError::Lookup {
                name: self.host.clone(),
                message: "no A or AAAA record".to_owned(),
            });
        }
        Ok(found)
    }

    fn endpoint(&self, address: &str) -> Result<Endpoint, ResolveError> {
        let failed = |e: tonic::transport::Error| ResolveError::Endpoint {
            address: address.to_owned(),
            message: e.to_string(),
        };
        let scheme = if self.template.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(failed)?
            .origin(self.origin.clone())
            .connect_timeout(self.template.connect_timeout);
        if let Some(tls) = &self.template.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(failed)?;
        }
        Ok(endpoint)
    }
}
