//! [`RetryBudget`]: gRPC's retry throttling (gRFC A6 `retryThrottling`),
//! so that retries cannot multiply the load of a service that is failing.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::RetryBudgetConfig;

/// The retry tokens of one service, in thousandths (A6 keeps three
/// decimals of `token_ratio`), shared by every client of it in the process.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    tokens: AtomicU32,
    max: u32,
    ratio: u32,
}

impl RetryBudget {
    pub(crate) fn new(config: &RetryBudgetConfig) -> Self {
        let max = config.max_tokens.saturating_mul(1000);
        // At least one thousandth: a ratio that rounds to nothing would
        // never give a token back.
        let ratio = ((config.token_ratio * 1000.0).round() as u32).max(1);
        RetryBudget {
            tokens: AtomicU32::new(max),
            max,
            ratio,
        }
    }

    /// An attempt failed with a code its method retries: takes a token, and
    /// says whether the call may be retried (more than half the tokens are
    /// left afterwards, as A6 has it).
    pub(crate) fn failed(&self) -> bool {
        let before = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(1000))
            })
            .unwrap_or(0);
        before.saturating_sub(1000) > self.max / 2
    }

    /// A call succeeded: gives back `token_ratio`, up to `max_tokens`.
    pub(crate) fn succeeded(&self) {
        // Full already (the common case): no write, so calls of a healthy
        // service do not contend on the counter.
        if self.tokens.load(Ordering::Relaxed) >= self.max {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + self.ratio).min(self.max))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_tokens: u32, token_ratio: f64) -> RetryBudget {
        RetryBudget::new(&RetryBudgetConfig {
            max_tokens,
            token_ratio,
        })
    }

    #[test]
    fn a_failing_service_gets_half_its_tokens_of_retries_then_none() {
        let budget = budget(10, 0.1);
        let allowed = (0..100).filter(|_| budget.failed()).count();
        // 10 → 9 … 6 are above 5: four retries, then none.
        assert_eq!(allowed, 4);
    }

    #[test]
    fn successes_give_retries_back_at_the_ratio() {
        let budget = budget(10, 0.1);
        while budget.failed() {}
        assert!(!budget.failed());
        // Tokens are at 4 now (5 then one more failure); 2.1 back makes 6.1.
        for _ in 0..21 {
            budget.succeeded();
        }
        assert!(budget.failed(), "6.1 − 1 is above 5");
        assert!(!budget.failed(), "4.1 is not");
    }

    #[test]
    fn tokens_never_pass_the_maximum() {
        let budget = budget(2, 1.0);
        for _ in 0..100 {
            budget.succeeded();
        }
        // 2 → 1 is not above 1: no retry allowed.
        assert!(!budget.failed());
    }
}
