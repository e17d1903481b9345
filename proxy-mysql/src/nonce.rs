//! Login nonces (the handshake's 20-byte scramble) from the kernel's CSPRNG.
//!
//! The scramble is what makes a captured `mysql_native_password` / `caching_sha2_password` answer
//! useless on another connection; a predictable one (a PRNG seeded by the clock) lets an observer
//! replay or precompute answers. It is drawn with `getrandom(2)`, as the servers draw theirs.

use std::io;

/// Length of the scramble in the handshake.
pub const SCRAMBLE_LEN: usize = 20;

/// Fills `buf` from the kernel's CSPRNG (`getrandom(2)`, no flags: it waits only until the pool
/// is first initialised at boot).
pub fn fill_os_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice that the kernel
        // writes at most `rest.len()` bytes into.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// A fresh scramble: bytes drawn uniformly from `33..=126` (printable ASCII without space, as the
/// servers send; clients read the scramble as a NUL-terminated string, so it must hold no NUL).
pub fn scramble() -> io::Result<[u8; SCRAMBLE_LEN]> {
    let mut out = [0u8; SCRAMBLE_LEN];
    let mut n = 0;
    let mut pool = [0u8; 64];
    while n < SCRAMBLE_LEN {
        fill_os_random(&mut pool)?;
        // Rejection sampling: 188 = 2 * 94, so `b % 94` is uniform over the accepted bytes.
        for &b in pool.iter().filter(|&&b| b < 188) {
            out[n] = b % 94 + 33;
            n += 1;
            if n == SCRAMBLE_LEN {
                break;
            }
        }
    }
    Ok(out)
}

/// A random 64-bit seed from the kernel's CSPRNG (falls back to the clock if it cannot be read;
/// only load-balancing choices use it).
pub fn seed() -> u64 {
    let mut b = [0u8; 8];
    if fill_os_random(&mut b).is_ok() {
        return u64::from_le_bytes(b) | 1;
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrambles_are_printable_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = scramble().expect("getrandom");
            assert!(s.iter().all(|&b| (33..=126).contains(&b)), "{s:?}");
            assert!(seen.insert(s), "repeated scramble");
        }
        // Every value of the range shows up: the draw covers it (20,000 draws over 94 values).
        let mut hist = [0u32; 128];
        for s in &seen {
            for &b in s {
                hist[usize::from(b)] += 1;
            }
        }
        assert!(hist[33..=126].iter().all(|&c| c > 0), "{hist:?}");
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(seed(), seed());
    }
}
