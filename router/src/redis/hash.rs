//! twemproxy's (nutcracker's) key hash functions, bit-for-bit, quirks included.
//!
//! nutcracker hashes keys with the function named by a pool's `hash:` setting and feeds the 32-bit
//! result to the distribution. To route the same key to the same server, the functions are reproduced
//! exactly as nutcracker 0.5 computes them on x86-64 Linux, including two quirks that differ from the
//! textbook algorithms:
//!
//! - `fnv1a_64` runs in 32 bits: nutcracker truncates the 64-bit offset basis and prime to `u32` before
//!   the loop (`0x84222325`, `0x1b3`), so it is not FNV-1a 64 truncated at the end;
//! - several functions read the key as C `char`, which is signed on x86-64: a byte >= 0x80 is
//!   sign-extended to `0xffffff..` before it is mixed in (`one_at_a_time`, `fnv1_32`, `fnv1a_32`,
//!   `fnv1_64`, `fnv1a_64`, and the odd tail byte of `hsieh`).
//!
//! `crc16` keeps its running value in 32 bits without masking, as nutcracker does, so it is not the
//! Redis Cluster CRC16 (that one is [`crate::redis::slots::crc16`]).

use md5::{Digest, Md5};

use super::error::RedisRouteError;

/// One of nutcracker's `hash:` functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashFunction {
    /// Jenkins' one-at-a-time hash.
    OneAtATime,
    /// First four bytes of MD5, little-endian.
    Md5,
    /// nutcracker's unmasked CRC16 (XMODEM table).
    Crc16,
    /// CRC32 (IEEE), bits 16..31 of the result masked to 15 bits (libmemcached's `crc`).
    Crc32,
    /// CRC32 (IEEE), the full 32-bit checksum.
    Crc32a,
    /// FNV-1 with the 64-bit parameters, truncated to 32 bits.
    Fnv1_64,
    /// nutcracker's default: FNV-1a computed in 32 bits with the truncated 64-bit parameters.
    Fnv1a64,
    /// FNV-1, 32 bits.
    Fnv1_32,
    /// FNV-1a, 32 bits.
    Fnv1a32,
    /// Paul Hsieh's SuperFastHash.
    Hsieh,
    /// MurmurHash2 with nutcracker's length-derived seed.
    Murmur,
    /// Bob Jenkins' lookup3 `hashlittle` with initval 13.
    Jenkins,
}

impl HashFunction {
    /// Every function, in nutcracker's documentation order.
    pub const ALL: [HashFunction; 12] = [
        HashFunction::OneAtATime,
        HashFunction::Md5,
        HashFunction::Crc16,
        HashFunction::Crc32,
        HashFunction::Crc32a,
        HashFunction::Fnv1_64,
        HashFunction::Fnv1a64,
        HashFunction::Fnv1_32,
        HashFunction::Fnv1a32,
        HashFunction::Hsieh,
        HashFunction::Murmur,
        HashFunction::Jenkins,
    ];

    /// The function's name in a nutcracker config (`hash: fnv1a_64`).
    pub const fn name(self) -> &'static str {
        match self {
            HashFunction::OneAtATime => "one_at_a_time",
            HashFunction::Md5 => "md5",
            HashFunction::Crc16 => "crc16",
            HashFunction::Crc32 => "crc32",
            HashFunction::Crc32a => "crc32a",
            HashFunction::Fnv1_64 => "fnv1_64",
            HashFunction::Fnv1a64 => "fnv1a_64",
            HashFunction::Fnv1_32 => "fnv1_32",
            HashFunction::Fnv1a32 => "fnv1a_32",
            HashFunction::Hsieh => "hsieh",
            HashFunction::Murmur => "murmur",
            HashFunction::Jenkins => "jenkins",
        }
    }

    /// Parse a nutcracker `hash:` name.
    pub fn from_name(name: &str) -> Result<Self, RedisRouteError> {
        HashFunction::ALL
            .into_iter()
            .find(|h| h.name() == name)
            .ok_or_else(|| RedisRouteError::UnknownHash(name.to_owned()))
    }

    /// Hash `key` as nutcracker's function of the same name does.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashFunction::OneAtATime => one_at_a_time(key),
            HashFunction::Md5 => md5(key),
            HashFunction::Crc16 => crc16(key),
            HashFunction::Crc32 => crc32(key),
            HashFunction::Crc32a => crc32a(key),
            HashFunction::Fnv1_64 => fnv1_64(key),
            HashFunction::Fnv1a64 => fnv1a_64(key),
            HashFunction::Fnv1_32 => fnv1_32(key),
            HashFunction::Fnv1a32 => fnv1a_32(key),
            HashFunction::Hsieh => hsieh(key),
            HashFunction::Murmur => murmur(key),
            HashFunction::Jenkins => jenkins(key),
        }
    }
}

