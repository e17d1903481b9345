//! Named time zones from the system's TZif files (`/usr/share/zoneinfo/NAME`, RFC 8536), read by our own
//! parser: the UTC offset in force at any instant, from the file's transition table.
//!
//! Only the table is used, not the POSIX rule in the file's footer: "fat" TZif files (the default of most
//! distributions) list every transition up to 2037, so offsets are exact until then and the last offset is
//! used after. A "slim" file (transitions only up to when the current rule began, the rest in the footer)
//! is refused when its zone still observes daylight saving, rather than used with wrong offsets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The transitions of one zone.
#[derive(Debug, PartialEq, Eq)]
pub struct TzData {
    /// The zone name.
    pub name: String,
    /// Transition instants (Unix seconds), ascending.
    trans: Vec<i64>,
    /// The UTC offset (seconds east) from each transition on.
    after: Vec<i64>,
    /// The offset before the first transition.
    initial: i64,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], at: usize) -> Option<i64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(i64::from_be_bytes(a))
}

/// Parses a TZif file (version 1, 2, 3 or 4); None when malformed.
pub fn parse(name: &str, b: &[u8]) -> Option<TzData> {
    if b.get(0..4)? != b"TZif" {
        return None;
    }
    let counts = |at: usize| -> Option<[usize; 6]> {
        let mut c = [0usize; 6];
        for (i, v) in c.iter_mut().enumerate() {
            *v = be32(b, at + 20 + 4 * i)? as usize;
        }
        Some(c)
    };
    // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
    let [isut, isstd, leap, timecnt, typecnt, charcnt] = counts(0)?;
    let v1_len = timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut;
    let (base, size, c) = if *b.get(4)? >= b'2' {
        let h2 = 44 + v1_len;
        if b.get(h2..h2 + 4)? != b"TZif" {
            return None;
        }
        (h2 + 44, 8, counts(h2)?)
    } else {
        (44, 4, [isut, isstd, leap, timecnt, typecnt, charcnt])
    };
    let [_, _, _, timecnt, typecnt, _] = c;
    if typecnt == 0 || timecnt > 100_000 || typecnt > 256 {
        return None;
    }
    let mut trans = Vec::with_capacity(timecnt);
    for i in 0..timecnt {
        let t = if size == 8 {
            be64(b, base + 8 * i)?
        } else {
            be32(b, base + 4 * i)? as i32 as i64
        };
        trans.push(t);
    }
    let idx_at = base + size * timecnt;
    let types_at = idx_at + timecnt;
    let offset_of = |ty: usize| -> Option<i64> {
        if ty >= typecnt {
            return None;
        }
        Some(be32(b, types_at + 6 * ty)? as i32 as i64)
    };
    let mut after = Vec::with_capacity(timecnt);
    for i in 0..timecnt {
        after.push(offset_of(*b.get(idx_at + i)? as usize)?);
    }
    if trans.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    // RFC 8536: before the first transition, type 0 is in force.
    let initial = offset_of(0)?;
    Some(TzData {
        name: name.to_string(),
        trans,
        after,
        initial,
    })
}

impl TzData {
    /// The UTC offset (seconds east) in force at Unix second `t`.
    pub fn offset_at(&self, t: i64) -> i64 {
        match self.trans.partition_point(|x| *x <= t) {
            0 => self.initial,
            i => self.after[i - 1],
        }
    }

    /// The UTC instants whose local wall time is `local` (Unix seconds as if local were UTC), ascending:
    /// none in a spring-forward gap, two in a fall-back overlap.
    pub fn instants(&self, local: i64) -> Vec<i64> {
        const SPAN: i64 = 26 * 3600;
        let mut offsets = vec![self.offset_at(local - SPAN)];
        let from = self.trans.partition_point(|x| *x <= local - SPAN);
        let to = self.trans.partition_point(|x| *x <= local + SPAN);
        offsets.extend(self.after[from..to].iter().copied());
        let mut out: Vec<i64> = offsets
            .into_iter()
            .map(|o| local - o)
            .filter(|u| self.offset_at(*u) == local - u)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn observes_dst_after(&self, t: i64) -> bool {
        let i = self.trans.partition_point(|x| *x <= t);
        i < self.trans.len()
    }
}

fn cache() -> &'static Mutex<HashMap<String, Arc<TzData>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<TzData>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Whether `name` can be a zone file name (`Area/City`, no `..`, no absolute path).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'-' | b'+'))
}

/// Loads zone `name` from `/usr/share/zoneinfo` (cached); the error says why not.
pub fn load(name: &str) -> Result<Arc<TzData>, String> {
    if !valid_name(name) {
        return Err(format!("{name:?} is not a zone name (Area/City)"));
    }
    if let Ok(c) = cache().lock()
        && let Some(z) = c.get(name)
    {
        return Ok(z.clone());
    }
    let path = std::path::Path::new("/usr/share/zoneinfo").join(name);
    let bytes =
        std::fs::read(&path).map_err(|e| format!("zone {name:?}: {}: {e}", path.display()))?;
    if bytes.len() > 1 << 20 {
        return Err(format!("zone {name:?}: file too large"));
    }
    let z = parse(name, &bytes).ok_or_else(|| format!("zone {name:?}: not a valid TZif file"))?;
    // A slim file whose table stops before 2037 while its footer has a DST rule would give wrong offsets
    // after its last transition.
    let footer_dst = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .and_then(|end| {
            let start = bytes[..end].iter().rposition(|b| *b == b'\n')?;
            Some(bytes[start + 1..end].contains(&b','))
        })
        .unwrap_or(false);
    if footer_dst && !z.observes_dst_after(2_082_758_400) {
        // 2036-01-01: a fat file has transitions beyond it.
        return Err(format!(
            "zone {name:?}: this system's zone file is \"slim\" (daylight-saving rules in its footer), \
             which is not supported yet; use a fixed offset"
        ));
    }
    let z = Arc::new(z);
    if let Ok(mut c) = cache().lock()
        && c.len() < 1024
    {
        c.insert(name.to_string(), z.clone());
    }
    Ok(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_offsets_and_dst_edges() {
        let z = load("Europe/Paris").unwrap();
        // 2026-01-15 12:00 UTC: CET (+1); 2026-07-15: CEST (+2).
        assert_eq!(z.offset_at(1_768_478_400), 3600);
        assert_eq!(z.offset_at(1_784_116_800), 7200);
        // 2026-03-29 01:00 UTC the clocks go 02:00 → 03:00 local: 02:30 local does not exist.
        let gap = 1_774_742_400 + 2 * 3600 + 1800; // 2026-03-29 02:30 as if UTC
        assert_eq!(z.instants(gap), Vec::<i64>::new());
        // 2026-10-25 01:00 UTC the clocks go 03:00 → 02:00: 02:30 local happens twice.
        let overlap = 1_792_886_400 + 2 * 3600 + 1800; // 2026-10-25 02:30 as if UTC
        assert_eq!(z.instants(overlap), vec![overlap - 7200, overlap - 3600]);
        assert!(load("../etc/passwd").is_err());
        assert!(load("Nowhere/Nothing").is_err());
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        assert!(parse("x", b"").is_none());
        assert!(parse("x", b"TZif2").is_none());
        let real = std::fs::read("/usr/share/zoneinfo/Europe/Paris").unwrap();
        for cut in [10, 44, 60, 200, real.len() / 2] {
            let _ = parse("x", &real[..cut.min(real.len())]);
        }
    }
}
