//! Asymmetric signing keys made in the test, for services that verify
//! tokens with a public key (as they do behind an auth service or an
//! identity provider) rather than a shared HMAC secret.

use jsonwebtoken::EncodingKey;

use crate::auth::IssueError;
use crate::config::{Algorithm, Config};

/// A key pair generated for one test: the server verifies with its public
/// half ([`TestKey::verify_with`]), tests sign with its private half
/// ([`TestKey::token`]).
///
/// ```
/// use keel_rpc::config::{Algorithm, Loader};
/// use keel_rpc::testing::TestKey;
///
/// let mut config = Loader::new()
///     .defaults_toml("[auth]\nhmac_secret = \"a-shared-secret-of-at-least-32-bytes\"\n")
///     .load()?;
/// let key = TestKey::generate(Algorithm::ES256)?;
/// key.verify_with(&mut config);
/// let verifier = keel_rpc::Verifier::from_config(&config.auth)?;
/// let token = key.token(&config, "ada", &["users:read"])?;
/// assert_eq!(verifier.verify(&token)?.sub, "ada");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TestKey {
    algorithm: Algorithm,
    public_key_pem: String,
    encoding: EncodingKey,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private half stays out of test output.
        f.debug_struct("TestKey")
            .field("algorithm", &self.algorithm)
            .field("public_key_pem", &self.public_key_pem)
            .finish_non_exhaustive()
    }
}

/// Why a [`TestKey`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TestKeyError {
    /// Only ES256, ES384 and EdDSA keys are generated (RSA key generation is
    /// slow and needs another backend).
    #[error("test keys are generated for ES256, ES384 and EdDSA, not {0:?}")]
    Unsupported(Algorithm),
    /// The key pair could not be generated or read back.
    #[error("generating a {algorithm:?} test key: {reason}")]
    Generate {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// What failed.
        reason: String,
    },
}

impl TestKey {
    /// A fresh key pair for `algorithm` (`ES256`, `ES384` or `EdDSA`).
    pub fn generate(algorithm: Algorithm) -> Result<TestKey, TestKeyError> {
        let scheme = match algorithm {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            other => return Err(TestKeyError::Unsupported(other)),
        };
        let failed = |reason: String| TestKeyError::Generate { algorithm, reason };
        let pair = rcgen::KeyPair::generate_for(scheme).map_err(|e| failed(e.to_string()))?;
        let private_pem = pair.serialize_pem();
        let encoding = match algorithm {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()),
            _ => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        }
        .map_err(|e| failed(e.to_string()))?;
        Ok(TestKey {
            algorithm,
            public_key_pem: pair.public_key_pem(),
            encoding,
        })
    }

    /// The public key, PEM (SubjectPublicKeyInfo), as `auth.public_key_pem` takes it.
    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    /// Makes `config`'s default key this one's public half: a server built
    /// from it accepts [`TestKey::token`]s and no HMAC-signed token.
    pub fn verify_with<App>(&self, config: &mut Config<App>) {
        config.auth.algorithm = self.algorithm;
        config.auth.hmac_secret = None;
        config.auth.public_key_file = None;
        config.auth.public_key_pem = Some(self.public_key_pem.clone());
    }

    /// An access token for `subject` with `scopes`, valid for ten minutes,
    /// signed with the private half and carrying `config`'s issuer and
    /// audience.
    pub fn token<App>(
        &self,
        config: &Config<App>,
        subject: &str,
        scopes: &[&str],
    ) -> Result<String, IssueError> {
        crate::auth::sign_access_token(
            &config.auth,
            self.algorithm,
            &self.encoding,
            subject,
            scopes,
            super::TOKEN_TTL,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;
    use crate::config::Loader;

    #[test]
    fn a_server_verifying_with_the_public_half_accepts_its_tokens_and_no_hmac_one() {
        let mut config = Loader::new()
            .defaults_toml(
                "[auth]\nhmac_secret = \"a-shared-secret-of-at-least-32-bytes\"\n\
                 issuer = \"tests\"\naudience = \"svc\"\n",
            )
            .load()
            .expect("loads");
        let hmac_token = super::super::token(&config, "ada", &["a"]).expect("hmac token");
        for algorithm in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA] {
            let key = TestKey::generate(algorithm).expect("generated");
            key.verify_with(&mut config);
            let verifier = crate::Verifier::from_config(&config.auth).expect("verifier");
            let claims = verifier
                .verify(&key.token(&config, "ada", &["a", "b"]).expect("signed"))
                .expect("accepted");
            assert_eq!(
                (claims.sub.as_str(), claims.iss.as_deref()),
                ("ada", Some("tests"))
            );
            assert!(claims.has_scope("b"), "{algorithm:?}");
            assert!(matches!(
                verifier.verify(&hmac_token),
                Err(AuthError::Algorithm)
            ));
            // Another key's tokens are refused.
            let other = TestKey::generate(algorithm).expect("generated");
            assert!(
                verifier
                    .verify(&other.token(&config, "ada", &[]).unwrap())
                    .is_err()
            );
            assert!(!format!("{key:?}").contains("PRIVATE"), "{key:?}");
        }
        assert!(matches!(
            TestKey::generate(Algorithm::RS256),
            Err(TestKeyError::Unsupported(Algorithm::RS256))
        ));
    }
}
