//! Sharding algorithms: a shard-key value to a partition number, and a key range to the partitions
//! it may touch.

use std::ops::Bound;

use super::RuleError;
use super::key::{KeyValue, days_from_civil, fnv1a_64, parse_date};

/// The calendar unit of a `date` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateUnit {
    /// One partition per day.
    Day,
    /// One partition per month.
    Month,
    /// One partition per year.
    Year,
}

impl DateUnit {
    /// The unit's index of a date (days since the epoch, months since year 0, years).
    fn index(self, y: i64, m: u32, d: u32) -> i64 {
        match self {
            DateUnit::Day => days_from_civil(y, m, d),
            DateUnit::Month => y * 12 + i64::from(m) - 1,
            DateUnit::Year => y,
        }
    }
}

/// How a table's shard key maps to one of its partitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// Integers: value mod partitions; other values: FNV-1a of the lower-cased text, mod partitions.
    Hash,
    /// A ring of virtual nodes per partition (adding a partition moves about 1/n of the keys).
    ConsistentHash {
        /// Ring points (hash, partition), sorted.
        ring: Vec<(u64, usize)>,
    },
    /// Integer boundaries `b1 < b2 < ...`: partition i holds `b(i) <= v < b(i+1)`.
    Range {
        /// Ascending boundaries; there is one more partition than boundaries.
        boundaries: Vec<i128>,
    },
    /// A datetime column by calendar unit, starting at `start` (partition 0).
    Date {
        /// Day, month or year.
        unit: DateUnit,
        /// The unit index of partition 0.
        start: i64,
    },
    /// Explicit value lists, one per partition.
    List {
        /// Values (normalised) per partition.
        lists: Vec<Vec<KeyValue>>,
    },
}

/// The splitmix64 finaliser: FNV alone clusters short, similar keys on a ring.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Virtual nodes per partition on a consistent-hash ring.
const VNODES: usize = 64;

impl Algorithm {
    /// A consistent-hash ring over `partitions`.
    pub fn consistent_hash(partitions: usize) -> Self {
        let mut ring = Vec::with_capacity(partitions * VNODES);
        for p in 0..partitions {
            for v in 0..VNODES {
                ring.push((mix(fnv1a_64(format!("partition-{p}-{v}").as_bytes())), p));
            }
        }
        ring.sort_unstable();
        Algorithm::ConsistentHash { ring }
    }

    /// A date rule; `start` is a date such as `2024-01-01`.
    pub fn date(unit: DateUnit, start: &str) -> Result<Self, RuleError> {
        let (y, m, d) = parse_date(start).ok_or_else(|| {
            RuleError::Config(format!("invalid start date `{start}`; expected YYYY-MM-DD"))
        })?;
        Ok(Algorithm::Date {
            unit,
            start: unit.index(y, m, d),
        })
    }

    /// Whether a range condition (`<`, `BETWEEN`) can narrow the partitions.
    pub fn is_ordered(&self) -> bool {
        matches!(self, Algorithm::Range { .. } | Algorithm::Date { .. })
    }

    /// The partition holding `v` among `partitions`.
    pub fn partition(&self, v: &KeyValue, partitions: usize) -> Result<usize, RuleError> {
        let n = partitions.max(1);
        match self {
            Algorithm::Hash => Ok(match v {
                KeyValue::Int(i) => int_partition(*i, n),
                other => (fnv1a_64(&other.hash_bytes()) % n as u64) as usize,
            }),
            Algorithm::ConsistentHash { ring } => {
                let h = mix(fnv1a_64(&v.hash_bytes()));
                let i = ring.partition_point(|(p, _)| *p < h);
                Ok(ring.get(i).or_else(|| ring.first()).map_or(0, |(_, p)| *p))
            }
            Algorithm::Range { boundaries } => match v {
                KeyValue::Int(i) => Ok(boundaries.partition_point(|b| b <= i)),
                KeyValue::Null => Ok(0),
                KeyValue::Str(s) => Err(RuleError::Value(format!(
                    "range sharding needs an integer key, got '{s}'"
                ))),
            },
            Algorithm::Date { unit, start } => {
                let KeyValue::Str(s) = v else {
                    return Err(RuleError::Value(format!(
                        "date sharding needs a date, got {v:?}"
                    )));
                };
                let (y, m, d) = parse_date(s).ok_or_else(|| {
                    RuleError::Value(format!("date sharding needs a date, got '{s}'"))
                })?;
                let idx = unit.index(y, m, d) - start;
                if idx < 0 || idx >= n as i64 {
                    return Err(RuleError::Value(format!(
                        "date '{s}' is outside the {n} partitions of the rule"
                    )));
                }
                Ok(idx as usize)
            }
            Algorithm::List { lists } => lists
                .iter()
                .position(|l| l.contains(v))
                .ok_or_else(|| RuleError::Value(format!("value {v:?} is in no list of the rule"))),
        }
    }

