//! Key → server distributions: ketama, modula and random (twemproxy) and Redis Cluster slots.
//!
//! [`Distribution::server_for_key`] is the hot-path entry point: it hashes without allocating and returns
//! the index of the server in the configured list.
//!
//! - **ketama** and **modula** hash the key with nutcracker's `hash:` function ([`HashFunction`]) after
//!   applying its `hash_tag` ([`KeyHasher`]); an empty key and a single-server pool hash to 0, as in
//!   nutcracker's `server_pool_hash`. Ketama then looks the hash up on the continuum
//!   ([`crate::redis::ketama`]); modula takes `hash % total_weight` over the servers laid out in
//!   nutcracker's order, each repeated `weight` times (nutcracker's `nc_modula.c`). nutcracker sorts a
//!   pool's servers by name (shorter names first, then bytewise: `conf_validate_server`) before
//!   building the ring, so modula does the same and maps back to the configured index.
//! - **random** ignores the key and picks a live server uniformly (nutcracker's `nc_random.c`), from a
//!   per-thread generator so that cores share nothing.
//! - **slots** is Redis Cluster: CRC16 of the key or of its `{tag}`, modulo 16384, looked up in a
//!   [`SlotTable`].

use std::cell::Cell;

use super::error::RedisRouteError;
use super::hash::HashFunction;
use super::ketama::{Ketama, KetamaServer};
use super::slots::SlotTable;

/// nutcracker's key hashing: a hash function and an optional two-byte `hash_tag` such as `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHasher {
    /// The `hash:` function.
    pub function: HashFunction,
    /// The `hash_tag:` delimiters, if any.
    pub tag: Option<[u8; 2]>,
}

impl KeyHasher {
    /// A hasher without a hash tag.
    pub const fn new(function: HashFunction) -> Self {
        KeyHasher {
            function,
            tag: None,
        }
    }

    /// A hasher with a `hash_tag` given as in nutcracker's config (exactly two bytes, e.g. `"{}"`).
    pub fn with_tag(function: HashFunction, tag: &str) -> Result<Self, RedisRouteError> {
        match tag.as_bytes() {
            &[open, close] => Ok(KeyHasher {
                function,
                tag: Some([open, close]),
            }),
            other => Err(RedisRouteError::BadHashTag(other.len())),
        }
    }

    /// The bytes nutcracker hashes for `key`: between the first `open` and the first `close` after it
    /// when at least one byte lies between them, else the whole key.
    #[inline]
    pub fn hashed_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        if let Some([open, close]) = self.tag
            && let Some(start) = key.iter().position(|&b| b == open)
        {
            let rest = &key[start + 1..];
            if let Some(end) = rest.iter().position(|&b| b == close)
                && end > 0
            {
                return &rest[..end];
            }
        }
        key
    }

    /// The 32-bit hash nutcracker routes `key` by; 0 for an empty (tag-reduced) key.
    #[inline]
    pub fn hash(&self, key: &[u8]) -> u32 {
        let part = self.hashed_part(key);
        if part.is_empty() {
            0
        } else {
            self.function.hash(part)
        }
    }
}

/// twemproxy's modula distribution: `hash % total_weight` over servers repeated by weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modula {
    /// `(cumulative weight end, server index)` of each live server, in server order.
    ends: Box<[(u64, u32)]>,
    total: u64,
}

impl Modula {
    /// Build from the pool's servers (names and weights); `live(index)` false ejects a server.
    pub fn with_live(
        servers: &[KetamaServer],
        live: impl Fn(usize) -> bool,
    ) -> Result<Self, RedisRouteError> {
        if servers.is_empty() {
            return Err(RedisRouteError::NoServers);
        }
        // nutcracker's ring order: servers sorted by name, shorter first (its `string_compare`).
        let mut order: Vec<usize> = (0..servers.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (servers[a].name.as_bytes(), servers[b].name.as_bytes());
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        });
        let mut ends = Vec::with_capacity(servers.len());
        let mut total = 0u64;
        for i in order {
            let w = servers[i].weight;
            if w == 0 {
                return Err(RedisRouteError::ZeroWeight { index: i });
            }
            if live(i) {
                total += u64::from(w);
                ends.push((total, i as u32));
            }
        }
        if total == 0 {
            return Err(RedisRouteError::NoLiveServers);
        }
        Ok(Modula {
            ends: ends.into_boxed_slice(),
            total,
        })
    }

    /// The server index for a key hash.
    #[inline]
    pub fn server_for_hash(&self, hash: u32) -> usize {
        let r = u64::from(hash) % self.total;
        let i = self.ends.partition_point(|&(end, _)| end <= r);
        self.ends.get(i).map_or(0, |&(_, s)| s as usize)
    }
}

