//! What the serving tests share: the example's service behind [`Slow`],
//! served with a signal channel of the test's own, and calls to it.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use keel_rpc::config::Config;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use user_service::user_v1::user_service_server::UserService;
use user_service::user_v1::*;
use user_service::{SERVICES, Users, user_v1};

use crate::common::*;

/// `Users`, but `GetUser` sleeps for the milliseconds its id names
/// (`sleep-250`), panics for the id `panic`, and answers `UNAVAILABLE` to
/// the first N calls for an id `flaky-N-…` (as `CreateUser` does for such a
/// name).
#[derive(Clone)]
struct Slow(Users);

/// `UNAVAILABLE` for the first N calls naming `flaky-N-…`.
fn flaky(key: &str) -> Result<(), Status> {
    static CALLS: std::sync::Mutex<std::collections::BTreeMap<String, u32>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let Some(failures) =
        (key.strip_prefix("flaky-")).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok())
    else {
        return Ok(());
    };
    let mut calls = CALLS.lock().unwrap();
    let n = calls.entry(key.to_owned()).or_default();
    *n += 1;
    match *n <= failures {
        true => Err(Status::unavailable("flaky: try again")),
        false => Ok(()),
    }
}

#[tonic::async_trait]
impl UserService for Slow {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = request.get_ref().id.clone();
        if id == "panic" {
            panic!("handler bug");
        }
        flaky(&id)?;
        if let Some(ms) = id.strip_prefix("sleep-").and_then(|ms| ms.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return Ok(Response::new(User {
                id,
                ..User::default()
            }));
        }
        self.0.get_user(request).await
    }
    async fn create_user(&self, r: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        flaky(&r.get_ref().name)?;
        self.0.create_user(r).await
    }
    async fn list_users(
        &self,
        r: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        // `sleep-N` sleeps; `remaining` answers the time left, in ms, as the next page token.
        let token = r.get_ref().page_token.clone();
        if let Some(ms) = token.strip_prefix("sleep-").and_then(|ms| ms.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if token == "remaining" {
            let left = keel_rpc::deadline::remaining().map(|d| d.as_millis());
            return Ok(Response::new(ListUsersResponse {
                users: Vec::new(),
                next_page_token: format!("{left:?}"),
            }));
        }
        self.0.list_users(r).await
    }
    async fn import_users(
        &self,
        r: Request<Streaming<CreateUserRequest>>,
    ) -> Result<Response<ImportUsersResponse>, Status> {
        self.0.import_users(r).await
    }
    type ExportUsersStream = <Users as UserService>::ExportUsersStream;
    async fn export_users(
        &self,
        r: Request<ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        self.0.export_users(r).await
    }
    async fn count_users(
        &self,
        r: Request<CountUsersRequest>,
    ) -> Result<Response<CountUsersResponse>, Status> {
        self.0.count_users(r).await
    }
    async fn health_check(&self, r: Request<()>) -> Result<Response<HealthCheckResponse>, Status> {
        self.0.health_check(r).await
    }
}

/// A server started by [`start`]: a message on `signals` is a SIGTERM.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub keel: keel_rpc::Keel,
    pub health: keel_rpc::serve::Health,
    pub signals: tokio::sync::mpsc::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), keel_rpc::Error>>,
}

/// Serves [`Slow`] (with reflection and health, no `/metrics`) on an
/// ephemeral port of 127.0.0.1 until `signals` says stop.
pub async fn start(config: Config) -> Running {
    let keel = keel_rpc::Keel::new(&config, SERVICES).unwrap();
    let server = keel
        .server(&config)
        .add_service(user_v1::user_service(Slow(Users::in_memory().await.unwrap()), &keel).unwrap())
        .reflection(user_v1::FILE_DESCRIPTOR_SET);
    let health = server.health();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let (signals, rx) = tokio::sync::mpsc::channel(4);
    let listeners = keel_rpc::serve::Listeners {
        grpc,
        metrics: None,
    };
    let task =
        tokio::spawn(server.serve_on(listeners, tokio_stream::wrappers::ReceiverStream::new(rx)));
    Running {
        addr,
        keel,
        health,
        signals,
        task,
    }
}

/// A channel to `addr` (20 s timeout).
pub async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap()
}

/// A token with scope `users:read`.
pub fn reader() -> String {
    sign_hs(Algorithm::HS256, &claims("users:read"))
}

/// `GetUser` of `id` as a reader.
pub async fn get(channel: tonic::transport::Channel, id: String) -> Result<User, Status> {
    let mut client = user_v1::user_service_client::UserServiceClient::new(channel);
    client
        .get_user(with_token(GetUserRequest { id }, &reader()))
        .await
        .map(Response::into_inner)
}

/// The health service's answer about `service` (`""`: the server).
pub async fn health_status(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(channel(addr).await);
    let reply = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    reply.get_ref().status()
}

/// [`config`] with this lame duck and drain timeout.
pub fn timings(lame_duck_ms: u64, drain_ms: u64) -> Config {
    let mut config = config();
    config.server.lame_duck = Duration::from_millis(lame_duck_ms);
    config.server.drain_timeout = Duration::from_millis(drain_ms);
    config
}
