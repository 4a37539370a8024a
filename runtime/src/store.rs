//! A relational store for Keel services: SQLite embedded, PostgreSQL at scale
//! (cargo feature `store`).
//!
//! A service names its database by URL and gets a [`Store`], an enum over
//! sqlx's SQLite and PostgreSQL pools:
//!
//! - `sqlite://path/to/file.db?mode=rwc` (the usual default): a file beside
//!   the service, opened in WAL mode with `synchronous = FULL` (a transaction
//!   acknowledged to a caller survives `kill -9` and power loss), foreign keys
//!   enforced and a busy timeout, so concurrent writers wait rather than fail.
//!   `sqlite::memory:` is an in-memory database shared by the pool's
//!   connections (tests, benchmarks).
//! - `postgres://user[:password]@host[:port]/database` (or `postgresql://`):
//!   several replicas sharing one store. A schema other than `public` is
//!   chosen with `?options[search_path]=NAME`.
//!
//! Each service keeps **one set of migrations for both backends**
//! ([`Migrations`]), applied at startup by [`Store::migrate`] and recorded in
//! a table of its own (`_keel_<name>_migrations`), so several services can
//! share a database. The SQL is written once, in the common subset of both
//! dialects: `TEXT` and `BIGINT` columns (timestamps as Unix milliseconds,
//! booleans as nullable timestamps), `$1`-style placeholders (SQLite accepts
//! them too), `INSERT … ON CONFLICT DO NOTHING`, `UPDATE … RETURNING`.
//!
//! Queries run on the concrete pool, written once with [`with_store!`]:
//!
//! ```no_run
//! use keel::store::sqlx::{self, Row};
//! use keel::store::{Migration, Migrations, Store, StoreConfig};
//!
//! static MIGRATIONS: Migrations = Migrations::new(
//!     "notes",
//!     &[Migration {
//!         version: 1,
//!         description: "notes",
//!         sql: "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
//!     }],
//! );
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::connect(&StoreConfig::default()).await?;
//! store.migrate(&MIGRATIONS).await?;
//! let body: Option<String> = keel::with_store!(&store, pool => {
//!     sqlx::query("SELECT body FROM notes WHERE id = $1")
//!         .bind("n-1")
//!         .fetch_optional(pool)
//!         .await?
//!         .map(|row| row.try_get("body"))
//!         .transpose()?
//! });
//! # Ok(()) }
//! ```
//!
//! **Write transactions on SQLite** must start with a write statement
//! (`INSERT`/`UPDATE`/`DELETE`): a transaction that reads first holds a
//! snapshot, and upgrading it to a writer fails at once with `SQLITE_BUSY`
//! when another connection has written meanwhile, instead of waiting for the
//! busy timeout.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
pub use sqlx;
use sqlx::migrate::{MigrateError, Migration as SqlxMigration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Configuration of a [`Store`]: the `[store]` section of a service that has
/// one (declare it with
/// [`Loader::allow_section`](crate::config::Loader::allow_section)).
///
/// | key | default | notes |
/// |---|---|---|
/// | `store.url` | `"sqlite://keel.db?mode=rwc"` | `sqlite://…` or `postgres://…`; the password is redacted when printed |
/// | `store.max_connections` | `8` | pool size, at least 1 |
/// | `store.acquire_timeout` | `"10s"` | waiting for a free connection |
/// | `store.busy_timeout` | `"5s"` | SQLite: waiting for the write lock |
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the data lives: `sqlite://PATH?mode=rwc`, `sqlite::memory:` or
    /// `postgres://…`.
    pub url: DatabaseUrl,
    /// Maximum number of pooled connections. Default 8.
    pub max_connections: u32,
    /// How long a query waits for a free connection. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for the database lock. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: DatabaseUrl::new("sqlite://keel.db?mode=rwc"),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl StoreConfig {
    /// The default configuration with another URL.
    pub fn with_url(url: impl Into<String>) -> Self {
        StoreConfig {
            url: DatabaseUrl::new(url),
            ..StoreConfig::default()
        }
    }

    /// The problems of this configuration, each starting with its key
    /// (`store.url: …`); empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = Backend::of_url(self.url.expose()) {
            problems.push(format!("store.url: {e}"));
        }
        if self.max_connections == 0 {
            problems.push("store.max_connections: must be at least 1".to_owned());
        }
        if self.acquire_timeout.is_zero() {
            problems.push("store.acquire_timeout: must be more than 0s".to_owned());
        }
        problems
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
fn redact_url(url: &str) -> Cow<'_, str> {
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

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite, embedded in the process.
    Sqlite,
    /// PostgreSQL, over the network.
    Postgres,
}

impl Backend {
    /// The backend a URL names, from its scheme.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::Url {
                url: redact_url(url).into_owned(),
                reason: "the scheme must be sqlite: or postgres: (e.g. \
                         sqlite://data.db?mode=rwc, postgres://user@host/db)"
                    .to_owned(),
            }),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of [`Store`] setup and use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is not one a store can use.
    #[error("store.url {url}: {reason}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or opened.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("migrating {name} on {backend}: {source}")]
    Migrate {
        /// The [`Migrations::name`].
        name: &'static str,
        /// The backend.
        backend: Backend,
        /// What sqlx said.
        source: MigrateError,
    },
    /// [`Migrations::new`] was given a name unfit for a table name.
    #[error("migrations name {0:?}: use lowercase letters, digits and _")]
    MigrationsName(&'static str),
    /// A query failed.
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
}

