//! Authentication and authorization: a tower [`AuthLayer`] that applies each
//! method's [`Access`] rule before the request reaches the handler.
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

mod issue;
mod keys;
mod peer;
mod remote;
mod token_source;
mod verifier;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use quanta::Instant;
use serde::Deserialize;
use tower::{Layer, Service};

pub use issue::{IssueError, mint_access_token};
pub use keys::{KeySet, encoding_key, public_jwk};
pub use peer::Peer;
pub use remote::{JwksError, RemoteKeys};
pub use token_source::{StaticToken, TokenError, TokenFuture, TokenSource};
pub use verifier::{SetupError, Verifier};

use crate::call_headers::CallHeaders;
use crate::clock;
use crate::policy::{Access, ServicePolicy};

/// The verified claims of an access token.
///
/// `sub` and `exp` are required: their absence is reported by verification
/// as a missing claim, so they default here only to let it see the token.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Subject: who the token was issued to.
    #[serde(default)]
    pub sub: String,
    /// Granted scopes, space-separated as in OAuth 2 (`"users:read users:write"`).
    #[serde(default)]
    pub scope: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default)]
    pub exp: u64,
    /// Not-before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Issued-at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default)]
    pub iss: Option<String>,
    /// Audiences (`aud` may be one string or an array).
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Session id: the auth service's refresh-token family the token was
    /// issued in, so that revoking the session can be checked
    /// (`keel.auth.v1.AuthService/Validate`).
    #[serde(default)]
    pub sid: Option<String>,
    /// Token id.
    #[serde(default)]
    pub jti: Option<String>,
    /// Token kind: `"access"` for tokens this layer accepts, `"refresh"` for
    /// refresh tokens, which it always rejects.
    #[serde(default)]
    pub token_use: Option<String>,
}

/// `"a"` or `["a", "b"]` as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(OneOrMany::One(one)) => vec![one],
        Some(OneOrMany::Many(many)) => many,
    })
}

impl Claims {
    /// The granted scopes: `scope` split at spaces (RFC 6749 §3.3).
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    /// Whether the token grants `scope` (never an empty one, nor one with a
    /// space, which would be several).
    pub fn has_scope(&self, scope: &str) -> bool {
        // This runs on every authorized call: each granted scope is compared
        // whole, and only a mismatch looks for the next space.
        let scope = scope.as_bytes();
        let mut rest = self.scope.as_bytes();
        loop {
            if let Some(after) = rest.strip_prefix(scope)
                && matches!(after, [] | [b' ', ..])
            {
                return !scope.is_empty() && !scope.contains(&b' ');
            }
            match rest.iter().position(|b| *b == b' ') {
                Some(space) => rest = &rest[space + 1..],
                None => return false,
            }
        }
    }
}

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
            _ => tonic::Status::unauthenticated(self.to_string()),
        }
    }
}

/// Checks a token's claims against a method's access rule.
pub fn authorize(access: Access, claims: &Claims) -> Result<(), AuthError> {
    let scopes = match access {
        Access::Token { scopes }
        | Access::Peer {
            scopes: Some(scopes),
            ..
        } => scopes,
        Access::Public | Access::Peer { scopes: None, .. } => &[],
    };
    match scopes.iter().find(|s| !claims.has_scope(s)) {
        Some(missing) => Err(AuthError::MissingScope(missing)),
        None => Ok(()),
    }
}

/// Applies a method's access rule to a request with headers `call` and
/// extensions `extensions` (where tonic puts the connection's TLS
/// certificates): a public method is let through with no caller; a token
/// method's bearer token is verified (`now` being the time the request
/// arrived) and its scopes checked; a peer method's client certificate must
/// name one of its identities. What was verified is returned, for the
/// request's extensions.
pub(crate) fn admit(
    verifier: &Verifier,
    access: Access,
    call: &CallHeaders<'_>,
    extensions: &http::Extensions,
    now: Instant,
) -> Result<Admitted, AuthError> {
    match access {
        Access::Public => Ok(Admitted::default()),
        Access::Token { .. } => {
            let claims = verifier.authenticate_at(call.authorization()?, now)?;
            authorize(access, &claims)?;
            Ok(Admitted {
                caller: Some(Caller(claims)),
                peer: None,
            })
        }
        Access::Peer { peers, scopes } => {
            admit_peer(verifier, access, peers, scopes, call, extensions, now)
        }
    }
}

