//! What the seeded simulators of the protocols share: their random source
//! and the sweep over seeds that runs, reports and replays them.

/// splitmix64: small, fast, and the same on every platform.
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What a run counts, summed over the seeds of a sweep.
pub(crate) trait Tally: Default + std::fmt::Debug {
    fn add(&mut self, other: &Self);
}

/// Runs `run(seed, trace)` for every seed — `ACTOGRID_SIM_SEED` alone, else
/// `0..ACTOGRID_SIM_SEEDS` (default `default_seeds`) — printing each trace
/// it returns; fails naming every failed seed and how to replay one of
/// `test` (the test binary's name). Returns the sum of the tallies, and
/// whether the whole default sweep ran (what scenario checks need).
pub(crate) fn sweep<T: Tally>(
    test: &str,
    default_seeds: u64,
    run: impl Fn(u64, bool) -> (Result<T, String>, Option<String>) + std::panic::RefUnwindSafe,
) -> (T, bool) {
    let env = |name| {
        std::env::var(name)
            .ok()
            .and_then(|v: String| v.parse::<u64>().ok())
    };
    let trace = std::env::var_os("ACTOGRID_SIM_TRACE").is_some();
    let seeds: Vec<u64> = match env("ACTOGRID_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("ACTOGRID_SIM_SEEDS").unwrap_or(default_seeds)).collect(),
    };
    let started = std::time::Instant::now();
    let mut total = T::default();
    let mut failures = Vec::new();
    for &seed in &seeds {
        let outcome = std::panic::catch_unwind(|| run(seed, trace));
        let (verdict, log) = match outcome {
            Ok(v) => v,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                (Err(format!("panicked: {what}")), None)
            }
        };
        if let Some(log) = log {
            println!("{log}");
        }
        match verdict {
            Ok(t) => total.add(&t),
            Err(e) => failures.push(format!("seed {seed}: {e}")),
        }
    }
    println!(
        "{} seeds in {:.1} s: {total:#?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed (replay one with ACTOGRID_SIM_SEED=<seed> \
         ACTOGRID_SIM_TRACE=1 cargo test -p actogrid-fault-tolerance --test {test} -- --nocapture):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    (total, seeds.len() as u64 >= default_seeds)
}
