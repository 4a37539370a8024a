//! `bench-server`: the server side of `cargo xtask bench`.
//!
//! One process per mode, so that each pays only for what its own kind of
//! service pays (a `tracing` subscriber's filters run on every h2 and hyper
//! callsite, for instance):
//!
//! - `--serve plain`: plain tonic, `Server::builder().add_service(
//!   UserServiceServer::new(handler))`, logging through a `fmt` subscriber at
//!   `warn`. Some subscriber must be installed for the comparison to be
//!   fair: without one, the `log` feature of `tracing` (which sqlx turns on)
//!   hands every span of h2 and hyper to the `log` crate, a cost no service
//!   with logging pays (BENCHMARKS.md).
//! - `--serve keel`: the service as README's "Serving" section builds it:
//!   `keel_rpc::telemetry::init(&config)`, `Keel::new`, `keel.server(&config)`
//!   with the generated `user_service(handler, &keel)`, reflection, the
//!   standard health service, `/metrics` and the graceful shutdown, all at
//!   the default configuration except the addresses (ephemeral ports) and the
//!   development key that signs the bench's token. With `--trace-sampling R
//!   --otlp-endpoint E` telemetry samples `R` of the calls and exports them
//!   over OTLP/gRPC (`cargo xtask bench --traced`).
//!
//! The handler is [`Users`] (its in-memory SQLite store) with one user
//! created at startup; `--handler fixed` answers `GetUser` for that user from
//! memory instead (the other methods still go to [`Users`]), so that a call
//! costs little besides the gRPC stack and Keel's share is measurable.
//!
//! The handler is wrapped in [`Counting`], which counts the `GetUser` calls
//! that returned `Ok`, so the benchmark can check that every response the
//! load generator counted as a success was a successful gRPC call (h2load
//! counts any HTTP 200, whatever the `grpc-status`). An HTTP port answers
//! `GET /counts` with those counters (for keel, beside `/metrics` on the
//! service's own metrics port).
//!
//! At startup it mints an access token (`users:read`, valid 1 h) and the
//! gRPC-framed `GetUserRequest` body, writes them to `--token-file` and
//! `--body-file` (or prints them), then prints one line
//! `bench-server grpc=ADDR http=ADDR` and serves until killed.
//!
//! `bench-server --otlp-sink` is the collector of `--traced`: it only serves
//! an OTLP trace service that counts the exports and spans it receives
//! (`GET /counts` on its HTTP port) and prints
//! `bench-sink otlp=ADDR http=ADDR`.
//!
//! Runtime: multi-threaded with a single worker thread. The benchmark pins
//! the process to one core, so one worker is what that core can run; the
//! multi-thread scheduler is the one a `#[tokio::main]` service uses in
//! production (a `current_thread` runtime would be a different, slightly
//! cheaper scheduler). Both modes use the same runtime and listener options
//! (`TCP_NODELAY`), and are measured one at a time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures_util::TryFutureExt as _;
use futures_util::future::MapOk;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use std::task::Poll;
use tokio::net::TcpListener;
use tonic::codegen::http::{self, HeaderValue};
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use user_service::user_v1::user_service_server::{UserService, UserServiceServer};
use user_service::user_v1::{
    CountUsersRequest, CountUsersResponse, CreateUserRequest, ExportUsersRequest, GetUserRequest,
    HealthCheckResponse, ImportUsersResponse, ListUsersRequest, ListUsersResponse, User,
};
use user_service::{SERVICES, Users, user_v1};

