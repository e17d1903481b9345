//! Latency histogram buckets shared by whoever records calls (the proxies' backends, the client
//! library) and the registry that adds their reports up: the same bounds everywhere, so that bucket
//! counts from many reporters can be summed and a quantile read from the sum.

/// Upper bounds (µs, inclusive) of the buckets; one more bucket holds everything slower.
pub const BOUNDS_US: [u64; 16] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

/// Buckets in a histogram: the bounds and the overflow.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// The bucket of a call that took `us` µs.
#[inline]
pub fn bucket(us: u64) -> usize {
    BOUNDS_US.partition_point(|b| *b < us)
}

/// The upper bound of the bucket holding the `q` quantile (0-1] of `counts` (µs; the overflow
/// bucket answers twice the last bound), None when there are no calls or the counts are not a
/// histogram of [`BUCKETS`] buckets.
pub fn quantile_us(counts: &[u64], q: f64) -> Option<u64> {
    if counts.len() != BUCKETS {
        return None;
    }
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(BOUNDS_US.get(i).copied().unwrap_or(BOUNDS_US[15] * 2));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(100), 0);
        assert_eq!(bucket(101), 1);
        assert_eq!(bucket(10_000_000), 15);
        assert_eq!(bucket(u64::MAX), 16);
        let mut h = [0u64; BUCKETS];
        // 98 fast calls (≤ 1 ms), 2 slow ones (≤ 200 ms).
        h[bucket(700)] = 98;
        h[bucket(150_000)] = 2;
        assert_eq!(quantile_us(&h, 0.5), Some(1_000));
        assert_eq!(quantile_us(&h, 0.98), Some(1_000));
        assert_eq!(quantile_us(&h, 0.99), Some(200_000));
        assert_eq!(quantile_us(&[0; BUCKETS], 0.5), None);
        assert_eq!(quantile_us(&[1, 2], 0.5), None);
    }
}
