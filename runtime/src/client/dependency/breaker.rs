//! [`Breaker`]: calls to a service that fails everything fail at once,
//! locally, with a probe now and then, instead of adding to its load.
//!
//! Closed, each call's outcome is counted in a window of ten buckets.
//! When at least `failure_percent` of at least `min_calls` calls in it
//! failed, the breaker opens: calls fail `UNAVAILABLE` without being sent.
//! After `open_for` (jittered), one call goes through: its success closes
//! the breaker, its failure opens it again.
//!
//! Why a breaker and not the SRE book's adaptive throttle
//! (`p = max(0, (requests − K·accepts) / (requests + 1))`): the throttle's
//! rejections count as requests, so after an outage its admitted share
//! only doubles per window; at 1000 calls a second over a 2 s window it
//! takes about 9 s to let calls through again. The breaker lets them
//! through one probe after the service answers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use quanta::Instant;
use tonic::Code;

use crate::config::BreakerConfig;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
/// Open, and one call is through as the probe.
const PROBING: u8 = 2;

/// The buckets of the window.
const BUCKETS: usize = 10;

/// The breaker of one service, shared by every client of it in the process.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Read without the lock by every call; written under it.
    state: AtomicU8,
    inner: Mutex<Window>,
    bucket: Duration,
    min_calls: u32,
    failure_percent: u32,
    open_for: Duration,
}

#[derive(Debug)]
struct Window {
    buckets: [Bucket; BUCKETS],
    /// When an open breaker lets its next probe through.
    reopen_at: Option<Instant>,
    /// When the window was started: bucket numbers count from it.
    origin: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket of time since `origin` this is.
    number: u64,
    calls: u32,
    failures: u32,
}

/// What a call the breaker let through must report when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// A call counted in the window.
    Counted,
    /// The one call let through an open breaker.
    Probe,
}

/// A call refused by an open breaker: when it lets the next probe through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub(crate) retry_in: Duration,
}

impl Breaker {
    pub(crate) fn new(config: &BreakerConfig, now: Instant) -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            inner: Mutex::new(Window {
                buckets: [Bucket::default(); BUCKETS],
                reopen_at: None,
                origin: now,
            }),
            bucket: config.window / BUCKETS as u32,
            min_calls: config.min_calls,
            failure_percent: config.failure_percent,
            open_for: config.open_for,
        }
    }

    /// Whether a call starting at `now` may go.
    pub(crate) fn admit(&self, now: Instant) -> Result<Ticket, Refused> {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(Ticket::Counted);
        }
        self.admit_while_open(now)
    }

    #[cold]
    #[inline(never)]
    fn admit_while_open(&self, now: Instant) -> Result<Ticket, Refused> {
        let mut window = self.lock();
        let reopen_at = window.reopen_at.unwrap_or(now);
        match self.state.load(Ordering::Acquire) {
            CLOSED => Ok(Ticket::Counted),
            OPEN if now >= reopen_at => {
                self.state.store(PROBING, Ordering::Release);
                window.reopen_at = None;
                Ok(Ticket::Probe)
            }
            // Probing: the probe's own answer decides; until then, as if
            // open for another `open_for`.
            _ => Err(Refused {
                retry_in: reopen_at
                    .saturating_duration_since(now)
                    .max(self.open_for / 10),
            }),
        }
    }

    /// A call let through with `ticket` ended with `code` at `now`; what
    /// that changed: `Some(true)` opened the breaker, `Some(false)` closed it.
    pub(crate) fn record(&self, ticket: Ticket, code: Code, now: Instant) -> Option<bool> {
        match ticket {
            Ticket::Counted => {
                // Calls sent before the breaker opened: their outcomes are
                // the window's, which has decided already.
                if self.state.load(Ordering::Acquire) != CLOSED {
                    return None;
                }
                let failed = fails(code);
                let mut window = self.lock();
                let number = window.number(now, self.bucket);
                let bucket = &mut window.buckets[(number % BUCKETS as u64) as usize];
                if bucket.number != number {
                    *bucket = Bucket {
                        number,
                        ..Bucket::default()
                    };
                }
                bucket.calls += 1;
                bucket.failures += u32::from(failed);
                if !failed || !self.too_many(&window, number) {
                    return None;
                }
                self.open(&mut window, now);
                Some(true)
            }
            Ticket::Probe => {
                let mut window = self.lock();
                match code {
                    // The probe never got an answer (its caller gave up, or
                    // its deadline passed): the next call probes.
                    Code::Cancelled | Code::DeadlineExceeded => {
                        window.reopen_at = Some(now);
                        self.state.store(OPEN, Ordering::Release);
                        None
                    }
                    code if fails(code) => {
                        self.open(&mut window, now);
                        None
                    }
                    _ => {
                        window.buckets = [Bucket::default(); BUCKETS];
                        self.state.store(CLOSED, Ordering::Release);
                        Some(false)
                    }
                }
            }
        }
    }

    /// Whether the buckets of the window ending with bucket `number` have
    /// enough calls, and enough of them failed.
    fn too_many(&self, window: &Window, number: u64) -> bool {
        let first = number.saturating_sub(BUCKETS as u64 - 1);
        let (calls, failures) = (window.buckets.iter())
            .filter(|b| b.number >= first && b.number <= number)
            .fold((0u64, 0u64), |(c, f), b| {
                (c + u64::from(b.calls), f + u64::from(b.failures))
            });
        calls >= u64::from(self.min_calls)
            && failures * 100 >= calls * u64::from(self.failure_percent)
    }

    fn open(&self, window: &mut Window, now: Instant) {
        window.reopen_at = Some(now + jitter(self.open_for));
        self.state.store(OPEN, Ordering::Release);
    }

    /// Whether the breaker is open (or probing).
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic while holding it leaves counts only: go on with them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Window {
    /// The number of the bucket `now` falls in.
    fn number(&self, now: Instant, bucket: Duration) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        (since.as_nanos() / bucket.as_nanos().max(1)) as u64
    }
}

