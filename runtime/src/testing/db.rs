//! A fresh database per test: a SQLite file in a temporary directory, or a
//! schema of its own in the PostgreSQL database named by
//! `KEEL_TEST_POSTGRES_URL`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::StoreConfig;
use crate::store::{Store, StoreError, sqlx};

/// The variable that names the PostgreSQL database of the tests
/// (`postgres://postgres@127.0.0.1:5432/test`, say).
pub const POSTGRES_ENV: &str = "KEEL_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A new schema in the database of [`POSTGRES_ENV`].
    Postgres,
}

/// A fresh, empty database, removed when dropped (the SQLite directory, or
/// the PostgreSQL schema).
///
/// A PostgreSQL test fails, rather than skips, when [`POSTGRES_ENV`] is not
/// set: a suite that silently skips its database tests tests nothing.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use keel_rpc::testing::{Db, TestDb};
///
/// let db = TestDb::new(Db::Postgres).await;
/// let store = db.store().await?; // its own schema, dropped with `db`
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestDb {
    /// The store configuration that opens it.
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
    /// The server's URL and the schema, for PostgreSQL.
    schema: Option<(String, String)>,
}

static NEXT_SCHEMA: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// A new database of kind `db`.
    ///
    /// # Panics
    ///
    /// When it cannot be made: no temporary directory, [`POSTGRES_ENV`] not
    /// set, or PostgreSQL not reachable (the message says which).
    pub async fn new(db: Db) -> TestDb {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                TestDb {
                    config: StoreConfig::with_url(url),
                    _dir: Some(dir),
                    schema: None,
                }
            }
            Db::Postgres => {
                let base = match std::env::var(POSTGRES_ENV) {
                    Ok(url) if !url.trim().is_empty() => url,
                    _ => panic!(
                        "{POSTGRES_ENV} is not set: the PostgreSQL tests need a database, such as \
                         postgres://postgres@127.0.0.1:5432/test (trust auth)"
                    ),
                };
                let schema = format!(
                    "keel_test_{}_{}",
                    std::process::id(),
                    NEXT_SCHEMA.fetch_add(1, Ordering::Relaxed)
                );
                let admin = Store::connect_url(&base)
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_ENV}: cannot reach PostgreSQL: {e}"));
                crate::with_store!(&admin, pool => {
                    for statement in [
                        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                        format!("CREATE SCHEMA {schema}"),
                    ] {
                        sqlx::query(sqlx::AssertSqlSafe(statement))
                            .execute(pool)
                            .await
                            .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
                    }
                });
                admin.close().await;
                let separator = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    config: StoreConfig::with_url(format!(
                        "{base}{separator}options[search_path]={schema}"
                    )),
                    _dir: None,
                    schema: Some((base, schema)),
                }
            }
        }
    }

    /// Opens it.
    pub async fn store(&self) -> Result<Store, StoreError> {
        Store::connect(&self.config).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(store) = Store::connect_url(&base).await {
                    let _ = crate::with_store!(&store, pool => {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        )))
                        .execute(pool)
                        .await
                        .map(|_| ())
                    });
                    store.close().await;
                }
            });
        })
        .join();
    }
}

/// Defines the tests `sqlite::<name>` and `postgres::<name>`, each running
/// `async fn name(db: keel_rpc::testing::Db)` of the enclosing module on its
/// database kind (on a two-thread Tokio runtime).
///
/// ```ignore
/// async fn users_round_trip(db: keel_rpc::testing::Db) {
///     let db = keel_rpc::testing::TestDb::new(db).await;
///     // ...
/// }
///
/// keel_rpc::on_both_backends!(users_round_trip);
/// ```
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testing::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testing::Db::Postgres).await
                }
            )*
        }
    };
}
