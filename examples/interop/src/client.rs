//! The interop client: runs the standard gRPC interop cases
//! (`doc/interop-test-descriptions.md` upstream) against any interop server.
//!
//! Each case returns `Ok(())` or a [`CaseError`] that says what differed from
//! the spec. [`Client::run`] bounds every case in time ([`CASE_TIMEOUT`]).
//!
//! Cancellation: a tonic client cancels a call by dropping it. Before the
//! response headers, hyper then resets the stream (`RST_STREAM(CANCEL)`).
//! After them, hyper only resets it once the request body has ended as well,
//! so the cancelling cases drop the response first and then end the request
//! stream: the server sees `END_STREAM` followed by `RST_STREAM(CANCEL)`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::echo::{ECHO_INITIAL, ECHO_TRAILING_BIN};
use crate::grpc_testing::test_service_client::TestServiceClient;
use crate::grpc_testing::unimplemented_service_client::UnimplementedServiceClient;
use crate::grpc_testing::{
    EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingOutputCallRequest, StreamingOutputCallResponse,
};

/// Longest time one case may take, connection excluded.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest time to establish the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// cancel_after_begin: time between the transport taking the call's headers
/// and the cancellation, for the headers to reach the server first.
const HEADERS_FLUSH: Duration = Duration::from_millis(100);

/// The client's default `--server_port` (the interop server's default port).
pub const DEFAULT_PORT: u16 = crate::server::DEFAULT_PORT;

/// Request and response sizes of the large cases.
const LARGE_REQUEST: usize = 271_828;
const LARGE_RESPONSE: i32 = 314_159;
/// client_streaming's request sizes; their sum is 74922.
const CLIENT_STREAMING_SIZES: [usize; 4] = [27_182, 8, 1_828, 45_904];
/// server_streaming's and ping_pong's response sizes.
const SERVER_STREAMING_SIZES: [i32; 4] = [31_415, 9, 2_653, 58_979];

const ECHO_INITIAL_VALUE: &str = "test_initial_metadata_value";
const ECHO_TRAILING_VALUE: &[u8] = &[0xab, 0xab, 0xab];
const STATUS_MESSAGE: &str = "test status message";
const SPECIAL_STATUS_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n";

/// The interop cases this client runs, by their spec names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestCase {
    /// `empty_unary`: an empty request and response.
    EmptyUnary,
    /// `large_unary`: 271828 bytes up, 314159 down.
    LargeUnary,
    /// `client_streaming`: four requests, the sum of their sizes back.
    ClientStreaming,
    /// `server_streaming`: one request, four responses of given sizes.
    ServerStreaming,
    /// `ping_pong`: four request/response rounds on one bidi stream.
    PingPong,
    /// `empty_stream`: a bidi stream with no messages either way.
    EmptyStream,
    /// `timeout_on_sleeping_server`: a 1 ms deadline ends in DEADLINE_EXCEEDED.
    TimeoutOnSleepingServer,
    /// `cancel_after_begin`: a client stream cancelled before any message.
    CancelAfterBegin,
    /// `cancel_after_first_response`: a bidi stream cancelled after one response.
    CancelAfterFirstResponse,
    /// `custom_metadata`: initial and binary trailing metadata echoed back.
    CustomMetadata,
    /// `status_code_and_message`: a requested status comes back as sent.
    StatusCodeAndMessage,
    /// `special_status_message`: whitespace and non-ASCII survive in the message.
    SpecialStatusMessage,
    /// `unimplemented_method`: UNIMPLEMENTED for an unknown method.
    UnimplementedMethod,
    /// `unimplemented_service`: UNIMPLEMENTED for an unknown service.
    UnimplementedService,
}

impl TestCase {
    /// Every case, in the order `--test_case=all` runs them.
    pub const ALL: [TestCase; 14] = [
        TestCase::EmptyUnary,
        TestCase::LargeUnary,
        TestCase::ClientStreaming,
        TestCase::ServerStreaming,
        TestCase::PingPong,
        TestCase::EmptyStream,
        TestCase::TimeoutOnSleepingServer,
        TestCase::CancelAfterBegin,
        TestCase::CancelAfterFirstResponse,
        TestCase::CustomMetadata,
        TestCase::StatusCodeAndMessage,
        TestCase::SpecialStatusMessage,
        TestCase::UnimplementedMethod,
        TestCase::UnimplementedService,
    ];

