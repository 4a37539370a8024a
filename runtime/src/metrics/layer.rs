//! The tower layer that records each call of a service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};

use super::ServiceMetrics;
use super::body::{Call, CountingBody, ObservedBody, Tallies};
use super::codes::status_code;
use crate::clock;

/// Records go-grpc-prometheus metrics for one service; see the [module docs](super).
///
/// Put it outside [`AuthLayer`](crate::auth::AuthLayer) so rejected calls are counted.
///
/// It reads the framing of every request message to count them, and so also
/// enforces the message size limit: a request message longer than
/// [`max_message_bytes`](Self::max_message_bytes) fails with
/// `RESOURCE_EXHAUSTED` before it is decoded.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    service: Arc<ServiceMetrics>,
    max_message_bytes: usize,
}

impl MetricsLayer {
    /// A layer recording into `service`'s metrics, with tonic's
    /// default 4 MiB message limit.
    pub fn new(service: Arc<ServiceMetrics>) -> Self {
        MetricsLayer {
            service,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }

    /// Sets the largest request message accepted.
    pub fn max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit;
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            service: self.service.clone(),
            received: Arc::new(Tallies::received(&self.service, self.max_message_bytes)),
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    service: Arc<ServiceMetrics>,
    /// Where each method's request messages are counted, and their limit.
    received: Arc<Tallies>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for MetricsService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<CountingBody<B>>, Response = Response<ResBody>>,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = self.service.policy.route_index(req.uri().path());
        let call = method.map(|method| Call::start(&self.service, method, clock::now()));
        let received = self.received.get(method);
        let req = req.map(|body| CountingBody::new(body, received));
        MetricsFuture {
            inner: self.inner.call(req),
            call,
        }
    }
}

pin_project! {
    /// Response future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }

    impl<F> PinnedDrop for MetricsFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the handler answered: the client cancelled.
            if let Some(call) = this.project().call.take() {
                call.end(Code::Cancelled, 0);
            }
        }
    }
}

impl<F, ResBody, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ObservedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(call) = call.as_mut() {
                    call.header_code = status_code(response.headers());
                }
                Ok(response.map(|body| ObservedBody::new(body, call)))
            }
            Err(error) => {
                if let Some(call) = call {
                    call.end(Code::Internal, 0);
                }
                Err(error)
            }
        })
    }
}
