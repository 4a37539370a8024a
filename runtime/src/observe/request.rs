//! The request side: a body that counts the messages a call sends (client)
//! or receives (server), refuses one over the size limit and, on a server,
//! one that does not arrive in time (`arrival.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus::IntCounter;

use super::arrival::{Arrival, StreamActivity};
use crate::metrics::{Protocol, ServiceMetrics};
use crate::wire::{MessageCounter, TooLarge};

pin_project! {
    /// A request body that counts the messages a client sends and refuses
    /// one longer than the limit with `RESOURCE_EXHAUSTED`, before anything
    /// decodes it; on a server, a request that takes longer than
    /// `server.request_body_timeout` to arrive fails `DEADLINE_EXCEEDED`.
    pub struct CountingBody<B> {
        #[pin]
        inner: B,
        counter: MessageCounter,
        tally: Arc<Tally>,
        arrival: Arrival,
    }
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, tally: Arc<Tally>) -> Self {
        CountingBody {
            inner,
            counter: MessageCounter::default(),
            tally,
            arrival: Arrival::Off,
        }
    }

    /// The body of a call whose request must have arrived within `limit`
    /// (`None`: no limit).
    pub(crate) fn arriving_within(mut self, limit: Option<std::time::Duration>) -> Self {
        self.arrival = Arrival::within(limit);
        self
    }

    /// The body of a stream of requests whose messages `activity` watches.
    pub(crate) fn watched_by(mut self, activity: Arc<StreamActivity>) -> Self {
        self.arrival = Arrival::Stream(activity);
        self
    }
}

// See `MessageCounter`; `Arrival` is a duration or a pointer.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<CountingBody<tonic::body::Body>>() == 48);

/// What the [`CountingBody`] of a call counts its messages into, if
/// anything, and the longest message it lets through: one per method, made
/// with the layer, so that a call clones one `Arc` for both.
#[derive(Debug)]
pub(crate) struct Tally {
    /// The service and the slot of counts (the method and protocol).
    method: Option<(Arc<ServiceMetrics>, usize)>,
    /// Whether the messages are the ones the method's calls send, rather
    /// than receive.
    sent: bool,
    limit: u64,
    /// Where a request that did not arrive in time is counted: methods
    /// taking one request message, on a server.
    late: Option<IntCounter>,
}

/// The [`Tally`] of each slot of a service's counts (a method and a
/// protocol, [`Protocol::slot`](crate::metrics::Protocol::slot)), and one for
/// paths outside its policy (counting nothing).
#[derive(Debug)]
pub(crate) struct Tallies {
    methods: Box<[Arc<Tally>]>,
    outside: Arc<Tally>,
}

impl Tallies {
    /// For the requests a server receives: each method's
    /// `grpc_server_msg_received_total`, and messages up to `limit` bytes.
    /// `late`, by method index, counts each method's requests that did not
    /// arrive in time.
    pub(crate) fn received(
        service: &Arc<ServiceMetrics>,
        limit: usize,
        late: &[Option<IntCounter>],
    ) -> Self {
        Tallies::new(service, false, limit, late)
    }

    /// For the requests a client sends: each method's
    /// `grpc_client_msg_sent_total`, with no limit (the server has its own).
    pub(crate) fn sent(service: &Arc<ServiceMetrics>) -> Self {
        Tallies::new(service, true, usize::MAX, &[])
    }

    /// One tally per slot of `service`'s counts, each counting
    /// messages `sent` (else received), with `limit`.
    fn new(
        service: &Arc<ServiceMetrics>,
        sent: bool,
        limit: usize,
        late: &[Option<IntCounter>],
    ) -> Self {
        let tally = |slot: Option<usize>| {
            Arc::new(Tally {
                method: slot.map(|slot| (service.clone(), slot)),
                sent,
                limit: limit as u64,
                late: slot
                    .and_then(|slot| late.get(slot / Protocol::COUNT))
                    .cloned()
                    .flatten(),
            })
        };
        Tallies {
            methods: (0..service.slots()).map(|slot| tally(Some(slot))).collect(),
            outside: tally(None),
        }
    }

    /// The tally of a slot, or of a path outside the policy.
    pub(crate) fn get(&self, slot: Option<usize>) -> Arc<Tally> {
        slot.and_then(|slot| self.methods.get(slot))
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
        let frame = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Pending => {
                return match this.arrival.poll_expired(cx) {
                    None => Poll::Pending,
                    Some(late) => {
                        if let Some(counter) = &this.tally.late {
                            counter.inc();
                        }
                        Poll::Ready(Some(Err(late.into())))
                    }
                };
            }
            // The end of the body, or its failure: nothing more to wait for.
            Poll::Ready(_) => {
                this.arrival.ended();
                return polled;
            }
        };
        if let Some(data) = frame.data_ref() {
            let tally = &**this.tally;
            match this.counter.feed_limited(data, tally.limit) {
                Ok(started) => {
                    if let Err(refused) = this.arrival.received(started) {
                        return Poll::Ready(Some(Err(refused.into())));
                    }
                    if let Some((service, slot)) = &tally.method {
                        let counts = service.slot(*slot);
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
