//! [`ResponseBody`]: a generated client's response body, observed until it
//! ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;

use super::call::ClientCall;
use crate::observe::{Progress, progress};

pin_project! {
    /// The response body of a call through [`ClientService`](super::ClientService):
    /// counts the messages received and, once, records how the call ended.
    /// The code comes from the trailers' `grpc-status`, else from the
    /// response headers (a trailers-only response), else `UNKNOWN`; a body
    /// error is `INTERNAL`; a body dropped before its end is the header code
    /// or `CANCELLED` (the caller stopped reading).
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        call: Option<ClientCall>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                let code = call.header_code.unwrap_or(Code::Cancelled);
                call.finish(code, None);
            }
        }
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: B, call: Option<ClientCall>) -> Self {
        ResponseBody { inner, call }
    }
}

impl<B: Default> Default for ResponseBody<B> {
    /// An unobserved default body.
    fn default() -> Self {
        ResponseBody::new(B::default(), None)
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match progress(&polled) {
            Progress::Data(data) => {
                if let Some(call) = this.call.as_mut() {
                    call.on_data(data);
                }
            }
            Progress::End(code, carrier) => {
                if let Some(call) = this.call.take() {
                    let code = code.or(call.header_code).unwrap_or(Code::Unknown);
                    call.finish(code, carrier);
                }
            }
            Progress::Nothing => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
