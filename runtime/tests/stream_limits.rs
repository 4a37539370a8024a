//! A streaming method's limits over a real socket: a quiet stream ends
//! `DEADLINE_EXCEEDED` at its `stream_idle_timeout`, a busy one
//! `UNAVAILABLE` at its `max_stream_duration`, whatever the handler does.
//! (`max_stream_messages` is tested with the user-service example's
//! `ImportUsers`.)

use std::net::Ipv4Addr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use keel_rpc::codegen::{Access, MethodKind, MethodPolicy, ServicePolicy, StreamLimits};
use keel_rpc::config::{AuthConfig, Config, Secret};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const IDLE: Duration = Duration::from_millis(300);
const MAX: Duration = Duration::from_millis(1200);

static HEALTH: ServicePolicy = ServicePolicy {
    name: "grpc.health.v1.Health",
    methods: &[MethodPolicy {
        stream: StreamLimits {
            max_duration: Some(MAX),
            idle_timeout: Some(IDLE),
            max_messages: None,
        },
        ..MethodPolicy::new(
            "Watch",
            "/grpc.health.v1.Health/Watch",
            MethodKind::ServerStreaming,
            Access::Public,
        )
    }],
    route: |path| match path {
        "/grpc.health.v1.Health/Watch" => Some(0),
        _ => None,
    },
};

/// `Watch` answers once, then every `service` milliseconds ("" or "0":
/// never again), never ending by itself.
struct Watcher;

#[tonic::async_trait]
impl Health for Watcher {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type WatchStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let every: u64 = request.get_ref().service.parse().unwrap_or(0);
        let stream = async_stream(every);
        Ok(Response::new(Box::pin(stream)))
    }
}

fn async_stream(
    every: u64,
) -> impl tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send {
    let serving = HealthCheckResponse { status: 1 };
    let first = tokio_stream::once(Ok(serving));
    let rest = futures_util::stream::unfold((), move |()| async move {
        match every {
            0 => std::future::pending::<()>().await,
            ms => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
        Some((Ok(serving), ()))
    });
    futures_util::StreamExt::chain(first, rest)
}

/// The watcher behind Keel's pipeline, on 127.0.0.1; its URL.
async fn serve() -> String {
    let config = Config::<()> {
        auth: AuthConfig {
            hmac_secret: Some(Secret::new("0123456789abcdef0123456789abcdef-test")),
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    let keel = keel_rpc::Keel::new(&config, &[&HEALTH]).expect("keel");
    let service = keel
        .wrap(&HEALTH, HealthServer::new(Watcher))
        .expect("wrap");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let _keel = keel;
        while let Ok((stream, _)) = listener.accept().await {
            // As Keel's server has it: request bodies as tonic's.
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                service.clone(),
                |req: http::Request<hyper::body::Incoming>| req.map(tonic::body::Body::new),
            ));
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// Watches with `every`; the messages received, how the stream ended and
/// when.
async fn watch(url: &str, every: &str) -> (usize, Status, Duration) {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    let start = Instant::now();
    let mut stream = client
        .watch(HealthCheckRequest {
            service: every.into(),
        })
        .await
        .expect("the stream opens")
        .into_inner();
    let mut messages = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => messages += 1,
            Ok(None) => panic!("the stream ended OK after {messages} messages"),
            Err(status) => return (messages, status, start.elapsed()),
        }
    }
}

#[tokio::test]
async fn a_quiet_stream_ends_at_its_idle_timeout() {
    let url = serve().await;
    let (messages, status, after) = tokio::time::timeout(Duration::from_secs(10), watch(&url, "0"))
        .await
        .expect("the stream ends");
    assert_eq!(messages, 1);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("stream_idle_timeout"),
        "{status:?}"
    );
    assert!(after >= IDLE && after < MAX, "{after:?}");
}

#[tokio::test]
async fn a_busy_stream_ends_at_its_max_duration_and_messages_keep_it_from_idling() {
    let url = serve().await;
    // A message every 100 ms: never 300 ms without one.
    let (messages, status, after) =
        tokio::time::timeout(Duration::from_secs(10), watch(&url, "100"))
            .await
            .expect("the stream ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("max_stream_duration"),
        "{status:?}"
    );
    assert!(after >= MAX && after < MAX * 2, "{after:?}");
    assert!(messages >= 8, "{messages} messages");
}
