//! [`Environment`]: whether development conveniences may exist (`service.environment`).

use figment::value::{Dict, Tag, Value};
use serde::{Deserialize, Serialize};

/// What a service is run as (`service.environment`, `KEEL_SERVICE__ENVIRONMENT`).
///
/// The default is [`Production`](Environment::Production): a configuration that says nothing
/// is a production one. Development credentials (an application's
/// [`development_toml`](super::Loader::development_toml): a published HMAC secret, a
/// bootstrap password) are layered in only when `"development"` is asked for explicitly; in
/// production a configured value equal to one of them is an error naming its key.
///
/// ```
/// use keel_rpc::config::{Environment, Loader};
///
/// let dev = "[auth]\nhmac_secret = \"a-development-secret-everyone-knows\"\n";
/// let config = Loader::new()
///     .development_toml(dev)
///     .env_from([("KEEL_SERVICE__ENVIRONMENT", "development")])
///     .load()?;
/// assert_eq!(config.service.environment, Environment::Development);
/// assert!(config.auth.hmac_secret.is_some());
///
/// // Without the setting, the development layer is not there: no key, no service.
/// let error = Loader::new().development_toml(dev).load().unwrap_err();
/// assert!(error.to_string().contains("auth.hmac_secret: missing"), "{error}");
/// # Ok::<(), keel_rpc::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// `"production"`, the default: no development credential is layered in, and none may be
    /// configured.
    #[default]
    Production,
    /// `"development"`: the application's development layer is merged above its embedded
    /// defaults (and below files and the environment).
    Development,
}

impl Environment {
    /// Whether this is [`Environment::Development`].
    pub fn is_development(self) -> bool {
        self == Environment::Development
    }

    /// How it is written in the configuration: `"production"` or `"development"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Development => "development",
        }
    }
}

/// Strings of a development layer at least this long count as development credentials: long
/// enough for every secret and password, short enough for none of the names (`kid = "dev"`,
/// `admin_username = "admin"`) a production configuration may share.
pub(super) const MIN_CREDENTIAL_BYTES: usize = 16;

/// The development credentials of the development layers `dicts`: their strings of at least
/// [`MIN_CREDENTIAL_BYTES`], wherever they stand.
pub(super) fn credentials<'a>(dicts: impl IntoIterator<Item = &'a Dict>) -> Vec<String> {
    fn collect(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(_, s) if s.len() >= MIN_CREDENTIAL_BYTES => out.push(s.clone()),
            Value::Dict(_, dict) => dict.values().for_each(|v| collect(v, out)),
            Value::Array(_, values) => values.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for dict in dicts {
        dict.values().for_each(|value| collect(value, &mut out));
    }
    out
}

/// The keys of `data` (dotted, array entries by index) whose value is one of `credentials`,
/// with the value's tag (which tells the layer it came from).
pub(super) fn keys_holding(data: &Dict, credentials: &[String]) -> Vec<(String, Tag)> {
    fn walk(value: &Value, key: String, credentials: &[String], out: &mut Vec<(String, Tag)>) {
        match value {
            Value::String(tag, s) if credentials.contains(s) => out.push((key, *tag)),
            Value::Dict(_, dict) => {
                for (name, value) in dict {
                    walk(value, format!("{key}.{name}"), credentials, out);
                }
            }
            Value::Array(_, values) => {
                for (i, value) in values.iter().enumerate() {
                    walk(value, format!("{key}.{i}"), credentials, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if !credentials.is_empty() {
        for (name, value) in data {
            walk(value, name.clone(), credentials, &mut out);
        }
    }
    out
}