/// A byte as C `char` on x86-64 (signed) widened to `u32`: 0x80 becomes 0xffff_ff80.
#[inline]
fn signed(b: u8) -> u32 {
    b as i8 as i32 as u32
}

/// Jenkins' one-at-a-time over signed chars.
pub fn one_at_a_time(key: &[u8]) -> u32 {
    let mut v: u32 = 0;
    for &b in key {
        v = v.wrapping_add(signed(b));
        v = v.wrapping_add(v << 10);
        v ^= v >> 6;
    }
    v = v.wrapping_add(v << 3);
    v ^= v >> 11;
    v.wrapping_add(v << 15)
}

/// First four bytes of the MD5 digest, little-endian.
pub fn md5(key: &[u8]) -> u32 {
    let d = Md5::digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// CRC16 with the XMODEM table, its running value kept in 32 bits as nutcracker does.
pub fn crc16(key: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &b in key {
        let idx = ((crc >> 8) ^ u32::from(b)) & 0xff;
        crc = (crc << 8) ^ u32::from(super::slots::CRC16_TABLE[idx as usize]);
    }
    crc
}

/// The CRC32 (IEEE 802.3, reflected 0xEDB88320) lookup table.
const CRC32_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Standard CRC32 of `key`.
fn crc32_ieee(key: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in key {
        crc = CRC32_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// libmemcached's `crc`: bits 16..30 of the CRC32.
pub fn crc32(key: &[u8]) -> u32 {
    (crc32_ieee(key) >> 16) & 0x7fff
}

/// The full CRC32.
pub fn crc32a(key: &[u8]) -> u32 {
    crc32_ieee(key)
}

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_INIT: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

/// FNV-1 64 (multiply then xor), truncated to 32 bits.
pub fn fnv1_64(key: &[u8]) -> u32 {
    let mut h = FNV_64_INIT;
    for &b in key {
        h = h.wrapping_mul(FNV_64_PRIME);
        h ^= b as i8 as i64 as u64;
    }
    h as u32
}

/// nutcracker's `fnv1a_64`: FNV-1a in 32 bits with the truncated 64-bit basis and prime.
pub fn fnv1a_64(key: &[u8]) -> u32 {
    let mut h = FNV_64_INIT as u32;
    for &b in key {
        h ^= signed(b);
        h = h.wrapping_mul(FNV_64_PRIME as u32);
    }
    h
}

/// FNV-1 32.
pub fn fnv1_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_INIT;
    for &b in key {
        h = h.wrapping_mul(FNV_32_PRIME);
        h ^= signed(b);
    }
    h
}

/// FNV-1a 32.
pub fn fnv1a_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_INIT;
    for &b in key {
        h ^= signed(b);
        h = h.wrapping_mul(FNV_32_PRIME);
    }
    h
}

/// Two bytes as a little-endian 16-bit value.
#[inline]
fn get16(b: &[u8], i: usize) -> u32 {
    u32::from(b[i]) | (u32::from(b[i + 1]) << 8)
}

/// Paul Hsieh's SuperFastHash as nutcracker compiles it (the odd tail byte is a signed char).
pub fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut hash: u32 = 0;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        hash = hash.wrapping_add(get16(c, 0));
        let tmp = (get16(c, 2) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    let rem = chunks.remainder();
    match rem.len() {
        3 => {
            hash = hash.wrapping_add(get16(rem, 0));
            hash ^= hash << 16;
            hash ^= signed(rem[2]) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        2 => {
            hash = hash.wrapping_add(get16(rem, 0));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        1 => {
            hash = hash.wrapping_add(u32::from(rem[0]));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}

/// MurmurHash2 (32 bit) with nutcracker's seed `0xdeadbeef * len`.
pub fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let len = key.len() as u32;
    let seed = 0xdead_beef_u32.wrapping_mul(len);
    let mut h = seed ^ len;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rem = chunks.remainder();
    if rem.len() >= 3 {
        h ^= u32::from(rem[2]) << 16;
    }
    if rem.len() >= 2 {
        h ^= u32::from(rem[1]) << 8;
    }
    if !rem.is_empty() {
        h ^= u32::from(rem[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// Bob Jenkins' lookup3 `hashlittle` (little-endian reads) with an initial value.
pub fn lookup3_hashlittle(key: &[u8], initval: u32) -> u32 {
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |k: &[u8], i: usize| -> u32 {
        let mut w = 0u32;
        for j in 0..4 {
            if let Some(&byte) = k.get(i + j) {
                w |= u32::from(byte) << (8 * j);
            }
        }
        w
    };
    let mut k = key;
    while k.len() > 12 {
        a = a.wrapping_add(word(k, 0));
        b = b.wrapping_add(word(k, 4));
        c = c.wrapping_add(word(k, 8));
        // mix(a, b, c)
        a = a.wrapping_sub(c);
        a ^= c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a);
        b ^= a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b);
        c ^= b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c);
        a ^= c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a);
        b ^= a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b);
        c ^= b.rotate_left(4);
        b = b.wrapping_add(a);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    // The last 1..=12 bytes, zero-padded (the byte-wise branch of hashlittle).
    a = a.wrapping_add(word(k, 0));
    b = b.wrapping_add(word(k, 4));
    c = c.wrapping_add(word(k, 8));
    // final(a, b, c)
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

/// nutcracker's `jenkins`: lookup3 `hashlittle` with initval 13.
pub fn jenkins(key: &[u8]) -> u32 {
    lookup3_hashlittle(key, 13)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_32_matches_the_published_fnv_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
        assert_eq!(fnv1_32(b"foobar"), 0x31f0_b262);
    }

    #[test]
    fn fnv1_64_is_the_low_half_of_fnv1_64() {
        assert_eq!(fnv1_64(b"a"), 0x8601_b7be); // FNV-1 64("a") = 0xaf63bd4c8601b7be
        assert_eq!(fnv1_64(b"foobar"), 0xa4dd_a9c2); // 0x340d8765a4dda9c2
    }

    #[test]
    fn fnv1a_64_uses_the_truncated_parameters() {
        // nutcracker's loop: h = 0x84222325; h ^= c; h *= 0x1b3, all mod 2^32.
        assert_eq!(fnv1a_64(b""), 0x8422_2325);
        let one = (0x8422_2325u32 ^ u32::from(b'a')).wrapping_mul(0x1b3);
        assert_eq!(fnv1a_64(b"a"), one);
        // A byte >= 0x80 is a sign-extended char.
        let high = (0x8422_2325u32 ^ 0xffff_ff80).wrapping_mul(0x1b3);
        assert_eq!(fnv1a_64(&[0x80]), high);
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32a(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"123456789"), 0x4bf4);
        assert_eq!(crc32a(b""), 0);
    }

    #[test]
    fn md5_is_the_little_endian_prefix_of_the_digest() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(md5(b""), 0xd98c_1dd4);
        // MD5("abc") = 900150983cd24fb0d6963f7d28e17f72
        assert_eq!(md5(b"abc"), 0x9850_0190);
    }

    #[test]
    fn one_at_a_time_matches_known_values() {
        assert_eq!(one_at_a_time(b"a"), 0xca2e_9442);
        assert_eq!(
            one_at_a_time(b"The quick brown fox jumps over the lazy dog"),
            0x519e_91f5
        );
    }

    #[test]
    fn lookup3_matches_the_reference_driver() {
        // lookup3.c driver5: hashlittle("", 0, 0) and "Four score and seven years ago" with 0 and 1.
        assert_eq!(lookup3_hashlittle(b"", 0), 0xdead_beef);
        let s = b"Four score and seven years ago";
        assert_eq!(lookup3_hashlittle(s, 0), 0x1777_0551);
        assert_eq!(lookup3_hashlittle(s, 1), 0xcd62_8161);
    }

    #[test]
    fn crc16_keeps_high_bits_unlike_cluster_crc16() {
        // On one byte both agree; from the third byte on nutcracker's unmasked value grows past 16 bits.
        assert_eq!(crc16(b"1"), u32::from(super::super::slots::crc16(b"1")));
        assert_eq!(
            crc16(b"123456789") & 0xffff,
            u32::from(super::super::slots::crc16(b"123456789"))
        );
        assert!(crc16(b"123456789") > 0xffff);
    }

    #[test]
    fn names_round_trip() {
        for h in HashFunction::ALL {
            assert_eq!(HashFunction::from_name(h.name()), Ok(h));
        }
        assert!(HashFunction::from_name("sha1").is_err());
    }
}
