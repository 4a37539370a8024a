//! [`ClientLayer`]: what Keel does around each call a generated client makes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::body::ResponseBody;
use super::call::ClientCall;
use super::dependency::Dependency;
use super::retry::{self, Attempts};
use crate::auth::TokenSource;
use crate::clock;
use crate::metrics::{CallRecord, MethodRetries, Protocol, ServiceMetrics};
use crate::observe::{CountingBody, Tallies};
use crate::policy::ServicePolicy;
use crate::telemetry::deadline::Deadline;
use crate::telemetry::{client_span, criticality, propagation};
use crate::wire::{GRPC_TIMEOUT, KEEL_CRITICALITY, decode_timeout, encode_timeout, status_code};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Applies Keel's client behaviour to calls of one service; see the
/// [module docs](super). Made by [`Client::layer`](super::Client::layer).
#[derive(Clone)]
pub struct ClientLayer {
    shared: Arc<Shared>,
}

/// What every call of one service's client shares.
struct Shared {
    policy: &'static ServicePolicy,
    metrics: Arc<ServiceMetrics>,
    deadline: Duration,
    /// `deadline` as a `grpc-timeout` value, formatted once.
    deadline_header: HeaderValue,
    tokens: Option<Arc<dyn TokenSource>>,
    /// Where each method's request messages are counted.
    sent: Tallies,
    /// The retry counters of each unary method.
    retries: Box<[Option<MethodRetries>]>,
    /// The service's retry budget and breaker, shared with the process's
    /// other clients of it.
    dependency: Arc<Dependency>,
}

impl std::fmt::Debug for ClientLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLayer")
            .field("service", &self.shared.policy.name)
            .field("deadline", &self.shared.deadline)
            .field("token_source", &self.shared.tokens.is_some())
            .finish()
    }
}

impl ClientLayer {
    pub(crate) fn new(
        policy: &'static ServicePolicy,
        metrics: Arc<ServiceMetrics>,
        deadline: Duration,
        tokens: Option<Arc<dyn TokenSource>>,
        retries: Box<[Option<MethodRetries>]>,
        dependency: Arc<Dependency>,
    ) -> Self {
        let sent = Tallies::sent(&metrics);
        ClientLayer {
            shared: Arc::new(Shared {
                policy,
                metrics,
                deadline,
                deadline_header: encode_timeout(deadline),
                tokens,
                sent,
                retries,
                dependency,
            }),
        }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`ClientLayer`], under a generated tonic client.
#[derive(Clone)]
pub struct ClientService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for ClientService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientService")
            .field("service", &self.shared.policy.name)
            .finish_non_exhaustive()
    }
}

/// Response future of [`ClientService`].
pub type ClientFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, BoxError>> + Send>>;

