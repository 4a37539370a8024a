//! [`AuthError`]: why a call was not let through.

/// Why a request was not let through. The `Display` text is what the caller
/// sees in the status message: short, and nothing that helps an attacker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `authorization` header, or an empty token.
    #[error("missing bearer token")]
    MissingToken,
    /// The header is not `Bearer <token>`.
    #[error("authorization header must use the Bearer scheme")]
    NotBearer,
    /// Repeated or non-ASCII `authorization` header.
    #[error("malformed authorization header")]
    MalformedHeader,
    /// The token is longer than `auth.max_token_bytes`.
    #[error("token too large")]
    TooLarge,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not verify with the configured key.
    #[error("bad signature")]
    BadSignature,
    /// The token's `kid` names no configured key and there is no default key.
    #[error("unknown signing key")]
    UnknownKey,
    /// The token names an algorithm other than the configured one, or none.
    #[error("algorithm not allowed")]
    Algorithm,
    /// `iss` differs from the configured issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not contain the configured audience.
    #[error("wrong audience")]
    Audience,
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// The token is a refresh token (or names no kind).
    #[error("not an access token")]
    NotAccessToken,
    /// `sub` is empty or only whitespace: the token names nobody (RFC 7519 §4.1.2).
    #[error("token subject is empty")]
    EmptySubject,
    /// `iat` is later than now plus the leeway: no issuer signs tokens in the future, so the
    /// token was forged or its issuer's clock is wrong (RFC 8725 §3.10 asks for such checks).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// Not a decodable JWT.
    #[error("malformed token")]
    Malformed,
    /// The token is valid but lacks a scope the method requires.
    #[error("missing scope {0}")]
    MissingScope(&'static str),
    /// The method needs a workload identity, and the connection has no verified client
    /// certificate (no TLS, or no certificate sent).
    #[error("no verified client certificate")]
    NoPeerCertificate,
    /// The token's session has been revoked (`auth.revocations`).
    #[error("session revoked")]
    Revoked,
    /// The feed of revoked sessions is down, and the token is older than the gap
    /// (`auth.revocations_when_behind = "refuse"`).
    #[error("cannot tell whether the token's session was revoked: the revocation feed is down")]
    RevocationsBehind,
    /// The client certificate names none of the method's workload identities.
    #[error("peer {0} is not allowed")]
    PeerNotAllowed(String),
}

impl AuthError {
    /// The gRPC status a caller receives for this error.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            AuthError::MissingScope(_) | AuthError::PeerNotAllowed(_) => {
                tonic::Status::permission_denied(self.to_string())
            }
            AuthError::RevocationsBehind => tonic::Status::unavailable(self.to_string()),
            _ => tonic::Status::unauthenticated(self.to_string()),
        }
    }
}
