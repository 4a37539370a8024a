//! The pipeline's auth step: a method's [`Access`] rule applied to a call,
//! before it reaches the handler.

use http::HeaderValue;
use quanta::Instant;

use super::claims::{Caller, PeerOf};
use super::{AuthError, Claims, Peer, Verifier};
use crate::policy::Access;
use crate::wire::CallHeaders;

impl<'a> CallHeaders<'a> {
    /// The one `authorization` header: [`AuthError::MissingToken`] without
    /// one, [`AuthError::MalformedHeader`] when there are several.
    pub(crate) fn authorization(&self) -> Result<&'a HeaderValue, AuthError> {
        match (self.authorization, self.repeated_authorization) {
            (None, _) => Err(AuthError::MissingToken),
            (Some(_), true) => Err(AuthError::MalformedHeader),
            (Some(value), false) => Ok(value),
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

/// Logs a rejected request (at `DEBUG`: rejections are the caller's
/// business, and metrics count them) and returns the status to answer with.
#[cold]
#[inline(never)]
pub(crate) fn reject(path: &str, error: &AuthError) -> tonic::Status {
    tracing::debug!(path, %error, "request rejected");
    error.to_status()
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tells_missing_from_repeated_authorization() {
        let empty = HeaderMap::new();
        let found = CallHeaders::read(&empty);
        assert_eq!(found.authorization(), Err(AuthError::MissingToken));
        assert_eq!(found.grpc_timeout, None);
        assert!(!found.traceparent);

        let map = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            CallHeaders::read(&map).authorization(),
            Err(AuthError::MalformedHeader)
        );
    }
}
