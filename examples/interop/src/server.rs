//! The interop server: `grpc.testing.TestService` served through Keel's
//! generated, wrapped server, with the server features of the gRPC interop
//! spec (`doc/interop-test-descriptions.md` upstream).
//!
//! Implemented features: EmptyCall, UnaryCall, CacheableUnaryCall,
//! StreamingInputCall, StreamingOutputCall, FullDuplexCall, HalfDuplexCall,
//! Echo Status, Echo Metadata, `ResponseParameters.interval_us`, and
//! CompressedRequest's probe (`expect_compressed` on an uncompressed message
//! is `INVALID_ARGUMENT`). Not implemented: compressed responses
//! (`response_compressed` is ignored), TLS, and the auth echo features
//! (`fill_username`, `fill_oauth_scope`: every method is public).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{Stream, StreamExt};
use keel_rpc::Keel;
use keel_rpc::config::{Config, ConfigError, Loader};
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::echo::{ECHO_INITIAL, EchoTrailing};
use crate::grpc_testing::test_service_server::TestService;
use crate::grpc_testing::{
    self, BoolValue, EchoStatus, Empty, Payload, PayloadType, ResponseParameters, SimpleRequest,
    SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse,
};

/// The port the interop server listens on by default (as grpc-go's and
/// tonic's interop servers do).
pub const DEFAULT_PORT: u16 = 10000;

/// Every service the server wraps, for [`Keel::new`].
pub const SERVICES: &[&keel_rpc::codegen::ServicePolicy] = &[&grpc_testing::TEST_SERVICE_POLICY];

/// `SimpleResponse.server_id` when `fill_server_id` is set.
pub const SERVER_ID: &str = "keel-interop";

/// The server's configuration, over Keel's built-in defaults. No `--config`
/// file and no `KEEL_*` variables: the interop flags are the interface.
///
/// The HMAC secret is a development one: no token is ever verified (every
/// method is public), but `Keel::new` needs a valid auth configuration.
const CONFIG_TOML: &str = r#"
[service]
name = "interop"

[server]
# Interop runs are short-lived: stop at once on a signal.
lame_duck = "0s"
drain_timeout = "5s"

[metrics]
enabled = false

[auth]
algorithm = "HS256"
hmac_secret = "keel-interop-dev-secret-never-verifies-anything"
"#;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The built-in configuration was rejected.
    #[error("interop server configuration: {0}")]
    Config(#[from] ConfigError),
    /// Keel could not build its runtime or wrap the service.
    #[error("keel: {0}")]
    Keel(#[from] keel_rpc::Error),
    /// The listener could not be bound or read.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// The interop server: its Keel configuration and runtime.
#[derive(Clone, Debug)]
pub struct InteropServer {
    config: Config,
    keel: Keel,
}

impl InteropServer {
    /// Builds the Keel configuration (server address `addr`, metrics endpoint
    /// off, a development HMAC secret) and the runtime.
    pub fn new(addr: SocketAddr) -> Result<Self, ServerError> {
        InteropServer::with_tls(addr, None)
    }

    /// [`InteropServer::new`], serving TLS with `tls` when given (the
    /// interop server's `--use_tls`).
    pub fn with_tls(
        addr: SocketAddr,
        tls: Option<keel_rpc::config::ServerTlsConfig>,
    ) -> Result<Self, ServerError> {
        let mut config = Loader::new().defaults_toml(CONFIG_TOML).load()?;
        config.server.addr = addr;
        config.server.tls = tls;
        let keel = Keel::new(&config, SERVICES)?;
        Ok(InteropServer { config, keel })
    }

    /// The Keel configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The Keel runtime; its metrics count every call of the served service.
    pub fn keel(&self) -> &Keel {
        &self.keel
    }

    /// Serves `TestService` on `listener` until `shutdown` completes.
    ///
    /// `UnimplementedService` is deliberately not served: the router answers
    /// it with `UNIMPLEMENTED`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let service = grpc_testing::test_service(Interop, &self.keel)?;
        let listeners = keel_rpc::serve::Listeners {
            grpc: listener,
            metrics: None,
        };
        self.keel
            .server(&self.config)
            .add_service(EchoTrailing::new(service))
            .reflection(grpc_testing::FILE_DESCRIPTOR_SET)
            .serve_on(listeners, keel_rpc::serve::shutdown_on(shutdown))
            .await?;
        Ok(())
    }
}

/// Binds `addr` for [`InteropServer::serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// The `TestService` handler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Interop;

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl TestService for Interop {
    async fn empty_call(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(echo_initial(request.metadata(), Empty {}))
    }

    async fn unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let req = request.get_ref();
        check_echo_status(req.response_status.as_ref())?;
        check_uncompressed(req.expect_compressed.as_ref())?;
        check_payload_type(req.response_type)?;
        let response = SimpleResponse {
            payload: Some(payload(req.response_size)?),
            server_id: if req.fill_server_id {
                SERVER_ID.to_owned()
            } else {
                String::new()
            },
            ..SimpleResponse::default()
        };
        Ok(echo_initial(request.metadata(), response))
    }

    async fn cacheable_unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        // The request is ignored; the payload differs on every call so a
        // caching proxy in between shows up as equal payloads.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Status::internal("clock before the Unix epoch"))?
            .as_nanos();
        let response = SimpleResponse {
            payload: Some(Payload {
                r#type: PayloadType::Compressable.into(),
                body: nanos.to_string().into_bytes(),
            }),
            ..SimpleResponse::default()
        };
        let mut response = echo_initial(request.metadata(), response);
        response.metadata_mut().insert(
            "cache-control",
            tonic::metadata::MetadataValue::from_static("max-age=60, public"),
        );
        Ok(response)
    }

    type StreamingOutputCallStream = ResponseStream;

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<Self::StreamingOutputCallStream>, Status> {
        let (metadata, _, req) = request.into_parts();
        check_echo_status(req.response_status.as_ref())?;
        check_payload_type(req.response_type)?;
        check_sizes(&req.response_parameters)?;
        let stream = futures_util::stream::iter(req.response_parameters).then(respond);
        Ok(echo_initial(&metadata, Box::pin(stream) as _))
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        let mut total: usize = 0;
        while let Some(message) = inbound.message().await? {
            check_uncompressed(message.expect_compressed.as_ref())?;
            total += message.payload.map_or(0, |p| p.body.len());
        }
        let aggregated_payload_size = i32::try_from(total)
            .map_err(|_| Status::out_of_range("aggregated payload size exceeds int32"))?;
        Ok(echo_initial(
            &metadata,
            StreamingInputCallResponse {
                aggregated_payload_size,
            },
        ))
    }

    type FullDuplexCallStream = ResponseStream;

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<Self::FullDuplexCallStream>, Status> {
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        // Answered (the response headers sent) only once the first request
        // has arrived, as grpc-go's interop server does: a client must not
        // wait for the headers before it sends that request.
        let first = inbound.message().await?;
        let stream = full_duplex(first, inbound);
        Ok(echo_initial(&metadata, Box::pin(stream) as _))
    }

    type HalfDuplexCallStream = ResponseStream;

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<Self::HalfDuplexCallStream>, Status> {
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        let mut params = Vec::new();
        while let Some(message) = inbound.message().await? {
            check_echo_status(message.response_status.as_ref())?;
            check_payload_type(message.response_type)?;
            check_sizes(&message.response_parameters)?;
            params.extend(message.response_parameters);
        }
        let stream = futures_util::stream::iter(params).then(respond);
        Ok(echo_initial(&metadata, Box::pin(stream) as _))
    }

    async fn unimplemented_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is not implemented",
        ))
    }
}

