//! Whose `keel-criticality` a server believes (`server.trust_criticality`).

use serde::{Deserialize, Serialize};

use super::Environment;

/// Which callers' `keel-criticality` metadata a server honours
/// (`server.trust_criticality`); the others' calls get their method's own
/// criticality, so an outside client cannot promote itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustCriticality {
    /// Callers with a verified client certificate (mTLS): the fleet's own services.
    Peers,
    /// Every caller (development, or a server only the fleet can reach).
    All,
    /// No caller: each method's own criticality, always.
    None,
}

impl TrustCriticality {
    /// What `configured` means in `environment`: unset, every caller in
    /// development and verified peers in production.
    pub fn resolve(configured: Option<Self>, environment: Environment) -> Self {
        configured.unwrap_or(match environment {
            Environment::Development => TrustCriticality::All,
            Environment::Production => TrustCriticality::Peers,
        })
    }
}