thread_local! {
    /// Per-thread xorshift state for the random distribution (no sharing between cores).
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A uniformly distributed `u32` from the calling thread's generator.
fn next_random() -> u32 {
    RNG.with(|s| {
        let mut x = s.get();
        if x == 0 {
            // Seed from the address of the thread-local itself: distinct per thread, no clock needed.
            x = (s as *const Cell<u64> as u64) ^ 0x9e37_79b9_7f4a_7c15;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 32) as u32
    })
}

/// How a pool maps keys to servers; `server_for_key` returns an index into the pool's server list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// twemproxy ketama consistent hashing.
    Ketama {
        /// How the key is hashed.
        hasher: KeyHasher,
        /// The continuum.
        ketama: Ketama,
        /// Number of servers in the pool (live or not).
        servers: usize,
    },
    /// twemproxy modula.
    Modula {
        /// How the key is hashed.
        hasher: KeyHasher,
        /// The weighted server ring.
        modula: Modula,
        /// Number of servers in the pool (live or not).
        servers: usize,
    },
    /// twemproxy random: any live server.
    Random {
        /// Indexes of the live servers.
        live: Box<[u32]>,
        /// Number of servers in the pool (live or not).
        servers: usize,
    },
    /// Redis Cluster slots.
    Slots(SlotTable),
}

impl Distribution {
    /// A ketama distribution over `servers`, all live.
    pub fn ketama(hasher: KeyHasher, servers: &[KetamaServer]) -> Result<Self, RedisRouteError> {
        Ok(Distribution::Ketama {
            hasher,
            ketama: Ketama::new(servers)?,
            servers: servers.len(),
        })
    }

    /// A modula distribution over `servers` (names order the ring as in nutcracker), all live.
    pub fn modula(hasher: KeyHasher, servers: &[KetamaServer]) -> Result<Self, RedisRouteError> {
        Ok(Distribution::Modula {
            hasher,
            modula: Modula::with_live(servers, |_| true)?,
            servers: servers.len(),
        })
    }

    /// A random distribution over `servers` servers, all live.
    pub fn random(servers: usize) -> Result<Self, RedisRouteError> {
        if servers == 0 {
            return Err(RedisRouteError::NoServers);
        }
        Ok(Distribution::Random {
            live: (0..servers as u32).collect(),
            servers,
        })
    }

