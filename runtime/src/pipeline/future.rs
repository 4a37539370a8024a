//! [`ResponseFuture`]: the pipeline's future, until the server's response
//! headers.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tonic::Code;
use tower::Service;

use super::body::ResponseBody;
use super::bound::bound_metadata;
use super::call::Call;
use super::interruptible::Interruptible;
use super::rate::Asking;
use super::recover::{internal, log_panic};
use crate::wire::status_code;

pin_project! {
    /// Response future of [`Pipeline`](super::Pipeline): polls the server
    /// inside the call's context, catching a panic, and hands the call on to
    /// the response body.
    pub struct ResponseFuture<F> {
        // `None` when the call is answered without the server: rejected,
        // or the server panicked.
        #[pin]
        inner: Option<F>,
        // `None` for paths outside the policy, and once the response is out.
        call: Option<Call>,
        // The answer when `inner` is `None` (boxed: it is rare, and large).
        status: Option<Box<tonic::Status>>,
        // A call waiting for the fleet's rate limit before the server is
        // called (boxed: it is rare).
        admitting: Option<Box<Admitting<F>>>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the server answered: the client went away, or
            // the deadline passed.
            if let Some(call) = this.project().call.take() {
                call.abandon();
            }
        }
    }
}

/// What calls the server once the fleet's rate limit admits a call: the
/// pipeline's steps after it, given the call.
pub(super) type Then<F> = Box<dyn FnOnce(&mut Call) -> Result<F, tonic::Status> + Send>;

/// A call waiting for the fleet's rate limit.
pub(super) struct Admitting<F> {
    asking: Asking,
    then: Option<Then<F>>,
}

impl<F> ResponseFuture<F> {
    /// Calls the server with `then` once `asking` admits the call.
    #[cold]
    pub(super) fn admitting(asking: Asking, then: Then<F>, call: Call) -> Self {
        ResponseFuture {
            inner: None,
            call: Some(call),
            status: None,
            admitting: Some(Box::new(Admitting {
                asking,
                then: Some(then),
            })),
        }
    }

    /// Calls `inner`, catching a panic.
    pub(super) fn call<S, R>(inner: &mut S, req: R, call: Option<Call>) -> Self
    where
        S: Service<R, Future = F>,
    {
        match catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
            Ok(inner) => ResponseFuture {
                inner: Some(inner),
                call,
                status: None,
                admitting: None,
            },
            Err(panic) => {
                log_panic(call.as_ref().map(|c| c.path), panic.as_ref());
                ResponseFuture::answer(internal(), call)
            }
        }
    }

    /// Answers with `status`, without the server: a rejection or a panic.
    #[cold]
    pub(super) fn answer(status: tonic::Status, call: Option<Call>) -> Self {
        ResponseFuture {
            inner: None,
            call,
            status: Some(Box::new(status)),
            admitting: None,
        }
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if this.admitting.is_some() {
            ready!(poll_admission(
                this.admitting,
                this.inner.as_mut(),
                this.call,
                this.status,
                cx
            ));
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            let status = this.status.take().map_or_else(internal, |status| *status);
            return Poll::Ready(Ok(trailers_only(status, this.call.take())));
        };
        let attached = this.call.as_ref().and_then(Call::enter);
        let result = match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => {
                drop(attached);
                return match this.call.as_mut().and_then(|call| call.poll_expired(cx)) {
                    None => Poll::Pending,
                    Some(exceeded) => {
                        this.inner.set(None);
                        Poll::Ready(Ok(trailers_only(exceeded, this.call.take())))
                    }
                };
            }
            Ok(Poll::Ready(result)) => result,
            Err(panic) => {
                log_panic(this.call.as_ref().map(|c| c.path), panic.as_ref());
                drop(attached);
                this.inner.set(None);
                return Poll::Ready(Ok(trailers_only(internal(), this.call.take())));
            }
        };
        drop(attached);
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => Ok(observe(response, call)),
            Err(error) => {
                if let Some(call) = call {
                    call.finish(Code::Internal, None);
                }
                Err(error)
            }
        })
    }
}

/// Waits for the fleet's rate limit to admit the call, then calls the
/// server (into `inner`), or has the call answered with `status`. Ready
/// when `admitting` is done.
#[cold]
#[inline(never)]
fn poll_admission<F>(
    admitting: &mut Option<Box<Admitting<F>>>,
    mut inner: Pin<&mut Option<F>>,
    call: &mut Option<Call>,
    status: &mut Option<Box<tonic::Status>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(waiting) = admitting.as_mut() else {
        return Poll::Ready(());
    };
    // Bounded by `rate_limit.timeout`, after which the backend's error
    // mode decides at once.
    let admitted = ready!(waiting.asking.as_mut().poll(cx));
    let then = waiting.then.take();
    *admitting = None;
    let outcome = match (admitted, then, call.as_mut()) {
        (Ok(()), Some(then), Some(call)) => match catch_unwind(AssertUnwindSafe(|| then(call))) {
            Ok(outcome) => outcome,
            Err(panic) => {
                log_panic(Some(call.path), panic.as_ref());
                Err(internal())
            }
        },
        (Ok(()), _, _) => Err(internal()),
        (Err(refused), _, _) => Err(refused),
    };
    match outcome {
        Ok(future) => inner.set(Some(future)),
        Err(refused) => *status = Some(Box::new(refused)),
    }
    Poll::Ready(())
}

/// The trailers-only response of a call answered with `status` by Keel
/// (a rejection or a panic: rare, so out of line).
#[cold]
#[inline(never)]
fn trailers_only<B>(status: tonic::Status, call: Option<Call>) -> Response<ResponseBody<B>> {
    let code = status.code();
    let mut response = status.into_http();
    bound_metadata(response.headers_mut());
    if let Some(call) = call {
        call.finish(code, Some(response.headers()));
    }
    response
}

/// Wraps the server's response to a call: a trailers-only response (no
/// body, its `grpc-status` in the headers) ends the call now, its status
/// message bounded; otherwise the body ends it. Either way the headers'
/// metadata is bounded (`bound.rs`).
fn observe<B: Body>(
    mut response: Response<B>,
    mut call: Option<Call>,
) -> Response<ResponseBody<B>> {
    if let Some(call) = &mut call {
        call.handled();
    }
    // Only a response without a body can be trailers-only: the common
    // response, with a body, is not searched for a `grpc-status` header.
    let trailers_only = match response.body().is_end_stream() {
        true => status_code(response.headers()),
        false => None,
    };
    bound_metadata(response.headers_mut());
    let call = match trailers_only {
        Some(code) => {
            if let Some(call) = call {
                call.finish(code, Some(response.headers()));
            }
            None
        }
        None => call,
    };
    response.map(|body| ResponseBody::new(Interruptible::new(body), call))
}