/// [`admit`] for a method with workload identities: out of line, so the
/// token path stays as short as it was.
#[inline(never)]
fn admit_peer(
    verifier: &Verifier,
    access: Access,
    peers: &[&str],
    scopes: Option<&[&str]>,
    call: &CallHeaders<'_>,
    extensions: &http::Extensions,
    now: Instant,
) -> Result<Admitted, AuthError> {
    let peer = Peer::of_request(extensions).ok_or(AuthError::NoPeerCertificate)?;
    if !peers.iter().any(|identity| peer.is(identity)) {
        return Err(AuthError::PeerNotAllowed(peer.to_string()));
    }
    let caller = match scopes {
        None => None,
        Some(_) => {
            let claims = verifier.authenticate_at(call.authorization()?, now)?;
            authorize(access, &claims)?;
            Some(Caller(claims))
        }
    };
    Ok(Admitted {
        caller,
        peer: Some(PeerOf(peer)),
    })
}

/// What [`admit`] verified of a request.
#[derive(Default)]
pub(crate) struct Admitted {
    caller: Option<Caller>,
    peer: Option<PeerOf>,
}

impl Admitted {
    /// Puts what was verified where [`RequestExt`] finds it.
    pub(crate) fn insert_into(self, extensions: &mut http::Extensions) {
        if let Some(caller) = self.caller {
            extensions.insert(caller);
        }
        if let Some(peer) = self.peer {
            extensions.insert(peer);
        }
    }
}

/// The verified workload identity of a request, as stored in its extensions.
#[derive(Clone, Debug)]
struct PeerOf(Arc<Peer>);

/// Logs a rejected request (at `DEBUG`: rejections are the caller's
/// business, and metrics count them) and returns the status to answer with.
#[cold]
#[inline(never)]
pub(crate) fn reject(path: &str, error: &AuthError) -> tonic::Status {
    tracing::debug!(path, %error, "request rejected");
    error.to_status()
}

/// The verified caller of a request, as stored in its extensions.
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Claims>);

/// Reads the verified caller from a request.
pub trait RequestExt {
    /// The verified claims, for methods that require a token; `None` for
    /// public methods.
    fn claims(&self) -> Option<&Claims>;

    /// The verified workload identity (mTLS client certificate), for methods
    /// annotated with `auth.peers`; `None` for others.
    fn peer(&self) -> Option<&Peer>;
}

impl<T> RequestExt for tonic::Request<T> {
    fn claims(&self) -> Option<&Claims> {
        self.extensions().get::<Caller>().map(|c| &*c.0)
    }

    fn peer(&self) -> Option<&Peer> {
        self.extensions().get::<PeerOf>().map(|p| &*p.0)
    }
}

/// Applies a service's access rules; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    policy: &'static ServicePolicy,
    verifier: Arc<Verifier>,
}

impl AuthLayer {
    /// A layer enforcing `policy` with tokens checked by `verifier`.
    pub fn new(policy: &'static ServicePolicy, verifier: Arc<Verifier>) -> Self {
        AuthLayer { policy, verifier }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            policy: self.policy,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    policy: &'static ServicePolicy,
    verifier: Arc<Verifier>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = Infallible>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = AuthFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some((_, method)) = self.policy.method(req.uri().path()) else {
            return AuthFuture::inner(self.inner.call(req));
        };
        let call = CallHeaders::read(req.headers());
        match admit(
            &self.verifier,
            method.access,
            &call,
            req.extensions(),
            clock::now(),
        ) {
            Ok(admitted) => {
                admitted.insert_into(req.extensions_mut());
                AuthFuture::inner(self.inner.call(req))
            }
            Err(error) => AuthFuture::rejected(reject(method.path, &error).into_http()),
        }
    }
}

pin_project! {
    /// Response future of [`AuthService`].
    pub struct AuthFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<B>> },
    }
}

impl<F, B> AuthFuture<F, B> {
    fn inner(future: F) -> Self {
        AuthFuture {
            state: State::Inner { future },
        }
    }

    fn rejected(response: Response<B>) -> Self {
        AuthFuture {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B: Default> Future for AuthFuture<F, B>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
            StateProj::Rejected { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    tonic::Status::internal("polled after completion").into_http()
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Claims;

    fn granting(scope: &str) -> Claims {
        Claims {
            sub: "someone".into(),
            scope: scope.into(),
            exp: 0,
            nbf: None,
            iat: None,
            iss: None,
            aud: Vec::new(),
            sid: None,
            jti: None,
            token_use: None,
        }
    }

    #[test]
    fn a_scope_is_granted_only_as_a_whole_word() {
        let claims = granting("users:read  users:write admin");
        for granted in ["users:read", "users:write", "admin"] {
            assert!(claims.has_scope(granted), "{granted}");
        }
        for not in [
            "users",
            "users:rea",
            "read",
            "users:read users:write",
            "dmin",
            "",
        ] {
            assert!(!claims.has_scope(not), "{not:?}");
        }
        assert!(!granting("").has_scope(""));
        assert!(!granting("").has_scope("users:read"));
        assert!(granting("users:read").has_scope("users:read"));
        assert!(!granting("users:read users:write").has_scope("users:read users:write"));
    }
}
