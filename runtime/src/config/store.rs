//! The `[store]` section: where a service that keeps data keeps it (see `keel_rpc::store`, cargo
//! feature `store`).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::Section;

/// What `store.url` must look like (the scheme names the backend).
pub const STORE_SCHEMES: &str = "the scheme must be sqlite: or postgres: (e.g. sqlite://data.db?mode=rwc, postgres://user@host/db)";

/// Configuration of a service's store (`[store]`): used by `keel_rpc::store::Store::connect`
/// (cargo feature `store`); services without a store ignore it.
#[derive(Clone, Debug, Section)]
#[config(validate = Self::problems)]
pub struct StoreConfig {
    /// Where the data lives: `sqlite://PATH?mode=rwc`, `sqlite::memory:` or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (TLS: `?sslmode=verify-full&sslrootcert=CA.pem`);
    /// its password is redacted when shown.
    #[config(default = "sqlite://keel.db?mode=rwc")]
    pub url: DatabaseUrl,
    /// Pool size.
    #[config(default = 8, min = 1)]
    pub max_connections: u32,
    /// How long a query waits for a free connection.
    #[config(default = "10s", above = "0s")]
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the database lock.
    #[config(default = "5s")]
    pub busy_timeout: Duration,
}

impl StoreConfig {
    /// The default configuration with another URL.
    pub fn with_url(url: impl Into<String>) -> Self {
        StoreConfig {
            url: DatabaseUrl::new(url),
            ..StoreConfig::default()
        }
    }

    /// Whether the URL names an in-memory SQLite database (`sqlite::memory:`,
    /// `sqlite://:memory:`, `mode=memory`), which lives only as long as its connections.
    pub fn is_in_memory(&self) -> bool {
        let url = self.url.expose();
        url.contains(":memory:") || url.contains("mode=memory")
    }
}

/// A database URL. `Debug`, `Display` and `Serialize` hide its password
/// (`postgres://keel:[redacted]@db/keel`); read the real value with
/// [`DatabaseUrl::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL, password included. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password, if any, replaced by `[redacted]`.
    pub fn redacted(&self) -> Cow<'_, str> {
        redact_url(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        DatabaseUrl::new(url)
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        DatabaseUrl(url)
    }
}

/// Hides the password of `scheme://user:password@host/…` and of a
/// `password=` query parameter.
pub(crate) fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _password)) => {
                Cow::Owned(format!("{user}:[redacted]@{}", &authority[at + 1..]))
            }
            None => Cow::Borrowed(authority),
        },
        None => Cow::Borrowed(authority),
    };
    let path = match path.split_once('?') {
        Some((before, query)) if query.split('&').any(|p| p.starts_with("password=")) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|p| {
                    if p.starts_with("password=") {
                        "password=[redacted]"
                    } else {
                        p
                    }
                })
                .collect();
            Cow::Owned(format!("{before}?{}", query.join("&")))
        }
        _ => Cow::Borrowed(path),
    };
    if matches!((&authority, &path), (Cow::Borrowed(_), Cow::Borrowed(_))) {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(format!("{scheme}://{authority}{path}"))
    }
}

/// Whether the URL has a scheme a store supports.
pub(crate) fn supported_scheme(url: &str) -> bool {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "sqlite" | "postgres" | "postgresql"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        for (url, shown) in [
            (
                "postgres://keel:s3cret@db:5432/keel",
                "postgres://keel:[redacted]@db:5432/keel",
            ),
            (
                "postgres://keel:p@ss@db/keel?sslmode=require",
                "postgres://keel:[redacted]@db/keel?sslmode=require",
            ),
            (
                "postgres://keel@db/keel?sslmode=require&password=x@y",
                "postgres://keel@db/keel?sslmode=require&password=[redacted]",
            ),
            ("postgres://db/keel", "postgres://db/keel"),
            ("sqlite://data.db?mode=rwc", "sqlite://data.db?mode=rwc"),
            ("sqlite::memory:", "sqlite::memory:"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let url = DatabaseUrl::new("postgres://u:pw@h/d");
        assert!(!format!("{url:?} {url}").contains("pw"));
    }
}
