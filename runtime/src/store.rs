//! A relational store for Keel services: SQLite embedded, PostgreSQL at scale
//! (cargo feature `store`).
//!
//! A service names its database by URL (`[store] url`, [`StoreConfig`]) and
//! gets a [`Store`]: sqlx's SQLite or PostgreSQL pool ([`StorePool`]):
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
//! use keel_rpc::store::sqlx::{self, Row};
//! use keel_rpc::store::{Migration, Migrations, Store, StoreConfig};
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
//! let body: Option<String> = keel_rpc::with_store!(&store, pool => {
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
//! **Write transactions** hold [`Store::write`] while they run (on SQLite,
//! writers then queue in the process instead of polling the database lock;
//! on PostgreSQL it is free), and start with a write statement
//! (`INSERT`/`UPDATE`/`DELETE`): on SQLite a transaction that reads first
//! holds a snapshot, and upgrading it to a writer fails at once with
//! `SQLITE_BUSY` when another connection has written meanwhile, instead of
//! waiting for the busy timeout.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use sqlx;
use sqlx::migrate::{MigrateError, Migration as SqlxMigration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::redact_url;
pub use crate::config::{DatabaseUrl, StoreConfig};

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
                reason: crate::config::STORE_SCHEMES.to_owned(),
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

/// The connection pool of a [`Store`], by backend.
#[derive(Clone, Debug)]
pub enum StorePool {
    /// An embedded SQLite database.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// A service's database: a pool of connections, and on SQLite the process's
/// turn to write ([`Store::write`]). Cheap to clone; clones share both.
///
/// Run queries on the concrete pool with [`with_store!`]; match on
/// [`Store::pool`] for code that differs between the backends.
#[derive(Clone, Debug)]
pub struct Store {
    pool: StorePool,
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// The turn to write of [`Store::write`]; the next writer goes when it is
/// dropped.
#[derive(Debug)]
#[must_use = "the turn ends when the guard is dropped"]
pub struct WriteGuard(#[allow(dead_code)] Option<tokio::sync::OwnedMutexGuard<()>>);

impl Store {
    /// A store over `pool`.
    pub fn from_pool(pool: StorePool) -> Store {
        Store {
            pool,
            writer: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &StorePool {
        &self.pool
    }

    /// Waits for this process's turn to write, for a write transaction to
    /// hold while it runs. SQLite lets one connection write at a time, and
    /// makes the others poll with growing sleeps (up to 100 ms each) until
    /// the busy timeout: queuing writers here instead keeps the tail latency
    /// of concurrent writes low (in the auth service's refresh benchmark,
    /// p99 went from ~180 ms to ~20 ms, and throughput up by a quarter). On
    /// PostgreSQL, which has row locks, it returns at once.
    pub async fn write(&self) -> WriteGuard {
        match self.pool {
            StorePool::Sqlite(_) => WriteGuard(Some(self.writer.clone().lock_owned().await)),
            StorePool::Postgres(_) => WriteGuard(None),
        }
    }

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
                let mut pool = SqlitePoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.acquire_timeout);
                if config.is_in_memory() {
                    // The database lives as long as a connection to it: keep one.
                    pool = pool
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                let pool = pool.connect_with(options).await.map_err(connect_error)?;
                Ok(Store::from_pool(StorePool::Sqlite(pool)))
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url).map_err(bad_url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                Ok(Store::from_pool(StorePool::Postgres(pool)))
            }
        }
    }

    /// Connects to `url` with the other settings at their defaults.
    pub async fn connect_url(url: &str) -> Result<Store, StoreError> {
        Store::connect(&StoreConfig::with_url(url)).await
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            StorePool::Sqlite(_) => Backend::Sqlite,
            StorePool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the steps of `migrations` not applied yet, each in its own
    /// transaction. On PostgreSQL several replicas may call it at once: sqlx
    /// holds an advisory lock for the duration. On SQLite it takes none, so
    /// replicas sharing a file must let one migrate first (as `cargo xtask
    /// run --replicas` does). Fails when an applied step has changed or is
    /// no longer in the list.
    pub async fn migrate(&self, migrations: &Migrations) -> Result<(), StoreError> {
        let migrator = migrations.migrator()?;
        let result = match &self.pool {
            StorePool::Sqlite(pool) => migrator.run(pool).await,
            StorePool::Postgres(pool) => migrator.run(pool).await,
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
        match &self.pool {
            StorePool::Sqlite(pool) => pool.close().await,
            StorePool::Postgres(pool) => pool.close().await,
        }
    }
}

/// Runs `body` with `pool` bound to the concrete pool of a [`Store`]
/// (`&SqlitePool` or `&PgPool`): the code is written once and compiled for
/// each backend, so it can use anything both drivers support (`$1`
/// placeholders, `i64`, `String`, `Option`, transactions). Both arms must
/// give the same type.
///
/// ```no_run
/// # async fn f(store: &keel_rpc::store::Store) -> Result<u64, keel_rpc::store::sqlx::Error> {
/// use keel_rpc::store::sqlx;
/// let deleted = keel_rpc::with_store!(store, pool => {
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
        match $crate::store::Store::pool(::core::borrow::Borrow::<$crate::store::Store>::borrow(
            &$store,
        )) {
            $crate::store::StorePool::Sqlite($pool) => $body,
            $crate::store::StorePool::Postgres($pool) => $body,
        }
    };
}

#[doc(inline)]
pub use crate::with_store;

#[cfg(test)]
mod tests {
    use super::*;

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
