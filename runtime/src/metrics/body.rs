//! Body wrappers that count gRPC messages and record how a call ended.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use quanta::Instant;
use tonic::Code;

use super::ServiceMetrics;
use super::codes::status_code;
use crate::clock;

/// Counts length-prefixed gRPC messages across arbitrarily split data frames.
///
/// Eight bytes, so that a [`CountingBody`] is 32 with tonic's body, and a
/// request with it 256 (on 64-bit targets): glibc's AVX2 `memcpy` moves up to
/// 256 bytes without a loop, and a request is moved a dozen times on its way
/// to the handler (BENCHMARKS.md).
#[derive(Debug, Default)]
pub(crate) struct MessageCounter {
    /// Prefix bytes of the current message seen so far (0..5).
    prefix_seen: u8,
    /// While the prefix is being read (`prefix_seen` > 0), its length bytes
    /// so far; after it, the payload bytes of the current message still to
    /// skip (a gRPC length is a `u32`).
    value: u32,
}

/// A message announced a length above the limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge(pub(crate) u64);

impl MessageCounter {
    /// Feeds one chunk; returns how many messages started in it, or the
    /// length of the first message longer than `limit`.
    #[inline]
    pub(crate) fn feed_limited(&mut self, mut chunk: &[u8], limit: u64) -> Result<u64, TooLarge> {
        let mut started = 0;
        while !chunk.is_empty() {
            if self.prefix_seen == 0 && self.value > 0 {
                let skip = chunk.len().min(self.value as usize);
                self.value -= skip as u32;
                chunk = &chunk[skip..];
                continue;
            }
            // Byte 0 is the compression flag; bytes 1..5 the big-endian length.
            let length = if self.prefix_seen == 0
                && let [_flag, a, b, c, d, ..] = *chunk
            {
                // The whole prefix is in this chunk: the usual case.
                chunk = &chunk[5..];
                u32::from_be_bytes([a, b, c, d])
            } else {
                if self.prefix_seen > 0 {
                    self.value = self.value << 8 | u32::from(chunk[0]);
                }
                self.prefix_seen += 1;
                chunk = &chunk[1..];
                if self.prefix_seen < 5 {
                    continue;
                }
                self.prefix_seen = 0;
                self.value
            };
            started += 1;
            self.value = length;
            if u64::from(length) > limit {
                return Err(TooLarge(length.into()));
            }
        }
        Ok(started)
    }

    /// Feeds one chunk; returns how many messages started in it.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> u64 {
        self.feed_limited(chunk, u64::MAX).unwrap_or_default()
    }
}

pin_project! {
    /// A request body that counts the messages a client sends and refuses
    /// one longer than the limit with `RESOURCE_EXHAUSTED`, before anything
    /// decodes it.
    pub struct CountingBody<B> {
        #[pin]
        inner: B,
        counter: MessageCounter,
        tally: Arc<Tally>,
    }
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, tally: Arc<Tally>) -> Self {
        CountingBody {
            inner,
            counter: MessageCounter::default(),
            tally,
        }
    }
}

// See `MessageCounter`.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<CountingBody<tonic::body::Body>>() == 32);

/// What the [`CountingBody`] of a call counts its messages into, if
/// anything, and the longest message it lets through: one per method, made
/// with the layer, so that a call clones one `Arc` for both.
#[derive(Debug)]
pub(crate) struct Tally {
    /// The service and the index of the method in its policy.
    method: Option<(Arc<ServiceMetrics>, usize)>,
    /// Whether the messages are the ones the method's calls send, rather
    /// than receive.
    sent: bool,
    limit: u64,
}

/// The [`Tally`] of each method of a service, by its index in the policy, and
/// one for paths outside it (counting nothing).
#[derive(Debug)]
pub(crate) struct Tallies {
    methods: Box<[Arc<Tally>]>,
    outside: Arc<Tally>,
}

