//! The SDK tracer Keel's telemetry installs, found through the current
//! `tracing` dispatcher, and the id generator that lets a server span be
//! sampled before the SDK builds it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer};

use super::sampler::RatioSampler;

/// The tracer of the subscriber Keel's telemetry installed, and the sampler
/// it was configured with, found through the current `tracing` dispatcher
/// (so each dispatcher, and each service name, has its own): a layer that
/// does nothing but hold them.
#[derive(Debug)]
pub(crate) struct TracerHandle {
    pub(super) tracer: SdkTracer,
    /// The provider's sampler, to decide before building anything.
    pub(super) sampler: RatioSampler,
    pub(super) ids: RandomIdGenerator,
    /// Whether spans go anywhere (`telemetry.otlp_endpoint` is set). When
    /// they do not, a sampled call still gets ids and the sampled flag, for
    /// logs and for the services it calls, but no span is recorded.
    pub(super) exporting: bool,
}

/// Whether a [`TracerHandle`] was ever made in this process. Until one is, no
/// dispatcher holds one, and [`call_context`](super::call_context) does not look for it: the
/// lookup (the current dispatcher, and a downcast through each of its
/// layers) is most of what a call costs Keel's telemetry when it is off.
pub(super) static HANDLE_MADE: AtomicBool = AtomicBool::new(false);

impl TracerHandle {
    pub(crate) fn new(tracer: SdkTracer, sampler: RatioSampler, exporting: bool) -> Self {
        HANDLE_MADE.store(true, Ordering::Release);
        TracerHandle {
            tracer,
            sampler,
            ids: RandomIdGenerator::default(),
            exporting,
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TracerHandle {}

thread_local! {
    /// The trace id [`SampledIds`] gives the next root span started on
    /// this thread: the one the server span already sampled.
    pub(super) static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The tracer provider's id generator: random ids, except that a root server
/// span gets the trace id its sampling was decided on.
#[derive(Debug, Default)]
pub(crate) struct SampledIds(RandomIdGenerator);

impl IdGenerator for SampledIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}