    /// The spec name (`empty_unary`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TestCase::EmptyUnary => "empty_unary",
            TestCase::LargeUnary => "large_unary",
            TestCase::ClientStreaming => "client_streaming",
            TestCase::ServerStreaming => "server_streaming",
            TestCase::PingPong => "ping_pong",
            TestCase::EmptyStream => "empty_stream",
            TestCase::TimeoutOnSleepingServer => "timeout_on_sleeping_server",
            TestCase::CancelAfterBegin => "cancel_after_begin",
            TestCase::CancelAfterFirstResponse => "cancel_after_first_response",
            TestCase::CustomMetadata => "custom_metadata",
            TestCase::StatusCodeAndMessage => "status_code_and_message",
            TestCase::SpecialStatusMessage => "special_status_message",
            TestCase::UnimplementedMethod => "unimplemented_method",
            TestCase::UnimplementedService => "unimplemented_service",
        }
    }
}

impl fmt::Display for TestCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--test_case` value that names no case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown test case {0:?}; expected `all` or one of: {names}", names = case_names())]
pub struct UnknownTestCase(pub String);

fn case_names() -> String {
    TestCase::ALL.map(TestCase::name).join(", ")
}

impl FromStr for TestCase {
    type Err = UnknownTestCase;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TestCase::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownTestCase(s.to_owned()))
    }
}

/// Parses a `--test_case` value: `all`, or comma-separated case names.
pub fn parse_test_cases(value: &str) -> Result<Vec<TestCase>, UnknownTestCase> {
    if value == "all" {
        return Ok(TestCase::ALL.to_vec());
    }
    value.split(',').map(|name| name.trim().parse()).collect()
}

/// Why the client could not reach the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server_host` / `--server_port` do not form a valid URI.
    #[error("invalid server address {uri:?}: {source}")]
    Address {
        /// The URI built from the flags.
        uri: String,
        /// What is wrong with it.
        source: tonic::transport::Error,
    },
    /// The connection failed.
    #[error("cannot connect to {uri}: {source}")]
    Connect {
        /// The server's URI.
        uri: String,
        /// What failed.
        source: tonic::transport::Error,
    },
}

/// How a case failed.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A call failed where the case expects it to succeed.
    #[error("unexpected status {code:?}: {message:?}", code = .0.code(), message = .0.message())]
    Status(Status),
    /// The server's answer differs from what the spec requires.
    #[error("{0}")]
    Mismatch(String),
    /// The case did not finish within [`CASE_TIMEOUT`].
    #[error("did not finish within {0:?}")]
    TimedOut(Duration),
}

impl From<Status> for CaseError {
    fn from(status: Status) -> Self {
        CaseError::Status(status)
    }
}

/// Fails the case with a formatted [`CaseError::Mismatch`] unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(CaseError::Mismatch(format!($($msg)+)));
        }
    };
}

type Result<T = (), E = CaseError> = std::result::Result<T, E>;

