//! [`Transport`]: what a generated client's calls go over, one tonic
//! channel or the balanced replicas of a target.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::transport::Channel as TonicChannel;
use tower::Service;

use super::balance::{Balanced, GateFuture};
use super::layer::BoxError;

/// What a Keel client sends calls over (under [`ClientService`](super::ClientService)):
/// one tonic [`Channel`](tonic::transport::Channel) (a URL, an
/// [`Endpoint`](tonic::transport::Endpoint)), or the replicas of a
/// `dns:///` target or of a list, balanced per call
/// ([`Client::connect`](super::Client::connect),
/// [`Client::balance`](super::Client::balance)). Cheap to clone: clones
/// share the connections.
#[derive(Clone)]
pub struct Transport {
    route: Route,
}

#[derive(Clone)]
enum Route {
    One(TonicChannel),
    Balanced(Balanced),
}

impl Transport {
    pub(super) fn balanced(balanced: Balanced) -> Self {
        Transport {
            route: Route::Balanced(balanced),
        }
    }

    /// Whether calls are balanced over several replicas (a `dns:///`
    /// target or a list), rather than sent over one channel.
    pub fn is_balanced(&self) -> bool {
        matches!(self.route, Route::Balanced(_))
    }
}

impl From<TonicChannel> for Transport {
    fn from(channel: TonicChannel) -> Self {
        Transport {
            route: Route::One(channel),
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.route {
            Route::One(channel) => f.debug_tuple("Transport").field(channel).finish(),
            Route::Balanced(_) => f.debug_tuple("Transport").field(&"balanced").finish(),
        }
    }
}

impl Service<Request<Body>> for Transport {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = TransportFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.route {
            Route::One(channel) => channel.poll_ready(cx).map_err(Into::into),
            Route::Balanced(balanced) => balanced.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<Body>) -> TransportFuture {
        let inner = match &mut self.route {
            Route::One(channel) => Inner::One {
                future: channel.call(request),
            },
            Route::Balanced(balanced) => Inner::Balanced {
                future: balanced.call(request),
            },
        };
        TransportFuture { inner }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Transport`].
    pub struct TransportFuture {
        #[pin]
        inner: Inner,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProjection]
    enum Inner {
        One { #[pin] future: tonic::transport::channel::ResponseFuture },
        Balanced { #[pin] future: tower::buffer::future::ResponseFuture<GateFuture> },
    }
}

impl std::fmt::Debug for TransportFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportFuture").finish_non_exhaustive()
    }
}

impl Future for TransportFuture {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            InnerProjection::One { future } => future.poll(cx).map_err(Into::into),
            InnerProjection::Balanced { future } => future.poll(cx),
        }
    }
}