impl Tallies {
    /// For the requests a server receives: each method's
    /// `grpc_server_msg_received_total`, and messages up to `limit` bytes.
    pub(crate) fn received(service: &Arc<ServiceMetrics>, limit: usize) -> Self {
        Tallies::new(service, false, limit)
    }

    /// For the requests a client sends: each method's
    /// `grpc_client_msg_sent_total`, with no limit (the server has its own).
    pub(crate) fn sent(service: &Arc<ServiceMetrics>) -> Self {
        Tallies::new(service, true, usize::MAX)
    }

    /// One tally per method of `service`, in policy order, each counting
    /// messages `sent` (else received), with `limit`.
    fn new(service: &Arc<ServiceMetrics>, sent: bool, limit: usize) -> Self {
        let tally = |method: Option<usize>| {
            Arc::new(Tally {
                method: method.map(|index| (service.clone(), index)),
                sent,
                limit: limit as u64,
            })
        };
        Tallies {
            methods: (0..service.policy.methods.len())
                .map(|index| tally(Some(index)))
                .collect(),
            outside: tally(None),
        }
    }

    /// The tally of the method at `index` in the policy, or of a path outside it.
    pub(crate) fn get(&self, index: Option<usize>) -> Arc<Tally> {
        index
            .and_then(|index| self.methods.get(index))
            .unwrap_or(&self.outside)
            .clone()
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: From<tonic::Status>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let tally = &**this.tally;
            match this.counter.feed_limited(data, tally.limit) {
                Ok(started) => {
                    if let Some((service, index)) = &tally.method {
                        let counts = service.method(*index);
                        match tally.sent {
                            true => counts.sent(started),
                            false => counts.received(started),
                        }
                    }
                }
                Err(TooLarge(len)) => {
                    return Poll::Ready(Some(Err(too_large(len, tally.limit).into())));
                }
            }
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

/// The status of a request message of `len` bytes, above `limit`.
#[cold]
#[inline(never)]
fn too_large(len: u64, limit: u64) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "message of {len} bytes exceeds the limit of {limit} bytes"
    ))
}

/// What a polled response frame means for the call it answers.
pub(crate) enum Progress<'a> {
    /// Nothing yet, or a frame that is neither data nor trailers.
    Nothing,
    /// A data frame went by.
    Data(&'a Bytes),
    /// The response ended: with the code its trailers' `grpc-status` says
    /// (`None` when they say none, or the body ended without trailers), or
    /// `INTERNAL` for a body error; the trailers when it was them.
    End(Option<Code>, Option<&'a http::HeaderMap>),
}

/// What `polled`, a response body's poll, means for its call.
#[inline]
pub(crate) fn progress<E>(polled: &Poll<Option<Result<Frame<Bytes>, E>>>) -> Progress<'_> {
    match polled {
        Poll::Pending => Progress::Nothing,
        Poll::Ready(Some(Ok(frame))) => match (frame.data_ref(), frame.trailers_ref()) {
            (Some(data), _) => Progress::Data(data),
            (None, Some(trailers)) => Progress::End(status_code(trailers), Some(trailers)),
            (None, None) => Progress::Nothing,
        },
        Poll::Ready(None) => Progress::End(None, None),
        Poll::Ready(Some(Err(_))) => Progress::End(Some(Code::Internal), None),
    }
}

/// What a response body wrapper reports to: metrics, a span, or both.
///
/// [`ObservedBody`] feeds it the response's data frames and, once, how the
/// call ended. The code comes from the trailers' `grpc-status`, else from
/// [`header_code`](Observer::header_code) (a trailers-only response), else
/// `UNKNOWN`; a body error is `INTERNAL`; a body dropped before its end is
/// the header code or `CANCELLED` (the peer went away).
pub trait Observer {
    /// A data frame of the response went by.
    fn on_data(&mut self, _data: &[u8]) {}

    /// The `grpc-status` of the response headers, if they had one.
    fn header_code(&self) -> Option<Code>;

