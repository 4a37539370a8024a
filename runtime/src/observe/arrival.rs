//! The time a request has to arrive (`server.request_body_timeout`): from
//! the moment the server first waits for a call's request until its body
//! ends.
//!
//! Without it, a client that sends its headers and then a byte a second
//! (or nothing at all, on an HTTP/2 stream left open) holds a call, its
//! concurrency slot and its buffers for as long as it likes: the handshake
//! and idle timeouts only watch connections without calls. A call whose
//! method takes one request message (unary, server streaming) must have
//! all of it within the limit; a stream of requests is long-lived by
//! design and is exempt.
//!
//! The timer costs a call whose request is there when the handler asks for
//! it nothing but a branch: it is only made (boxed, as a tokio `Sleep` is
//! large) the first time the body is found pending, and dropped as soon as
//! the body ends. It starts then, not at the request's headers: the steps
//! before (auth, limits) take microseconds, and reading the clock for
//! every call would cost more than it measures.
//!
//! A stream of requests of a method with stream limits is watched another
//! way ([`StreamActivity`]): when its last message arrived (for
//! `stream_idle_timeout`) and how many did (`max_stream_messages`), shared
//! with the pipeline, which ends the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use quanta::Instant;
use tokio::time::Sleep;

use crate::clock;

/// Whether a request body still has time to arrive; see the
/// [module docs](self).
#[derive(Debug, Default)]
pub(crate) enum Arrival {
    /// No limit: a stream of requests, a client's body, or the body ended.
    #[default]
    Off,
    /// A limit, whose timer starts when the body is first pending.
    Due(Duration),
    /// Waiting, until the timer fires.
    Armed(Pin<Box<Armed>>),
    /// A stream of requests whose messages are watched.
    Stream(Arc<StreamActivity>),
}

pin_project! {
    /// The timer of a body that was pending, and its limit (for the message).
    #[derive(Debug)]
    pub(crate) struct Armed {
        #[pin]
        sleep: Sleep,
        limit: Duration,
    }
}

impl Arrival {
    /// A body that must end within `limit`, if any.
    pub(crate) fn within(limit: Option<Duration>) -> Self {
        match limit {
            Some(limit) => Arrival::Due(limit),
            None => Arrival::Off,
        }
    }

    /// After the body was polled and is pending: the status the call ends
    /// with when its time is up (the waker is registered otherwise).
    #[inline]
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<tonic::Status> {
        match self {
            Arrival::Off | Arrival::Stream(_) => None,
            _ => self.poll_timer(cx),
        }
    }

    /// `started` request messages began in the frame just read: the
    /// status the call fails with when that is more than its stream may
    /// carry.
    #[inline]
    pub(crate) fn received(&self, started: u64) -> Result<(), tonic::Status> {
        match self {
            Arrival::Stream(activity) if started > 0 => activity.received(started),
            _ => Ok(()),
        }
    }

    /// The body ended (or failed): no timer any more.
    #[inline]
    pub(crate) fn ended(&mut self) {
        if !matches!(self, Arrival::Off) {
            *self = Arrival::Off;
        }
    }

    /// Out of line: only a body that is slow to come gets here.
    #[cold]
    #[inline(never)]
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Option<tonic::Status> {
        if let Arrival::Due(limit) = *self {
            *self = Arrival::Armed(Box::pin(Armed {
                sleep: tokio::time::sleep(limit),
                limit,
            }));
        }
        let Arrival::Armed(armed) = self else {
            return None;
        };
        let limit = armed.limit;
        match armed.as_mut().project().sleep.poll(cx) {
            Poll::Pending => None,
            Poll::Ready(()) => {
                *self = Arrival::Off;
                Some(not_received(limit))
            }
        }
    }
}

/// When the messages of a stream of requests arrived, and how many did,
/// for the pipeline's stream limits (shared with them: the request body is
/// polled by the handler, the limits by the response).
#[derive(Debug)]
pub(crate) struct StreamActivity {
    /// What the times are counted from.
    origin: Instant,
    /// When a message last went by, either way, in nanoseconds since
    /// `origin`.
    last: AtomicU64,
    messages: AtomicU64,
    max_messages: Option<u64>,
    /// Set once the client sent more than `max_messages`.
    over: AtomicBool,
}

impl StreamActivity {
    pub(crate) fn new(max_messages: Option<u64>) -> Arc<Self> {
        Arc::new(StreamActivity {
            origin: clock::now(),
            last: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            max_messages,
            over: AtomicBool::new(false),
        })
    }

    /// A message went by, either way.
    pub(crate) fn touch(&self) {
        let since = clock::since(self.origin).as_nanos() as u64;
        self.last.store(since, Ordering::Relaxed);
    }

    /// When a message last went by (the start, before any did).
    pub(crate) fn last(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn received(&self, started: u64) -> Result<(), tonic::Status> {
        self.touch();
        let count = self.messages.fetch_add(started, Ordering::Relaxed) + started;
        match self.max_messages {
            Some(max) if count > max => {
                self.over.store(true, Ordering::Release);
                Err(too_many(max))
            }
            _ => Ok(()),
        }
    }

    /// The status of a call whose client sent more messages than its
    /// stream may carry, once it has.
    pub(crate) fn exceeded(&self) -> Option<tonic::Status> {
        match (self.over.load(Ordering::Acquire), self.max_messages) {
            (true, Some(max)) => Some(too_many(max)),
            _ => None,
        }
    }
}

#[cold]
fn too_many(max: u64) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "the stream carried more than its max_stream_messages of {max} request messages"
    ))
}

/// The status of a call whose request did not arrive within `limit`:
/// `DEADLINE_EXCEEDED`, the code of a call that ran out of time (as
/// envoy answers a gRPC stream past its duration limit), with a message
/// saying whose time it was.
fn not_received(limit: Duration) -> tonic::Status {
    tonic::Status::deadline_exceeded(format!(
        "the request was not received within server.request_body_timeout ({limit:?})"
    ))
}

pin_project! {
    /// A request body that must end within its limit, for services outside
    /// a pipeline whose calls send one request message (the standard health
    /// service): [`CountingBody`](super::CountingBody) does the same for a
    /// pipeline's methods, beside counting.
    pub(crate) struct Arriving<B> {
        #[pin]
        inner: B,
        arrival: Arrival,
    }
}

impl<B> Arriving<B> {
    pub(crate) fn new(inner: B, limit: Duration) -> Self {
        Arriving {
            inner,
            arrival: Arrival::Due(limit),
        }
    }
}

impl<B> http_body::Body for Arriving<B>
where
    B: http_body::Body,
    B::Error: From<tonic::Status>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Pending => match this.arrival.poll_expired(cx) {
                None => Poll::Pending,
                Some(late) => Poll::Ready(Some(Err(late.into()))),
            },
            Poll::Ready(None | Some(Err(_))) => {
                this.arrival.ended();
                polled
            }
            Poll::Ready(Some(Ok(_))) => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
