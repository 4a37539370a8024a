//! The clock Keel reads on every call: quanta's (the TSC where the CPU
//! allows), read through a clock of Keel's own.
//!
//! `quanta::Instant::now` first looks in a thread-local for a mocked clock,
//! then for its global one, on every read, which is most of what a read
//! costs; a read of this clock is the TSC read alone. Instants of this
//! clock and of quanta's global one are the same (quanta calibrates once
//! per process), so they can be compared.

use std::sync::OnceLock;
use std::time::Duration;

use quanta::{Clock, Instant};

static CLOCK: OnceLock<Clock> = OnceLock::new();

/// Now.
#[inline]
pub(crate) fn now() -> Instant {
    CLOCK.get_or_init(Clock::new).now()
}

/// The time since `start`.
#[inline]
pub(crate) fn since(start: Instant) -> Duration {
    now().saturating_duration_since(start)
}
