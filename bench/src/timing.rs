//! Timing loops and summary statistics shared by the benchmarks.

use std::time::Instant;

/// Median, 90th and 99th percentiles of a series of timings, in the unit
/// of the samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
}

impl Summary {
    /// Summarises `samples` (any order). The median averages the two middle
    /// values of an even count; the percentiles are nearest-rank.
    pub(crate) fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples to summarise");
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let rank = |per_cent: usize| (n * per_cent).div_ceil(100).max(1) - 1;
        Summary {
            median,
            p90: sorted[rank(90)],
            p99: sorted[rank(99)],
        }
    }
}

impl Summary {
    /// `median 1.234 µs, p90 …, p99 …`.
    pub(crate) fn describe(&self, unit: &str) -> String {
        format!(
            "median {:.3} {unit}, p90 {:.3} {unit}, p99 {:.3} {unit}",
            self.median, self.p90, self.p99
        )
    }
}

/// Runs `subject` and `baseline` alternately, `warmup` untimed rounds then
/// `runs` timed ones, and returns their timings in milliseconds. Alternating
/// spreads the noise of a shared machine over both series alike.
pub(crate) fn paired<S, B>(
    warmup: usize,
    runs: usize,
    mut subject: S,
    mut baseline: B,
) -> (Vec<f64>, Vec<f64>)
where
    S: FnMut(),
    B: FnMut(),
{
    for _ in 0..warmup {
        baseline();
        subject();
    }
    let mut subject_ms = Vec::with_capacity(runs);
    let mut baseline_ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        baseline_ms.push(time_ms(&mut baseline));
        subject_ms.push(time_ms(&mut subject));
    }
    (subject_ms, baseline_ms)
}

fn time_ms(f: &mut impl FnMut()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90() {
        let odd = Summary::of(&[5.0, 1.0, 3.0]);
        assert_eq!((odd.median, odd.p90), (3.0, 5.0));
        let samples: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let even = Summary::of(&samples);
        assert_eq!((even.median, even.p90), (5.5, 9.0));
        let thirty: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(Summary::of(&thirty).p90, 27.0);
        assert_eq!(Summary::of(&[2.0]).p90, 2.0);
        let two_hundred: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(Summary::of(&two_hundred).p99, 198.0);
    }
}
