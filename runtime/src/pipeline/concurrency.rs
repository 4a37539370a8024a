//! The pipeline's concurrency step, for methods whose policy sets
//! `max_concurrency`: a call over the limit is answered
//! `RESOURCE_EXHAUSTED` at once, before the handler runs, instead of
//! queuing without bound behind the others. Sheddable calls fill only
//! their share of the limit ([`Criticality::share_percent`]), so that a
//! critical call is never refused while a sheddable one is admitted. Other
//! methods pay nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::policy::{Criticality, MethodPolicy, ServicePolicy};

/// The calls of each method of a service in flight in this process.
#[derive(Debug)]
pub(super) struct InFlight {
    /// By method index; counted only for methods with a limit.
    methods: Box<[Arc<AtomicU32>]>,
}

impl InFlight {
    pub(super) fn new(policy: &ServicePolicy) -> Self {
        InFlight {
            methods: policy.methods.iter().map(|_| Arc::default()).collect(),
        }
    }

    /// A slot for a call of the method at `index`: `Ok(None)` for a method
    /// without a limit, the status to answer when its calls are all taken.
    pub(super) fn admit(
        &self,
        index: usize,
        method: &MethodPolicy,
        criticality: Criticality,
    ) -> Result<Option<Permit>, tonic::Status> {
        match method.max_concurrency {
            None => Ok(None),
            Some(max) => self.acquire(index, method.path, max, criticality),
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire(
        &self,
        index: usize,
        path: &str,
        max: u32,
        criticality: Criticality,
    ) -> Result<Option<Permit>, tonic::Status> {
        let count = &self.methods[index];
        let share = (u64::from(max) * u64::from(criticality.share_percent())).div_ceil(100);
        if u64::from(count.fetch_add(1, Ordering::AcqRel)) >= share {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(match share < u64::from(max) {
                false => tonic::Status::resource_exhausted(format!(
                    "{path} already runs its max_concurrency of {max} calls; retry later"
                )),
                true => tonic::Status::resource_exhausted(format!(
                    "{path} already runs {share} calls, what {} calls may fill of its \
                     max_concurrency of {max}; retry later",
                    criticality.as_str()
                )),
            });
        }
        Ok(Some(Permit(count.clone())))
    }
}

/// One call's slot, given back when the call ends (its response, or the
/// client going away, drops it).
#[derive(Debug)]
pub(crate) struct Permit(Arc<AtomicU32>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
