//! The server pipeline: what every generated server is wrapped in, and the
//! one place where a call's per-method steps run.
//!
//! [`Pipeline`] is one tower [`Service`] in front of the generated tonic
//! server. A call looks its method up once (`policy.route_index(path)`, a
//! `match` on the path that codegen wrote) and then runs, in this order:
//!
//! 1. **context** ([`telemetry`](crate::telemetry)): the server span, when
//!    telemetry is on, continuing the caller's W3C trace; the call's
//!    criticality (its method's, or a trusted caller's `keel-criticality`),
//!    which calls the handler makes through generated clients carry on, and
//!    which the concurrency step sheds by; and the call's
//!    deadline ([`deadline`](crate::deadline)): its `grpc-timeout`, else the
//!    method's `timeout`, never more than its `max_timeout`, which calls the
//!    handler makes through generated clients inherit, and which ends the
//!    call `DEADLINE_EXCEEDED` (`pipeline/deadline.rs`). The context is
//!    attached while the handler runs, so its logs carry the trace id;
//! 2. **metrics** ([`metrics`](crate::metrics)): the call is counted as
//!    started, under its method and the protocol it came by (gRPC, or
//!    gRPC-Web or REST translated on the port), and its clock starts, so
//!    everything after is counted, rejections included;
//! 3. **auth** ([`auth`]): the method's access rule; a rejected
//!    call is answered `UNAUTHENTICATED` or `PERMISSION_DENIED` and never
//!    reaches the handler. What was verified goes in the request's
//!    extensions ([`RequestExt`](crate::RequestExt));
//! 4. **rate limit** (`pipeline/rate`): a method with `rate_limit` answers a
//!    call that finds its bucket (global, or the caller's address, subject or
//!    claim) empty `RESOURCE_EXHAUSTED` with a `RetryInfo` detail; with
//!    `[rate_limit] backend` the buckets are the fleet's, in Redis, and the
//!    steps after this one wait for its answer in the response future;
//! 5. **concurrency** (`pipeline/concurrency.rs`): a method with
//!    `max_concurrency` answers a call over the limit `RESOURCE_EXHAUSTED`
//!    (a sheddable call over its share of it);
//!    and a streaming method with stream limits (`pipeline/stream.rs`) ends
//!    a call past its `max_stream_duration` (`UNAVAILABLE`), its
//!    `stream_idle_timeout` (`DEADLINE_EXCEEDED`) or its
//!    `max_stream_messages` (`RESOURCE_EXHAUSTED`);
//! 6. **request messages** ([`CountingBody`]): counted as they
//!    arrive; one longer than `server.max_message_bytes` fails
//!    `RESOURCE_EXHAUSTED` before tonic decodes it; for a method taking one
//!    request message, a request that has not all arrived within
//!    `server.request_body_timeout` fails `DEADLINE_EXCEEDED`, counted in
//!    `keel_server_request_body_timeouts_total`;
//! 7. **your layers** ([`Keel::wrap_with`](crate::Keel::wrap_with)), with the
//!    call's [`CalledMethod`] in the request's extensions and the methods'
//!    own options in an [`OptionTable`];
//! 8. **recovery** (`pipeline/recover.rs`): a panic of the handler, or of its response
//!    stream, is logged and answered `INTERNAL`;
//! 9. **the end** ([`ResponseBody`]): when the response ends (its trailers,
//!    its headers for a trailers-only response, or the client going away),
//!    its status message is bounded (`pipeline/bound.rs`: at most 1 KiB,
//!    whatever the handler wrote), as is each header block's metadata (at
//!    most 8 KiB, the handler's entries past it dropped), and the code and
//!    latency are recorded and the span ended.
//!
//! A new per-method concern is a step in this list: a module of its own
//! with one job, called from [`Pipeline::call`] with the method's policy,
//! never a second service wrapped around this one (each nested service
//! is another future and another body wrapper per call).
//!
//! Paths outside the policy go to the inner server untouched (it answers
//! `UNIMPLEMENTED`), with the message size limit, panic recovery and the
//! bound on status messages only, and are not counted, so label values stay
//! bounded.

mod body;
mod bound;
mod call;
mod concurrency;
mod deadline;
mod future;
mod interruptible;
mod method;
mod rate;
pub(crate) mod recover;
mod stream;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use tower::Service;

use crate::auth::{self, Peer, Verifier};
use crate::clock;
use crate::config::TrustCriticality;
use crate::metrics::{CallRecord, Metrics, Protocol, ServiceMetrics, takes_one_message};
use crate::observe::Tallies;
use crate::policy::{Criticality, MethodKind, MethodPolicy, ServicePolicy};
use crate::telemetry::call_context;
use crate::wire::CallHeaders;