/// A connection to an interop server.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects over plaintext HTTP/2 to `host:port`.
    pub async fn connect(host: &str, port: u16) -> Result<Client, ClientError> {
        Client::connect_with(host, port, None).await
    }

    /// Connects to `host:port`, over TLS when `tls` is given (the interop
    /// client's `--use_tls`, `--ca_file`, `--server_host_override`).
    pub async fn connect_with(
        host: &str,
        port: u16,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Client, ClientError> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]") // an IPv6 literal
        } else {
            host.to_owned()
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{host}:{port}");
        let address = |source| ClientError::Address {
            uri: uri.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(address)?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(address)?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { uri, source })?;
        Ok(Client::new(channel))
    }

    /// A client on an existing channel.
    pub fn new(channel: Channel) -> Self {
        Client { channel }
    }

    fn test(&self) -> TestServiceClient<Channel> {
        TestServiceClient::new(self.channel.clone())
    }

    /// Runs one case, bounded by [`CASE_TIMEOUT`].
    pub async fn run(&self, case: TestCase) -> Result {
        let run = async {
            match case {
                TestCase::EmptyUnary => self.empty_unary().await,
                TestCase::LargeUnary => self.large_unary().await,
                TestCase::ClientStreaming => self.client_streaming().await,
                TestCase::ServerStreaming => self.server_streaming().await,
                TestCase::PingPong => self.ping_pong().await,
                TestCase::EmptyStream => self.empty_stream().await,
                TestCase::TimeoutOnSleepingServer => self.timeout_on_sleeping_server().await,
                TestCase::CancelAfterBegin => self.cancel_after_begin().await,
                TestCase::CancelAfterFirstResponse => self.cancel_after_first_response().await,
                TestCase::CustomMetadata => self.custom_metadata().await,
                TestCase::StatusCodeAndMessage => self.status_code_and_message().await,
                TestCase::SpecialStatusMessage => self.special_status_message().await,
                TestCase::UnimplementedMethod => self.unimplemented_method().await,
                TestCase::UnimplementedService => self.unimplemented_service().await,
            }
        };
        tokio::time::timeout(CASE_TIMEOUT, run)
            .await
            .unwrap_or(Err(CaseError::TimedOut(CASE_TIMEOUT)))
    }

    async fn empty_unary(&self) -> Result {
        let response = self.test().empty_call(Empty {}).await?;
        ensure!(
            *response.get_ref() == Empty {},
            "EmptyCall answered {:?}",
            response.get_ref()
        );
        Ok(())
    }

    async fn large_unary(&self) -> Result {
        let response = self.test().unary_call(large_request()).await?;
        check_large_response(response.get_ref())
    }

    async fn client_streaming(&self) -> Result {
        let requests = CLIENT_STREAMING_SIZES.map(|size| StreamingInputCallRequest {
            payload: Some(zeros(size)),
            ..StreamingInputCallRequest::default()
        });
        let response = self
            .test()
            .streaming_input_call(futures_util::stream::iter(requests))
            .await?;
        let expected: usize = CLIENT_STREAMING_SIZES.iter().sum();
        let got = response.get_ref().aggregated_payload_size;
        ensure!(
            usize::try_from(got) == Ok(expected),
            "aggregated_payload_size is {got}, expected {expected}"
        );
        Ok(())
    }

    async fn server_streaming(&self) -> Result {
        let request = StreamingOutputCallRequest {
            response_parameters: SERVER_STREAMING_SIZES.map(size_param).to_vec(),
            ..StreamingOutputCallRequest::default()
        };
        let mut stream = self
            .test()
            .streaming_output_call(request)
            .await?
            .into_inner();
        let mut sizes = Vec::new();
        while let Some(response) = stream.message().await? {
            sizes.push(body_len(&response));
        }
        ensure!(
            sizes == SERVER_STREAMING_SIZES.map(to_usize),
            "response sizes are {sizes:?}, expected {SERVER_STREAMING_SIZES:?}"
        );
        Ok(())
    }

    async fn ping_pong(&self) -> Result {
        let (tx, rx) = mpsc::channel(1);
        let pairs: Vec<(usize, i32)> = CLIENT_STREAMING_SIZES
            .iter()
            .copied()
            .zip(SERVER_STREAMING_SIZES)
            .collect();
        let request = |i: usize| duplex_request(pairs[i].1, pairs[i].0);
        // The first request goes into the stream before the call is awaited:
        // a server may send its response headers only with its first
        // response (grpc-go's does), so awaiting them first would wait forever.
        send(&tx, request(0)).await?;
        let mut responses = self
            .test()
            .full_duplex_call(ReceiverStream::new(rx))
            .await?
            .into_inner();
        for (i, &(_, response_size)) in pairs.iter().enumerate() {
            if i > 0 {
                send(&tx, request(i)).await?;
            }
            let response = responses.message().await?.ok_or_else(|| {
                CaseError::Mismatch(format!(
                    "stream ended before the response of size {response_size}"
                ))
            })?;
            ensure!(
                body_len(&response) == to_usize(response_size),
                "response size is {}, expected {response_size}",
                body_len(&response)
            );
        }
        drop(tx); // half-close
        let extra = responses.message().await?;
        ensure!(
            extra.is_none(),
            "a fifth response arrived after half-close: size {}",
            extra.as_ref().map_or(0, body_len)
        );
        Ok(())
    }

    async fn empty_stream(&self) -> Result {
        let mut responses = self
            .test()
            .full_duplex_call(futures_util::stream::empty())
            .await?
            .into_inner();
        let first = responses.message().await?;
        ensure!(
            first.is_none(),
            "got a response of size {} on an empty stream",
            first.as_ref().map_or(0, body_len)
        );
        Ok(())
    }

    async fn timeout_on_sleeping_server(&self) -> Result {
        const DEADLINE: Duration = Duration::from_millis(1);
        let (tx, rx) = mpsc::channel(1);
        send(&tx, duplex_request_payload_only(CLIENT_STREAMING_SIZES[0])).await?;
        let mut request = Request::new(ReceiverStream::new(rx));
        // Sends `grpc-timeout`, so the server knows the deadline too.
        request.set_timeout(DEADLINE);
        let deadline = Instant::now() + DEADLINE;
        let mut client = self.test();
        // The client keeps its request stream open ("client waits") and reads
        // until the call ends; the deadline is enforced here as well, as the
        // call may already have its response headers when it passes.
        let call = async {
            let mut responses = client.full_duplex_call(request).await?.into_inner();
            while responses.message().await?.is_some() {}
            Ok::<(), Status>(())
        };
        let outcome = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), call).await;
        drop(tx); // ends the request stream, so the dropped call is reset
        let code = match outcome {
            Err(_elapsed) => Code::DeadlineExceeded,
            Ok(Ok(())) => Code::Ok,
            // tonic's client reports its own expiry of `grpc-timeout` as
            // CANCELLED "Timeout expired": that is this call's deadline.
            Ok(Err(status)) if is_tonic_timeout(&status) && Instant::now() >= deadline => {
                Code::DeadlineExceeded
            }
            Ok(Err(status)) => status.code(),
        };
        ensure!(
            code == Code::DeadlineExceeded,
            "the call ended with {code:?}, expected DeadlineExceeded"
        );
        Ok(())
    }

    async fn cancel_after_begin(&self) -> Result {
        // The request stream reports when the transport first asks it for a
        // message (the headers are out), then never yields one.
        let (began_tx, began_rx) = oneshot::channel::<()>();
        let mut began_tx = Some(began_tx);
        let requests = futures_util::stream::poll_fn(move |_cx| {
            if let Some(tx) = began_tx.take() {
                let _ = tx.send(());
            }
            std::task::Poll::<Option<StreamingInputCallRequest>>::Pending
        });
        let mut client = self.test();
        let call = client.streaming_input_call(requests);
        tokio::pin!(call);
        // The first poll of the request body means the headers are queued,
        // not that they are on the wire: a call reset before its headers
        // went out never reaches the server. Give them a moment.
        let sent = async {
            let _ = began_rx.await;
            tokio::time::sleep(HEADERS_FLUSH).await;
        };
        tokio::select! {
            outcome = &mut call => {
                return Err(CaseError::Mismatch(format!(
                    "the call ended before it was cancelled: {:?}",
                    outcome.map(|r| r.into_inner())
                )));
            }
            () = sent => {}
        }
        // Cancel: dropping the pending call makes hyper reset the stream
        // (RST_STREAM(CANCEL)); the call's status is CANCELLED.
        Ok(())
    }

    async fn cancel_after_first_response(&self) -> Result {
        let (tx, rx) = mpsc::channel(1);
        // Sent before the call is awaited, as in `ping_pong`.
        send(
            &tx,
            duplex_request(SERVER_STREAMING_SIZES[0], CLIENT_STREAMING_SIZES[0]),
        )
        .await?;
        let mut responses = self
            .test()
            .full_duplex_call(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = responses.message().await?.ok_or_else(|| {
            CaseError::Mismatch("stream ended before the first response".to_owned())
        })?;
        ensure!(
            body_len(&first) == to_usize(SERVER_STREAMING_SIZES[0]),
            "first response size is {}, expected {}",
            body_len(&first),
            SERVER_STREAMING_SIZES[0]
        );
        // Cancel: drop the response side first, then end the request stream,
        // so hyper resets the stream (see the module docs).
        drop(responses);
        drop(tx);
        Ok(())
    }

    async fn custom_metadata(&self) -> Result {
        self.unary_with_metadata().await?;

        let mut client = self.test();
        let mut request = Request::new(futures_util::stream::iter([duplex_request(
            LARGE_RESPONSE,
            LARGE_REQUEST,
        )]));
        add_echo_metadata(request.metadata_mut());
        let response = client.full_duplex_call(request).await?;
        check_echo_initial(response.metadata(), "FullDuplexCall")?;
        let mut responses = response.into_inner();
        let mut sizes = Vec::new();
        while let Some(response) = responses.message().await? {
            sizes.push(body_len(&response));
        }
        ensure!(
            sizes == [to_usize(LARGE_RESPONSE)],
            "FullDuplexCall response sizes are {sizes:?}, expected [{LARGE_RESPONSE}]"
        );
        let trailers = responses.trailers().await?.unwrap_or_default();
        check_echo_trailing(&trailers, "FullDuplexCall")
    }

    /// custom_metadata's UnaryCall. tonic's generated unary method merges
    /// the trailers into the response metadata, so the call goes through the
    /// generic client as a one-message stream (the same bytes on the wire),
    /// which tells initial from trailing metadata.
    async fn unary_with_metadata(&self) -> Result {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let mut request = Request::new(large_request());
        add_echo_metadata(request.metadata_mut());
        let path = http::uri::PathAndQuery::from_static("/grpc.testing.TestService/UnaryCall");
        let codec = tonic_prost::ProstCodec::<SimpleRequest, SimpleResponse>::default();
        let response = grpc.server_streaming(request, path, codec).await?;
        check_echo_initial(response.metadata(), "UnaryCall")?;
        let mut responses = response.into_inner();
        let first = responses
            .message()
            .await?
            .ok_or_else(|| CaseError::Mismatch("UnaryCall answered no message".to_owned()))?;
        check_large_response(&first)?;
        ensure!(
            responses.message().await?.is_none(),
            "UnaryCall answered more than one message"
        );
        let trailers = responses.trailers().await?.unwrap_or_default();
        check_echo_trailing(&trailers, "UnaryCall")
    }

    async fn status_code_and_message(&self) -> Result {
        self.echo_status(STATUS_MESSAGE).await
    }

    async fn special_status_message(&self) -> Result {
        let echo = EchoStatus {
            code: Code::Unknown as i32,
            message: SPECIAL_STATUS_MESSAGE.to_owned(),
        };
        let request = SimpleRequest {
            response_status: Some(echo),
            ..SimpleRequest::default()
        };
        let outcome = self.test().unary_call(request).await;
        check_status(outcome.map(drop), "UnaryCall", SPECIAL_STATUS_MESSAGE)
    }

    /// status_code_and_message: UNKNOWN with `message` on UnaryCall and on
    /// FullDuplexCall.
    async fn echo_status(&self, message: &str) -> Result {
        let echo = EchoStatus {
            code: Code::Unknown as i32,
            message: message.to_owned(),
        };
        let mut client = self.test();
        let request = SimpleRequest {
            response_status: Some(echo.clone()),
            ..SimpleRequest::default()
        };
        let outcome = client.unary_call(request).await;
        check_status(outcome.map(drop), "UnaryCall", message)?;

        let request = StreamingOutputCallRequest {
            response_status: Some(echo),
            ..StreamingOutputCallRequest::default()
        };
        let outcome = async {
            let mut responses = client
                .full_duplex_call(futures_util::stream::iter([request]))
                .await?
                .into_inner();
            while responses.message().await?.is_some() {}
            Ok(())
        }
        .await;
        check_status(outcome, "FullDuplexCall", message)
    }

    async fn unimplemented_method(&self) -> Result {
        let outcome = self.test().unimplemented_call(Empty {}).await;
        check_unimplemented(outcome.map(drop), "TestService/UnimplementedCall")
    }

    async fn unimplemented_service(&self) -> Result {
        let outcome = UnimplementedServiceClient::new(self.channel.clone())
            .unimplemented_call(Empty {})
            .await;
        check_unimplemented(outcome.map(drop), "UnimplementedService/UnimplementedCall")
    }
}

