//! The `UserService` handler, with users kept in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use keel::RequestExt;
use tonic::{Request, Response, Status, Streaming};

use crate::user_v1::user_service_server::UserService;
use crate::user_v1::{
    CreateUserRequest, ExportUsersRequest, GetUserRequest, HealthCheckResponse,
    ImportUsersResponse, ListUsersRequest, ListUsersResponse, User, health_check_response,
};

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// Users in memory, ordered by id. Cheap to clone; clones share the data.
#[derive(Clone, Debug, Default)]
pub struct Users {
    inner: Arc<RwLock<Store>>,
}

#[derive(Debug, Default)]
struct Store {
    by_id: BTreeMap<String, User>,
    next_id: u64,
}

impl Users {
    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Store>, Status> {
        self.inner
            .read()
            .map_err(|_| Status::internal("user store poisoned"))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Store>, Status> {
        self.inner
            .write()
            .map_err(|_| Status::internal("user store poisoned"))
    }
}

impl Store {
    /// Inserts every user or none: fails with ALREADY_EXISTS if an email is
    /// taken, in the store or earlier in the batch.
    fn insert_all(&mut self, batch: Vec<CreateUserRequest>) -> Result<Vec<User>, Status> {
        for (i, new) in batch.iter().enumerate() {
            let taken = self.by_id.values().any(|u| u.email == new.email)
                || batch[..i].iter().any(|b| b.email == new.email);
            if taken {
                return Err(Status::already_exists(format!(
                    "a user with email {:?} exists",
                    new.email
                )));
            }
        }
        let now = prost_types::Timestamp::from(SystemTime::now());
        let users: Vec<User> = batch
            .into_iter()
            .map(|new| {
                self.next_id += 1;
                User {
                    id: format!("u-{:06}", self.next_id),
                    name: new.name,
                    email: new.email,
                    created_at: Some(now),
                    updated_at: Some(now),
                }
            })
            .collect();
        for user in &users {
            self.by_id.insert(user.id.clone(), user.clone());
        }
        Ok(users)
    }
}

/// Checks a new user's fields; the name comes back trimmed.
fn validate(new: CreateUserRequest) -> Result<CreateUserRequest, Status> {
    let name = new.name.trim().to_owned();
    if name.is_empty() {
        return Err(Status::invalid_argument("name: must not be empty"));
    }
    if !valid_email(&new.email) {
        return Err(Status::invalid_argument(format!(
            "email: {:?} is not an email address",
            new.email
        )));
    }
    Ok(CreateUserRequest {
        name,
        email: new.email,
    })
}

#[tonic::async_trait]
impl UserService for Users {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = &request.get_ref().id;
        if id.is_empty() {
            return Err(Status::invalid_argument("id: must not be empty"));
        }
        self.read()?
            .by_id
            .get(id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("user {id:?} not found")))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let caller = request.claims().map(|c| c.sub.clone()).unwrap_or_default();
        let new = validate(request.into_inner())?;
        let mut created = self.write()?.insert_all(vec![new])?;
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
        while let Some(message) = stream.message().await? {
            let index = batch.len();
            batch.push(validate(message).map_err(|status| {
                Status::invalid_argument(format!("message {index}: {}", status.message()))
            })?);
        }
        let users = self.write()?.insert_all(batch)?;
        Ok(Response::new(ImportUsersResponse { users }))
    }

    type ExportUsersStream = futures_util::stream::Iter<std::vec::IntoIter<Result<User, Status>>>;

    async fn export_users(
        &self,
        _request: Request<ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        let users: Vec<Result<User, Status>> =
            self.read()?.by_id.values().cloned().map(Ok).collect();
        Ok(Response::new(futures_util::stream::iter(users)))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let ListUsersRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let page_size = match page_size {
            n if n < 0 => {
                return Err(Status::invalid_argument(format!(
                    "page_size: must not be negative, got {n}"
                )));
            }
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let store = self.read()?;
        // The page token is the id of the last user of the previous page.
        let start = if page_token.is_empty() {
            std::ops::Bound::Unbounded
        } else if page_token.starts_with("u-") {
            std::ops::Bound::Excluded(page_token.clone())
        } else {
            return Err(Status::invalid_argument(format!(
                "page_token: {page_token:?} was not returned by ListUsers"
            )));
        };
        let mut users: Vec<User> = store
            .by_id
            .range((start, std::ops::Bound::Unbounded))
            .take(page_size + 1)
            .map(|(_, u)| u.clone())
            .collect();
        let next_page_token = if users.len() > page_size {
            users.truncate(page_size);
            users.last().map(|u| u.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListUsersResponse {
            users,
            next_page_token,
        }))
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

fn valid_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}