/// Whether a call ending with `code` counts as the service failing: it
/// was unavailable (transport failures are recorded so too). A refusal of
/// the caller (an invalid argument, a rate limit, a permission) is the
/// service answering.
fn fails(code: Code) -> bool {
    code == Code::Unavailable
}

/// `open_for` ±10 %.
fn jitter(open_for: Duration) -> Duration {
    let unit = getrandom::u64().unwrap_or(u64::MAX / 2) as f64 / u64::MAX as f64;
    open_for.mul_f64(0.9 + 0.2 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (Breaker, Instant) {
        let config = BreakerConfig {
            enabled: true,
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_percent: 50,
            open_for: Duration::from_secs(1),
        };
        let now = Instant::now();
        (Breaker::new(&config, now), now)
    }

    fn ms(at: Instant, ms: u64) -> Instant {
        at + Duration::from_millis(ms)
    }

    #[test]
    fn opens_once_half_the_calls_of_the_window_failed_and_not_before_min_calls() {
        let (breaker, t0) = breaker();
        for _ in 0..19 {
            assert_eq!(breaker.record(Ticket::Counted, Code::Unavailable, t0), None);
        }
        assert!(
            breaker.admit(t0).is_ok(),
            "19 calls are fewer than min_calls"
        );
        assert_eq!(
            breaker.record(Ticket::Counted, Code::Unavailable, t0),
            Some(true)
        );
        let refused = breaker.admit(ms(t0, 1)).expect_err("open");
        assert!(
            refused.retry_in >= Duration::from_millis(800),
            "{refused:?}"
        );
    }

    #[test]
    fn successes_keep_it_closed_and_old_failures_leave_the_window() {
        let (breaker, t0) = breaker();
        for _ in 0..15 {
            breaker.record(Ticket::Counted, Code::Ok, t0);
        }
        for _ in 0..14 {
            breaker.record(Ticket::Counted, Code::Unavailable, t0);
        }
        assert!(!breaker.is_open(), "14 of 29 is under half");
        // 11 s later the first 29 are out of the window: 19 new failures
        // are fewer than min_calls.
        for _ in 0..19 {
            breaker.record(Ticket::Counted, Code::Unavailable, ms(t0, 11_000));
        }
        assert!(!breaker.is_open());
        // Caller errors are the service answering.
        for _ in 0..40 {
            breaker.record(Ticket::Counted, Code::InvalidArgument, ms(t0, 11_000));
        }
        assert!(!breaker.is_open());
    }

    #[test]
    fn one_probe_after_open_for_and_its_answer_decides() {
        let (breaker, t0) = breaker();
        for _ in 0..20 {
            breaker.record(Ticket::Counted, Code::Unavailable, t0);
        }
        assert!(breaker.admit(ms(t0, 500)).is_err());
        let probe = breaker.admit(ms(t0, 1200)).expect("a probe after open_for");
        assert_eq!(probe, Ticket::Probe);
        assert!(breaker.admit(ms(t0, 1201)).is_err(), "one probe at a time");
        // It fails: open again for open_for.
        breaker.record(probe, Code::Unavailable, ms(t0, 1210));
        assert!(breaker.admit(ms(t0, 1500)).is_err());
        let probe = breaker.admit(ms(t0, 2400)).expect("the next probe");
        // Its caller gives up: the next call probes.
        breaker.record(probe, Code::Cancelled, ms(t0, 2410));
        let probe = breaker.admit(ms(t0, 2420)).expect("probe again");
        assert_eq!(breaker.record(probe, Code::Ok, ms(t0, 2430)), Some(false));
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit(ms(t0, 2431)).ok(), Some(Ticket::Counted));
        // The failures before the outage ended are forgotten.
        breaker.record(Ticket::Counted, Code::Unavailable, ms(t0, 2440));
        assert!(!breaker.is_open());
    }
}
