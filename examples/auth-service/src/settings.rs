//! The auth service's own configuration sections, beside Keel's.

use std::path::Path;
use std::time::Duration;

use keel::config::{Config, ConfigError, Loader, Secret};
use serde::{Deserialize, Serialize};

/// Everything the auth service is configured with: Keel's sections
/// (`service`, `server`, `metrics`, `auth`, `store`) and its own (`tokens`,
/// `passwords`, `throttle`, `bootstrap`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Keel's sections. `auth.keys` holds the signing keys (with their
    /// private halves for asymmetric algorithms); `auth.issuer` and
    /// `auth.audience` are required and go into every access token; `store`
    /// says where credentials and sessions live.
    pub keel: Config,
    /// `[tokens]`: lifetimes and the signing key.
    pub tokens: TokensConfig,
    /// `[passwords]`: the argon2id cost.
    pub passwords: PasswordsConfig,
    /// `[throttle]`: limits on failed logins.
    pub throttle: ThrottleConfig,
    /// `[bootstrap]`: the initial administrator.
    pub bootstrap: BootstrapConfig,
}

/// The application sections, in the order they are documented.
pub const APP_SECTIONS: [&str; 4] = ["tokens", "passwords", "throttle", "bootstrap"];

/// `[tokens]`: what the service issues.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// `kid` of the `[[auth.keys]]` entry that signs access tokens. The other
    /// entries with a private key stay published by `GetJwks` (rotation).
    pub signing_kid: String,
    /// Lifetime of access tokens. Default 15 min; between 10 s and 24 h.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Lifetime of each refresh token (every refresh issues a new one).
    /// Default 30 days; at least `access_ttl`.
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a session (refresh-token family), however often
    /// it is refreshed. Default 90 days; at least `refresh_ttl`.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            signing_kid: String::new(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            session_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// `[passwords]`: the argon2id parameters of new hashes (existing hashes
/// keep theirs and are upgraded at the next successful login).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordsConfig {
    /// Memory cost in KiB. Default 19456 (19 MiB, OWASP's minimum for argon2id).
    pub memory_kib: u32,
    /// Number of passes. Default 2.
    pub iterations: u32,
    /// Degree of parallelism. Default 1.
    pub parallelism: u32,
    /// Hashes computed at once; more wait their turn. Default: the number of
    /// CPUs (at least 1), which bounds memory at `memory_kib` × this.
    pub max_concurrent: usize,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        PasswordsConfig {
            memory_kib: argon2::Params::DEFAULT_M_COST,
            iterations: argon2::Params::DEFAULT_T_COST,
            parallelism: argon2::Params::DEFAULT_P_COST,
            max_concurrent: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// `[throttle]`: token buckets of failed logins, one per username and one
/// per peer address (IPv4 address or IPv6 /64). A failure takes a token; a
/// login attempted with an empty bucket is refused with
/// `RESOURCE_EXHAUSTED` and a retry hint, without checking the password.
/// Kept in memory, per replica.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failures allowed in a row for one username. Default 5; 0 disables
    /// the per-username limit.
    pub username_burst: u32,
    /// One more failure is allowed per this interval. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub username_interval: Duration,
    /// Failures allowed in a row from one peer. Default 20; 0 disables the
    /// per-peer limit.
    pub peer_burst: u32,
    /// One more failure is allowed per this interval. Default 3 s.
    #[serde(with = "humantime_serde")]
    pub peer_interval: Duration,
    /// Most usernames and peers tracked at once (each). Default 100 000.
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            username_burst: 5,
            username_interval: Duration::from_secs(30),
            peer_burst: 20,
            peer_interval: Duration::from_secs(3),
            max_entries: 100_000,
        }
    }
}

/// `[bootstrap]`: an administrator created at startup when absent, so that
/// a fresh deployment is usable. Nothing happens when `admin_username` is
/// unset or empty, and an existing credential is never changed.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Username of the initial administrator.
    pub admin_username: Option<String>,
    /// Its password (required with `admin_username`); redacted when printed.
    /// Set it with `KEEL_BOOTSTRAP__ADMIN_PASSWORD`.
    pub admin_password: Option<Secret>,
    /// Its scopes; `auth:admin` is always added.
    pub admin_scopes: Vec<String>,
}

impl Settings {
    /// Loads every section: built-in defaults < `defaults_toml` < in
    /// development [`DEVELOPMENT_CONFIG`](crate::DEVELOPMENT_CONFIG) < `file`
    /// < `KEEL_*` environment variables, reporting every problem at once.
    pub fn load(defaults_toml: &str, file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut loader = Loader::new()
            .defaults_toml(defaults_toml)
            .development_toml(crate::DEVELOPMENT_CONFIG);
        if let Some(file) = file {
            loader = loader.file(file);
        }
        Settings::from_loader(loader.env())
    }