pub use crate::observe::CountingBody;
/// The Redis client crate the rate limits' buckets use ([`backend_client`]).
pub use ::redis;
pub use body::ResponseBody;
pub use call::Call;
use call::Limits;
pub use future::ResponseFuture;
pub(crate) use interruptible::Interruptible;
pub use method::{CalledMethod, OptionError, OptionTable};
use rate::Admission;
pub(crate) use rate::RedisBuckets;
pub use rate::{RateBackendError, backend_client, backend_key};
/// A server behind layers of your own, as [`Keel::wrap_with`](crate::Keel::wrap_with) builds it
/// (tonic's, which keeps the server's name for the router).
pub use tonic::service::Layered;
/// The trait of the layers [`Keel::wrap_with`](crate::Keel::wrap_with) takes (tower's).
pub use tower::Layer;

/// The layer that makes a [`Pipeline`]; built by
/// [`Keel::layer`](crate::Keel::layer).
#[derive(Clone, Debug)]
pub struct PipelineLayer {
    shared: Arc<Shared>,
}

/// What every call of one service needs, behind one `Arc` (the router clones
/// the service for each request).
#[derive(Debug)]
struct Shared {
    policy: &'static ServicePolicy,
    verifier: Arc<Verifier>,
    metrics: Arc<ServiceMetrics>,
    /// Where each method's request messages are counted, and their limit.
    received: Tallies,
    /// The buckets of each method with a `rate_limit`.
    rates: rate::RateLimits,
    /// The calls of each method in flight, for `max_concurrency`.
    in_flight: concurrency::InFlight,
    /// Whether layers of the user's run inside: calls then carry their
    /// [`CalledMethod`].
    exposes_method: bool,
    /// How long the request of a method taking one message has to arrive
    /// (`server.request_body_timeout`).
    request_body_timeout: Duration,
    /// Whose `keel-criticality` is honoured.
    trust_criticality: TrustCriticality,
}

/// What a pipeline takes from `[server]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// `server.max_message_bytes`.
    pub(crate) max_message_bytes: usize,
    /// `server.request_body_timeout`.
    pub(crate) request_body_timeout: Duration,
    /// `server.trust_criticality`, resolved for the environment.
    pub(crate) trust_criticality: TrustCriticality,
}

impl PipelineLayer {
    pub(crate) fn new(
        all: &Metrics,
        metrics: Arc<ServiceMetrics>,
        verifier: Arc<Verifier>,
        settings: Settings,
        exposes_method: bool,
        shared_buckets: Option<&Arc<RedisBuckets>>,
    ) -> Self {
        let Settings {
            max_message_bytes,
            request_body_timeout,
            trust_criticality,
        } = settings;
        let policy = metrics.policy();
        let shared = Shared {
            policy,
            rates: rate::RateLimits::new(policy, all.rate_limited(policy), shared_buckets),
            in_flight: concurrency::InFlight::new(policy),
            exposes_method,
            request_body_timeout,
            trust_criticality,
            verifier,
            received: Tallies::received(
                &metrics,
                max_message_bytes,
                &all.request_body_timeouts(policy),
            ),
            metrics,
        };
        PipelineLayer {
            shared: Arc::new(shared),
        }
    }
}

impl<S> Layer<S> for PipelineLayer {
    type Service = Pipeline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pipeline {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A generated server behind Keel's per-method steps; see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct Pipeline<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Pipeline<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> Service<Request<B>> for Pipeline<S>
where
    S: Service<Request<CountingBody<B>>, Response = Response<ResBody>> + Clone + Send + 'static,
    B: Send + 'static,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let Some(index) = shared.policy.route_index(req.uri().path()) else {
            return self.call_outside_policy(req);
        };
        let method = &shared.policy.methods[index];
        let slot = Protocol::of(req.extensions()).slot(index);
        let headers = CallHeaders::read(req.headers());
        let criticality = match headers.criticality {
            None => method.criticality,
            Some(asked) => shared.criticality_asked(method, asked, req.extensions()),
        };
        // 1. context (deadline and criticality), 2. metrics
        let mut call = Call::new(
            with_criticality(call_context(shared.policy, method, &headers), criticality),
            CallRecord::start(&shared.metrics, slot, clock::now()),
            method.path,
            matches!(
                method.kind,
                MethodKind::ServerStreaming | MethodKind::BidiStreaming
            ),
        );
        // (The timer of the method's own deadline, if any, starts now.)
        let timer = deadline::Timer::of(method, &headers);
        // 3. auth
        match auth::admit(
            &shared.verifier,
            method.access,
            &headers,
            req.extensions(),
            call.started(),
        ) {
            Ok(admitted) => admitted.insert_into(req.extensions_mut()),
            Err(error) => {
                return ResponseFuture::answer(auth::reject(method.path, &error), Some(call));
            }
        }
        // 4. rate limit
        match shared.rates.admit(index, method, req.extensions()) {
            Ok(Admission::Admitted) => {}
            Ok(Admission::Ask(asking)) => {
                let at = (index, slot, criticality);
                return self.call_when_admitted(asking, req, at, timer, call);
            }
            Err(status) => return ResponseFuture::answer(status, Some(call)),
        }
        // 5.–7.
        let req = match shared.proceed((index, slot, criticality), req, timer, &mut call) {
            Ok(req) => req,
            Err(status) => return ResponseFuture::answer(status, Some(call)),
        };
        // 8. recovery, around your layers and the server; 9. the end, in the response
        ResponseFuture::call(&mut self.inner, req, Some(call))
    }
}

