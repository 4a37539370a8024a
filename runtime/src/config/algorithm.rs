//! The JWT signature algorithms accepted in `auth.algorithm`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Defines [`Algorithm`] and its methods from one list of JOSE names, which are also the names
/// of the variants of `jsonwebtoken::Algorithm`.
macro_rules! algorithms {
    ($($(#[$attr:meta])* $name:ident,)*) => {
        /// A JWT signature algorithm, written exactly as its JOSE name (`"HS256"`, `"EdDSA"`, ...).
        #[allow(clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
        pub enum Algorithm {
            $($(#[$attr])* $name,)*
        }

        impl Algorithm {
            /// Every algorithm, in the order of the enum.
            pub const ALL: [Algorithm; 12] = [$(Algorithm::$name),*];

            /// The JOSE name, as written in configuration (`"HS256"`, `"EdDSA"`, ...).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Algorithm::$name => stringify!($name),)*
                }
            }

            /// `true` for the shared-secret algorithms `HS256`, `HS384` and `HS512`.
            pub fn is_hmac(self) -> bool {
                matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
            }

            /// The matching [`jsonwebtoken::Algorithm`].
            pub fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
                match self {
                    $(Algorithm::$name => jsonwebtoken::Algorithm::$name,)*
                }
            }
        }
    };
}

algorithms! {
    /// HMAC using SHA-256.
    #[default]
    HS256,
    /// HMAC using SHA-384.
    HS384,
    /// HMAC using SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 using SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 using SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 using SHA-512.
    RS512,
    /// RSASSA-PSS using SHA-256.
    PS256,
    /// RSASSA-PSS using SHA-384.
    PS384,
    /// RSASSA-PSS using SHA-512.
    PS512,
    /// ECDSA using P-256 and SHA-256.
    ES256,
    /// ECDSA using P-384 and SHA-384.
    ES384,
    /// Edwards-curve signatures (Ed25519).
    EdDSA,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
