//! A fixed-size latency histogram for `report`'s percentiles: memory does not grow with the
//! number of records (about 17 KB whatever the output's size).
//!
//! Values below [`EXACT_BELOW`] (1,024 ms) have one bucket each, so their percentiles are exact.
//! Larger values fall in logarithmic buckets `(γ^(i-1), γ^i]` with `γ = (1+α)/(1−α)`; a bucket
//! answers with `2γ^i/(γ+1)`, which is within `α` of every value in it (the DDSketch bound).
//! With `α = 0.0095` and the answer rounded to a whole millisecond (±0.5 ms, at most 0.05 % of a
//! value ≥ 1,024), **a percentile is within 1 % of the exact nearest-rank percentile**, and never
//! above the maximum, which is kept exactly.

/// Values below this are counted exactly.
pub(crate) const EXACT_BELOW: u32 = 1024;
/// The relative accuracy of a logarithmic bucket.
const ALPHA: f64 = 0.0095;

/// Counts of values (milliseconds) in exact and logarithmic buckets.
#[derive(Debug, Clone)]
pub(crate) struct LatencySketch {
    exact: Vec<u64>,
    log: Vec<u64>,
    count: u64,
    max: u32,
    gamma_ln: f64,
}

impl Default for LatencySketch {
    fn default() -> Self {
        let gamma = (1.0 + ALPHA) / (1.0 - ALPHA);
        let gamma_ln = gamma.ln();
        // Enough logarithmic buckets for u32::MAX.
        let buckets = (f64::from(u32::MAX).ln() / gamma_ln).ceil() as usize + 2;
        LatencySketch {
            exact: vec![0; EXACT_BELOW as usize],
            log: vec![0; buckets],
            count: 0,
            max: 0,
            gamma_ln,
        }
    }
}

impl LatencySketch {
    /// Counts one value.
    pub(crate) fn add(&mut self, value: u32) {
        self.count += 1;
        self.max = self.max.max(value);
        if value < EXACT_BELOW {
            self.exact[value as usize] += 1;
        } else {
            let i = self.bucket(value);
            self.log[i] += 1;
        }
    }

    fn bucket(&self, value: u32) -> usize {
        ((f64::from(value).ln() / self.gamma_ln).ceil() as usize).min(self.log.len() - 1)
    }

    /// Adds every value `other` counted.
    pub(crate) fn merge(&mut self, other: &LatencySketch) {
        for (mine, theirs) in self.exact.iter_mut().zip(&other.exact) {
            *mine += theirs;
        }
        for (mine, theirs) in self.log.iter_mut().zip(&other.log) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Values counted.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Whether no value was counted.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The largest value (exact).
    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// The nearest-rank `p`-th percentile (0 < p ≤ 100), within 1 % (exact below 1,024); 0 when
    /// empty.
    pub(crate) fn percentile(&self, p: f64) -> u32 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil() as u64;
        let rank = rank.clamp(1, self.count);
        let mut seen = 0;
        for (value, &n) in self.exact.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return value as u32;
            }
        }
        let gamma = self.gamma_ln.exp();
        for (i, &n) in self.log.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let answer = (2.0 * (i as f64 * self.gamma_ln).exp() / (gamma + 1.0)).round();
                return (answer as u32).clamp(EXACT_BELOW, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[u32], p: f64) -> u32 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// A deterministic spread of values over the whole range, skewed like latencies.
    fn values(n: usize, seed: u64) -> Vec<u32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let scale = (x % 33) as u32;
                ((x >> 8) as u32) >> (32 - scale.max(1))
            })
            .collect()
    }

    #[test]
    fn small_values_are_exact() {
        let mut sketch = LatencySketch::default();
        for v in 1..=100 {
            sketch.add(v);
        }
        assert_eq!(sketch.percentile(50.0), 50);
        assert_eq!(sketch.percentile(99.0), 99);
        assert_eq!(sketch.max(), 100);
        let mut one = LatencySketch::default();
        one.add(7);
        assert_eq!(one.percentile(90.0), 7);
        assert_eq!(LatencySketch::default().percentile(50.0), 0);
    }

    #[test]
    fn every_percentile_within_one_percent() {
        for seed in [1, 2, 3, 99] {
            let mut v = values(50_000, seed);
            let mut sketch = LatencySketch::default();
            for &x in &v {
                sketch.add(x);
            }
            v.sort_unstable();
            assert_eq!(sketch.max(), *v.last().unwrap());
            assert_eq!(sketch.count(), v.len() as u64);
            for p in [
                0.1, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0,
            ] {
                let want = exact(&v, p);
                let got = sketch.percentile(p);
                let err = (f64::from(got) - f64::from(want)).abs() / f64::from(want.max(1));
                assert!(
                    err <= 0.01,
                    "p{p}: sketch {got}, exact {want} (seed {seed})"
                );
                if want < EXACT_BELOW {
                    assert_eq!(got, want);
                }
            }
        }
    }

    #[test]
    fn extremes() {
        let mut sketch = LatencySketch::default();
        sketch.add(u32::MAX);
        sketch.add(EXACT_BELOW);
        assert_eq!(sketch.percentile(100.0), u32::MAX);
        assert_eq!(sketch.percentile(50.0), EXACT_BELOW);
        // Every value at a bucket's edge is answered within 1 %.
        for v in (EXACT_BELOW..2_000_000).step_by(997) {
            let mut s = LatencySketch::default();
            s.add(v);
            s.add(u32::MAX);
            let got = s.percentile(50.0);
            assert!(
                (f64::from(got) - f64::from(v)).abs() <= 0.01 * f64::from(v),
                "{v} → {got}"
            );
        }
    }
}
