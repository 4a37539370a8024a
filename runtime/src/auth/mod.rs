//! Authentication and authorization: each method's [`Access`] rule, applied
//! by the server pipeline before a call reaches the handler.
//!
//! - `Public` methods pass untouched; no token is read.
//! - Other methods need `authorization: Bearer <JWT>`, verified by a
//!   [`Verifier`]. No token, or a bad one, is `UNAUTHENTICATED` with a short
//!   reason; a missing scope is `PERMISSION_DENIED` naming the scope.
//! - `Peer` methods need a verified client certificate (mTLS) naming one of their
//!   workload identities ([`Peer`]): none is `UNAUTHENTICATED`, another identity
//!   `PERMISSION_DENIED`; with scopes, a token is needed as well.
//! - The verified [`Claims`] and [`Peer`] are placed in the request extensions;
//!   handlers read them with [`RequestExt::claims`] and [`RequestExt::peer`].
//! - Paths the policy does not know are passed through: the generated server
//!   answers them with `UNIMPLEMENTED` without calling any handler.
//!
//! [`Access`]: crate::codegen::Access

mod admit;
mod claims;
mod error;
mod issue;
mod keys;
mod peer;
mod remote;
mod revocations;
mod token_source;
mod verifier;

pub use admit::authorize;
pub(crate) use admit::{admit, reject};
pub use claims::{Caller, Claims, RequestExt};
pub use error::AuthError;
#[cfg(feature = "testing")]
pub(crate) use issue::sign_access_token;
pub use issue::{IssueError, mint_access_token};
pub use keys::{KeySet, encoding_key, public_jwk};
pub use peer::Peer;
pub use remote::{JwksError, RemoteKeys};
pub use revocations::{
    Revocation, RevocationFeed, Revocations, WatchRevocationsRequest, WatchRevocationsResponse,
};
pub use token_source::{StaticToken, TokenError, TokenFuture, TokenSource};
pub use verifier::{SetupError, Verifier};
