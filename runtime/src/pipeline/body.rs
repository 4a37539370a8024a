//! [`ResponseBody`]: the pipeline's response body, observed until it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;

use super::bound::bound_trailers;
use super::call::Call;
use super::interruptible::Interruptible;
use super::recover::poll_guarded;
use crate::observe::{Progress, progress};

pin_project! {
    /// The response body of a [`Pipeline`](super::Pipeline), observed until
    /// it ends: with its trailers' `grpc-status` (`UNKNOWN` without one),
    /// `INTERNAL` on a body error, or `CANCELLED` when it is dropped before
    /// (the client went away; `DEADLINE_EXCEEDED` past the deadline). The
    /// trailers go out with their status message bounded (`bound.rs`).
    ///
    /// A streamed response (server or bidi streaming) is produced by handler
    /// code as it is polled: each poll runs inside the call's context, its
    /// messages are counted, and a panic ends it with `INTERNAL` trailers. A
    /// unary response is tonic encoding the handler's one message, so only
    /// its end is watched. A response with no call (answered trailers-only,
    /// or a path outside the policy) is passed through.
    pub struct ResponseBody<B> {
        #[pin]
        inner: Interruptible<B>,
        // `None` once the call has ended, or when there is none.
        call: Option<Call>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.abandon();
            }
        }
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: Interruptible<B>, call: Option<Call>) -> Self {
        ResponseBody { inner, call }
    }
}

impl<B> Default for ResponseBody<B> {
    /// An empty body, observing nothing.
    fn default() -> Self {
        ResponseBody::new(Interruptible::default(), None)
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let Some(call) = this.call.as_mut() else {
            // No call: a path outside the policy, or after a trailers-only
            // answer (an empty body).
            let mut polled = this.inner.poll_frame(cx);
            bound_trailers(&mut polled);
            return polled;
        };
        let mut polled = match call.streams {
            false => this.inner.as_mut().poll_frame(cx),
            true => {
                let _entered = call.enter();
                poll_guarded(this.inner.as_mut(), Some(call.path), cx)
            }
        };
        // A stream still running at the method's own deadline ends there.
        if polled.is_pending()
            && call.streams
            && let Some(exceeded) = call.poll_expired(cx)
        {
            polled = this.inner.as_mut().interrupt(&exceeded);
        }
        let code = match progress(&polled) {
            Progress::Data(_) if !call.streams => {
                call.unary_sent = true;
                return polled;
            }
            Progress::Data(data) => {
                call.metrics.sent_data(data);
                call.touch();
                return polled;
            }
            Progress::Nothing => return polled,
            Progress::End(code, _) => code.unwrap_or(Code::Unknown),
        };
        // The end: its status message bounded, then recorded.
        let carrier = bound_trailers(&mut polled);
        call.finish(code, carrier);
        *this.call = None;
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