    /// The distribution's name as written in a config (`ketama`, `modula`, `random`, `slots`).
    pub fn kind(&self) -> &'static str {
        match self {
            Distribution::Ketama { .. } => "ketama",
            Distribution::Modula { .. } => "modula",
            Distribution::Random { .. } => "random",
            Distribution::Slots(_) => "slots",
        }
    }

    /// Number of servers indexes returned by `server_for_key` range over.
    pub fn servers(&self) -> usize {
        match self {
            Distribution::Ketama { servers, .. }
            | Distribution::Modula { servers, .. }
            | Distribution::Random { servers, .. } => *servers,
            Distribution::Slots(t) => t.servers(),
        }
    }

    /// The index of the server that serves `key`. Does not allocate.
    #[inline]
    pub fn server_for_key(&self, key: &[u8]) -> usize {
        match self {
            Distribution::Ketama {
                hasher,
                ketama,
                servers,
            } => {
                if *servers == 1 {
                    return ketama.server_for_hash(0);
                }
                ketama.server_for_hash(hasher.hash(key))
            }
            Distribution::Modula {
                hasher,
                modula,
                servers,
            } => {
                if *servers == 1 {
                    return modula.server_for_hash(0);
                }
                modula.server_for_hash(hasher.hash(key))
            }
            Distribution::Random { live, .. } => {
                let n = live.len().max(1);
                live.get(next_random() as usize % n)
                    .map_or(0, |&s| s as usize)
            }
            Distribution::Slots(table) => table.server_for_key(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn servers(n: usize) -> Vec<KetamaServer> {
        (0..n)
            .map(|i| KetamaServer::from_addr("127.0.0.1", 7000 + i as u16, 1, None))
            .collect()
    }

    #[test]
    fn hash_tag_selects_the_tagged_part_like_nutcracker() {
        let h = KeyHasher::with_tag(HashFunction::Fnv1a64, "{}").unwrap();
        assert_eq!(h.hashed_part(b"{user1000}.following"), b"user1000");
        assert_eq!(h.hashed_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(h.hashed_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(h.hashed_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(h.hash(b"a{x}b"), h.hash(b"x"));
        let colon = KeyHasher::with_tag(HashFunction::Md5, "::").unwrap();
        assert_eq!(colon.hashed_part(b"user:42:name"), b"42");
        assert_eq!(
            KeyHasher::with_tag(HashFunction::Md5, "{"),
            Err(RedisRouteError::BadHashTag(1))
        );
        // Without a tag the whole key is hashed.
        assert_eq!(
            KeyHasher::new(HashFunction::Md5).hashed_part(b"{a}"),
            b"{a}"
        );
    }

    #[test]
    fn empty_keys_hash_to_zero() {
        assert_eq!(KeyHasher::new(HashFunction::Fnv1a64).hash(b""), 0);
    }

    #[test]
    fn modula_repeats_servers_by_weight() {
        let named = |ws: &[u32]| -> Vec<KetamaServer> {
            ws.iter()
                .enumerate()
                .map(|(i, &w)| KetamaServer::named(format!("s{i}"), w))
                .collect()
        };
        let m = Modula::with_live(&named(&[1, 2, 1]), |_| true).unwrap();
        // Ring: [0, 1, 1, 2].
        let got: Vec<usize> = (0..8).map(|h| m.server_for_hash(h)).collect();
        assert_eq!(got, vec![0, 1, 1, 2, 0, 1, 1, 2]);
        // The ring follows nutcracker's name order, not the configured order.
        let servers = [
            KetamaServer::named("bb", 1),
            KetamaServer::named("a", 1),
            KetamaServer::named("ab", 1),
        ];
        let m = Modula::with_live(&servers, |_| true).unwrap();
        let got: Vec<usize> = (0..3).map(|h| m.server_for_hash(h)).collect();
        assert_eq!(got, vec![1, 2, 0]);
        let m = Modula::with_live(&named(&[1, 2, 1]), |i| i != 1).unwrap();
        let got: Vec<usize> = (0..4).map(|h| m.server_for_hash(h)).collect();
        assert_eq!(got, vec![0, 2, 0, 2]);
    }

    #[test]
    fn random_covers_every_server() {
        let d = Distribution::random(3).unwrap();
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[d.server_for_key(b"k")] += 1;
        }
        assert!(seen.iter().all(|&c| c > 500), "{seen:?}");
    }

    proptest! {
        #[test]
        fn server_for_key_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..48), n in 1usize..12, w in 1u32..5) {
            let h = KeyHasher::new(HashFunction::Fnv1a64);
            let ds = [
                Distribution::ketama(h, &servers(n)).unwrap(),
                Distribution::modula(h, &servers(n).into_iter().map(|s| KetamaServer { weight: w, ..s }).collect::<Vec<_>>()).unwrap(),
                Distribution::random(n).unwrap(),
                Distribution::Slots(SlotTable::even(n).unwrap()),
            ];
            for d in &ds {
                prop_assert!(d.server_for_key(&key) < n);
                prop_assert_eq!(d.servers(), n);
            }
        }

    }

    proptest! {
        // Each case builds two MD5 continuums and hashes 4000 keys: 32 cases keep a debug-build run
        // within seconds while still covering every server count several times.
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn ketama_keeps_most_keys_when_a_server_is_added(n in 2usize..8, seed in any::<u32>()) {
            let h = KeyHasher::new(HashFunction::Md5);
            let before = Distribution::ketama(h, &servers(n)).unwrap();
            let after = Distribution::ketama(h, &servers(n + 1)).unwrap();
            let total = 2000u32;
            let mut moved = 0;
            for i in 0..total {
                let key = format!("key:{seed}:{i}");
                let a = before.server_for_key(key.as_bytes());
                let b = after.server_for_key(key.as_bytes());
                if a != b {
                    // A key that moves must move to the new server.
                    prop_assert_eq!(b, n);
                    moved += 1;
                }
            }
            // Ideally 1/(n+1) of the keys move; allow generous slack for variance.
            let expected = f64::from(total) / (n as f64 + 1.0);
            prop_assert!(f64::from(moved) < expected * 1.6 + 50.0, "moved {} of {}", moved, total);

        }
    }
}