    /// Loads every section from `loader` (its application sections are
    /// declared here).
    pub fn from_loader(mut loader: Loader) -> Result<Settings, ConfigError> {
        for section in APP_SECTIONS {
            loader = loader.allow_section(section);
        }
        let mut problems = Vec::new();
        let mut take = |result: Result<(), ConfigError>| {
            if let Err(e) = result {
                problems.extend(e.problems().iter().cloned());
            }
        };
        let mut keel = None;
        take(loader.load().map(|c| keel = Some(c)));
        let mut tokens = TokensConfig::default();
        take(loader.extract_section("tokens").map(|v| tokens = v));
        let mut passwords = PasswordsConfig::default();
        take(loader.extract_section("passwords").map(|v| passwords = v));
        let mut throttle = ThrottleConfig::default();
        take(loader.extract_section("throttle").map(|v| throttle = v));
        let mut bootstrap = BootstrapConfig::default();
        take(loader.extract_section("bootstrap").map(|v| bootstrap = v));
        // `admin_username = ""` takes back a lower layer's administrator.
        bootstrap.admin_username = bootstrap.admin_username.filter(|name| !name.is_empty());
        let mut deduplicated: Vec<String> = Vec::new();
        for problem in problems {
            if !deduplicated.contains(&problem) {
                deduplicated.push(problem);
            }
        }
        let Some(keel) = keel.filter(|_| deduplicated.is_empty()) else {
            return Err(ConfigError::new(deduplicated));
        };
        let settings = Settings {
            keel,
            tokens,
            passwords,
            throttle,
            bootstrap,
        };
        let problems = settings.problems();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::new(problems))
        }
    }

    /// The semantic problems of the service's own settings.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let auth = &self.keel.auth;
        for (key, value) in [
            ("auth.issuer", &auth.issuer),
            ("auth.audience", &auth.audience),
        ] {
            if value.is_none() {
                problems.push(format!(
                    "{key}: required by the auth service, which puts it in every access token"
                ));
            }
        }
        let tokens = &self.tokens;
        match auth.keys.iter().find(|k| k.kid == tokens.signing_kid) {
            _ if tokens.signing_kid.is_empty() => problems.push(
                "tokens.signing_kid: missing; name the [[auth.keys]] entry that signs tokens"
                    .to_owned(),
            ),
            None => {
                let kids: Vec<&str> = auth.keys.iter().map(|k| k.kid.as_str()).collect();
                problems.push(format!(
                    "tokens.signing_kid: {:?} is not the kid of an [[auth.keys]] entry (have: {})",
                    tokens.signing_kid,
                    if kids.is_empty() {
                        "none".to_owned()
                    } else {
                        kids.join(", ")
                    }
                ));
            }
            Some(key)
                if !key.algorithm.is_hmac()
                    && key.private_key_pem.is_none()
                    && key.private_key_file.is_none() =>
            {
                problems.push(format!(
                    "tokens.signing_kid: key {:?} has no private_key_pem or private_key_file to \
                     sign with",
                    key.kid
                ));
            }
            Some(_) => {}
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(24 * 3600)).contains(&tokens.access_ttl)
        {
            problems.push("tokens.access_ttl: must be between 10s and 24h".to_owned());
        }
        if tokens.refresh_ttl < tokens.access_ttl {
            problems.push("tokens.refresh_ttl: must be at least tokens.access_ttl".to_owned());
        }
        if tokens.session_ttl < tokens.refresh_ttl {
            problems.push("tokens.session_ttl: must be at least tokens.refresh_ttl".to_owned());
        }

        let p = &self.passwords;
        if let Err(e) = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None) {
            problems.push(format!(
                "passwords: memory_kib = {}, iterations = {}, parallelism = {} are not valid \
                 argon2 parameters: {e}",
                p.memory_kib, p.iterations, p.parallelism
            ));
        }
        if p.max_concurrent == 0 {
            problems.push("passwords.max_concurrent: must be at least 1".to_owned());
        }

        let t = &self.throttle;
        for (key, burst, interval) in [
            (
                "throttle.username_interval",
                t.username_burst,
                t.username_interval,
            ),
            ("throttle.peer_interval", t.peer_burst, t.peer_interval),
        ] {
            if burst > 0 && interval.is_zero() {
                problems.push(format!("{key}: must be more than 0s"));
            }
        }
        if t.max_entries == 0 {
            problems.push("throttle.max_entries: must be at least 1".to_owned());
        }

        let b = &self.bootstrap;
        match (&b.admin_username, &b.admin_password) {
            (Some(name), _) if crate::service::check_username(name).is_err() => {
                problems.push(format!(
                    "bootstrap.admin_username: {name:?} is not a valid username (1 to 64 \
                     letters, digits, '.', '_', '-', '@')"
                ));
            }
            (Some(_), None) => problems.push(
                "bootstrap.admin_password: missing; required with bootstrap.admin_username \
                 (set KEEL_BOOTSTRAP__ADMIN_PASSWORD)"
                    .to_owned(),
            ),
            (Some(_), Some(password))
                if crate::service::check_password(password.expose()).is_err() =>
            {
                problems.push(format!(
                    "bootstrap.admin_password: must be {} to {} bytes",
                    crate::service::MIN_PASSWORD_BYTES,
                    crate::service::MAX_PASSWORD_BYTES
                ))
            }
            (None, Some(_)) => problems
                .push("bootstrap.admin_password: set without bootstrap.admin_username".to_owned()),
            _ => {}
        }
        if let Err(e) = crate::service::check_scopes(&b.admin_scopes) {
            problems.push(format!("bootstrap.admin_scopes: {e}"));
        }
        problems
    }

    /// Every section as TOML, secrets and database passwords redacted.
    pub fn to_toml_redacted(&self) -> String {
        #[derive(Serialize)]
        struct App<'a> {
            tokens: &'a TokensConfig,
            passwords: &'a PasswordsConfig,
            throttle: &'a ThrottleConfig,
            bootstrap: &'a BootstrapConfig,
        }
        let app = App {
            tokens: &self.tokens,
            passwords: &self.passwords,
            throttle: &self.throttle,
            bootstrap: &self.bootstrap,
        };
        let app = toml::to_string(&app)
            .unwrap_or_else(|e| format!("# the configuration could not be rendered: {e}\n"));
        format!("{}\n{app}", self.keel.to_toml_redacted())
    }
}
