//! Serving behaviour operators rely on: graceful shutdown (lame duck, drain,
//! deadline), second signal, panics, message limits, health and reflection.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::Algorithm;
use keel_rpc::config::Config;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use user_service::user_v1::user_service_server::UserService;
use user_service::user_v1::*;
use user_service::{SERVICES, Users};

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

struct Running {
    addr: std::net::SocketAddr,
    keel: keel_rpc::Keel,
    health: keel_rpc::serve::Health,
    signals: tokio::sync::mpsc::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), keel_rpc::Error>>,
}

async fn start(config: Config) -> Running {
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

use user_service::user_v1;

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap()
}

fn reader() -> String {
    sign_hs(Algorithm::HS256, &claims("users:read"))
}

async fn get(channel: tonic::transport::Channel, id: String) -> Result<User, Status> {
    let mut client = user_v1::user_service_client::UserServiceClient::new(channel);
    client
        .get_user(with_token(GetUserRequest { id }, &reader()))
        .await
        .map(Response::into_inner)
}

async fn health_status(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(channel(addr).await);
    let reply = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    reply.get_ref().status()
}

fn timings(lame_duck_ms: u64, drain_ms: u64) -> Config {
    let mut config = config();
    config.server.lame_duck = Duration::from_millis(lame_duck_ms);
    config.server.drain_timeout = Duration::from_millis(drain_ms);
    config
}

