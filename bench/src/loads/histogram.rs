//! A small log-linear latency histogram (about 1 % precision), mergeable across client threads.

/// Sub-buckets per power of two: 128 gives < 0.8 % relative error.
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

/// Latency histogram over nanoseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 64 * SUB],
            total: 0,
        }
    }
}

/// Bucket index of a value: exact below `SUB`, else (exponent, top mantissa bits).
fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = msb - SUB_BITS;
    let mantissa = (v >> shift) as usize & (SUB - 1);
    ((shift as usize + 1) << SUB_BITS) | mantissa
}

/// The largest value that falls in bucket `i` (so percentiles are upper bounds).
fn bucket_high(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let mantissa = (i & (SUB - 1)) as u64 | SUB as u64;
    ((mantissa + 1) << shift) - 1
}

impl Histogram {
    /// Records `n` equal values.
    pub fn record_n(&mut self, nanos: u64, n: u64) {
        self.counts[index(nanos)] += n;
        self.total += n;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=100), in nanoseconds; `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = (q / 100.0 * self.total as f64 - 1e-9).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_high(i));
            }
        }
        None
    }

    /// The value at quantile `q` in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        self.percentile(q).map(|ns| ns as f64 / 1e6)
    }
}

/// Percentile `q` of a histogram given as (value, count) pairs sorted by value (sysbench's).
pub fn percentile_of_pairs(pairs: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = pairs.iter().map(|p| p.1).sum();
    if total == 0 {
        return None;
    }
    let rank = (q / 100.0 * total as f64 - 1e-9).ceil().max(1.0) as u64;
    let mut seen = 0;
    pairs.iter().find_map(|&(v, c)| {
        seen += c;
        (seen >= rank).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record_n(v * 1000, 1); // 1 µs .. 100 ms
        }
        assert_eq!(h.count(), 100_000);
        for (q, exact) in [
            (50.0, 50_000_000u64),
            (99.0, 99_000_000),
            (99.9, 99_900_000),
        ] {
            let got = h.percentile(q).unwrap();
            let err = (got as f64 - exact as f64).abs() / exact as f64;
            assert!(err < 0.01, "q{q}: {got} vs {exact}");
            assert!(got >= exact, "percentiles are upper bounds");
        }
    }

    #[test]
    fn small_values_exact_and_merge() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record_n(5, 9);
        b.record_n(100, 1);
        a.merge(&b);
        assert_eq!(a.count(), 10);
        assert_eq!(a.percentile(50.0), Some(5));
        assert_eq!(a.percentile(100.0), Some(100));
        assert_eq!(Histogram::default().percentile(50.0), None);
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1 << 20,
            (1 << 20) + 12345,
            u64::MAX / 2,
        ] {
            let i = index(v);
            assert!(i >= last);
            assert!(bucket_high(i) >= v, "{v}");
            last = i;
        }
    }

    #[test]
    fn pairs() {
        let p = [(0.1, 50), (0.2, 40), (1.5, 9), (9.0, 1)];
        assert_eq!(percentile_of_pairs(&p, 50.0), Some(0.1));
        assert_eq!(percentile_of_pairs(&p, 90.0), Some(0.2));
        assert_eq!(percentile_of_pairs(&p, 99.0), Some(1.5));
        assert_eq!(percentile_of_pairs(&p, 99.9), Some(9.0));
        assert_eq!(percentile_of_pairs(&[], 50.0), None);
    }
}
