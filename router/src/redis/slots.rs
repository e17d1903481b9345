//! Redis Cluster slot routing: CRC16 (XMODEM), 16384 slots, `{hash tag}` rules, and the slot table.
//!
//! A key's slot is `crc16(k) % 16384` where `k` is the whole key, unless the key contains a `{`, a `}`
//! after it, and at least one byte between the two: then `k` is only the bytes between the first `{` and
//! the first `}` after it. These are exactly the rules of the Redis Cluster specification
//! (`keyHashSlot` in Redis' `cluster.c`): `{user1000}.following` hashes `user1000`, `foo{}{bar}` hashes the
//! whole key (the first tag is empty), `foo{{bar}}zap` hashes `{bar`, `foo{bar}{zap}` hashes `bar`.
//!
//! [`SlotTable`] maps every slot to a server index; it is built from ranges and refuses gaps and overlaps.

use super::error::RedisRouteError;

/// Number of hash slots in Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// The CRC16-CCITT (XMODEM: polynomial 0x1021, init 0) lookup table.
pub(crate) const CRC16_TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x1021
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC16 as Redis Cluster computes it (XMODEM).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc = (crc << 8) ^ CRC16_TABLE[(((crc >> 8) as u8) ^ b) as usize];
    }
    crc
}

/// The part of `key` Redis Cluster hashes: the first non-empty `{...}` section, else the whole key.
pub fn cluster_hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// The Redis Cluster hash slot (0..16384) of `key`, hash tags applied.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(cluster_hash_tag(key)) & (SLOT_COUNT as u16 - 1)
}

/// A complete map from every slot to a server index, built from validated ranges.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotTable {
    /// `owner[slot]` is the server index serving `slot`.
    owner: Box<[u16; SLOT_COUNT]>,
    /// Number of servers the table was validated against.
    servers: usize,
}

impl std::fmt::Debug for SlotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotTable")
            .field("servers", &self.servers)
            .field("ranges", &self.ranges())
            .finish()
    }
}

/// One contiguous, inclusive slot range owned by one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// Index of the server that owns the range.
    pub server: usize,
}

impl SlotTable {
    /// Build a table from `(start, end inclusive, server)` ranges; every slot must be covered exactly once
    /// and every server index must be below `servers`.
    pub fn from_ranges(
        ranges: &[(u32, u32, usize)],
        servers: usize,
    ) -> Result<SlotTable, RedisRouteError> {
        if servers == 0 {
            return Err(RedisRouteError::NoServers);
        }
        const UNSET: u16 = u16::MAX;
        let mut owner = Box::new([UNSET; SLOT_COUNT]);
        for &(start, end, server) in ranges {
            if start > end || end as usize >= SLOT_COUNT {
                return Err(RedisRouteError::SlotRangeInvalid { start, end });
            }
            if server >= servers || server >= usize::from(UNSET) {
                return Err(RedisRouteError::SlotServerOutOfRange {
                    start: start as u16,
                    end: end as u16,
                    server,
                    servers,
                });
            }
            for slot in start..=end {
                let cell = &mut owner[slot as usize];
                if *cell != UNSET {
                    return Err(RedisRouteError::SlotOverlap {
                        slot: slot as u16,
                        first: usize::from(*cell),
                        second: server,
                    });
                }
                *cell = server as u16;
            }
        }
        if let Some(slot) = owner.iter().position(|&s| s == UNSET) {
            return Err(RedisRouteError::SlotUncovered { slot: slot as u16 });
        }
        Ok(SlotTable { owner, servers })
    }

    /// Split the slots evenly over `servers` servers in contiguous ranges (what `redis-cli --cluster
    /// create` does).
    pub fn even(servers: usize) -> Result<SlotTable, RedisRouteError> {
        if servers == 0 {
            return Err(RedisRouteError::NoServers);
        }
        let mut ranges = Vec::with_capacity(servers);
        for i in 0..servers {
            let start = (i * SLOT_COUNT / servers) as u32;
            let end = ((i + 1) * SLOT_COUNT / servers) as u32;
            if end > start {
                ranges.push((start, end - 1, i));
            }
        }
        SlotTable::from_ranges(&ranges, servers)
    }

    /// The server index that owns `slot` (taken modulo 16384).
    #[inline]
    pub fn server_for_slot(&self, slot: u16) -> usize {
        usize::from(self.owner[usize::from(slot) & (SLOT_COUNT - 1)])
    }