    /// The call ended with `code`; `carrier` is the trailers that said so,
    /// when it was them.
    fn finish(self, code: Code, carrier: Option<&http::HeaderMap>);
}

pin_project! {
    /// A response body that reports its messages and how the call ended to
    /// an [`Observer`]: by default the server metrics of the call, which
    /// count the messages the server sends and record the code and latency.
    pub struct ObservedBody<B, O = Call>
    where
        O: Observer,
    {
        #[pin]
        inner: B,
        call: Option<O>,
    }

    impl<B, O> PinnedDrop for ObservedBody<B, O>
    where
        O: Observer,
    {
        fn drop(this: Pin<&mut Self>) {
            // A body dropped before its trailers: a trailers-only response
            // carries its code in the headers; otherwise the client went away.
            if let Some(call) = this.project().call.take() {
                let code = call.header_code().unwrap_or(Code::Cancelled);
                call.finish(code, None);
            }
        }
    }
}

/// What the metrics know of a call in flight, from its start to its end (a
/// server's, and the generated clients' too).
pub struct Call {
    pub(crate) service: Arc<ServiceMetrics>,
    pub(crate) method: usize,
    pub(crate) start: Instant,
    /// `grpc-status` from the response headers (trailers-only responses).
    pub(crate) header_code: Option<Code>,
    pub(crate) counter: MessageCounter,
}

impl Call {
    /// Counts the start of a call of the method at `method` in `service`'s
    /// policy, at `start`.
    #[inline]
    pub(crate) fn start(service: &Arc<ServiceMetrics>, method: usize, start: Instant) -> Self {
        service.method(method).started();
        Call {
            service: service.clone(),
            method,
            start,
            header_code: None,
            counter: MessageCounter::default(),
        }
    }

    /// Counts a call's end, with `code`, its latency, and `sent` messages
    /// not counted as they went.
    pub(crate) fn end(&self, code: Code, sent: u64) {
        let seconds = clock::since(self.start).as_secs_f64();
        let counts = self.service.method(self.method);
        counts.sent(sent);
        counts.handled(code, seconds);
    }
}

impl Observer for Call {
    fn on_data(&mut self, data: &[u8]) {
        let sent = self.counter.feed(data);
        self.service.method(self.method).sent(sent);
    }

    fn header_code(&self) -> Option<Code> {
        self.header_code
    }

    fn finish(self, code: Code, _carrier: Option<&http::HeaderMap>) {
        self.end(code, 0);
    }
}

impl<B: Default, O: Observer> Default for ObservedBody<B, O> {
    /// An unobserved default body.
    fn default() -> Self {
        ObservedBody::new(B::default(), None)
    }
}

impl<B, O: Observer> ObservedBody<B, O> {
    /// Observes `inner`; with no call (a path outside the policy) it only passes through.
    pub(crate) fn new(inner: B, call: Option<O>) -> Self {
        ObservedBody { inner, call }
    }
}

impl<B: Body<Data = Bytes>, O: Observer> Body for ObservedBody<B, O> {
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
                    let code = code.or(call.header_code()).unwrap_or(Code::Unknown);
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
        // A length with all of its low three bytes set, read a byte at a time.
        stream.extend(frame(0x01_02_03));
        stream.extend(frame(1));
        for split in [1, 2, 5, 7, 64, stream.len()] {
            let mut counter = MessageCounter::default();
            let total: u64 = stream.chunks(split).map(|c| counter.feed(c)).sum();
            assert_eq!(total, 5, "chunk size {split}");
        }
    }

    #[test]
    fn refuses_the_first_message_over_the_limit() {
        let mut stream = frame(3);
        stream.extend(frame(300));
        let mut counter = MessageCounter::default();
        let results: Vec<_> = stream
            .chunks(4)
            .map(|c| counter.feed_limited(c, 100))
            .collect();
        assert!(results.contains(&Err(super::TooLarge(300))), "{results:?}");
        assert_eq!(
            MessageCounter::default().feed_limited(&frame(100), 100),
            Ok(1)
        );
    }
}
