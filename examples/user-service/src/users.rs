//! The `UserService` handler, with users kept in a [`Store`]: a SQLite file
//! by default, or PostgreSQL, chosen by `store.url`.

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use keel_rpc::RequestExt;
use keel_rpc::config::StoreConfig;
use keel_rpc::store::sqlx::{self, Row};
use keel_rpc::store::{Migration, Migrations, Store, StoreError};
use keel_rpc::with_store;
use tonic::{Request, Response, Status, Streaming};

use crate::user_v1::user_service_server::UserService;
use crate::user_v1::{
    CountUsersRequest, CountUsersResponse, CreateUserRequest, ExportUsersRequest, GetUserRequest,
    HealthCheckResponse, ImportUsersResponse, ListUsersRequest, ListUsersResponse, User,
    health_check_response,
};

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 1000;
/// Users read per query while exporting.
const EXPORT_BATCH: i64 = 500;

/// The user service's schema.
pub static MIGRATIONS: Migrations = Migrations::new(
    "users",
    &[Migration {
        version: 1,
        description: "users",
        sql: include_str!("../migrations/0001_users.sql"),
    }],
);

/// The users, in a [`Store`], ordered by id. Cheap to clone; clones share
/// the store.
#[derive(Clone, Debug)]
pub struct Users {
    store: Store,
}

/// Why a batch of users was not inserted.
enum InsertError {
    /// The email is taken.
    Taken(String),
    Store(sqlx::Error),
}

impl From<sqlx::Error> for InsertError {
    fn from(error: sqlx::Error) -> Self {
        InsertError::Store(error)
    }
}

impl Users {
    /// Connects to the store `config` names and applies the migrations.
    pub async fn connect(config: &StoreConfig) -> Result<Users, StoreError> {
        Users::new(Store::connect(config).await?).await
    }

    /// A fresh in-memory SQLite store (`sqlite::memory:`), for tests and
    /// benchmarks: its users live as long as the value.
    pub async fn in_memory() -> Result<Users, StoreError> {
        Users::connect(&StoreConfig::with_url("sqlite::memory:")).await
    }