    /// The server index for `key` (hash tags applied).
    #[inline]
    pub fn server_for_key(&self, key: &[u8]) -> usize {
        self.server_for_slot(key_slot(key))
    }

    /// Number of servers the table was validated against.
    pub fn servers(&self) -> usize {
        self.servers
    }

    /// The table as maximal contiguous ranges, in slot order.
    pub fn ranges(&self) -> Vec<SlotRange> {
        let mut out: Vec<SlotRange> = Vec::new();
        for (slot, &server) in self.owner.iter().enumerate() {
            let server = usize::from(server);
            match out.last_mut() {
                Some(r) if r.server == server => r.end = slot as u16,
                _ => out.push(SlotRange {
                    start: slot as u16,
                    end: slot as u16,
                    server,
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc16_matches_the_redis_test_vector() {
        // Redis Cluster spec: "123456789" -> 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn known_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
    }

    #[test]
    fn hash_tags_follow_the_cluster_spec() {
        assert_eq!(cluster_hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(cluster_hash_tag(b"{user1000}.followers"), b"user1000");
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        // The first '{' is followed by '}' with nothing between: the whole key is hashed.
        assert_eq!(cluster_hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        // The tag runs from the first '{' to the first '}' after it.
        assert_eq!(cluster_hash_tag(b"foo{{bar}}zap"), b"{bar");
        // Only the first tag counts.
        assert_eq!(cluster_hash_tag(b"foo{bar}{zap}"), b"bar");
        // No closing brace: whole key.
        assert_eq!(cluster_hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(cluster_hash_tag(b"}foo{"), b"}foo{");
    }

    #[test]
    fn slot_table_rejects_gaps_overlaps_and_bad_servers() {
        let ok = SlotTable::from_ranges(&[(0, 8191, 0), (8192, 16383, 1)], 2);
        assert!(ok.is_ok());
        assert_eq!(
            SlotTable::from_ranges(&[(0, 8191, 0), (8193, 16383, 1)], 2),
            Err(RedisRouteError::SlotUncovered { slot: 8192 })
        );
        assert_eq!(
            SlotTable::from_ranges(&[(0, 8191, 0), (8191, 16383, 1)], 2),
            Err(RedisRouteError::SlotOverlap {
                slot: 8191,
                first: 0,
                second: 1
            })
        );
        assert!(matches!(
            SlotTable::from_ranges(&[(0, 16383, 2)], 2),
            Err(RedisRouteError::SlotServerOutOfRange { server: 2, .. })
        ));
        assert!(matches!(
            SlotTable::from_ranges(&[(10, 5, 0)], 1),
            Err(RedisRouteError::SlotRangeInvalid { .. })
        ));
        assert!(matches!(
            SlotTable::from_ranges(&[(0, 16384, 0)], 1),
            Err(RedisRouteError::SlotRangeInvalid { .. })
        ));
    }

    #[test]
    fn even_split_matches_ranges() {
        let t = SlotTable::even(3).unwrap();
        let r = t.ranges();
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].start, r[0].end, r[0].server), (0, 5460, 0));
        assert_eq!((r[2].start, r[2].end, r[2].server), (10922, 16383, 2));
        assert_eq!(t.server_for_key(b"foo"), 2); // slot 12182
        assert_eq!(t.server_for_key(b"hello"), 0); // slot 866
    }

    proptest! {
        #[test]
        fn a_tagged_key_has_the_slot_of_its_tag(
            prefix in proptest::collection::vec(any::<u8>().prop_filter("no brace", |b| *b != b'{'), 0..16),
            tag in proptest::collection::vec(any::<u8>().prop_filter("no brace", |b| *b != b'}'), 1..16),
            suffix in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut key = prefix.clone();
            key.push(b'{');
            key.extend_from_slice(&tag);
            key.push(b'}');
            key.extend_from_slice(&suffix);
            prop_assert_eq!(key_slot(&key), key_slot(&tag));
        }

        #[test]
        fn slot_and_server_are_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1usize..20) {
            prop_assert!(usize::from(key_slot(&key)) < SLOT_COUNT);
            let t = SlotTable::even(n).unwrap();
            prop_assert!(t.server_for_key(&key) < n);
        }
    }
}
