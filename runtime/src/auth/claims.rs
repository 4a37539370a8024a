//! What a verified call carries: the token's [`Claims`], and where handlers
//! read them and the caller's workload identity ([`RequestExt`]).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use super::Peer;

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
    /// Every other claim of the token, such as a tenant an issuer adds.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
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
    /// The claim `name` as text, if the token has it: a string as it is,
    /// any other JSON value (a number, a list) as JSON.
    ///
    /// ```
    /// let claims: keel_rpc::Claims =
    ///     serde_json::from_str(r#"{"sub": "u1", "exp": 1, "tenant": "acme", "level": 3}"#).unwrap();
    /// assert_eq!(claims.claim("sub").as_deref(), Some("u1"));
    /// assert_eq!(claims.claim("tenant").as_deref(), Some("acme"));
    /// assert_eq!(claims.claim("level").as_deref(), Some("3"));
    /// assert_eq!(claims.claim("region"), None);
    /// ```
    pub fn claim(&self, name: &str) -> Option<Cow<'_, str>> {
        fn known(value: &Option<String>) -> Option<Cow<'_, str>> {
            value.as_deref().map(Cow::Borrowed)
        }
        match name {
            "sub" => Some(Cow::Borrowed(&self.sub)),
            "scope" => Some(Cow::Borrowed(&self.scope)),
            "iss" => known(&self.iss),
            "sid" => known(&self.sid),
            "jti" => known(&self.jti),
            "token_use" => known(&self.token_use),
            "exp" => Some(Cow::Owned(self.exp.to_string())),
            "nbf" => self.nbf.map(|t| Cow::Owned(t.to_string())),
            "iat" => self.iat.map(|t| Cow::Owned(t.to_string())),
            "aud" => match self.aud.as_slice() {
                [] => None,
                [one] => Some(Cow::Borrowed(one)),
                many => Some(Cow::Owned(
                    serde_json::Value::from(many.to_vec()).to_string(),
                )),
            },
            _ => match self.other.get(name)? {
                serde_json::Value::String(text) => Some(Cow::Borrowed(text)),
                value => Some(Cow::Owned(value.to_string())),
            },
        }
    }

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

/// The verified workload identity of a request, as stored in its extensions.
#[derive(Clone, Debug)]
pub(super) struct PeerOf(pub(super) Arc<Peer>);

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
            other: Default::default(),
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
