//! The criticality of the call a task serves, in its context as its
//! deadline is (`deadline.rs`), so that the calls its handler makes through
//! generated clients carry it (`keel-criticality`). `CRITICAL`, the
//! default, is never stored: such calls need no context, and send nothing.

use crate::policy::Criticality;

/// The criticality of the call the current task serves, when it is not
/// the default.
pub(crate) fn current() -> Option<Criticality> {
    opentelemetry::Context::map_current(|cx| cx.get::<Criticality>().copied())
}
