//! Timing loops and summary statistics shared by the benchmarks.

use std::time::Instant;

/// Median and 90th percentile of a series of timings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) p90: f64,
}

impl Summary {
    /// Summarises `samples` (any order). The median averages the two middle
    /// values of an even count; the p90 is the nearest-rank percentile.
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
        let rank = (n * 9).div_ceil(10).max(1);
        Summary {
            median,
            p90: sorted[rank - 1],
        }
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
    }
}
