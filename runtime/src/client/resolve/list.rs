//! [`List`]: a fixed set of endpoints, balanced by the same machinery as a
//! `dns:///` target's.

use tonic::transport::Endpoint;

use super::{Found, ResolveError};

/// Endpoints as they were given, each its own replica (keyed by position, so
/// two equal URLs are two connections).
#[derive(Debug)]
pub(in crate::client) struct List {
    endpoints: Vec<Found>,
}

impl List {
    pub(in crate::client) fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let endpoints = endpoints
            .into_iter()
            .enumerate()
            .map(|(i, endpoint)| (format!("{i}:{}", endpoint.uri()), endpoint))
            .collect();
        List { endpoints }
    }

    /// How many endpoints.
    pub(in crate::client) fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub(super) fn resolve(&self) -> Result<Vec<Found>, ResolveError> {
        match self.endpoints.is_empty() {
            true => Err(ResolveError::EmptyList),
            false => Ok(self.endpoints.clone()),
        }
    }
}
