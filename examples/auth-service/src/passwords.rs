//! Password hashing with argon2id: bounded concurrency, off the async
//! threads, and the same cost whether the user exists or not.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::settings::PasswordsConfig;

/// Why a password could not be hashed or checked (never "wrong password":
/// that is [`Passwords::verify`] returning `false`).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The argon2 parameters are invalid.
    #[error("argon2 parameters: {0}")]
    Params(argon2::Error),
    /// Hashing failed (random salt unavailable, …).
    #[error("hashing a password: {0}")]
    Hash(argon2::password_hash::Error),
    /// The blocking task running the hash panicked or was cancelled.
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The system's random number generator failed.
    #[error("random number generator: {0}")]
    Random(getrandom::Error),
    /// The service is shutting down.
    #[error("password hashing is shut down")]
    Closed,
}

/// Hashes and verifies passwords with the configured argon2id cost.
///
/// At most `max_concurrent` hashes run at once, each on tokio's blocking
/// pool. Verifying against a user that does not exist costs the same as
/// against one that does: it runs against a dummy hash made with the same
/// parameters at startup.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    dummy: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("memory_kib", &self.params.m_cost())
            .field("iterations", &self.params.t_cost())
            .field("parallelism", &self.params.p_cost())
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// Sets up hashing with `config`'s cost (computes the dummy hash, so it
    /// takes one hash's time).
    pub async fn new(config: &PasswordsConfig) -> Result<Self, PasswordError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(PasswordError::Params)?;
        let mut passwords = Passwords {
            params,
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            dummy: Arc::from(""),
        };
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(PasswordError::Random)?;
        let dummy_password = crate::tokens::b64(&random);
        passwords.dummy = Arc::from(passwords.hash(dummy_password).await?);
        Ok(passwords)
    }

    /// The configured parameters (for reports: the cost of a login).
    pub fn params(&self) -> &Params {
        &self.params
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// The PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) of `password`
    /// with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Closed)?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            Passwords::argon2(params)
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(PasswordError::Hash)
        })
        .await?
    }

    /// Whether `password` matches `stored` (a PHC string), compared in
    /// constant time. With `stored = None` (no such user) it verifies against
    /// the dummy hash, taking as long, and answers `false`. A stored hash
    /// that does not parse counts as a mismatch.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Closed)?;
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.to_string());
        let params = self.params.clone();
        let matched = tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                tracing::error!("a stored password hash does not parse");
                return false;
            };
            // The hash's own parameters apply; `params` only fills the gaps.
            Passwords::argon2(params)
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await?;
        Ok(known && matched)
    }

    /// Whether `stored` was made with other parameters than the configured
    /// ones (and should be re-hashed after a successful login).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        match Params::try_from(&parsed) {
            Ok(params) => {
                parsed.algorithm != argon2::ARGON2ID_IDENT
                    || params.m_cost() != self.params.m_cost()
                    || params.t_cost() != self.params.t_cost()
                    || params.p_cost() != self.params.p_cost()
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordsConfig {
        PasswordsConfig {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_salts_differ() {
        let passwords = Passwords::new(&cheap()).await.unwrap();
        let a = passwords.hash("correct horse".into()).await.unwrap();
        let b = passwords.hash("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(
            passwords
                .verify("correct horse".into(), Some(a.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("correct horsE".into(), Some(a.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("x".into(), Some("not a hash".into()))
                .await
                .unwrap()
        );
        assert!(!passwords.needs_rehash(&a));
    }

    #[tokio::test]
    async fn unknown_users_never_match_not_even_the_dummy_password() {
        let passwords = Passwords::new(&cheap()).await.unwrap();
        assert!(!passwords.verify(String::new(), None).await.unwrap());
        assert!(passwords.dummy.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_need_a_rehash() {
        let old = Passwords::new(&cheap()).await.unwrap();
        let stored = old.hash("pw-12345678".into()).await.unwrap();
        let new = Passwords::new(&PasswordsConfig {
            memory_kib: 128,
            ..cheap()
        })
        .await
        .unwrap();
        assert!(new.needs_rehash(&stored));
        // Verification uses the stored hash's own parameters.
        assert!(
            new.verify("pw-12345678".into(), Some(stored))
                .await
                .unwrap()
        );
    }
}