/// One step of a service's schema: `version` orders the steps (1, 2, …);
/// `sql` may hold several statements and must run on both backends.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Position of the step; never reuse or reorder a released one.
    pub version: i64,
    /// Short description, recorded with the applied step.
    pub description: &'static str,
    /// The SQL, in the dialect common to SQLite and PostgreSQL.
    pub sql: &'static str,
}

/// The migrations of one service, recorded in the table
/// `_keel_<name>_migrations`.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    name: &'static str,
    steps: &'static [Migration],
}

impl Migrations {
    /// The steps of the service `name` (lowercase letters, digits and `_`;
    /// it names the bookkeeping table).
    pub const fn new(name: &'static str, steps: &'static [Migration]) -> Self {
        Migrations { name, steps }
    }

    /// The service name given to [`Migrations::new`].
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The steps, in the order given.
    pub fn steps(&self) -> &'static [Migration] {
        self.steps
    }

    /// The bookkeeping table: `_keel_<name>_migrations`.
    pub fn table(&self) -> String {
        format!("_keel_{}_migrations", self.name)
    }

    fn migrator(&self) -> Result<Migrator, StoreError> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            return Err(StoreError::MigrationsName(self.name));
        }
        let steps = self
            .steps
            .iter()
            .map(|step| {
                SqlxMigration::new(
                    step.version,
                    Cow::Borrowed(step.description),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(step.sql),
                    false,
                )
            })
            .collect();
        let mut migrator = Migrator::with_migrations(steps);
        migrator.dangerous_set_table_name(self.table());
        Ok(migrator)
    }
}

/// A pool of connections to the service's database. Cheap to clone; clones
/// share the pool.
///
/// Run queries on the concrete pool with [`with_store!`]; match on the enum
/// for code that differs between the backends.
#[derive(Clone, Debug)]
pub enum Store {
    /// An embedded SQLite database.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

impl Store {
    /// Connects following `config` (the backend comes from the URL scheme).
    ///
    /// SQLite connections use WAL, `synchronous = FULL`, foreign keys and
    /// `config.busy_timeout`; a file URL needs `?mode=rwc` to be created when
    /// missing.
    pub async fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        let url = config.url.expose();
        let redacted = || config.url.redacted().into_owned();
        let bad_url = |e: sqlx::Error| StoreError::Url {
            url: redacted(),
            reason: e.to_string(),
        };
        let connect_error = |source| StoreError::Connect {
            url: redacted(),
            source,
        };
        match Backend::of_url(url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(bad_url)?
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(config.busy_timeout);
                let pool = SqlitePoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                Ok(Store::Sqlite(pool))
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url).map_err(bad_url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                Ok(Store::Postgres(pool))
            }
        }
    }

    /// Connects to `url` with the other settings at their defaults.
    pub async fn connect_url(url: &str) -> Result<Store, StoreError> {
        Store::connect(&StoreConfig::with_url(url)).await
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the steps of `migrations` not applied yet, each in its own
    /// transaction. Safe to call from several replicas at once: sqlx takes a
    /// lock for the duration (an advisory lock on PostgreSQL). Fails when an
    /// applied step has changed or is no longer in the list.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), StoreError> {
        let migrator = migrations.migrator()?;
        let result = match self {
            Store::Sqlite(pool) => migrator.run(pool).await,
            Store::Postgres(pool) => migrator.run(pool).await,
        };
        result.map_err(|source| StoreError::Migrate {
            name: migrations.name,
            backend: self.backend(),
            source,
        })
    }

    /// Checks that the database answers (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        crate::with_store!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

/// Runs `body` with `pool` bound to the concrete pool of a [`Store`]
/// (`&SqlitePool` or `&PgPool`): the code is written once and compiled for
/// each backend, so it can use anything both drivers support (`$1`
/// placeholders, `i64`, `String`, `Option`, transactions).
///
/// ```no_run
/// # async fn f(store: &keel::store::Store) -> Result<u64, keel::store::sqlx::Error> {
/// use keel::store::sqlx;
/// let deleted = keel::with_store!(store, pool => {
///     sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
///         .bind(0_i64)
///         .execute(pool)
///         .await?
///         .rows_affected()
/// });
/// # Ok(deleted) }
/// ```
#[macro_export]
macro_rules! with_store {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}

#[doc(inline)]
pub use crate::with_store;

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

    #[test]
    fn backends_come_from_the_scheme() {
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("sqlite://a.db?mode=rwc").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgresql://h/d").unwrap(),
            Backend::Postgres
        );
        let error = Backend::of_url("mysql://u:pw@h/d").unwrap_err().to_string();
        assert!(error.contains("sqlite: or postgres:"), "{error}");
        assert!(!error.contains("pw"), "{error}");
    }
}
