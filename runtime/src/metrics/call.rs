//! [`CallRecord`]: what the metrics know of one call, from its start to its end.

use std::sync::Arc;

use quanta::Instant;
use tonic::Code;

use super::ServiceMetrics;
use crate::clock;
use crate::wire::MessageCounter;

/// What the metrics know of a call in flight, from its start to its end: a
/// server's, or a generated client's.
pub(crate) struct CallRecord {
    service: Arc<ServiceMetrics>,
    /// The method's and protocol's slot of counts.
    slot: usize,
    pub(crate) start: Instant,
    /// The messages of the response seen so far (its body's framing).
    counter: MessageCounter,
}

impl CallRecord {
    /// Counts the start of a call, at `start`, in the `slot` of `service`'s
    /// counts ([`Protocol::slot`](super::Protocol::slot)).
    #[inline]
    pub(crate) fn start(service: &Arc<ServiceMetrics>, slot: usize, start: Instant) -> Self {
        service.slot(slot).started();
        CallRecord {
            service: service.clone(),
            slot,
            start,
            counter: MessageCounter::default(),
        }
    }

    /// A data frame of the response a server sends went by.
    pub(crate) fn sent_data(&mut self, data: &[u8]) {
        let sent = self.counter.feed(data);
        self.service.slot(self.slot).sent(sent);
    }

    /// A data frame of the response a client receives went by.
    pub(crate) fn received_data(&mut self, data: &[u8]) {
        let received = self.counter.feed(data);
        self.service.slot(self.slot).received(received);
    }

    /// Counts a call's end, with `code`, its latency, and `sent` messages
    /// not counted as they went.
    pub(crate) fn end(&self, code: Code, sent: u64) {
        let seconds = clock::since(self.start).as_secs_f64();
        let counts = self.service.slot(self.slot);
        counts.sent(sent);
        counts.handled(code, seconds);
    }
}