#[tokio::test]
async fn sigterm_with_calls_in_flight_loses_none() {
    let server = start(timings(600, 10_000)).await;
    assert_eq!(health_status(server.addr, "").await, ServingStatus::Serving);
    assert_eq!(
        health_status(server.addr, "user.v1.UserService").await,
        ServingStatus::Serving
    );

    let channels = futures_util::future::join_all((0..4).map(|_| channel(server.addr))).await;
    let calls: Vec<_> = (0..64)
        .map(|i| tokio::spawn(get(channels[i % 4].clone(), "sleep-400".into())))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.signals.send(()).await.unwrap();

    // Lame duck: still serving, but health says NOT_SERVING.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        health_status(server.addr, "").await,
        ServingStatus::NotServing
    );
    assert_eq!(
        health_status(server.addr, "user.v1.UserService").await,
        ServingStatus::NotServing
    );
    get(channels[0].clone(), "sleep-1".into())
        .await
        .expect("new calls are served during the lame duck");

    for call in calls {
        let user = call
            .await
            .unwrap()
            .expect("every accepted call completes OK");
        assert_eq!(user.id, "sleep-400");
    }

    // After the lame duck, new connections are refused.
    tokio::time::sleep(Duration::from_millis(700).saturating_sub(started.elapsed())).await;
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "connection accepted after the lame duck");

    let result = tokio::time::timeout(Duration::from_secs(5), server.task).await;
    result
        .expect("server stops")
        .unwrap()
        .expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn calls_still_running_at_the_drain_deadline_get_unavailable() {
    let server = start(timings(0, 300)).await;
    let slow = tokio::spawn(get(channel(server.addr).await, "sleep-10000".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.signals.send(()).await.unwrap();
    let status = slow.await.unwrap().unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "server is shutting down")
    );
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn watch_of_an_unknown_service_sends_service_unknown_and_stays_open() {
    let server = start(timings(0, 1000)).await;
    let mut health = HealthClient::new(channel(server.addr).await);
    let unknown = health
        .check(HealthCheckRequest {
            service: "later.v1.Cache".into(),
        })
        .await
        .expect_err("Check of an unknown service");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "later.v1.Cache".into(),
        })
        .await
        .expect("Watch of an unknown service is not an error")
        .into_inner();
    let first = watch.message().await.expect("a message, not a status");
    assert_eq!(first.unwrap().status(), ServingStatus::ServiceUnknown);
    // The process reports the name later: the open stream hears of it.
    server.health.set("later.v1.Cache", ServingStatus::Serving);
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the status change arrives")
        .expect("a message");
    assert_eq!(next.unwrap().status(), ServingStatus::Serving);
    assert_eq!(
        health_status(server.addr, "later.v1.Cache").await,
        ServingStatus::Serving
    );
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_answers_an_unknown_symbol_on_the_stream_and_keeps_serving_it() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = start(timings(0, 1000)).await;
    let mut client = ServerReflectionClient::new(channel(server.addr).await);
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    // The first request goes in before the call is awaited: a server may
    // send its headers only with its first answer.
    requests
        .send(ask(MessageRequest::FileContainingSymbol(
            "no.such.Thing".into(),
        )))
        .await
        .unwrap();
    let mut replies = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let answer = replies.message().await.expect("a message, not a status");
    let Some(MessageResponse::ErrorResponse(error)) = answer.unwrap().message_response else {
        panic!("not an error_response");
    };
    assert_eq!(error.error_code, Code::NotFound as i32);
    assert!(error.error_message.contains("no.such.Thing"), "{error:?}");
    for question in [
        MessageRequest::FileByFilename("no/such.proto".into()),
        MessageRequest::FileContainingSymbol("user.v1.UserService.GetUser".into()),
    ] {
        requests.send(ask(question)).await.unwrap();
    }
    let answer = replies.message().await.unwrap().unwrap().message_response;
    assert!(
        matches!(&answer, Some(MessageResponse::ErrorResponse(e)) if e.error_code == Code::NotFound as i32),
        "{answer:?}"
    );
    let answer = replies.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer else {
        panic!("the stream still serves: {answer:?}");
    };
    let names: Vec<String> = (files.file_descriptor_proto.iter())
        .map(|f| {
            <prost_types::FileDescriptorProto as prost::Message>::decode(f.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("user/v1/user.proto"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "keel/v1/options.proto"),
        "its imports come with it: {names:?}"
    );
    drop(requests);
    assert!(
        replies.message().await.unwrap().is_none(),
        "ends with the client's stream"
    );
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn open_watch_streams_do_not_block_shutdown() {
    let server = start(timings(200, 10_000)).await;
    let mut health = HealthClient::new(channel(server.addr).await);
    let mut watch = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let started = Instant::now();
    server.signals.send(()).await.unwrap();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    let end = watch.message().await;
    assert!(
        matches!(&end, Err(s) if s.code() == Code::Unavailable),
        "{end:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_second_signal_ends_everything_at_once() {
    let server = start(timings(10_000, 10_000)).await;
    let slow = tokio::spawn(get(channel(server.addr).await, "sleep-10000".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.signals.send(()).await.unwrap();
    server.signals.send(()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(slow.await.unwrap().unwrap_err().code(), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_carries_on() {
    let server = start(timings(0, 1000)).await;
    let ch = channel(server.addr).await;
    let status = get(ch.clone(), "panic".into()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "internal error")
    );
    // Same connection, same server: still serving.
    assert_eq!(
        get(ch.clone(), "sleep-1".into()).await.unwrap().id,
        "sleep-1"
    );
    let text = server.keel.metrics().render();
    let internal = text
        .lines()
        .find(|l| {
            l.starts_with("grpc_server_handled_total")
                && l.contains("grpc_code=\"Internal\"")
                && l.contains("GetUser")
        })
        .unwrap();
    assert!(internal.ends_with(" 1"), "{internal}");
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn oversized_messages_get_resource_exhausted() {
    let mut config = timings(0, 1000);
    config.server.max_message_bytes = 64 * 1024;
    let server = start(config).await;
    let mut client =
        user_v1::user_service_client::UserServiceClient::new(channel(server.addr).await);
    let writer = sign_hs(Algorithm::HS256, &claims("users:write"));
    let big = CreateUserRequest {
        name: "x".repeat(100 * 1024),
        email: "big@example.com".into(),
    };
    let status = client
        .create_user(with_token(big, &writer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("exceeds the limit of 65536 bytes"),
        "{status:?}"
    );
    let small = CreateUserRequest {
        name: "small".into(),
        email: "small@example.com".into(),
    };
    assert!(client.create_user(with_token(small, &writer)).await.is_ok());
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_serve_descriptors_with_custom_options() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = start(timings(0, 1000)).await;
    let mut client = ServerReflectionClient::new(channel(server.addr).await);
    let ask = |request: MessageRequest| {
        tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }])
    };
    let mut replies = client
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "user.v1.UserService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // Fetch the service's file, then its imports by name, as grpcurl does.
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut wanted = vec![MessageRequest::FileContainingSymbol(
        "user.v1.UserService".into(),
    )];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(request) = wanted.pop() {
        let mut replies = client
            .server_reflection_info(ask(request))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(found)) =
            replies.message().await.unwrap().unwrap().message_response
        else {
            panic!("no descriptors");
        };
        for file in found.file_descriptor_proto {
            let proto =
                <prost_types::FileDescriptorProto as prost::Message>::decode(file.as_slice())
                    .unwrap();
            if seen.insert(proto.name().to_owned()) {
                wanted.extend(
                    proto
                        .dependency
                        .iter()
                        .map(|d| MessageRequest::FileByFilename(d.clone())),
                );
                files.push(file);
            }
        }
    }
    // Re-assemble a FileDescriptorSet (field 1, repeated bytes) and read the Keel option back.
    let mut set = Vec::new();
    for file in &files {
        prost::encoding::bytes::encode(1, file, &mut set);
    }
    let pool =
        prost_reflect::DescriptorPool::decode(set.as_slice()).expect("the file and its imports");
    let method = pool
        .get_service_by_name("user.v1.UserService")
        .unwrap()
        .methods()
        .find(|m| m.name() == "HealthCheck")
        .unwrap();
    let ext = pool
        .get_extension_by_name("keel.v1.method")
        .expect("keel options file served");
    let options = method.options();
    assert!(options.has_extension(&ext), "custom option preserved");
    let keel_options = options.get_extension(&ext);
    let auth = keel_options
        .as_message()
        .unwrap()
        .get_field_by_name("auth")
        .unwrap();
    assert_eq!(
        auth.as_message()
            .unwrap()
            .get_field_by_name("public")
            .unwrap()
            .as_bool(),
        Some(true)
    );

    // grpc.reflection.v1alpha answers too.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut old =
        alpha::server_reflection_client::ServerReflectionClient::new(channel(server.addr).await);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = old
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        replies.message().await.unwrap().unwrap().message_response,
        Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[test]
fn the_binary_refuses_to_start_in_production_without_a_key_of_its_own() {
    use std::process::Command;
    let start = |vars: &[(&str, &str)]| {
        // Only this test's configuration: no KEEL_* variable of the caller.
        let output = Command::new(env!("CARGO_BIN_EXE_user-service"))
            .env_clear()
            .env("KEEL_SERVER__ADDR", "127.0.0.1:0")
            .env("KEEL_METRICS__ENABLED", "false")
            .envs(vars.iter().copied())
            .output()
            .expect("run user-service");
        assert!(!output.status.success(), "{vars:?}: it started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = start(&[]);
    assert!(
        stderr
            .contains("auth.hmac_secret: missing; required for HS256 (set KEEL_AUTH__HMAC_SECRET)"),
        "{stderr}"
    );
    let stderr = start(&[("KEEL_AUTH__HMAC_SECRET", user_service::DEV_SECRET)]);
    assert!(
        stderr.contains(
            "auth.hmac_secret: is a development credential, not allowed in production; \
             configure one of your own (or set service.environment = \"development\") \
             (from environment variable KEEL_AUTH__HMAC_SECRET)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(user_service::DEV_SECRET), "{stderr}");
}

#[test]
fn the_binary_exits_0_on_sigterm_and_at_once_on_a_second() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let spawn = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_user-service"))
            .env("KEEL_SERVICE__ENVIRONMENT", "development")
            .env("KEEL_SERVER__ADDR", "127.0.0.1:0")
            .env("KEEL_METRICS__ENABLED", "false")
            .env("KEEL_SERVER__LAME_DUCK", "300ms")
            .env("KEEL_SERVER__DRAIN_TIMEOUT", "2s")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start user-service");
        // Wait for the startup line.
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = lines.next().expect("output").expect("utf-8");
            if line.contains("serving gRPC") {
                break;
            }
            assert!(Instant::now() < deadline, "no startup line");
        }
        std::thread::spawn(move || lines.for_each(drop));
        child
    };
    let term = |child: &std::process::Child| {
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let wait = |child: &mut std::process::Child, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let mut child = spawn();
    let started = Instant::now();
    term(&child);
    let status = wait(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the lame duck was kept"
    );

    let mut child = spawn();
    term(&child);
    std::thread::sleep(Duration::from_millis(50));
    term(&child);
    let status = wait(&mut child, Duration::from_millis(250));
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn a_call_past_its_deadline_is_counted_deadline_exceeded_and_a_cancelled_one_canceled() {
    let mut config = config();
    config.server.lame_duck = Duration::ZERO;
    let server = start(config).await;
    let ch = channel(server.addr).await;
    let count = |code: &str| {
        let text = server.keel.metrics().render();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("grpc_server_handled_total")
                    && l.contains(&format!("grpc_code=\"{code}\""))
                    && l.contains("\"GetUser\"")
            })
            .map(str::to_owned);
        line.and_then(|l| l.rsplit(' ').next().map(str::to_owned))
            .unwrap_or_default()
    };
    let ended = |code: &'static str| {
        let count = &count;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while count(code) != "1" {
                assert!(Instant::now() < deadline, "{code}: {}", count(code));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // The handler sleeps 2 s; the caller's deadline is 100 ms.
    let mut request = with_token(
        GetUserRequest {
            id: "sleep-2000".into(),
        },
        &reader(),
    );
    request.set_timeout(Duration::from_millis(100));
    let mut client = user_v1::user_service_client::UserServiceClient::new(ch.clone());
    let status = client.get_user(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    ended("DeadlineExceeded").await;
    assert_eq!(count("Canceled"), "0");

    // The generated client answers and counts it DEADLINE_EXCEEDED, whichever
    // gives up first: its own timer, or tonic's channel enforcing the same
    // `grpc-timeout` (a transport error), or the server (CANCELLED).
    let keel_client = keel_rpc::client::Client::from_parts(
        Duration::from_millis(100),
        keel_rpc::metrics::ClientMetrics::new(server.keel.metrics().registry()).unwrap(),
    );
    let mut generated = user_v1::user_service_client(ch.clone(), &keel_client).unwrap();
    let status = generated
        .get_user(with_token(
            GetUserRequest {
                id: "sleep-2000".into(),
            },
            &reader(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let text = server.keel.metrics().render();
    let handled = |code: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("grpc_client_handled_total")
                    && l.contains(&format!("grpc_code=\"{code}\""))
                    && l.contains("\"GetUser\"")
            })
            .and_then(|l| l.rsplit(' ').next().map(str::to_owned))
            .unwrap_or_default()
    };
    assert_eq!(handled("DeadlineExceeded"), "1", "{text}");
    assert_eq!(handled("Canceled"), "0", "{text}");

    // A caller that gives up without a deadline: Canceled.
    let call = tokio::spawn(get(ch.clone(), "sleep-2000".into()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    ended("Canceled").await;
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_methods_own_timeout_and_cap_apply_over_the_wire() {
    let server = start(timings(0, 1000)).await;
    let mut client =
        user_v1::user_service_client::UserServiceClient::new(channel(server.addr).await);
    let list = |page_token: &str, timeout: Option<Duration>| {
        let mut request = with_token(
            ListUsersRequest {
                page_size: 0,
                page_token: page_token.into(),
            },
            &reader(),
        );
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    };
    // ListUsers: timeout 2 s, max_timeout 30 s (user.proto).
    let left = |reply: Response<ListUsersResponse>| -> u128 {
        let token = reply.into_inner().next_page_token;
        let ms = token
            .strip_prefix("Some(")
            .and_then(|t| t.strip_suffix(')'));
        ms.and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("no deadline: {token}"))
    };
    let asked_long = client
        .list_users(list("remaining", Some(Duration::from_secs(120))))
        .await;
    let ms = left(asked_long.unwrap());
    assert!(
        (25_000..=30_000).contains(&ms),
        "120 s asked, capped at 30 s: {ms} ms left"
    );
    let ms = left(client.list_users(list("remaining", None)).await.unwrap());
    assert!(
        (1_000..=2_000).contains(&ms),
        "no deadline asked: the 2 s default, {ms} ms left"
    );
    let started = Instant::now();
    let status = client
        .list_users(list("sleep-5000", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1_900) && elapsed < Duration::from_millis(4_000),
        "{elapsed:?}"
    );
    let metrics = server.keel.metrics().render();
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "grpc_server_handled_total{grpc_code=\"DeadlineExceeded\",grpc_method=\"ListUsers\""
        ) && l.ends_with(" 1")),
        "{metrics}"
    );
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn imports_over_max_concurrency_are_refused_over_the_wire() {
    let server = start(timings(0, 1000)).await;
    let ch = channel(server.addr).await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:write"));
    // ImportUsers: max_concurrency 4 (user.proto). Four imports stay open…
    let mut open = Vec::new();
    for _ in 0..4 {
        let (tx, rx) = tokio::sync::mpsc::channel::<CreateUserRequest>(1);
        let mut client = user_v1::user_service_client::UserServiceClient::new(ch.clone());
        let request = with_token(tokio_stream::wrappers::ReceiverStream::new(rx), &writer);
        let call = tokio::spawn(async move { client.import_users(request).await });
        open.push((tx, call));
    }
    // …until the server has them all (the fifth of a burst could race them).
    let in_flight = || {
        let text = server.keel.metrics().render();
        let count = |prefix: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(prefix) && l.contains("\"ImportUsers\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        count("grpc_server_started_total") - count("grpc_server_handled_total")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight() < 4 {
        assert!(Instant::now() < deadline, "four imports never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let import = |users: Vec<CreateUserRequest>| {
        let mut client = user_v1::user_service_client::UserServiceClient::new(ch.clone());
        let request = with_token(tokio_stream::iter(users), &writer);
        async move { client.import_users(request).await }
    };
    let fifth = import(Vec::new()).await.unwrap_err();
    assert_eq!(fifth.code(), Code::ResourceExhausted, "{fifth:?}");
    assert!(
        fifth.message().contains("max_concurrency of 4"),
        "{fifth:?}"
    );
    // One ends: its slot is free again.
    let (tx, call) = open.pop().unwrap();
    drop(tx);
    call.await.unwrap().unwrap();
    import(Vec::new()).await.expect("a slot came back");
    for (tx, call) in open {
        drop(tx);
        call.await.unwrap().unwrap();
    }
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn creating_users_over_the_rate_limit_is_refused_per_caller_with_when_to_retry() {
    use tonic_types::StatusExt;
    let server = start(timings(0, 1000)).await;
    let ch = channel(server.addr).await;
    let token_of = |sub: &str| {
        let mut claims = claims("users:write");
        claims["sub"] = sub.into();
        sign_hs(Algorithm::HS256, &claims)
    };
    let create = |token: String, i: usize| {
        let mut client = user_v1::user_service_client::UserServiceClient::new(ch.clone());
        async move {
            let user = CreateUserRequest {
                name: format!("user {i}"),
                email: format!("u{i}@example.com"),
            };
            client.create_user(with_token(user, &token)).await
        }
    };
    // CreateUser: 20 a second, bursts of 40, per token subject (user.proto).
    // 60 at once from alice: at least the burst passes, and most of the rest
    // (the bucket refills by one every 50 ms) are refused before the handler.
    let alice = token_of("alice");
    let calls = (0..60).map(|i| create(alice.clone(), i));
    let results = futures_util::future::join_all(calls).await;
    let refused: Vec<&Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let passed = results.len() - refused.len();
    assert!((40..55).contains(&passed), "{passed} passed: {refused:?}");
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let delay = (status.get_details_retry_info())
            .and_then(|retry| retry.retry_delay)
            .expect("a RetryInfo detail with a delay");
        assert!(delay <= Duration::from_millis(50), "{delay:?}");
    }
    // Another caller has a bucket of their own.
    create(token_of("bob"), 100)
        .await
        .expect("bob is not limited by alice");
    // After the delay, alice may create one more.
    tokio::time::sleep(Duration::from_millis(60)).await;
    create(alice, 101)
        .await
        .expect("a share of alice's bucket is back");

    let text = server.keel.metrics().render();
    let line = format!(
        r#"keel_server_rate_limited_total{{grpc_method="CreateUser",grpc_service="user.v1.UserService"}} {}"#,
        refused.len()
    );
    assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

/// The client connection preface of HTTP/2 and an empty SETTINGS frame:
/// what a client sends before its first call.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A raw connection to `addr`: silent, or having sent the HTTP/2 preface
/// and nothing after (it answers no PING either).
async fn raw_connection(addr: std::net::SocketAddr, preface: bool) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    if preface {
        stream.write_all(H2_PREFACE).await.unwrap();
    }
    stream
}

/// Whether the server closes `stream` within `within` (whatever it sent
/// before, such as its SETTINGS or a GOAWAY, is read and dropped).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// The value of the sample `line` (name and labels) in the server's metrics.
fn sample(keel: &keel_rpc::Keel, line: &str) -> u64 {
    let text = keel.metrics().render();
    (text.lines())
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} in:\n{text}"))
}

async fn wait_for_sample(keel: &keel_rpc::Keel, line: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(keel, line) != value {
        assert!(
            Instant::now() < deadline,
            "{line} never reached {value}: {}",
            sample(keel, line)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const OPEN: &str = "keel_server_connections";

fn closed_for(reason: &str) -> String {
    format!(r#"keel_server_connections_closed_total{{reason="{reason}"}}"#)
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_while_calls_go_on() {
    let mut config = timings(0, 1000);
    config.server.handshake_timeout = Duration::from_millis(300);
    config.server.idle_timeout = Duration::from_secs(1);
    // What a client sent GOAWAY gets to close before it is dropped.
    config.server.keepalive_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let started = Instant::now();
    let mut silent = Vec::new();
    let mut prefaced = Vec::new();
    for _ in 0..100 {
        silent.push(raw_connection(server.addr, false).await);
        prefaced.push(raw_connection(server.addr, true).await);
    }
    // A client calling meanwhile is served.
    let ch = channel(server.addr).await;
    let missing = get(ch.clone(), "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // No preface in 300 ms: closed, all of them, and those only (unless the
    // machine took a whole idle timeout to get here).
    wait_for_sample(&server.keel, &closed_for("handshake_timeout"), 100).await;
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(sample(&server.keel, &closed_for("idle")), 0);
    }
    for stream in &mut silent {
        assert!(closed_within(stream, Duration::from_secs(1)).await);
    }
    // A preface and then nothing, and the client's own connection after its
    // call: GOAWAY after the idle timeout (and dropped, for those that
    // answer nothing, 300 ms later).
    wait_for_sample(&server.keel, &closed_for("idle"), 101).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for stream in &mut prefaced {
        assert!(closed_within(stream, Duration::from_secs(2)).await);
    }
    wait_for_sample(&server.keel, OPEN, 0).await;
    // The client reconnects on its next call.
    let missing = get(ch, "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert_eq!(sample(&server.keel, &closed_for("max_connections")), 0);
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once() {
    let mut config = timings(0, 1000);
    config.server.max_connections = 20;
    let server = start(config).await;
    let ch = channel(server.addr).await;
    let mut held = Vec::new();
    for _ in 0..19 {
        held.push(raw_connection(server.addr, true).await);
    }
    wait_for_sample(&server.keel, OPEN, 20).await;
    // The 21st is closed as it is accepted, and counted…
    let mut refused = raw_connection(server.addr, true).await;
    assert!(closed_within(&mut refused, Duration::from_secs(2)).await);
    assert_eq!(sample(&server.keel, &closed_for("max_connections")), 1);
    // …while calls on the open ones go on.
    let missing = get(ch.clone(), "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    // A closed connection frees its slot.
    held.truncate(10);
    wait_for_sample(&server.keel, OPEN, 11).await;
    let missing = get(channel(server.addr).await, "no-such-user".into())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_that_answers_no_ping_is_closed_and_one_that_does_stays() {
    let mut config = timings(0, 1000);
    config.server.keepalive_interval = Some(Duration::from_millis(200));
    config.server.keepalive_timeout = Duration::from_millis(200);
    let server = start(config).await;
    let ch = channel(server.addr).await;
    get(ch.clone(), "no-such-user".into()).await.unwrap_err();
    let mut mute = raw_connection(server.addr, true).await;
    assert!(closed_within(&mut mute, Duration::from_secs(3)).await);
    // tonic's client answers the pings: its connection is still the one
    // open, and still serves.
    wait_for_sample(&server.keel, OPEN, 1).await;
    let missing = get(ch, "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    for reason in ["handshake_timeout", "idle", "max_connections"] {
        assert_eq!(sample(&server.keel, &closed_for(reason)), 0, "{reason}");
    }
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_that_sent_its_preface_outlives_the_handshake_timeout() {
    let mut config = timings(0, 1000);
    config.server.handshake_timeout = Duration::from_millis(200);
    let server = start(config).await;
    let ch = channel(server.addr).await;
    get(ch.clone(), "no-such-user".into()).await.unwrap_err();
    let mut quiet = raw_connection(server.addr, true).await;
    // Well past the handshake timeout, and with no idle look in between
    // (the default idle timeout is minutes), both are still open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!closed_within(&mut quiet, Duration::from_millis(100)).await);
    assert_eq!(sample(&server.keel, &closed_for("handshake_timeout")), 0);
    assert_eq!(sample(&server.keel, OPEN), 2);
    let missing = get(ch, "no-such-user".into()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_generated_client_retries_an_idempotent_method_and_not_the_others() {
    let server = start(timings(0, 1000)).await;
    let client = keel_rpc::client::Client::new(&config(), server.keel.metrics().registry())
        .unwrap()
        .with_token_source(keel_rpc::auth::StaticToken::new(sign_hs(
            Algorithm::HS256,
            &claims("users:read users:write"),
        )));
    let mut users =
        user_v1::user_service_client(format!("http://{}", server.addr), &client).unwrap();
    // GetUser has `idempotency_level = NO_SIDE_EFFECTS` (user.proto): 3
    // attempts on UNAVAILABLE. Two fail; the third reaches the handler.
    let status = users
        .get_user(GetUserRequest {
            id: "flaky-2-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // Three failures are more than its attempts.
    let status = users
        .get_user(GetUserRequest {
            id: "flaky-3-b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // CreateUser is not idempotent: not retried.
    let status = users
        .create_user(CreateUserRequest {
            name: "flaky-1-c".into(),
            email: "c@example.com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let text = server.keel.metrics().render();
    for line in [
        r#"keel_client_retries_total{grpc_method="GetUser",grpc_service="user.v1.UserService"} 4"#,
        r#"grpc_server_handled_total{grpc_code="Unavailable",grpc_method="GetUser",grpc_service="user.v1.UserService",grpc_type="unary",protocol="grpc",team="identity",tier="critical"} 5"#,
        r#"grpc_server_handled_total{grpc_code="Unavailable",grpc_method="CreateUser",grpc_service="user.v1.UserService",grpc_type="unary",protocol="grpc",team="identity",tier="critical"} 1"#,
        r#"grpc_client_handled_total{grpc_code="Unavailable",grpc_method="GetUser",grpc_service="user.v1.UserService",grpc_type="unary"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(!text.contains(r#"keel_client_retries_total{grpc_method="CreateUser""#));
    server.signals.send(()).await.unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_breaking_user_proto_rules_are_refused_before_the_handler() {
    use tonic_types::StatusExt;
    let server = common::Server::start(common::config()).await;
    let mut client = server.client().await;
    let writer = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let created_before = client
        .list_users(with_token(ListUsersRequest::default(), &writer))
        .await
        .unwrap()
        .into_inner()
        .users
        .len();

    let status = client
        .create_user(with_token(
            CreateUserRequest {
                name: "   ".into(),
                email: "not an email".into(),
            },
            &writer,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations: Vec<(String, String)> = status
        .get_details_bad_request()
        .expect("a BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.reason))
        .collect();
    assert_eq!(
        violations,
        [("name", "name.not_blank"), ("email", "string.email")]
            .map(|(f, r)| (f.to_owned(), r.to_owned()))
    );
    let status = client
        .get_user(with_token(GetUserRequest { id: String::new() }, &writer))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "id: must be at least 1 characters")
    );
    let status = client
        .list_users(with_token(
            ListUsersRequest {
                page_size: -1,
                page_token: String::new(),
            },
            &writer,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::InvalidArgument,
            "page_size: must be greater than or equal to 0"
        )
    );
    // A name with spaces around is fine, and stored trimmed; nothing else was.
    let user = client
        .create_user(with_token(
            CreateUserRequest {
                name: "  Ada ".into(),
                email: "ada@localhost".into(),
            },
            &writer,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.name, "Ada");
    let users = client
        .list_users(with_token(ListUsersRequest::default(), &writer))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len(), created_before + 1);
    server.stop().await;
}

#[tokio::test]
async fn the_call_command_prints_the_proto3_json_mapping() {
    let server = common::Server::start(common::config()).await;
    let token = sign_hs(Algorithm::HS256, &claims("users:read users:write"));
    let url = format!("http://{}", server.grpc);
    let call = |args: &'static [&'static str]| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"))
                .args(["call", "--url", &url, "--token", &token])
                .args(args)
                .env_remove("KEEL_TOKEN")
                .output()
                .expect("run user-service call");
            assert!(output.status.success(), "{output:?}");
            serde_json::from_slice::<serde_json::Value>(&output.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
        })
    };
    let created = call(&["create", "Ada", "ada@example.com"]).await.unwrap();
    assert_eq!(created["name"], "Ada");
    assert_eq!(created["id"], "u-000001");
    // camelCase names; a Timestamp as an RFC 3339 string.
    let created_at = created["createdAt"].as_str().expect("createdAt");
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "{created}"
    );
    let listed = call(&["list"]).await.unwrap();
    assert_eq!(listed["users"][0]["email"], "ada@example.com", "{listed}");
    // An enum by its name.
    let health = call(&["health"]).await.unwrap();
    assert_eq!(health["status"], "STATUS_SERVING", "{health}");
    server.stop().await;
}
