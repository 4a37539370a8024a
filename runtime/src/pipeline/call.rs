//! [`Call`]: one call of a method of the policy, from its start until its
//! response ends.

use std::pin::Pin;

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context as OtelContext, ContextGuard};
use pin_project_lite::pin_project;
use quanta::Instant;
use tonic::Code;

use super::concurrency::Permit;
use super::deadline::Timer;
use super::stream::StreamTimers;
use crate::metrics::CallRecord;
use crate::telemetry::deadline::Deadline;
use crate::telemetry::end_server_span;

/// A call of a method of the policy, from its start until its response ends:
/// its metrics, its span and its path.
pub struct Call {
    pub(super) metrics: CallRecord,
    /// The context the handler runs in: the server span, when telemetry is
    /// on, and the call's deadline, when it has one.
    cx: Option<OtelContext>,
    pub(super) path: &'static str,
    /// Whether the response is a stream the handler produces, which then
    /// runs inside the span too.
    pub(super) streams: bool,
    /// Whether a unary response's data went by: its one message, counted
    /// when the call ends rather than parsed as it goes.
    pub(super) unary_sent: bool,
    /// What the method's own limits hold for the call, when it has any.
    pub(super) limits: Option<Pin<Box<Limits>>>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// What a method's own limits hold for one of its calls: the timer of
    /// its deadline, its concurrency slot and its stream limits. Boxed: one
    /// pointer in every call, and only the calls of methods with limits
    /// have one.
    pub(super) struct Limits {
        #[pin]
        timer: Option<Timer>,
        permit: Option<Permit>,
        #[pin]
        stream: Option<StreamTimers>,
    }
}

impl Limits {
    /// The limits of a call, if its method has any.
    #[inline]
    pub(super) fn of(
        timer: Option<Timer>,
        permit: Option<Permit>,
        stream: Option<StreamTimers>,
    ) -> Option<Pin<Box<Self>>> {
        match (&timer, &permit, &stream) {
            (None, None, None) => None,
            _ => Some(Box::pin(Limits {
                timer,
                permit,
                stream,
            })),
        }
    }
}

impl Call {
    pub(super) fn new(
        cx: Option<OtelContext>,
        metrics: CallRecord,
        path: &'static str,
        streams: bool,
    ) -> Self {
        Call {
            metrics,
            cx,
            path,
            streams,
            unary_sent: false,
            limits: None,
        }
    }

    /// The status the call ends with when its deadline or a stream limit
    /// has passed (registering for the wake-ups when none has); `None` for
    /// methods without them.
    #[inline]
    pub(super) fn poll_expired(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Option<tonic::Status> {
        let limits = self.limits.as_mut()?.as_mut().project();
        if let Some(mut timer) = limits.timer.as_pin_mut()
            && timer.as_mut().poll_expired(cx).is_ready()
        {
            return Some(timer.exceeded());
        }
        limits.stream.as_pin_mut()?.poll_passed(cx)
    }

    /// A message of a streamed response went by (for its idle limit).
    #[inline]
    pub(super) fn touch(&self) {
        if let Some(limits) = &self.limits
            && let Some(stream) = &limits.stream
        {
            stream.touch();
        }
    }

    /// When the call arrived.
    pub(super) fn started(&self) -> Instant {
        self.metrics.start
    }

    /// Marks the call's handler as having answered: an unsampled span (or
    /// none) records nothing and needs no ending, so its context is let go,
    /// unless the handler's stream still runs in it.
    pub(super) fn handled(&mut self) {
        if !self.streams && self.cx.as_ref().is_some_and(|cx| !cx.span().is_recording()) {
            self.cx = None;
        }
    }

    /// Attaches the call's context, when it has one, until the guard drops.
    pub(super) fn enter(&self) -> Option<ContextGuard> {
        self.cx.as_ref().map(attach)
    }

    /// Ends a call that stopped before its answer did: `DEADLINE_EXCEEDED`
    /// when its deadline has passed (the client gave up at its deadline and
    /// reset the stream; go-grpc-prometheus counts such calls as
    /// `DeadlineExceeded`), else `CANCELLED` (the client went away). Out of
    /// line: it is the rare end of a call.
    #[cold]
    #[inline(never)]
    pub(super) fn abandon(&self) {
        let expired = (self.cx.as_ref())
            .and_then(|cx| cx.get::<Deadline>())
            .is_some_and(|deadline| deadline.remaining().is_zero());
        let code = if expired {
            Code::DeadlineExceeded
        } else {
            Code::Cancelled
        };
        self.finish(code, None);
    }

    /// Records how the call ended; `carrier` is the headers or trailers that
    /// said so, when it was them. Out of line: each call ends once, in one
    /// of several places, and the paths that poll stay short. By reference:
    /// a body that ends clears its call in place rather than moving it out.
    #[inline(never)]
    pub(super) fn finish(&self, code: Code, carrier: Option<&http::HeaderMap>) {
        self.metrics.end(code, self.unary_sent.into());
        if let Some(cx) = &self.cx {
            end_server_span(cx, code, carrier);
        }
    }
}

/// `cx` attached until the guard drops (out of line: most calls have no
/// context to attach).
#[inline(never)]
fn attach(cx: &OtelContext) -> ContextGuard {
    cx.clone().attach()
}
