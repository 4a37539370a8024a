//! Body wrappers that count gRPC messages and record how a call ended.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus::IntCounter;
use tonic::Code;

use super::ServiceMetrics;
use super::codes::parse_status;

/// Counts length-prefixed gRPC messages across arbitrarily split data frames.
#[derive(Debug, Default)]
pub(crate) struct MessageCounter {
    /// Prefix bytes of the current message seen so far (0..5).
    header_len: u8,
    header: [u8; 4],
    /// Payload bytes of the current message still to skip.
    remaining: u64,
}

impl MessageCounter {
    /// Feeds one chunk; returns how many messages started in it.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut started = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len() as u64);
                self.remaining -= skip;
                chunk = &chunk[skip as usize..];
                continue;
            }
            // Byte 0 is the compression flag; bytes 1..5 the big-endian length.
            if self.header_len > 0 {
                self.header[self.header_len as usize - 1] = chunk[0];
            }
            self.header_len += 1;
            chunk = &chunk[1..];
            if self.header_len == 5 {
                started += 1;
                self.header_len = 0;
                self.remaining = u64::from(u32::from_be_bytes(self.header));
            }
        }
        started
    }
}

pin_project! {
    /// A request body that counts the messages a client sends.
    pub struct CountingBody<B> {
        #[pin]
        inner: B,
        counter: MessageCounter,
        received: Option<IntCounter>,
    }
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, received: Option<IntCounter>) -> Self {
        CountingBody {
            inner,
            counter: MessageCounter::default(),
            received,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for CountingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(received), Poll::Ready(Some(Ok(frame)))) = (this.received.as_ref(), &polled)
            && let Some(data) = frame.data_ref()
        {
            received.inc_by(this.counter.feed(data));
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

pin_project! {
    /// A response body that counts the messages the server sends and, when
    /// the call ends, records its code and latency.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // A body dropped before its trailers: a trailers-only response
            // carries its code in the headers; otherwise the client went away.
            if let Some(call) = this.project().call.take() {
                let code = call.header_code.unwrap_or(Code::Cancelled);
                call.finish(code);
            }
        }
    }
}

/// What is known of a call whose response is still streaming.
pub(crate) struct Call {
    pub(crate) service: Arc<ServiceMetrics>,
    pub(crate) method: usize,
    pub(crate) start: Instant,
    /// `grpc-status` from the response headers (trailers-only responses).
    pub(crate) header_code: Option<Code>,
    pub(crate) counter: MessageCounter,
}

impl Call {
    pub(crate) fn finish(self, code: Code) {
        let m = &self.service.methods[self.method];
        m.handled[code as usize].inc();
        m.handling.observe(self.start.elapsed().as_secs_f64());
    }
}

impl<B> ObservedBody<B> {
    /// Observes `inner`; with no call (a path outside the policy) it only passes through.
    pub(crate) fn new(inner: B, call: Option<Call>) -> Self {
        ObservedBody { inner, call }
    }
}

impl<B: Body<Data = Bytes>> Body for ObservedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(call) = this.call.as_mut() {
                        let sent = call.counter.feed(data);
                        call.service.methods[call.method].msg_sent.inc_by(sent);
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.take()
                {
                    let code = trailers
                        .get("grpc-status")
                        .map(parse_status)
                        .or(call.header_code)
                        .unwrap_or(Code::Unknown);
                    call.finish(code);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    let code = call.header_code.unwrap_or(Code::Unknown);
                    call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.finish(Code::Internal);
                }
            }
            Poll::Pending => {}
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

#[cfg(test)]
mod tests {
    use super::MessageCounter;

    fn frame(len: u32) -> Vec<u8> {
        let mut f = vec![0];
        f.extend(len.to_be_bytes());
        f.extend(std::iter::repeat_n(7, len as usize));
        f
    }

    #[test]
    fn counts_whole_and_split_messages() {
        let mut stream = frame(3);
        stream.extend(frame(0));
        stream.extend(frame(300));
        for split in [1, 2, 5, 7, 64, stream.len()] {
            let mut counter = MessageCounter::default();
            let total: u64 = stream.chunks(split).map(|c| counter.feed(c)).sum();
            assert_eq!(total, 3, "chunk size {split}");
        }
    }
}