impl<S, ResBody> Service<Request<Body>> for ClientService<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ClientFuture<ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The clone is not ready; the one that was polled ready makes the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let policy = shared.policy;

        let method = policy.route_index(req.uri().path());
        let span = method.and_then(|i| client_span(policy, &policy.methods[i]));
        let parent = match &span {
            Some(span) => span.context(),
            // Not traced by Keel: pass on whatever context the caller has.
            None => opentelemetry::Context::current(),
        };
        propagation::inject(&parent, req.headers_mut());

        // The caller's deadline, else the default; never more than what is
        // left of the deadline of the call being served, if any.
        let set = req.headers().get(&GRPC_TIMEOUT).and_then(decode_timeout);
        let mut deadline = set.unwrap_or(shared.deadline);
        if let Some(served) = Deadline::current() {
            deadline = deadline.min(served.remaining());
        }
        if set != Some(deadline) {
            let header = match deadline == shared.deadline {
                true => shared.deadline_header.clone(),
                false => encode_timeout(deadline),
            };
            req.headers_mut().insert(&GRPC_TIMEOUT, header);
        }
        // The criticality of the call being served goes on, unless the
        // caller set one.
        if let Some(criticality) = criticality::current()
            && !req.headers().contains_key(&KEEL_CRITICALITY)
        {
            let value = HeaderValue::from_static(criticality.as_str());
            req.headers_mut().insert(&KEEL_CRITICALITY, value);
        }

        // A client's calls are gRPC.
        let slot = method.map(|i| Protocol::Grpc.slot(i));
        let sent = shared.sent.get(slot);
        let req = req.map(|body| Body::new(CountingBody::new(body, sent)));
        let tokens = match req.headers().contains_key(AUTHORIZATION) {
            true => None,
            false => shared.tokens.clone(),
        };
        let start = clock::now();
        let expires = start + deadline;
        // A service failing everything: fail now, without sending.
        let admitted = shared.dependency.admit(start);
        // Unary calls are buffered, to be sent again if no server
        // processed them or their method's policy says so; streams go as
        // they are.
        let attempts = method.and_then(|i| {
            Some(Attempts {
                policy: policy.methods[i].retry.as_ref(),
                retries: shared.retries.get(i)?.clone()?,
                span: span.clone(),
                expires,
                dependency: shared.dependency.clone(),
            })
        });
        let mut pending = Pending(Some(ClientCall {
            metrics: slot.map(|slot| CallRecord::start(&shared.metrics, slot, start)),
            expires,
            span,
            header_code: None,
            sent_token: None,
            dependency: match &admitted {
                Ok(ticket) => Some((shared.dependency.clone(), *ticket)),
                Err(_) => None,
            },
        }));

        Box::pin(async move {
            let mut sent_token = None;
            let sent = &mut sent_token;
            let call = async move {
                let mut req = req;
                if let Some(tokens) = tokens {
                    let value = bearer(&*tokens).await?;
                    req.headers_mut().insert(AUTHORIZATION, value);
                    *sent = Some(tokens);
                }
                match attempts {
                    None => inner.call(req).await.map_err(Into::into),
                    Some(attempts) => retry::call(inner, req, attempts).await,
                }
            };
            let result = match admitted {
                Err(refused) => {
                    drop(call);
                    Err(Box::new(refused) as BoxError)
                }
                // The deadline of the call being served has passed: not sent.
                Ok(_) if deadline.is_zero() => {
                    drop(call);
                    Err(Box::new(tonic::Status::deadline_exceeded(
                        "the deadline of the call being served has passed",
                    )) as BoxError)
                }
                Ok(_) => match tokio::time::timeout(deadline, call).await {
                    Ok(result) => result,
                    Err(_) => Err(Box::new(tonic::Status::deadline_exceeded(format!(
                        "no response within the deadline of {deadline:?}"
                    ))) as BoxError),
                },
            };
            if let Some(call) = pending.0.as_mut() {
                call.sent_token = sent_token;
            }
            match result {
                Ok(response) => {
                    let mut call = pending.0.take();
                    if let Some(call) = call.as_mut() {
                        call.header_code = status_code(response.headers());
                    }
                    Ok(response.map(|body| ResponseBody::new(body, call)))
                }
                Err(error) => {
                    // tonic's channel enforces the `grpc-timeout` it is given
                    // too, and may fail first, with a transport error: past
                    // the deadline, any failure is the deadline's.
                    let mut code = error_code(&*error);
                    let error = match code != Code::DeadlineExceeded && clock::now() >= expires {
                        true => {
                            code = Code::DeadlineExceeded;
                            Box::new(tonic::Status::deadline_exceeded(format!(
                                "no response within the deadline of {deadline:?} ({error})"
                            ))) as BoxError
                        }
                        false => error,
                    };
                    if let Some(call) = pending.0.take() {
                        call.finish(code, None);
                    }
                    Err(error)
                }
            }
        })
    }
}

/// `Bearer <token>` from `tokens`, or the status the call fails with
/// (`UNAUTHENTICATED`, or `UNAVAILABLE` when the source is only unavailable
/// for now).
async fn bearer(tokens: &dyn TokenSource) -> Result<HeaderValue, BoxError> {
    let token = tokens
        .token()
        .await
        .map_err(|e| -> BoxError { Box::new(e.to_status()) })?;
    HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
        Box::new(tonic::Status::unauthenticated(
            "the token source gave a token that is not a valid header value",
        )) as BoxError
    })
}

/// The code a failed call is recorded with: the status's own when the error
/// is one, else `UNAVAILABLE` (the transport failed).
pub(super) fn error_code(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Code {
    error
        .downcast_ref::<tonic::Status>()
        .map_or(Code::Unavailable, tonic::Status::code)
}

/// A call whose response has not arrived: dropping it (the caller gave up)
/// records `CANCELLED`.
struct Pending(Option<ClientCall>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            call.finish(Code::Cancelled, None);
        }
    }
}