impl Shared {
    /// The steps after the rate limit, for a call of method `index`.
    /// Always inlined into `call`: out of line, the request is moved into
    /// it and back (about 200 instructions a call, `cargo xtask bench`).
    #[inline(always)]
    fn proceed<B>(
        &self,
        (index, slot, criticality): (usize, usize, Criticality),
        mut req: Request<B>,
        timer: Option<deadline::Timer>,
        call: &mut Call,
    ) -> Result<Request<CountingBody<B>>, tonic::Status> {
        let method = &self.policy.methods[index];
        // 5. concurrency
        let permit = self.in_flight.admit(index, method, criticality)?;
        // (and the limits of a stream, if its method has any)
        let (stream, activity) = match method.stream.any() {
            false => (None, None),
            true => {
                let (timers, activity) = stream::StreamTimers::start(&method.stream);
                (Some(timers), Some(activity))
            }
        };
        call.limits = Limits::of(timer, permit, stream);
        // (7. for layers of the user's: which method this is)
        if self.exposes_method {
            let called = CalledMethod {
                service: self.policy,
                index,
            };
            req.extensions_mut().insert(called);
        }
        // 6. request messages (in time, when the method takes one)
        let received = self.received.get(Some(slot));
        // (a stream of requests, watched when its method has stream limits)
        let one = takes_one_message(method);
        let limit = one.then_some(self.request_body_timeout);
        Ok(req.map(|body| {
            let body = CountingBody::new(body, received).arriving_within(limit);
            match activity.filter(|_| !one) {
                None => body,
                Some(activity) => body.watched_by(activity),
            }
        }))
    }
}

impl Shared {
    /// The criticality of a call of `method` whose caller `asked` for one:
    /// the caller's, when the server trusts it and it names one; else the
    /// method's own. Out of line: most calls ask for none.
    #[cold]
    #[inline(never)]
    fn criticality_asked(
        &self,
        method: &MethodPolicy,
        asked: &http::HeaderValue,
        extensions: &http::Extensions,
    ) -> Criticality {
        let trusted = match self.trust_criticality {
            TrustCriticality::All => true,
            TrustCriticality::Peers => Peer::of_request(extensions).is_some(),
            TrustCriticality::None => false,
        };
        match trusted {
            true => Criticality::parse(asked.as_bytes()).unwrap_or(method.criticality),
            false => method.criticality,
        }
    }
}

/// `cx` with the call's `criticality`, for the calls its handler makes
/// (`CRITICAL`, the default, is the absence of one: it costs no context).
#[inline]
fn with_criticality(
    cx: Option<opentelemetry::Context>,
    criticality: Criticality,
) -> Option<opentelemetry::Context> {
    match criticality {
        Criticality::Critical => cx,
        other => Some(cx.unwrap_or_default().with_value(other)),
    }
}

impl<S> Pipeline<S> {
    /// A call of a method whose buckets are the fleet's: the rest of its
    /// steps and the server wait for `asking` (a Redis round trip), in the
    /// response future. The server polled ready goes with the call, and a
    /// clone stays (as tower's `Buffer` does). Out of line: only methods
    /// with a `rate_limit` and a backend come here.
    #[cold]
    #[inline(never)]
    fn call_when_admitted<B>(
        &mut self,
        asking: rate::Asking,
        req: Request<B>,
        at: (usize, usize, Criticality),
        timer: Option<deadline::Timer>,
        call: Call,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<CountingBody<B>>> + Clone + Send + 'static,
        B: Send + 'static,
    {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let shared = self.shared.clone();
        let then: future::Then<S::Future> = Box::new(move |call: &mut Call| {
            let req = shared.proceed(at, req, timer, call)?;
            Ok(inner.call(req))
        });
        ResponseFuture::admitting(asking, then, call)
    }

    /// A path outside the policy: passed to the inner server (which answers
    /// `UNIMPLEMENTED`) with the message size limit and panic recovery only.
    /// Out of line, as it is rare: the path of a method stays short.
    #[cold]
    #[inline(never)]
    fn call_outside_policy<B>(&mut self, req: Request<B>) -> ResponseFuture<S::Future>
    where
        S: Service<Request<CountingBody<B>>>,
    {
        let received = self.shared.received.get(None);
        let req = req.map(|body| CountingBody::new(body, received));
        ResponseFuture::call(&mut self.inner, req, None)
    }
}
