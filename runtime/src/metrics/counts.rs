//! Per-thread call counts: each thread adds to its own, and a scrape sums
//! them.
//!
//! A unary call is counted at its start, for its request and its response
//! message, and at its end (its code, its latency's bucket and sum). With
//! `prometheus`' shared counters and histogram that was eight locked
//! read-modify-writes per call, each waiting for the core's pending stores,
//! on counters that every core serving the method writes. Here each thread
//! has its own counts of every method of a service ([`ThreadLocal`]), which
//! only it writes, so an update is a plain load and store; a scrape reads
//! every thread's counts and adds them up. A thread's counts outlive it: the
//! next thread given its id goes on adding to them, so nothing counted is
//! lost.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus::DEFAULT_BUCKETS;
use thread_local::ThreadLocal;
use tonic::Code;

/// The latency histogram's upper bounds, in seconds: Prometheus' default
/// buckets, as go-grpc-prometheus uses.
pub(crate) const BOUNDS: [f64; 11] = *DEFAULT_BUCKETS;

/// One count (or sum), written only by the thread that owns it and read by
/// scrapes: relaxed loads and stores make an update a plain load and store,
/// not a locked read-modify-write.
#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl Cell {
    #[inline]
    fn add(&self, n: u64) {
        self.0.store(self.get().wrapping_add(n), Relaxed);
    }

    /// Adds `x` to the `f64` the cell holds as bits.
    #[inline]
    fn add_f64(&self, x: f64) {
        self.0.store((self.get_f64() + x).to_bits(), Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    fn get_f64(&self) -> f64 {
        f64::from_bits(self.get())
    }
}

/// What one thread counted of one method's calls.
///
/// A call's start, messages and latency sum share the first cache line with
/// the shortest latencies' buckets, so a fast call touches two lines: that
/// one and its code's.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct Counts {
    started: Cell,
    msg_received: Cell,
    msg_sent: Cell,
    /// The latencies' sum in seconds, as `f64` bits.
    seconds: Cell,
    /// Latencies by bucket, not cumulated: one per bound, then one for those
    /// above the last. Their sum is the histogram's count.
    buckets: [Cell; BOUNDS.len() + 1],
    /// Ended calls, by code number (0..=16).
    handled: [Cell; 17],
}

impl Counts {
    /// A call started.
    #[inline]
    pub(crate) fn started(&self) {
        self.started.add(1);
    }

    /// `n` messages were received.
    #[inline]
    pub(crate) fn received(&self, n: u64) {
        self.msg_received.add(n);
    }

    /// `n` messages were sent.
    #[inline]
    pub(crate) fn sent(&self, n: u64) {
        self.msg_sent.add(n);
    }

    /// A call ended with `code` after `seconds`.
    #[inline]
    pub(crate) fn handled(&self, code: Code, seconds: f64) {
        self.handled[code as usize].add(1);
        let bucket = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket].add(1);
        self.seconds.add_f64(seconds);
    }
}

/// A service's counts: per thread, one [`Counts`] per slot (a method of its
/// policy and a protocol, [`Protocol::slot`](super::Protocol::slot)).
#[derive(Debug)]
pub(crate) struct ServiceCounts {
    slots: usize,
    threads: ThreadLocal<Box<[Counts]>>,
}

impl ServiceCounts {
    /// No counts yet, for `slots` slots.
    pub(crate) fn new(slots: usize) -> Self {
        ServiceCounts {
            slots,
            threads: ThreadLocal::new(),
        }
    }

    /// This thread's counts of the slot at `index`.
    #[inline]
    pub(crate) fn slot(&self, index: usize) -> &Counts {
        &self.threads.get_or(|| self.fresh())[index]
    }

    /// A thread's counts, all zero (out of line: once per thread).
    #[cold]
    #[inline(never)]
    fn fresh(&self) -> Box<[Counts]> {
        (0..self.slots).map(|_| Counts::default()).collect()
    }

    /// The slot at `index`, summed over every thread.
    pub(crate) fn total(&self, index: usize) -> Total {
        let mut total = Total::default();
        for thread in self.threads.iter() {
            let counts = &thread[index];
            total.started += counts.started.get();
            total.msg_received += counts.msg_received.get();
            total.msg_sent += counts.msg_sent.get();
            total.seconds += counts.seconds.get_f64();
            for (sum, cell) in total.buckets.iter_mut().zip(&counts.buckets) {
                *sum += cell.get();
            }
            for (sum, cell) in total.handled.iter_mut().zip(&counts.handled) {
                *sum += cell.get();
            }
        }
        total
    }
}

/// One method's counts summed over every thread, as a scrape reports them.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Total {
    pub(crate) started: u64,
    pub(crate) msg_received: u64,
    pub(crate) msg_sent: u64,
    pub(crate) seconds: f64,
    /// Not cumulated; the last is above every bound.
    pub(crate) buckets: [u64; BOUNDS.len() + 1],
    pub(crate) handled: [u64; 17],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_threads_counts_even_after_the_thread_ends() {
        let counts = ServiceCounts::new(2);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let method = counts.slot(1);
                    method.started();
                    method.received(2);
                    method.sent(3);
                    method.handled(Code::Ok, 0.004);
                    method.handled(Code::NotFound, 0.3);
                    method.handled(Code::Internal, 60.0);
                });
            }
        });
        counts.slot(1).started();

        let total = counts.total(1);
        assert_eq!(total.started, 5);
        assert_eq!(total.msg_received, 8);
        assert_eq!(total.msg_sent, 12);
        assert_eq!(total.handled[Code::Ok as usize], 4);
        assert_eq!(total.handled[Code::NotFound as usize], 4);
        assert_eq!(total.handled[Code::Internal as usize], 4);
        // 0.004 ≤ 0.005, the first bound; 0.3 ≤ 0.5, the seventh; 60 is
        // above the last.
        let mut buckets = [0; 12];
        buckets[0] = 4;
        buckets[6] = 4;
        buckets[11] = 4;
        assert_eq!(total.buckets, buckets);
        assert!(
            (total.seconds - 4.0 * 60.304).abs() < 1e-9,
            "{}",
            total.seconds
        );
        assert_eq!(counts.total(0), Total::default());
    }
}