fn zeros(size: usize) -> Payload {
    Payload {
        body: vec![0; size],
        ..Payload::default()
    }
}

fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_size: LARGE_RESPONSE,
        payload: Some(zeros(LARGE_REQUEST)),
        ..SimpleRequest::default()
    }
}

fn check_large_response(response: &SimpleResponse) -> Result {
    let body = response.payload.as_ref().map_or(&[][..], |p| &p.body[..]);
    ensure!(
        body.len() == to_usize(LARGE_RESPONSE),
        "response payload is {} bytes, expected {LARGE_RESPONSE}",
        body.len()
    );
    ensure!(
        body.iter().all(|b| *b == 0),
        "response payload is not all zeros"
    );
    Ok(())
}

fn size_param(size: i32) -> ResponseParameters {
    ResponseParameters {
        size,
        ..ResponseParameters::default()
    }
}

fn duplex_request(response_size: i32, request_size: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![size_param(response_size)],
        payload: Some(zeros(request_size)),
        ..StreamingOutputCallRequest::default()
    }
}

fn duplex_request_payload_only(request_size: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        payload: Some(zeros(request_size)),
        ..StreamingOutputCallRequest::default()
    }
}

fn body_len(response: &StreamingOutputCallResponse) -> usize {
    response.payload.as_ref().map_or(0, |p| p.body.len())
}

