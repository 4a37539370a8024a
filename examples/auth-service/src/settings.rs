//! The auth service's own configuration sections, beside Keel's: declared
//! once here (`#[derive(Section)]`), loaded with Keel's by
//! `Config::<AuthSections>::from_loader`, with the same errors.

use std::time::Duration;

use keel_rpc::config::{Config, Problems, Secret, Section};

/// Everything the auth service is configured with: Keel's sections
/// (`service`, `server`, `metrics`, `auth`, `store`, …) and, in `app`, its
/// own. `auth.keys` holds the signing keys (with their private halves for
/// asymmetric algorithms); `auth.issuer` and `auth.audience` are required
/// and go into every access token; `store` says where credentials and
/// sessions live.
pub type Settings = Config<AuthSections>;

/// The auth service's sections.
#[derive(Clone, Debug, Section)]
#[config(validate_config = Self::problems)]
pub struct AuthSections {
    /// `[tokens]`: lifetimes and the signing key.
    #[config(section)]
    pub tokens: TokensConfig,
    /// `[passwords]`: the argon2id cost.
    #[config(section)]
    pub passwords: PasswordsConfig,
    /// `[throttle]`: limits on failed logins.
    #[config(section)]
    pub throttle: ThrottleConfig,
    /// `[bootstrap]`: the initial administrator.
    #[config(section)]
    pub bootstrap: BootstrapConfig,
}

/// `[tokens]`: what the service issues.
#[derive(Clone, Debug, Section)]
pub struct TokensConfig {
    /// `kid` of the `[[auth.keys]]` entry that signs access tokens; the other entries with a
    /// private key stay published by `GetJwks` (rotation). Required.
    pub signing_kid: String,
    /// Lifetime of access tokens.
    #[config(default = "15m", min = "10s", max = "24h")]
    pub access_ttl: Duration,
    /// Lifetime of each refresh token (every refresh issues a new one); at least
    /// `access_ttl`.
    #[config(default = "30days")]
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a session (refresh-token family), however often it is
    /// refreshed; at least `refresh_ttl`.
    #[config(default = "90days")]
    pub session_ttl: Duration,
}

/// `[passwords]`: the argon2id parameters of new hashes (existing hashes
/// keep theirs and are upgraded at the next successful login).
#[derive(Clone, Debug, Section)]
pub struct PasswordsConfig {
    /// Memory cost in KiB (19 MiB: OWASP's minimum for argon2id).
    #[config(default = 19456, min = 8)]
    pub memory_kib: u32,
    /// Number of passes.
    #[config(default = 2, min = 1)]
    pub iterations: u32,
    /// Degree of parallelism.
    #[config(default = 1, min = 1)]
    pub parallelism: u32,
    /// Hashes computed at once; more wait their turn. Bounds memory at `memory_kib` × this.
    #[config(
        default_fn = available_parallelism,
        default_doc = "the number of CPUs",
        min = 1
    )]
    pub max_concurrent: usize,
}

fn available_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `[throttle]`: limits on logins. Failures are counted per username and per
/// peer address (IPv4 address or IPv6 /64) in the store, or in Redis when
/// `[rate_limit] backend` names one, so every replica sees every replica's
/// failures: `burst` of them in a row lock the
/// username (or the address) out, and one more is allowed per `interval`
/// (a token bucket). A login attempted past the limit is refused with
/// `RESOURCE_EXHAUSTED` and a retry hint (`retry-after-ms`), without checking
/// the password, even when it is right. Only failures count; attempts in
/// flight are bounded separately, on each replica (`*_in_flight`).
#[derive(Clone, Debug, Section)]
#[config(validate = Self::problems)]
pub struct ThrottleConfig {
    /// Failures allowed in a row for one username; 0 disables the per-username limit.
    #[config(default = 5)]
    pub username_burst: u32,
    /// One more failure is allowed per this interval.
    #[config(default = "30s")]
    pub username_interval: Duration,
    /// Failures allowed in a row from one peer; 0 disables the per-peer limit.
    #[config(default = 20)]
    pub peer_burst: u32,
    /// One more failure is allowed per this interval.
    #[config(default = "3s")]
    pub peer_interval: Duration,
    /// Logins of one username checked at once by one replica; more are refused at once with
    /// `RESOURCE_EXHAUSTED` "too many concurrent logins" and a 200 ms retry hint. Bounds the
    /// guesses checked before failures lock the username out (`username_burst` - 1 + this, per
    /// replica); 0 disables the bound.
    #[config(default = 8)]
    pub username_in_flight: usize,
    /// Logins from one peer checked at once by one replica, likewise; raise it for a proxy or
    /// a NAT that logs many users in at once. 0 disables the bound.
    #[config(default = 16)]
    pub peer_in_flight: usize,
    /// Most usernames and peers with logins in flight at once on one replica (each); logins of
    /// further ones are refused like those past `username_in_flight`.
    #[config(default = 100000, min = 1)]
    pub max_entries: usize,
}

