//! [`Drain`]: the service of one connection of the gRPC port, in front of
//! the router: it gives each call the connection's address (and TLS
//! certificates), counts the calls
//! for the idle timeout, and ends what is still running when the drain
//! deadline passes.
//!
//! Until shutdown it only checks an atomic flag when a call is pending.
//! When the drain deadline passes, calls that have not answered yet get
//! `UNAVAILABLE`, and streaming responses end with `UNAVAILABLE` trailers,
//! so clients see a proper gRPC status and may retry elsewhere. Health
//! `Watch` streams end as soon as draining starts: they would otherwise hold
//! the drain open.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::routing::future::RouteFuture;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::Service;

use crate::pipeline::Interruptible;
use crate::serve::rest::HttpService;

const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Shutdown phases the connections react to.
#[derive(Clone, Debug)]
pub(crate) struct Phases {
    /// Draining started: no new connections; health `Watch` streams end.
    pub(crate) draining: CancellationToken,
    /// The drain deadline passed: everything still running ends.
    pub(crate) deadline: CancellationToken,
    /// The runtime's [`Keel::draining`](crate::Keel::draining), cancelled
    /// with `draining` for handlers' long-lived streams (it outlives this
    /// server: a fresh `draining` keeps the next server of the runtime
    /// from starting drained).
    pub(crate) handlers: CancellationToken,
}

/// Where a connection came from, as tonic's own server gives it to a
/// request (`Request::remote_addr`, `RequestExt::peer` read it).
#[derive(Clone, Debug)]
pub(crate) enum ConnectInfo {
    Tcp(TcpConnectInfo),
    Tls(TlsConnectInfo<TcpConnectInfo>),
}

/// What the calls of one connection share with its task.
#[derive(Debug)]
pub(crate) struct Calls {
    router: axum::Router,
    http: Option<HttpService>,
    phases: Phases,
    info: ConnectInfo,
    /// Calls started on the connection, so its task sees activity between
    /// two looks. The calls in flight are the clones of the `Arc` this sits
    /// in beyond the task's and the service's: each call holds one.
    started: AtomicU64,
}

impl Calls {
    pub(crate) fn new(
        router: axum::Router,
        http: Option<HttpService>,
        phases: Phases,
        info: ConnectInfo,
    ) -> Arc<Self> {
        Arc::new(Calls {
            router,
            http,
            phases,
            info,
            started: AtomicU64::new(0),
        })
    }

    /// How many calls have started on the connection.
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Whether a call runs on the connection of `calls`, which the
    /// connection's task and its [`Drain`] hold besides.
    pub(crate) fn busy(calls: &Arc<Self>) -> bool {
        Arc::strong_count(calls) > 2
    }
}

/// The service of one connection; see the [module docs](self).
#[derive(Clone, Debug)]
pub(crate) struct Drain {
    calls: Arc<Calls>,
}

impl Drain {
    pub(crate) fn new(calls: Arc<Calls>) -> Self {
        Drain { calls }
    }
}

impl<B> hyper::service::Service<Request<B>> for Drain
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<DrainBody<axum::body::Body>>;
    type Error = Infallible;
    type Future = DrainFuture<Routed>;

    fn call(&self, mut req: Request<B>) -> Self::Future {
        let calls = &self.calls;
        calls.started.fetch_add(1, Ordering::Relaxed);
        let extensions = req.extensions_mut();
        match &calls.info {
            ConnectInfo::Tcp(info) => {
                extensions.insert(info.clone());
            }
            ConnectInfo::Tls(info) => {
                extensions.insert(info.clone());
            }
        }
        // A health `Watch` stream ends when draining starts; everything else
        // at the drain deadline.
        let end = match req.uri().path() == WATCH_PATH {
            true => Phase::Draining,
            false => Phase::Deadline,
        };
        // gRPC (and gRPC-Web) straight to the router; anything else, when
        // there are REST routes, through their service.
        let inner = match &calls.http {
            Some(http) if !is_grpc(req.headers()) => Routed::Http {
                future: http.clone().call(req.map(axum::body::Body::new)),
            },
            _ => Routed::Router {
                future: calls.router.clone().call(req),
            },
        };
        DrainFuture {
            inner,
            stop: Some(Stop::new(calls.clone(), Phase::Deadline)),
            end,
        }
    }
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"))
}

pin_project! {
    /// Where a call went: the router, or the service of other HTTP requests.
    #[project = RoutedProjection]
    pub(crate) enum Routed {
        Router {
            #[pin]
            future: RouteFuture<Infallible>,
        },
        Http {
            future: <HttpService as Service<Request<axum::body::Body>>>::Future,
        },
    }
}

impl Future for Routed {
    type Output = Result<Response<axum::body::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RoutedProjection::Router { future } => future.poll(cx),
            RoutedProjection::Http { future } => future.as_mut().poll(cx),
        }
    }
}

/// Which of the [`Phases`] ends a call.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Draining,
    Deadline,
}

/// One call's hold on its connection until its response ends: waits for a
/// phase, registering for its wake-up only once polled while pending, so
/// calls that complete at once cost one atomic load.
struct Stop {
    calls: Arc<Calls>,
    phase: Phase,
    waiting: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Stop {
    fn new(calls: Arc<Calls>, phase: Phase) -> Self {
        Stop {
            calls,
            phase,
            waiting: None,
        }
    }

    fn token(&self) -> &CancellationToken {
        match self.phase {
            Phase::Draining => &self.calls.phases.draining,
            Phase::Deadline => &self.calls.phases.deadline,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.token().is_cancelled() {
            return Poll::Ready(());
        }
        if self.waiting.is_none() {
            self.waiting = Some(Box::pin(self.token().clone().cancelled_owned()));
        }
        match &mut self.waiting {
            Some(waiting) => waiting.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

pin_project! {
    /// Response future of [`Drain`].
    pub(crate) struct DrainFuture<F> {
        #[pin]
        inner: F,
        // Until the response: the drain deadline. After it, the call's hold
        // goes on to the body, to wait for `end`.
        stop: Option<Stop>,
        end: Phase,
    }
}

impl<F, ResBody, E> Future for DrainFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<DrainBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            let end = this.stop.take().map(|stop| Stop {
                phase: *this.end,
                ..stop
            });
            return Poll::Ready(result.map(|res| res.map(|body| DrainBody::new(body, end))));
        }
        match this.stop.as_mut() {
            Some(deadline) => ready!(deadline.poll(cx)),
            None => return Poll::Pending,
        }
        this.stop.take();
        Poll::Ready(Ok(unavailable().into_http()))
    }
}

pin_project! {
    /// Response body of [`Drain`]: ends with `UNAVAILABLE` trailers when its
    /// phase ends first. The default is an empty body.
    pub(crate) struct DrainBody<B> {
        #[pin]
        body: Interruptible<B>,
        end: Option<Stop>,
    }
}

impl<B> DrainBody<B> {
    fn new(inner: B, end: Option<Stop>) -> Self {
        DrainBody {
            body: Interruptible::new(inner),
            end,
        }
    }
}

impl<B> Default for DrainBody<B> {
    fn default() -> Self {
        DrainBody {
            body: Interruptible::default(),
            end: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for DrainBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.as_mut().poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.end.as_mut().map(|end| end.poll(cx)) {
            Some(Poll::Ready(())) => this.body.interrupt(&unavailable()),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn unavailable() -> tonic::Status {
    tonic::Status::unavailable("server is shutting down")
}