/// The spec's sizes are all non-negative.
fn to_usize(size: i32) -> usize {
    usize::try_from(size).unwrap_or(0)
}

async fn send(
    tx: &mpsc::Sender<StreamingOutputCallRequest>,
    request: StreamingOutputCallRequest,
) -> Result {
    tx.send(request).await.map_err(|_| {
        CaseError::Mismatch("the request stream was closed by the transport".to_owned())
    })
}

fn add_echo_metadata(metadata: &mut MetadataMap) {
    metadata.insert(
        ECHO_INITIAL,
        AsciiMetadataValue::from_static(ECHO_INITIAL_VALUE),
    );
    metadata.insert_bin(
        ECHO_TRAILING_BIN,
        BinaryMetadataValue::from_bytes(ECHO_TRAILING_VALUE),
    );
}

fn check_echo_initial(metadata: &MetadataMap, method: &str) -> Result {
    let got = metadata.get(ECHO_INITIAL).map(|v| v.as_bytes());
    ensure!(
        got == Some(ECHO_INITIAL_VALUE.as_bytes()),
        "{method}: initial metadata {ECHO_INITIAL} is {got:?}, expected {ECHO_INITIAL_VALUE:?}"
    );
    Ok(())
}

fn check_echo_trailing(trailers: &MetadataMap, method: &str) -> Result {
    let got = trailers
        .get_bin(ECHO_TRAILING_BIN)
        .map(|v| v.to_bytes().map(|b| b.to_vec()));
    ensure!(
        matches!(&got, Some(Ok(bytes)) if bytes == ECHO_TRAILING_VALUE),
        "{method}: trailing metadata {ECHO_TRAILING_BIN} is {got:?}, expected {ECHO_TRAILING_VALUE:02x?}"
    );
    Ok(())
}