#[derive(Parser)]
#[command(about = "Serves the user service plain or as a Keel service, for `cargo xtask bench`")]
struct Args {
    /// Which server to run (required unless `--otlp-sink`).
    #[arg(long, value_enum, required_unless_present = "otlp_sink")]
    serve: Option<Mode>,
    /// TOML file layered over the embedded defaults (KEEL_* variables override both).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to write the bearer token (printed when absent).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where to write the gRPC-framed GetUser request body (printed as hex when absent).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Address to bind the listeners to (ports are chosen by the OS).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// `users`: GetUser reads the user from the store; `fixed`: GetUser
    /// answers the startup user from memory.
    #[arg(long, value_enum, default_value_t = HandlerKind::Users)]
    handler: HandlerKind,
    /// Keel's telemetry samples this ratio of the calls (`cargo xtask bench
    /// --traced`), exporting spans over OTLP/gRPC, batched, to `--otlp-endpoint`.
    #[arg(long, requires = "otlp_endpoint")]
    trace_sampling: Option<f64>,
    /// The OTLP/gRPC collector of `--trace-sampling` (a `--otlp-sink` process).
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Serve only an OTLP trace sink that counts what it receives (on
    /// `/counts` of its HTTP port), for `--otlp-endpoint`; prints
    /// `bench-sink otlp=ADDR http=ADDR`.
    #[arg(long, conflicts_with = "trace_sampling")]
    otlp_sink: bool,
    /// Answer every response with the same `date` header (`cargo xtask bench
    /// --instructions`). hyper otherwise writes the current second, and each
    /// new value is a new entry in the HPACK table of every connection, whose
    /// encoder then compares more entries per response: over a counted run of
    /// tens of seconds under callgrind that cost up to 450 instructions per
    /// call, more in one mode than the other. Timed rounds last under a second.
    #[arg(long)]
    fixed_date: bool,
}

/// The OTLP trace collector of `--otlp-sink`: accepts every export and
/// counts the requests and spans, nothing more.
#[derive(Clone, Debug, Default)]
struct OtlpSink {
    exports: Arc<AtomicU64>,
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for OtlpSink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.exports.fetch_add(1, Ordering::Relaxed);
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The server of `--serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Plain tonic.
    Plain,
    /// A Keel service as README builds it.
    Keel,
}

/// What answers `GetUser`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum HandlerKind {
    /// `Users::get_user`: a query of the store.
    Users,
    /// The user created at startup, cloned from memory.
    Fixed,
}

/// Successful and failed `GetUser` calls, and `ExportUsers` streams that
/// were answered in full or failed.
#[derive(Debug, Default)]
struct Counts {
    ok: AtomicU64,
    err: AtomicU64,
    export_ok: AtomicU64,
    export_err: AtomicU64,
}

impl Counts {
    fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "ok {}\nerr {}\nexport_ok {}\nexport_err {}\n",
            get(&self.ok),
            get(&self.err),
            get(&self.export_ok),
            get(&self.export_err)
        )
    }
}

/// An `ExportUsers` stream that counts itself in [`Counts`] when it ends.
struct CountedStream {
    inner: <Users as UserService>::ExportUsersStream,
    counts: Arc<Counts>,
    failed: bool,
}

impl futures_util::Stream for CountedStream {
    type Item = Result<User, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(item)) => self.failed |= item.is_err(),
            Poll::Ready(None) => {
                let counter = match self.failed {
                    true => &self.counts.export_err,
                    false => &self.counts.export_ok,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Poll::Pending => {}
        }
        polled
    }
}

/// How many messages `ExportUsers` streams with `--handler fixed`.
const STREAM_MESSAGES: usize = 10;

/// [`Users`] with `GetUser` outcomes counted.
struct Counting {
    users: Users,
    /// With `--handler fixed`: the user GetUser answers from memory.
    fixed: Option<Arc<User>>,
    counts: Arc<Counts>,
}

#[tonic::async_trait]
impl UserService for Counting {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let result = match &self.fixed {
            Some(user) if request.get_ref().id == user.id => Ok(Response::new(User::clone(user))),
            Some(_) => Err(Status::not_found("no such user")),
            None => self.users.get_user(request).await,
        };
        match &result {
            Ok(_) => self.counts.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counts.err.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        self.users.create_user(request).await
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.users.list_users(request).await
    }

    async fn import_users(
        &self,
        request: Request<tonic::Streaming<CreateUserRequest>>,
    ) -> Result<Response<ImportUsersResponse>, Status> {
        self.users.import_users(request).await
    }

    type ExportUsersStream = <Users as UserService>::ExportUsersStream;

    async fn export_users(
        &self,
        request: Request<ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        let stream = match &self.fixed {
            // The startup user, `STREAM_MESSAGES` times, from memory.
            Some(user) => {
                let users = std::iter::repeat_n(User::clone(user), STREAM_MESSAGES);
                Box::pin(futures_util::stream::iter(users.map(Ok))) as Self::ExportUsersStream
            }
            None => self.users.export_users(request).await?.into_inner(),
        };
        // Counted once the stream has been produced to its end.
        let stream = CountedStream {
            inner: stream,
            counts: self.counts.clone(),
            failed: false,
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn count_users(
        &self,
        request: Request<CountUsersRequest>,
    ) -> Result<Response<CountUsersResponse>, Status> {
        self.users.count_users(request).await
    }

    async fn health_check(
        &self,
        request: Request<()>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.users.health_check(request).await
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One worker: the process is pinned to one core; see the module docs.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    if args.otlp_sink {
        return runtime.block_on(sink(args.host));
    }
    runtime.block_on(run(args))
}

/// `--otlp-sink`: an OTLP trace collector that only counts, and `/counts`.
async fn sink(host: std::net::IpAddr) -> anyhow::Result<()> {
    let sink = OtlpSink::default();
    let (otlp_listener, otlp_addr) = bind(host, "otlp").await?;
    let (http_listener, http_addr) = bind(host, "http").await?;
    let counted = sink.clone();
    let counts = axum::Router::new().route(
        "/counts",
        axum::routing::get(move || {
            let sink = counted.clone();
            async move {
                format!(
                    "otlp_exports {}\notlp_spans {}\n",
                    sink.exports.load(Ordering::Relaxed),
                    sink.spans.load(Ordering::Relaxed)
                )
            }
        }),
    );
    println!("bench-sink otlp={otlp_addr} http={http_addr}");
    tokio::select! {
        served = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_incoming(TcpIncoming::from(otlp_listener)) => {
            served.context("serving otlp")?;
        }
        served = axum::serve(http_listener, counts) => served.context("serving http")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mode = args.serve.context("--serve plain|keel is required")?;
    // A bench, not a deployment: the development key signs its token.
    let mut config = user_service::loader(args.config.as_deref())
        .defaults_toml("[service]\nenvironment = \"development\"\n")
        .load()?;
    if let Some(ratio) = args.trace_sampling {
        config.telemetry.otlp_endpoint = args.otlp_endpoint.clone();
        config.telemetry.sampling_ratio = ratio;
        config.validate()?;
    }
    // Plain tonic logs through a `warn` fmt subscriber; Keel as its
    // telemetry configuration says (by default: `info`, no exporter).
    let telemetry = match mode {
        Mode::Keel => Some(keel_rpc::telemetry::init(&config)?),
        Mode::Plain => {
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_writer(std::io::stderr)
                .init();
            None
        }
    };

    let users = Users::in_memory().await?;
    let user = users
        .create_user(Request::new(CreateUserRequest {
            name: "Bench User".into(),
            email: "bench@example.com".into(),
        }))
        .await
        .map_err(|status| anyhow::anyhow!("creating the bench user: {status}"))?
        .into_inner();

    let token = keel_rpc::auth::mint_access_token(
        &config.auth,
        "bench",
        &["users:read"],
        Duration::from_secs(3600),
    )
    .context("minting the bench token (auth.algorithm must be HMAC)")?;
    let body = grpc_frame(&GetUserRequest {
        id: user.id.clone(),
    });
    let fixed = (args.handler == HandlerKind::Fixed).then(|| Arc::new(user));
    match &args.token_file {
        Some(path) => std::fs::write(path, &token)
            .with_context(|| format!("writing the token to {}", path.display()))?,
        None => println!("token {token}"),
    }
    match &args.body_file {
        Some(path) => std::fs::write(path, &body)
            .with_context(|| format!("writing the request body to {}", path.display()))?,
        None => println!("body_hex {}", hex(&body)),
    }

    let counts = Arc::new(Counts::default());
    let handler = Counting {
        users,
        fixed,
        counts: counts.clone(),
    };
    let counts_route = axum::Router::new().route(
        "/counts",
        axum::routing::get(move || {
            let counts = counts.clone();
            async move { counts.render() }
        }),
    );
    let (grpc_listener, grpc_addr) = bind(args.host, "grpc").await?;
    let (http_listener, http_addr) = bind(args.host, "http").await?;
    println!("bench-server grpc={grpc_addr} http={http_addr}");

    match mode {
        Mode::Plain => {
            let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
            let plain = UserServiceServer::new(handler);
            let grpc = async {
                match args.fixed_date {
                    true => {
                        Server::builder()
                            .add_service(FixedDate(plain))
                            .serve_with_incoming(incoming)
                            .await
                    }
                    false => {
                        Server::builder()
                            .add_service(plain)
                            .serve_with_incoming(incoming)
                            .await
                    }
                }
            };
            tokio::select! {
                served = grpc => served.context("serving plain")?,
                served = axum::serve(http_listener, counts_route) => served.context("serving http")?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Mode::Keel => {
            let keel = keel_rpc::Keel::new(&config, SERVICES)?;
            let service = user_v1::user_service(handler, &keel)?;
            let server = match args.fixed_date {
                true => keel.server(&config).add_service(FixedDate(service)),
                false => keel.server(&config).add_service(service),
            };
            let listeners = keel_rpc::serve::Listeners {
                grpc: grpc_listener,
                metrics: Some(http_listener),
            };
            let stop = keel_rpc::serve::shutdown_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            server
                .reflection(user_v1::FILE_DESCRIPTOR_SET)
                .http_routes(counts_route)
                .serve_on(listeners, stop)
                .await?;
        }
    }
    if let Some(mut telemetry) = telemetry {
        telemetry.shutdown().await?;
    }
    Ok(())
}

/// `--fixed-date`: every response gets a constant `date` header, which hyper
/// then keeps rather than writing the current time. The same wrapper, in the
/// same place (around the service), for both modes.
#[derive(Clone)]
struct FixedDate<S>(S);

impl<S: NamedService> NamedService for FixedDate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower::Service<http::Request<B>> for FixedDate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(http::Response<R>) -> http::Response<R>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.0.call(request).map_ok(fixed_date::<R>)
    }
}

fn fixed_date<B>(mut response: http::Response<B>) -> http::Response<B> {
    const DATE: HeaderValue = HeaderValue::from_static("Sat, 21 Nov 2026 00:00:00 GMT");
    response.headers_mut().insert(http::header::DATE, DATE);
    response
}

async fn bind(host: std::net::IpAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((host, 0))
        .await
        .with_context(|| format!("binding the {what} listener on {host}"))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// A gRPC length-prefixed message: uncompressed flag, big-endian length, payload.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