    /// The partitions a key range may touch; `None` means all (unordered algorithms).
    pub fn partitions_in(
        &self,
        lo: Bound<&KeyValue>,
        hi: Bound<&KeyValue>,
        partitions: usize,
    ) -> Option<Vec<usize>> {
        if !self.is_ordered() {
            return None;
        }
        let first = match lo {
            Bound::Unbounded => 0,
            Bound::Included(v) | Bound::Excluded(v) => self.clamped(v, partitions)?,
        };
        let last = match hi {
            Bound::Unbounded => partitions.saturating_sub(1),
            Bound::Included(v) | Bound::Excluded(v) => self.clamped(v, partitions)?,
        };
        Some((first..=last).collect())
    }

    /// Like `partition` but clamps dates outside the rule to the first/last partition.
    fn clamped(&self, v: &KeyValue, partitions: usize) -> Option<usize> {
        if let (Algorithm::Date { unit, start }, KeyValue::Str(s)) = (self, v) {
            let (y, m, d) = parse_date(s)?;
            let idx = unit.index(y, m, d) - start;
            return Some(idx.clamp(0, partitions as i64 - 1) as usize);
        }
        self.partition(v, partitions).ok()
    }
}

/// `i.rem_euclid(n)`, the hash rule's partition of an integer key. Keys that fit an `i64` (all
/// real ones) take the 64-bit remainder: the 128-bit one is a library call (`__modti3`), a visible
/// share of a point select's cost. Both give the same value (`n` is positive).
fn int_partition(i: i128, n: usize) -> usize {
    match (i64::try_from(i), i64::try_from(n)) {
        (Ok(i), Ok(n)) => i.rem_euclid(n) as usize,
        _ => i.rem_euclid(n as i128) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i128) -> KeyValue {
        KeyValue::Int(i)
    }

    #[test]
    fn hash_is_mod_for_integers() {
        let a = Algorithm::Hash;
        assert_eq!(a.partition(&int(10), 4).ok(), Some(2));
        assert_eq!(a.partition(&int(-1), 4).ok(), Some(3));
        let s = a.partition(&KeyValue::Str("Bob".into()), 4).ok();
        assert_eq!(s, a.partition(&KeyValue::Str("bob".into()), 4).ok());
    }

    #[test]
    fn the_64_bit_remainder_agrees_with_the_128_bit_one() {
        let keys = [
            0,
            1,
            -1,
            7,
            -7,
            i128::from(i64::MAX),
            i128::from(i64::MIN),
            i128::from(i64::MIN) + 1,
            i128::from(i64::MAX) + 1,
            i128::from(i64::MIN) - 1,
            i128::from(u64::MAX),
            i128::MAX,
            i128::MIN,
        ];
        for n in [1usize, 2, 3, 4, 7, 16, 1000, usize::MAX] {
            for k in keys {
                let wide = k.rem_euclid(n as i128) as usize;
                assert_eq!(int_partition(k, n), wide, "key {k}, {n} partitions");
                assert_eq!(Algorithm::Hash.partition(&int(k), n).ok(), Some(wide));
            }
        }
    }

    #[test]
    fn consistent_hash_spreads_and_is_stable() {
        let a = Algorithm::consistent_hash(4);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let p = a.partition(&int(i), 4).unwrap_or(99);
            counts[p] += 1;
        }
        assert!(counts.iter().all(|c| *c > 500), "{counts:?}");
        // Growing to 5 partitions moves only a minority of keys.
        let b = Algorithm::consistent_hash(5);
        let moved = (0..4000)
            .filter(|i| a.partition(&int(*i), 4).ok() != b.partition(&int(*i), 5).ok())
            .count();
        assert!(moved < 1600, "moved {moved}");
    }

    #[test]
    fn range_boundaries_and_spans() {
        let a = Algorithm::Range {
            boundaries: vec![100, 200],
        };
        assert_eq!(a.partition(&int(99), 3).ok(), Some(0));
        assert_eq!(a.partition(&int(100), 3).ok(), Some(1));
        assert_eq!(a.partition(&int(1000), 3).ok(), Some(2));
        let span = a.partitions_in(Bound::Included(&int(150)), Bound::Unbounded, 3);
        assert_eq!(span, Some(vec![1, 2]));
        assert_eq!(
            Algorithm::Hash.partitions_in(Bound::Included(&int(1)), Bound::Unbounded, 3),
            None
        );
    }

    #[test]
    fn date_by_month() {
        let a = Algorithm::date(DateUnit::Month, "2024-01-01").unwrap_or(Algorithm::Hash);
        let d = |s: &str| KeyValue::Str(s.into());
        assert_eq!(a.partition(&d("2024-03-15 10:00:00"), 12).ok(), Some(2));
        assert!(a.partition(&d("2025-01-01"), 12).is_err());
        assert!(a.partition(&d("2023-12-31"), 12).is_err());
        let span = a.partitions_in(
            Bound::Included(&d("2023-06-01")),
            Bound::Excluded(&d("2024-02-10")),
            12,
        );
        assert_eq!(span, Some(vec![0, 1]));
    }

    #[test]
    fn lists() {
        let a = Algorithm::List {
            lists: vec![
                vec![KeyValue::Str("cn".into())],
                vec![KeyValue::Str("us".into()), int(7)],
            ],
        };
        assert_eq!(a.partition(&KeyValue::Str("us".into()), 2).ok(), Some(1));
        assert_eq!(a.partition(&int(7), 2).ok(), Some(1));
        assert!(a.partition(&KeyValue::Str("fr".into()), 2).is_err());
    }
}
