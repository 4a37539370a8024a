//! Which traces are sampled: the parent's decision when a span has one, a
//! ratio of the trace ids otherwise.

use opentelemetry::trace::{
    Link, SpanContext, SpanKind, TraceContextExt as _, TraceId, TraceState,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

/// A parent-based ratio sampler: a span with a valid parent (remote or
/// local) is sampled when its parent is; a root span when its trace id falls
/// in the first `ratio` of all trace ids.
///
/// It decides as the SDK's `Sampler::ParentBased(Box::new(
/// Sampler::TraceIdRatioBased(ratio)))` does (the ratio is read from the
/// trace id's low 64 bits the same way, so other services configured with
/// that sampler make the same choice for a root span), but with one
/// comparison: Keel's server pipeline asks it about every call before it builds
/// anything, and most calls are not sampled.
///
/// ```
/// use keel_rpc::telemetry::RatioSampler;
/// use opentelemetry::trace::{SpanContext, TraceId};
///
/// let sampler = RatioSampler::new(0.25);
/// let root = SpanContext::empty_context(); // no parent
/// // The low 64 bits of the trace id, halved, below 2^63 × 0.25: sampled.
/// assert!(sampler.samples(&root, TraceId::from(1u128 << 61)));
/// assert!(!sampler.samples(&root, TraceId::from(1u128 << 62)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatioSampler {
    /// A root span is sampled when its trace id's low 64 bits, halved, are
    /// below this.
    bound: u64,
}

impl RatioSampler {
    /// Samples `ratio` of the traces started here: `0.0` none, `1.0` (or
    /// more) all; a NaN counts as `0.0`.
    pub fn new(ratio: f64) -> Self {
        let bound = match ratio >= 1.0 {
            true => u64::MAX,
            // As the SDK computes it; the cast saturates.
            false => (ratio.max(0.0) * (1u64 << 63) as f64) as u64,
        };
        RatioSampler { bound }
    }

    /// Whether a span with `parent` (invalid when it has none) in trace
    /// `trace_id` is sampled.
    #[inline]
    pub fn samples(&self, parent: &SpanContext, trace_id: TraceId) -> bool {
        match parent.is_valid() {
            true => parent.is_sampled(),
            false => (u128::from_be_bytes(trace_id.to_bytes()) as u64 >> 1) < self.bound,
        }
    }
}

impl ShouldSample for RatioSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context.map(|cx| cx.span().span_context().clone());
        let parent = parent.unwrap_or_else(SpanContext::empty_context);
        let decision = match self.samples(&parent, trace_id) {
            true => SamplingDecision::RecordAndSample,
            false => SamplingDecision::Drop,
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: match parent.is_valid() {
                true => parent.trace_state().clone(),
                false => TraceState::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags};
    use opentelemetry_sdk::trace::Sampler;

    /// The SDK's sampler for the same ratio.
    fn sdk(ratio: f64) -> Sampler {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
    }

    fn decide(sampler: &dyn ShouldSample, parent: Option<&Context>, id: TraceId) -> SamplingResult {
        sampler.should_sample(parent, id, "a.B/C", &SpanKind::Server, &[], &[])
    }

    #[test]
    fn decides_as_the_sdks_parent_based_ratio_sampler() {
        let ids = (0..20_000u128)
            .map(|i| TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .chain([0, 1, u128::MAX, u128::from(u64::MAX), 1 << 63].map(TraceId::from));
        let state = TraceState::from_key_value([("k", "v")]).expect("valid trace state");
        let parents = [TraceFlags::SAMPLED, TraceFlags::default()].map(|flags| {
            let parent = SpanContext::new(
                TraceId::from(7),
                SpanId::from(1),
                flags,
                true,
                state.clone(),
            );
            Context::new().with_remote_span_context(parent)
        });
        for ratio in [0.0, 0.01, 0.25, 0.5, 0.999, 1.0, 2.0, -1.0, f64::NAN] {
            let (ours, theirs) = (RatioSampler::new(ratio), sdk(ratio));
            for id in ids.clone() {
                for parent in [None, Some(&parents[0]), Some(&parents[1])] {
                    let (a, b) = (decide(&ours, parent, id), decide(&theirs, parent, id));
                    assert_eq!(
                        a.decision, b.decision,
                        "ratio {ratio}, id {id}, parent {parent:?}"
                    );
                    assert_eq!(a.trace_state, b.trace_state);
                }
            }
        }
    }
}