/// FullDuplexCall: answers each request's parameters (`first`, then those
/// of `inbound`) as soon as it arrives; ends with OK after the client
/// half-closes, or with the echoed status.
fn full_duplex(
    first: Option<StreamingOutputCallRequest>,
    inbound: Streaming<StreamingOutputCallRequest>,
) -> impl Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send + 'static {
    struct State {
        first: Option<StreamingOutputCallRequest>,
        inbound: Streaming<StreamingOutputCallRequest>,
        pending: VecDeque<ResponseParameters>,
    }
    let ended = first.is_none();
    let state = State {
        first,
        inbound,
        pending: VecDeque::new(),
    };
    // No first request: the client half-closed at once.
    let state = (!ended).then_some(state);
    futures_util::stream::unfold(state, |state| async move {
        let mut state = state?;
        loop {
            if let Some(params) = state.pending.pop_front() {
                let response = respond(params).await;
                return Some((response, Some(state)));
            }
            let message = match state.first.take() {
                Some(message) => message,
                None => match state.inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => return None,
                    Err(status) => return Some((Err(status), None)),
                },
            };
            let checked = check_echo_status(message.response_status.as_ref())
                .and_then(|()| check_payload_type(message.response_type))
                .and_then(|()| check_sizes(&message.response_parameters));
            if let Err(status) = checked {
                return Some((Err(status), None));
            }
            state.pending.extend(message.response_parameters);
        }
    })
}

/// One streamed response: waits `interval_us`, then sends `size` zero bytes.
async fn respond(params: ResponseParameters) -> Result<StreamingOutputCallResponse, Status> {
    if params.interval_us > 0 {
        tokio::time::sleep(Duration::from_micros(
            params.interval_us.unsigned_abs().into(),
        ))
        .await;
    }
    Ok(StreamingOutputCallResponse {
        payload: Some(payload(params.size)?),
    })
}

/// A COMPRESSABLE payload of `size` zero bytes.
fn payload(size: i32) -> Result<Payload, Status> {
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument(format!("negative response size {size}")))?;
    Ok(Payload {
        r#type: PayloadType::Compressable.into(),
        body: vec![0; size],
    })
}

/// Echo Status: a non-OK `response_status` ends the call with that status.
fn check_echo_status(status: Option<&EchoStatus>) -> Result<(), Status> {
    match status {
        Some(s) if s.code != 0 => Err(Status::new(Code::from(s.code), s.message.clone())),
        _ => Ok(()),
    }
}

/// CompressedRequest probe: this server never accepts compressed messages
/// (tonic would have refused one before the handler), so a message that
/// expects to have been compressed was not.
fn check_uncompressed(expect_compressed: Option<&BoolValue>) -> Result<(), Status> {
    if expect_compressed.is_some_and(|b| b.value) {
        return Err(Status::invalid_argument(
            "expected a compressed message; this server does not accept compression",
        ));
    }
    Ok(())
}

fn check_payload_type(response_type: i32) -> Result<(), Status> {
    match PayloadType::try_from(response_type) {
        Ok(PayloadType::Compressable) => Ok(()),
        Err(_) => Err(Status::invalid_argument(format!(
            "unsupported response type {response_type}"
        ))),
    }
}

fn check_sizes(params: &[ResponseParameters]) -> Result<(), Status> {
    match params.iter().find(|p| p.size < 0) {
        Some(p) => Err(Status::invalid_argument(format!(
            "negative response size {}",
            p.size
        ))),
        None => Ok(()),
    }
}

/// A response carrying the request's `x-grpc-test-echo-initial`, if any.
fn echo_initial<T>(request: &MetadataMap, message: T) -> Response<T> {
    let mut response = Response::new(message);
    if let Some(value) = request.get(ECHO_INITIAL) {
        response.metadata_mut().insert(ECHO_INITIAL, value.clone());
    }
    response
}