    /// Uses `store`, applying the migrations.
    pub async fn new(store: Store) -> Result<Users, StoreError> {
        store.migrate(&MIGRATIONS).await?;
        Ok(Users { store })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Inserts every user or none: ALREADY_EXISTS if an email is taken, in
    /// the store or earlier in the batch.
    async fn insert_all(&self, batch: Vec<CreateUserRequest>) -> Result<Vec<User>, Status> {
        for (i, new) in batch.iter().enumerate() {
            if batch[..i].iter().any(|b| b.email == new.email) {
                return Err(taken(&new.email));
            }
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_millis();
        let count = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let _turn = self.store.write().await;
        let inserted: Result<Vec<User>, InsertError> = with_store!(&self.store, pool => {
            async {
                let mut tx = pool.begin().await?;
                // The write first: it serializes concurrent writers.
                let next: i64 = sqlx::query_scalar(
                    "UPDATE user_seq SET next = next + $1 WHERE name = 'users' RETURNING next",
                )
                .bind(count)
                .fetch_one(&mut *tx)
                .await?;
                for new in &batch {
                    let exists = sqlx::query("SELECT 1 FROM users WHERE email = $1")
                        .bind(&new.email)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if exists.is_some() {
                        return Err(InsertError::Taken(new.email.clone()));
                    }
                }
                let mut users = Vec::with_capacity(batch.len());
                for (seq, new) in (next - count..).zip(&batch) {
                    let id = user_id(seq);
                    sqlx::query(
                        "INSERT INTO users (seq, id, name, email, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(seq)
                    .bind(&id)
                    .bind(&new.name)
                    .bind(&new.email)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    users.push(User {
                        id,
                        name: new.name.clone(),
                        email: new.email.clone(),
                        created_at: Some(timestamp(now)),
                        updated_at: Some(timestamp(now)),
                    });
                }
                tx.commit().await?;
                Ok(users)
            }
            .await
        });
        match inserted {
            Ok(users) => Ok(users),
            Err(InsertError::Taken(email)) => Err(taken(&email)),
            // A concurrent insert of the same email won the race.
            Err(InsertError::Store(sqlx::Error::Database(e))) if e.is_unique_violation() => Err(
                Status::already_exists("a user with one of these emails exists"),
            ),
            Err(InsertError::Store(e)) => Err(store_status(e.into())),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<User>, StoreError> {
        Ok(with_store!(&self.store, pool => {
            match sqlx::query(
                "SELECT id, name, email, created_at, updated_at FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            {
                Some(row) => Some(user(&row)?),
                None => None,
            }
        }))
    }

    async fn count(&self) -> Result<i64, StoreError> {
        Ok(with_store!(&self.store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await?
        }))
    }

    /// Up to `limit` users with `seq > after`, in order.
    async fn page(&self, after: i64, limit: i64) -> Result<Vec<User>, StoreError> {
        Ok(with_store!(&self.store, pool => {
            let rows = sqlx::query(
                "SELECT id, name, email, created_at, updated_at FROM users \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter().map(user).collect::<Result<Vec<User>, sqlx::Error>>()?
        }))
    }
}

fn user<R: Row>(row: &R) -> Result<User, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let created_at: i64 = row.try_get("created_at")?;
    let updated_at: i64 = row.try_get("updated_at")?;
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        created_at: Some(timestamp(created_at)),
        updated_at: Some(timestamp(updated_at)),
    })
}

/// `u-000042` for 42.
fn user_id(seq: i64) -> String {
    format!("u-{seq:06}")
}

/// The `seq` of an id made by [`user_id`].
fn seq_of(id: &str) -> Option<i64> {
    let digits = id.strip_prefix("u-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn now_millis() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn taken(email: &str) -> Status {
    Status::already_exists(format!("a user with email {email:?} exists"))
}

/// A store failure as the caller sees it: `UNAVAILABLE` when retrying may
/// help, `INTERNAL` otherwise; the details go to the log only.
fn store_status(error: StoreError) -> Status {
    use sqlx::Error as Sqlx;
    let transient = matches!(
        &error,
        StoreError::Query(
            Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Io(_) | Sqlx::WorkerCrashed
        )
    ) || matches!(
        &error,
        StoreError::Query(Sqlx::Database(db))
            if matches!(db.code().as_deref(), Some("5" | "6" | "40001" | "40P01" | "53300" | "57P01"))
    );
    tracing::error!(%error, "store error");
    if transient {
        Status::unavailable("the user store is unavailable; retry later")
    } else {
        Status::internal("internal error")
    }
}

/// A new user as stored: the name trimmed. (user.proto's rules have
/// checked the fields before the handler runs.)
fn trimmed(new: CreateUserRequest) -> CreateUserRequest {
    CreateUserRequest {
        name: new.name.trim().to_owned(),
        email: new.email,
    }
}

/// The most characters of an id a `NOT_FOUND` quotes.
const QUOTED_ID_CHARS: usize = 64;

/// `NOT_FOUND` for the user `id`, quoting it, or its first
/// [`QUOTED_ID_CHARS`] characters and `…` when it is longer: a status
/// should not send back what a caller sent, whatever its size.
fn not_found(id: &str) -> Status {
    match id.char_indices().nth(QUOTED_ID_CHARS) {
        None => Status::not_found(format!("user {id:?} not found")),
        Some((end, _)) => Status::not_found(format!("user {:?}… not found", &id[..end])),
    }
}

/// An invalid message of a client stream, with its position in the stream
/// (the details, such as the `BadRequest`, kept).
fn in_message(index: usize, status: Status) -> Status {
    if status.code() != tonic::Code::InvalidArgument {
        return status;
    }
    Status::with_details(
        status.code(),
        format!("message {index}: {}", status.message()),
        status.details().to_vec().into(),
    )
}

#[tonic::async_trait]
impl UserService for Users {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = &request.get_ref().id;
        self.get(id)
            .await
            .map_err(store_status)?
            .map(Response::new)
            .ok_or_else(|| not_found(id))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = request.claims().map(|c| c.sub.clone()).unwrap_or_default();
        let new = trimmed(request.into_inner());
        let mut created = self.insert_all(vec![new]).await?;
        let user = created
            .pop()
            .ok_or_else(|| Status::internal("no user created"))?;
        tracing::info!(id = %user.id, %caller, "user created");
        Ok(Response::new(user))
    }

    async fn import_users(
        &self,
        request: Request<Streaming<CreateUserRequest>>,
    ) -> Result<Response<ImportUsersResponse>, Status> {
        let mut stream = request.into_inner();
        let mut batch = Vec::new();
        while let Some(message) = stream
            .message()
            .await
            .map_err(|status| in_message(batch.len(), status))?
        {
            batch.push(trimmed(message));
        }
        let users = self.insert_all(batch).await?;
        Ok(Response::new(ImportUsersResponse { users }))
    }

    type ExportUsersStream = Pin<Box<dyn Stream<Item = Result<User, Status>> + Send + 'static>>;

    async fn export_users(
        &self,
        _request: Request<ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        // Pages of EXPORT_BATCH users, read as the client consumes them.
        let users = self.clone();
        let pages = futures_util::stream::unfold(Some(0_i64), move |after| {
            let users = users.clone();
            async move {
                let after = after?;
                match users.page(after, EXPORT_BATCH).await {
                    Ok(page) if page.is_empty() => None,
                    Ok(page) => {
                        let next = page.last().and_then(|u| seq_of(&u.id));
                        let done = i64::try_from(page.len()).unwrap_or(0) < EXPORT_BATCH;
                        let items: Vec<Result<User, Status>> = page.into_iter().map(Ok).collect();
                        Some((items, if done { None } else { next }))
                    }
                    Err(error) => Some((vec![Err(store_status(error))], None)),
                }
            }
        });
        let users = futures_util::StreamExt::flat_map(pages, futures_util::stream::iter);
        Ok(Response::new(Box::pin(users)))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let ListUsersRequest {
            page_size,
            page_token,
        } = request.into_inner();
        // (user.proto's rules refuse a negative one.)
        let page_size = match i64::from(page_size) {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // The page token is the id of the last user of the previous page.
        let after = if page_token.is_empty() {
            0
        } else {
            seq_of(&page_token).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "page_token: {page_token:?} was not returned by ListUsers"
                ))
            })?
        };
        let mut users = self
            .page(after, page_size + 1)
            .await
            .map_err(store_status)?;
        let next_page_token = if i64::try_from(users.len()).unwrap_or(i64::MAX) > page_size {
            users.truncate(usize::try_from(page_size).unwrap_or(usize::MAX));
            users.last().map(|u| u.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListUsersResponse {
            users,
            next_page_token,
        }))
    }

    async fn count_users(
        &self,
        request: Request<CountUsersRequest>,
    ) -> Result<Response<CountUsersResponse>, Status> {
        // Keel admitted the call only for the gateway's certificate.
        let peer = request.peer().map(ToString::to_string).unwrap_or_default();
        let count = self.count().await.map_err(store_status)?;
        Ok(Response::new(CountUsersResponse { count, peer }))
    }

    async fn health_check(
        &self,
        _request: Request<()>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: health_check_response::Status::Serving.into(),
            timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(user_id(42), "u-000042");
        assert_eq!(seq_of("u-000042"), Some(42));
        assert_eq!(seq_of(&user_id(12_345_678)), Some(12_345_678));
        for bad in ["", "u-", "x-1", "u-1a", "u--1", "u-+1"] {
            assert_eq!(seq_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let t = timestamp(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
    }
}
