//! Resolvers: where the replicas of a target are, asked again and again by
//! the balancer's driver ([`super::balance`]).
//!
//! - [`Dns`]: a `dns:///name:port` target, every A and AAAA record of the
//!   name a replica, asked of the system's DNS servers (`/etc/resolv.conf`)
//!   or `client.dns.nameservers`;
//! - [`List`]: a fixed list of endpoints, a resolver that never changes.

mod dns;
mod list;

pub(super) use dns::{Dns, Template};
pub(super) use list::List;

use tonic::transport::Endpoint;

/// One replica a resolver found: the key the balancer knows it by (its
/// address) and the endpoint its connection is made from.
pub(super) type Found = (String, Endpoint);

/// Where the replicas of one target are.
#[derive(Debug)]
pub(super) enum Resolver {
    /// A `dns:///` target.
    Dns(Box<Dns>),
    /// A fixed list.
    List(List),
}

impl Resolver {
    /// The replicas now: never an empty set (that is an error, and the
    /// last good set stays).
    pub(super) async fn resolve(&self) -> Result<Vec<Found>, ResolveError> {
        match self {
            Resolver::Dns(dns) => dns.resolve().await,
            Resolver::List(list) => list.resolve(),
        }
    }

    /// Whether asking again can find anything new (a list cannot).
    pub(super) fn changes(&self) -> bool {
        matches!(self, Resolver::Dns(_))
    }
}

/// Why a resolution found no replica.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResolveError {
    /// The DNS lookup failed (servers unreachable, `NXDOMAIN`, …).
    #[error("looking up {name}: {message}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// What the resolver said.
        message: String,
    },
    /// The lookup took longer than `client.dns.timeout`.
    #[error("looking up {name}: no answer within {timeout:?}")]
    Timeout {
        /// The name looked up.
        name: String,
        /// `client.dns.timeout`.
        timeout: std::time::Duration,
    },
    /// An address did not make an endpoint (a bug rather than an input).
    #[error("the endpoint of {address}: {message}")]
    Endpoint {
        /// The address found.
        address: String,
        /// What tonic said.
        message: String,
    },
    /// A list with no endpoint in it.
    #[error("the list of endpoints is empty")]
    EmptyList,
}