/// `[bootstrap]`: an administrator created at startup when absent, so that
/// a fresh deployment is usable. Nothing happens when `admin_username` is
/// unset or empty, and an existing credential is never changed.
#[derive(Clone, Debug, Section)]
pub struct BootstrapConfig {
    /// Username of the initial administrator; empty takes back a lower layer's.
    pub admin_username: Option<String>,
    /// Its password (required with `admin_username`); set it with
    /// `KEEL_BOOTSTRAP__ADMIN_PASSWORD`.
    pub admin_password: Option<Secret>,
    /// Its scopes; `auth:admin` is always added.
    pub admin_scopes: Vec<String>,
}

impl BootstrapConfig {
    /// The administrator's username, if one is asked for.
    pub fn admin(&self) -> Option<&str> {
        self.admin_username
            .as_deref()
            .filter(|name| !name.is_empty())
    }
}

impl ThrottleConfig {
    fn problems(&self, problems: &mut Problems<'_>) {
        for (key, burst, interval) in [
            (
                "username_interval",
                self.username_burst,
                self.username_interval,
            ),
            ("peer_interval", self.peer_burst, self.peer_interval),
        ] {
            if burst > 0 && interval.is_zero() {
                problems.push(key, "must be more than 0s");
            }
        }
    }
}

impl AuthSections {
    /// The rules between the service's sections and Keel's.
    fn problems(config: &Settings, problems: &mut Problems<'_>) {
        let auth = &config.auth;
        for (key, value) in [
            ("auth.issuer", &auth.issuer),
            ("auth.audience", &auth.audience),
        ] {
            if value.is_none() {
                problems.push(
                    key,
                    "required by the auth service, which puts it in every access token",
                );
            }
        }
        let tokens = &config.app.tokens;
        match auth.keys.iter().find(|k| k.kid == tokens.signing_kid) {
            _ if tokens.signing_kid.is_empty() => problems.push(
                "tokens.signing_kid",
                "missing; name the [[auth.keys]] entry that signs tokens",
            ),
            None => {
                let kids: Vec<&str> = auth.keys.iter().map(|k| k.kid.as_str()).collect();
                problems.push_reading(
                    "tokens.signing_kid",
                    format!(
                        "{:?} is not the kid of an [[auth.keys]] entry (have: {})",
                        tokens.signing_kid,
                        if kids.is_empty() {
                            "none".to_owned()
                        } else {
                            kids.join(", ")
                        }
                    ),
                    &["auth.keys"],
                );
            }
            Some(key)
                if !key.algorithm.is_hmac()
                    && key.private_key_pem.is_none()
                    && key.private_key_file.is_none() =>
            {
                problems.push_reading(
                    "tokens.signing_kid",
                    format!(
                        "key {:?} has no private_key_pem or private_key_file to sign with",
                        key.kid
                    ),
                    &["auth.keys"],
                );
            }
            Some(_) => {}
        }
        if tokens.refresh_ttl < tokens.access_ttl {
            problems.push_reading(
                "tokens.refresh_ttl",
                "must be at least tokens.access_ttl",
                &["tokens.access_ttl"],
            );
        }
        if tokens.session_ttl < tokens.refresh_ttl {
            problems.push_reading(
                "tokens.session_ttl",
                "must be at least tokens.refresh_ttl",
                &["tokens.refresh_ttl"],
            );
        }

        let p = &config.app.passwords;
        if let Err(e) = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None) {
            problems.push(
                "passwords",
                format!(
                    "memory_kib = {}, iterations = {}, parallelism = {} are not valid argon2 \
                     parameters: {e}",
                    p.memory_kib, p.iterations, p.parallelism
                ),
            );
        }

        let b = &config.app.bootstrap;
        match (b.admin(), &b.admin_password) {
            (Some(name), _) if crate::service::check_username(name).is_err() => {
                problems.push(
                    "bootstrap.admin_username",
                    format!(
                        "{name:?} is not a valid username (1 to 64 letters, digits, '.', '_', \
                         '-', '@')"
                    ),
                );
            }
            (Some(_), None) => problems.push(
                "bootstrap.admin_password",
                "missing; required with bootstrap.admin_username (set \
                 KEEL_BOOTSTRAP__ADMIN_PASSWORD)",
            ),
            (Some(_), Some(password))
                if crate::service::check_password(password.expose()).is_err() =>
            {
                problems.push(
                    "bootstrap.admin_password",
                    format!(
                        "must be {} to {} bytes",
                        crate::service::MIN_PASSWORD_BYTES,
                        crate::service::MAX_PASSWORD_BYTES
                    ),
                )
            }
            (None, Some(_)) => problems.push(
                "bootstrap.admin_password",
                "set without bootstrap.admin_username",
            ),
            _ => {}
        }
        if let Err(e) = crate::service::check_scopes(&b.admin_scopes) {
            problems.push("bootstrap.admin_scopes", e.to_string());
        }
    }
}