fn check_status(outcome: std::result::Result<(), Status>, method: &str, message: &str) -> Result {
    match outcome {
        Ok(()) => Err(CaseError::Mismatch(format!(
            "{method} succeeded; expected status Unknown"
        ))),
        Err(status) => {
            ensure!(
                status.code() == Code::Unknown && status.message() == message,
                "{method}: got {:?} {:?}, expected Unknown {message:?}",
                status.code(),
                status.message()
            );
            Ok(())
        }
    }
}

fn check_unimplemented(outcome: std::result::Result<(), Status>, method: &str) -> Result {
    match outcome {
        Ok(()) => Err(CaseError::Mismatch(format!(
            "{method} succeeded; expected Unimplemented"
        ))),
        Err(status) => {
            ensure!(
                status.code() == Code::Unimplemented,
                "{method}: got {:?} {:?}, expected Unimplemented",
                status.code(),
                status.message()
            );
            Ok(())
        }
    }
}

/// Whether tonic's client made `status` because the call's `grpc-timeout`
/// passed (tonic maps its `TimeoutExpired` to CANCELLED).
fn is_tonic_timeout(status: &Status) -> bool {
    status.code() == Code::Cancelled && status.message() == tonic::TimeoutExpired(()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for case in TestCase::ALL {
            assert_eq!(case.name().parse::<TestCase>(), Ok(case));
        }
        assert_eq!(parse_test_cases("all").map(|c| c.len()), Ok(14));
        assert_eq!(
            parse_test_cases("empty_unary,ping_pong"),
            Ok(vec![TestCase::EmptyUnary, TestCase::PingPong])
        );
        assert!(parse_test_cases("empty_unary,nope").is_err());
        assert!("".parse::<TestCase>().is_err());
    }

    #[test]
    fn spec_sizes() {
        assert_eq!(CLIENT_STREAMING_SIZES.iter().sum::<usize>(), 74_922);
    }
}
