//! Paired per-round figures, their medians and confidence intervals.

/// One per-round figure of keel against plain over all rounds: its median,
/// and a 95% confidence interval for that median.
pub(super) struct Paired {
    pub(super) median: f64,
    /// `None` with fewer than 6 rounds, too few for a 95% interval.
    pub(super) interval: Option<(f64, f64)>,
    pub(super) rounds: usize,
}

impl Paired {
    pub(super) fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.collect();
        values.sort_by(f64::total_cmp);
        Paired {
            median: median(&mut values),
            interval: median_interval(&values, 0.95),
            rounds: values.len(),
        }
    }

    pub(super) fn interval_text(&self, show: impl Fn(f64) -> String) -> String {
        match self.interval {
            Some((lo, hi)) => format!(
                "95% interval {} .. {} ({} rounds)",
                show(lo),
                show(hi),
                self.rounds
            ),
            None => format!("no interval from {} rounds (6 needed)", self.rounds),
        }
    }

    /// PASS when the whole interval meets the target, MISS when none of it
    /// does, UNDECIDED when the target lies inside it (the machine was too
    /// noisy for this many rounds to tell) or there is no interval.
    pub(super) fn verdict(&self, meets: impl Fn(f64) -> bool) -> &'static str {
        match self.interval.map(|(lo, hi)| (meets(lo), meets(hi))) {
            Some((true, true)) => "PASS",
            Some((false, false)) => "MISS",
            _ => "UNDECIDED (more rounds, or a quieter machine)",
        }
    }
}

/// A distribution-free confidence interval for the median of `sorted`
/// (ascending): the order statistics `[x_k, x_(n+1-k)]` with the largest `k`
/// whose coverage, `1 - 2 P(B < k)` for `B ~ Binomial(n, 1/2)`, is still at
/// least `confidence`. `None` when even `[min, max]` covers too little.
pub(super) fn median_interval(sorted: &[f64], confidence: f64) -> Option<(f64, f64)> {
    let n = sorted.len();
    let tail = (1.0 - confidence) / 2.0;
    // P(B = i), in logs so that large `n` does not underflow.
    let mut log_p = -(n as f64) * std::f64::consts::LN_2;
    let mut below = 0.0; // P(B < k)
    let mut k = 0;
    while k < n / 2 {
        let next = below + log_p.exp();
        if next > tail {
            break;
        }
        below = next;
        log_p += ((n - k) as f64).ln() - ((k + 1) as f64).ln();
        k += 1;
    }
    // `k` values may lie below the interval, and `k` above it.
    (k >= 1).then(|| (sorted[k - 1], sorted[n - k]))
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_intervals_are_the_order_statistics_of_95_percent_coverage() {
        let values: Vec<f64> = (1..=31).map(f64::from).collect();
        // P(B <= 9) = 0.0147 and P(B <= 10) = 0.0354 for B ~ Binomial(31, 1/2).
        assert_eq!(median_interval(&values, 0.95), Some((10.0, 22.0)));
        // The default 61 rounds: the 23rd to the 39th.
        let values: Vec<f64> = (1..=61).map(f64::from).collect();
        assert_eq!(median_interval(&values, 0.95), Some((23.0, 39.0)));
        // Six values: [min, max] covers 1 - 2/64 = 96.9%; five: only 93.8%.
        assert_eq!(median_interval(&values[..6], 0.95), Some((1.0, 6.0)));
        assert_eq!(median_interval(&values[..5], 0.95), None);
        assert_eq!(median_interval(&[], 0.95), None);
        // Large n: no underflow, and the interval narrows around the median.
        let many: Vec<f64> = (1..=2001).map(f64::from).collect();
        let (lo, hi) = median_interval(&many, 0.95).expect("an interval");
        assert!(
            (955.0..=960.0).contains(&lo) && hi == 2002.0 - lo,
            "{lo} {hi}"
        );
    }

    #[test]
    fn a_verdict_needs_the_whole_interval_on_one_side() {
        let paired = |values: &[f64]| Paired::of(values.iter().copied());
        let meets = |x: f64| x >= 0.95;
        assert_eq!(
            paired(&[0.96, 0.97, 0.98, 0.99, 1.0, 1.01]).verdict(meets),
            "PASS"
        );
        assert_eq!(
            paired(&[0.90, 0.91, 0.92, 0.93, 0.94, 0.941]).verdict(meets),
            "MISS"
        );
        assert!(
            paired(&[0.90, 0.97, 0.98, 0.99, 1.0, 1.01])
                .verdict(meets)
                .starts_with("UNDECIDED")
        );
        // Fewer than 6 rounds tell nothing, however good they look.
        assert!(
            paired(&[1.0, 1.0, 1.0])
                .verdict(meets)
                .starts_with("UNDECIDED")
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
