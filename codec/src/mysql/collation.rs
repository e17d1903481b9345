//! Collations: how MySQL/MariaDB order and group strings, chosen by the collation id of a column
//! definition. Each known collation gives an ordering of two byte strings (`ORDER BY`, `MIN`/`MAX`)
//! and an equality key (`GROUP BY`, `DISTINCT`): bytes that are equal exactly when the collation
//! calls the strings equal. An id this module does not know is [`UnknownCollation`]: callers that
//! merge rows refuse rather than guess.
//!
//! The weight tables are the server's own, generated with `WEIGHT_STRING()` by
//! `codec/tests/fixtures/mysql/gen_general_ci.py` and `gen_collation_tables.py`, and checked
//! against a live MariaDB's `ORDER BY` / `GROUP BY` by `codec/tests/mysql_live.rs`.
//!
//! PAD SPACE (every collation here but `binary`): the shorter string is compared as if padded with
//! spaces, so trailing spaces do not count, and a string that continues after the common part with
//! a character weighing less than a space (a tab, say) sorts *before* the shorter one.

use std::cmp::Ordering;

use super::consts::{charset, column_type as ty};
use super::general_ci_table::GENERAL_CI_WEIGHTS;
use super::latin1_table::LATIN1_SWEDISH_CI;
use super::resultset::ColumnDefinition;
use super::unicode_ci_table::{IMPLICIT, LINEAR, SAME, UCA_ASCII, UCA_POOL, UCA_RANGES};

/// A collation Furrow compares exactly as the server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collation {
    /// `binary` (63): bytewise, trailing spaces count (NO PAD).
    Binary,
    /// `utf8mb4_bin` (46), `utf8mb3_bin` (83), `latin1_bin` (47): by code point (for UTF-8 the
    /// byte order), PAD SPACE.
    BinPadSpace,
    /// `utf8mb4_general_ci` (45), `utf8mb3_general_ci` (33): one weight per character from
    /// MariaDB's table; characters outside the BMP all weigh U+FFFD's weight.
    GeneralCi,
    /// `utf8mb4_unicode_ci` (224), `utf8mb3_unicode_ci` (192): UCA 4.0.0 primary weights, none
    /// (ignorable) or several (expansions) per character; outside the BMP one weight, 0xFFFD.
    UnicodeCi,
    /// `latin1_swedish_ci` (8): one weight per byte.
    Latin1SwedishCi,
    /// `latin1_swedish_ci` over values sent in UTF-8 (a latin1 column read through a utf8
    /// connection): each value converted back to latin1, then [`Collation::Latin1SwedishCi`].
    Latin1SwedishCiOverUtf8,
    /// `latin1_bin` over values sent in UTF-8: converted back to latin1, then bytewise PAD SPACE.
    Latin1BinOverUtf8,
    /// A utf8 collation over values sent in latin1 (a utf8 column read through a latin1
    /// connection): each value converted to UTF-8, then compared by it. Exact for the values
    /// latin1 holds; a character it lacks was sent as `?` and compares as `?`.
    Utf8OverLatin1(Utf8Kind),
}

/// The utf8 collations [`Collation::Utf8OverLatin1`] compares by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Utf8Kind {
    /// [`Collation::BinPadSpace`].
    Bin,
    /// [`Collation::GeneralCi`].
    GeneralCi,
    /// [`Collation::UnicodeCi`].
    UnicodeCi,
}

impl Utf8Kind {
    fn collation(self) -> Collation {
        match self {
            Utf8Kind::Bin => Collation::BinPadSpace,
            Utf8Kind::GeneralCi => Collation::GeneralCi,
            Utf8Kind::UnicodeCi => Collation::UnicodeCi,
        }
    }
}

/// How the values of a collation's character set are encoded (for telling whether values sent in
/// one character set compare by a collation of another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `binary`: the bytes as stored, no conversion.
    Binary,
    /// `latin1` (MariaDB's cp1252).
    Latin1,
    /// `utf8mb3` or `utf8mb4` (one encoding; utf8mb3 lacks the 4-byte characters).
    Utf8,
}

impl Encoding {
    /// The encoding of collation id `id`, for the ids of the character sets Furrow converts
    /// between (binary, latin1, utf8mb3, utf8mb4).
    pub fn of_id(id: u16) -> Option<Self> {
        Some(match id {
            charset::BINARY => Encoding::Binary,
            5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => Encoding::Latin1,
            33 | 76 | 83 | 192..=215 | 223 => Encoding::Utf8,
            45 | 46 | 224..=247 | 255..=309 => Encoding::Utf8,
            _ => return None,
        })
    }
}

/// A collation id Furrow does not compare by (carried for the error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCollation(pub u16);

impl std::fmt::Display for UnknownCollation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "collation id {}", self.0)
    }
}

/// Weights above every real character's: bytes that are not valid UTF-8 (which a server would not
/// have stored in a utf8 column) weigh `INVALID + byte`, so they sort after all characters.
const INVALID: u32 = 0x1_0000;
/// U+FFFD's general_ci weight (every character outside the BMP) and the unicode_ci weight of
/// characters outside the BMP.
const OUTSIDE_BMP: u32 = 0xFFFD;

impl Collation {
    /// The collation of id `id`, if Furrow knows it.
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            charset::BINARY => Collation::Binary,
            charset::UTF8MB4_BIN | charset::UTF8_BIN | charset::LATIN1_BIN => {
                Collation::BinPadSpace
            }
            charset::UTF8MB4_GENERAL_CI | charset::UTF8_GENERAL_CI => Collation::GeneralCi,
            charset::UTF8MB4_UNICODE_CI | charset::UTF8_UNICODE_CI => Collation::UnicodeCi,
            charset::LATIN1_SWEDISH_CI => Collation::Latin1SwedishCi,
            _ => return None,
        })
    }

    /// The collation named `name` (as `COLLATION(expr)` or `information_schema.COLUMNS` give it;
    /// MariaDB's `utf8mb3_` and the older `utf8_` spellings both), if Furrow knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        let name = name
            .strip_prefix("utf8_")
            .map_or(name.clone(), |rest| format!("utf8mb3_{rest}"));
        Some(match name.as_str() {
            "binary" => Collation::Binary,
            "utf8mb4_bin" | "utf8mb3_bin" | "latin1_bin" => Collation::BinPadSpace,
            "utf8mb4_general_ci" | "utf8mb3_general_ci" => Collation::GeneralCi,
            "utf8mb4_unicode_ci" | "utf8mb3_unicode_ci" => Collation::UnicodeCi,
            "latin1_swedish_ci" => Collation::Latin1SwedishCi,
            _ => return None,
        })
    }

    /// The id of the collation named `name` (as `COLLATION(expr)` gives it), for the collations
    /// [`Collation::from_id`] knows; `None` for any other name.
    pub fn id_of_name(name: &str) -> Option<u16> {
        let name = name.to_ascii_lowercase();
        let name = name
            .strip_prefix("utf8_")
            .map_or(name.clone(), |rest| format!("utf8mb3_{rest}"));
        Some(match name.as_str() {
            "binary" => charset::BINARY,
            "utf8mb4_bin" => charset::UTF8MB4_BIN,
            "utf8mb3_bin" => charset::UTF8_BIN,
            "latin1_bin" => charset::LATIN1_BIN,
            "utf8mb4_general_ci" => charset::UTF8MB4_GENERAL_CI,
            "utf8mb3_general_ci" => charset::UTF8_GENERAL_CI,
            "utf8mb4_unicode_ci" => charset::UTF8MB4_UNICODE_CI,
            "utf8mb3_unicode_ci" => charset::UTF8_UNICODE_CI,
            "latin1_swedish_ci" => charset::LATIN1_SWEDISH_CI,
            _ => return None,
        })
    }

    /// How values of `col` compare: its collation for string types; numbers, temporals and other
    /// non-string types compare as values, never by collation, and are `Binary` here. The
    /// collation is `compare_collation` when set (the values then are in `charset`'s encoding and
    /// compare as the server compares them converted to the collation's own), else `charset`.
    pub fn of_column(col: &ColumnDefinition) -> Result<Self, UnknownCollation> {
        if !is_string_type(col.column_type) {
            return Ok(Collation::Binary);
        }
        let Some(real) = col.compare_collation else {
            return Self::from_id(col.charset).ok_or(UnknownCollation(col.charset));
        };
        Self::over(real, col.charset).ok_or(UnknownCollation(real))
    }

    /// The collation `real` for values sent encoded as collation id `wire` says: `None` when
    /// Furrow does not know `real`, or cannot convert the values exactly to its character set
    /// (latin1 values of a utf8 column lost the characters latin1 lacks).
    pub fn over(real: u16, wire: u16) -> Option<Self> {
        let c = Self::from_id(real)?;
        Some(match (Encoding::of_id(wire)?, Encoding::of_id(real)?) {
            (Encoding::Binary, _) => c,
            (w, r) if w == r => c,
            (Encoding::Utf8, Encoding::Latin1) => match c {
                Collation::Latin1SwedishCi => Collation::Latin1SwedishCiOverUtf8,
                _ => Collation::Latin1BinOverUtf8,
            },
            (Encoding::Latin1, Encoding::Utf8) => Collation::Utf8OverLatin1(match c {
                Collation::GeneralCi => Utf8Kind::GeneralCi,
                Collation::UnicodeCi => Utf8Kind::UnicodeCi,
                _ => Utf8Kind::Bin,
            }),
            _ => return None,
        })
    }

    /// A short name for messages and plans.
    pub fn name(self) -> &'static str {
        match self {
            Collation::Binary => "binary",
            Collation::BinPadSpace => "bin",
            Collation::GeneralCi => "general_ci",
            Collation::UnicodeCi => "unicode_ci",
            Collation::Latin1SwedishCi | Collation::Latin1SwedishCiOverUtf8 => "latin1_swedish_ci",
            Collation::Latin1BinOverUtf8 => "latin1_bin",
            Collation::Utf8OverLatin1(k) => k.collation().name(),
        }
    }

    /// Orders `a` and `b` as the server's `ORDER BY` does.
    pub fn compare(self, a: &[u8], b: &[u8]) -> Ordering {
        match self {
            Collation::Binary => a.cmp(b),
            Collation::BinPadSpace => bin_pad_cmp(a, b),
            Collation::GeneralCi | Collation::UnicodeCi => {
                if a.is_ascii() && b.is_ascii() {
                    return self.ascii_cmp(a, b);
                }
                pad_cmp(
                    Weights::new(self, a),
                    Weights::new(self, b),
                    self.space_weight(),
                )
            }
            Collation::Latin1SwedishCi => pad_cmp(
                a.iter()
                    .map(|&c| u32::from(LATIN1_SWEDISH_CI[usize::from(c)])),
                b.iter()
                    .map(|&c| u32::from(LATIN1_SWEDISH_CI[usize::from(c)])),
                u32::from(LATIN1_SWEDISH_CI[usize::from(b' ')]),
            ),
            Collation::Latin1SwedishCiOverUtf8 => {
                Collation::Latin1SwedishCi.compare(&utf8_to_latin1(a), &utf8_to_latin1(b))
            }
            Collation::Latin1BinOverUtf8 => bin_pad_cmp(&utf8_to_latin1(a), &utf8_to_latin1(b)),
            Collation::Utf8OverLatin1(k) => k
                .collation()
                .compare(&latin1_to_utf8(a), &latin1_to_utf8(b)),
        }
    }

    /// Whether the server considers `a` and `b` equal (`GROUP BY`, `DISTINCT`, `=`).
    pub fn equal(self, a: &[u8], b: &[u8]) -> bool {
        match self {
            Collation::Binary => a == b,
            _ => self.compare(a, b) == Ordering::Equal,
        }
    }

    /// Appends the equality key of `s` to `out`: two strings' keys are equal exactly when the
    /// collation calls them equal. For valid text it is the server's `WEIGHT_STRING()` without
    /// the trailing space weights (PAD SPACE); for `binary`, the bytes.
    pub fn key(self, s: &[u8], out: &mut Vec<u8>) {
        match self {
            Collation::Binary => out.extend_from_slice(s),
            Collation::BinPadSpace => out.extend_from_slice(trim_spaces(s)),
            Collation::GeneralCi | Collation::UnicodeCi => {
                let space = self.space_weight();
                let start = out.len();
                let mut keep = start;
                for w in Weights::new(self, s) {
                    if w <= 0xFFFE {
                        out.extend_from_slice(&(w as u16).to_be_bytes());
                    } else {
                        // Prefix-free escape for 0xFFFF and the invalid-byte weights.
                        out.extend_from_slice(&[0xFF, 0xFF]);
                        out.extend_from_slice(&((w - 0xFFFF) as u16).to_be_bytes());
                    }
                    if w != space {
                        keep = out.len();
                    }
                }
                out.truncate(keep);
            }
            Collation::Latin1SwedishCi => {
                let space = LATIN1_SWEDISH_CI[usize::from(b' ')];
                let start = out.len();
                out.extend(s.iter().map(|&c| LATIN1_SWEDISH_CI[usize::from(c)]));
                let end = out[start..]
                    .iter()
                    .rposition(|&w| w != space)
                    .map_or(start, |i| start + i + 1);
                out.truncate(end);
            }
            Collation::Latin1SwedishCiOverUtf8 => {
                Collation::Latin1SwedishCi.key(&utf8_to_latin1(s), out)
            }
            Collation::Latin1BinOverUtf8 => out.extend_from_slice(trim_spaces(&utf8_to_latin1(s))),
            Collation::Utf8OverLatin1(k) => k.collation().key(&latin1_to_utf8(s), out),
        }
    }

    fn space_weight(self) -> u32 {
        match self {
            Collation::UnicodeCi => u32::from(UCA_ASCII[usize::from(b' ')]),
            Collation::Latin1SwedishCi => u32::from(LATIN1_SWEDISH_CI[usize::from(b' ')]),
            _ => u32::from(b' '),
        }
    }

    /// The all-ASCII fast path of the utf8 `_ci` collations: one weight (or none) per byte.
    fn ascii_cmp(self, a: &[u8], b: &[u8]) -> Ordering {
        let weigh = |c: u8| -> u32 {
            match self {
                Collation::UnicodeCi => u32::from(UCA_ASCII[usize::from(c & 0x7F)]),
                _ => u32::from(c.to_ascii_uppercase()),
            }
        };
        let space = self.space_weight();
        if self == Collation::UnicodeCi {
            // Ignorable control characters: no weight.
            return pad_cmp(
                a.iter().map(|&c| weigh(c)).filter(|&w| w != 0),
                b.iter().map(|&c| weigh(c)).filter(|&w| w != 0),
                space,
            );
        }
        pad_cmp(
            a.iter().map(|&c| weigh(c)),
            b.iter().map(|&c| weigh(c)),
            space,
        )
    }
}

/// Types whose values are strings compared by collation (the rest decode to numbers or
/// temporals, or are bit strings and geometry that compare bytewise under `binary`).
fn is_string_type(t: u8) -> bool {
    matches!(
        t,
        ty::VARCHAR
            | ty::VAR_STRING
            | ty::STRING
            | ty::ENUM
            | ty::SET
            | ty::TINY_BLOB
            | ty::MEDIUM_BLOB
            | ty::LONG_BLOB
            | ty::BLOB
            | ty::JSON
    )
}

/// The code points of MariaDB's latin1 bytes 0x80..=0x9F (cp1252; its five holes map to the C1
/// controls of the same number).
const LATIN1_C1: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

/// UTF-8 text converted to latin1 as the server converts it (a character latin1 lacks, or an
/// invalid byte, becomes `?`).
fn utf8_to_latin1(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some(d) = decode_utf8(rest) {
        let (byte, len) = match d {
            Ok((cp, len)) => {
                let b = match cp {
                    0..=0x7F | 0xA0..=0xFF => cp as u8, // ok: in range
                    _ => LATIN1_C1
                        .iter()
                        .position(|&c| u32::from(c) == cp)
                        .map_or(b'?', |i| 0x80 + i as u8), // ok: i < 32
                };
                (b, len)
            }
            Err(_) => (b'?', 1),
        };
        out.push(byte);
        rest = rest.get(len..).unwrap_or(&[]);
    }
    out
}

/// latin1 text converted to UTF-8.
fn latin1_to_utf8(s: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(s.len() * 2);
    for &b in s {
        let cp = match b {
            0x80..=0x9F => u32::from(LATIN1_C1[usize::from(b - 0x80)]),
            _ => u32::from(b),
        };
        out.push(char::from_u32(cp).unwrap_or('?'));
    }
    out.into_bytes()
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
    &s[..end]
}

/// Bytewise with PAD SPACE: for valid UTF-8 the byte order is the code point order, and the first
/// byte after the common part decides against a space.
fn bin_pad_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let common = a.len().min(b.len());
    match a[..common].cmp(&b[..common]) {
        Ordering::Equal => {}
        o => return o,
    }
    let rest_vs_space = |rest: &[u8]| {
        rest.iter()
            .find(|&&c| c != b' ')
            .map_or(Ordering::Equal, |c| c.cmp(&b' '))
    };
    match a.len().cmp(&b.len()) {
        Ordering::Equal => Ordering::Equal,
        Ordering::Greater => rest_vs_space(&a[common..]),
        Ordering::Less => rest_vs_space(&b[common..]).reverse(),
    }
}

/// Compares two weight sequences with PAD SPACE: after the common part, the first weight of the
/// longer that is not the space weight decides against the space weight.
fn pad_cmp(
    mut a: impl Iterator<Item = u32>,
    mut b: impl Iterator<Item = u32>,
    space: u32,
) -> Ordering {
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => return x.cmp(&y),
            (None, None) => return Ordering::Equal,
            (Some(x), None) => {
                return std::iter::once(x)
                    .chain(a)
                    .find(|&w| w != space)
                    .map_or(Ordering::Equal, |w| w.cmp(&space));
            }
            (None, Some(y)) => {
                return std::iter::once(y)
                    .chain(b)
                    .find(|&w| w != space)
                    .map_or(Ordering::Equal, |w| space.cmp(&w));
            }
        }
    }
}

/// Decodes one UTF-8 character from the front of `s`: `(code point, length)`, or `Err(byte)`
/// when the front byte does not start a valid sequence (then one byte is consumed).
fn decode_utf8(s: &[u8]) -> Option<Result<(u32, usize), u8>> {
    let &first = s.first()?;
    if first < 0x80 {
        return Some(Ok((u32::from(first), 1)));
    }
    let (len, init, min) = match first {
        0xC2..=0xDF => (2, u32::from(first & 0x1F), 0x80),
        0xE0..=0xEF => (3, u32::from(first & 0x0F), 0x800),
        0xF0..=0xF4 => (4, u32::from(first & 0x07), 0x1_0000),
        _ => return Some(Err(first)),
    };
    let Some(tail) = s.get(1..len) else {
        return Some(Err(first));
    };
    let mut cp = init;
    for &c in tail {
        if c & 0xC0 != 0x80 {
            return Some(Err(first));
        }
        cp = (cp << 6) | u32::from(c & 0x3F);
    }
    if cp < min || cp > 0x10_FFFF || (0xD800..=0xDFFF).contains(&cp) {
        return Some(Err(first));
    }
    Some(Ok((cp, len)))
}

/// The weights of a UTF-8 string under `general_ci` or `unicode_ci`, in order.
struct Weights<'a> {
    coll: Collation,
    rest: &'a [u8],
    /// Weights of the current character still to give.
    pending: &'static [u16],
    /// The second implicit weight of the current character.
    second: Option<u32>,
}

impl<'a> Weights<'a> {
    fn new(coll: Collation, s: &'a [u8]) -> Self {
        Self {
            coll,
            rest: s,
            pending: &[],
            second: None,
        }
    }
}

impl Iterator for Weights<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if let Some(w) = self.second.take() {
            return Some(w);
        }
        if let [w, tail @ ..] = self.pending {
            self.pending = tail;
            return Some(u32::from(*w));
        }
        loop {
            let (cp, len) = match decode_utf8(self.rest)? {
                Ok(c) => c,
                Err(byte) => {
                    self.rest = self.rest.get(1..).unwrap_or_default();
                    return Some(INVALID + u32::from(byte));
                }
            };
            self.rest = self.rest.get(len..).unwrap_or_default();
            if self.coll != Collation::UnicodeCi {
                return Some(general_ci_weight(cp));
            }
            if cp < 0x80 {
                match UCA_ASCII[cp as usize] {
                    0 => continue, // ignorable
                    w => return Some(u32::from(w)),
                }
            }
            if cp > 0xFFFF {
                return Some(OUTSIDE_BMP);
            }
            let i = UCA_RANGES
                .partition_point(|r| u32::from(r.0) <= cp)
                .saturating_sub(1);
            let Some(&(first, kind, a, b)) = UCA_RANGES.get(i) else {
                return Some(OUTSIDE_BMP); // ok: the ranges cover the BMP from U+0000
            };
            match kind {
                IMPLICIT => {
                    self.second = Some((cp & 0x7FFF) | 0x8000);
                    return Some(u32::from(a) + (cp >> 15));
                }
                LINEAR => return Some(u32::from(a) + (cp - u32::from(first))),
                SAME => {
                    let start = usize::from(a);
                    let ws = UCA_POOL
                        .get(start..start + usize::from(b))
                        .unwrap_or_default();
                    if let [w, tail @ ..] = ws {
                        self.pending = tail;
                        return Some(u32::from(*w));
                    }
                    // Ignorable: next character.
                }
                _ => return Some(OUTSIDE_BMP), // ok: the generator writes the three kinds only
            }
        }
    }
}

/// One character's `general_ci` weight: ASCII upper-cased, the BMP from MariaDB's table, the rest
/// U+FFFD's.
fn general_ci_weight(cp: u32) -> u32 {
    if cp < 0x80 {
        return u32::from((cp as u8).to_ascii_uppercase());
    }
    if cp > 0xFFFF {
        return OUTSIDE_BMP;
    }
    match GENERAL_CI_WEIGHTS.binary_search_by_key(&(cp as u16), |&(c, _)| c) {
        Ok(i) => GENERAL_CI_WEIGHTS.get(i).map_or(cp, |&(_, w)| u32::from(w)),
        Err(_) => cp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: Collation, s: &str) -> Vec<u8> {
        let mut k = Vec::new();
        c.key(s.as_bytes(), &mut k);
        k
    }

    fn check(c: Collation, a: &str, b: &str, want: Ordering) {
        assert_eq!(
            c.compare(a.as_bytes(), b.as_bytes()),
            want,
            "{c:?} {a:?} {b:?}"
        );
        assert_eq!(
            c.compare(b.as_bytes(), a.as_bytes()),
            want.reverse(),
            "{c:?} {b:?} {a:?}"
        );
        assert_eq!(
            key(c, a) == key(c, b),
            want == Ordering::Equal,
            "{c:?} keys {a:?} {b:?}"
        );
    }

    #[test]
    fn ids() {
        assert_eq!(Collation::from_id(45), Some(Collation::GeneralCi));
        assert_eq!(Collation::from_id(224), Some(Collation::UnicodeCi));
        assert_eq!(Collation::from_id(192), Some(Collation::UnicodeCi));
        assert_eq!(Collation::from_id(83), Some(Collation::BinPadSpace));
        assert_eq!(Collation::from_id(8), Some(Collation::Latin1SwedishCi));
        assert_eq!(Collation::from_id(63), Some(Collation::Binary));
        assert_eq!(Collation::from_id(charset::UTF8MB4_0900_AI_CI), None);
        assert_eq!(Collation::from_id(246), None);
        assert_eq!(
            Collation::from_name("utf8_unicode_ci"),
            Some(Collation::UnicodeCi)
        );
        assert_eq!(
            Collation::from_name("UTF8MB4_BIN"),
            Some(Collation::BinPadSpace)
        );
        assert_eq!(Collation::from_name("utf8mb4_0900_ai_ci"), None);
        let mut col = ColumnDefinition {
            column_type: ty::VAR_STRING,
            charset: 255,
            ..ColumnDefinition::default()
        };
        assert_eq!(Collation::of_column(&col), Err(UnknownCollation(255)));
        col.column_type = ty::LONGLONG;
        assert_eq!(Collation::of_column(&col), Ok(Collation::Binary));
    }

    #[test]
    fn general_ci() {
        let c = Collation::GeneralCi;
        check(c, "café", "CAFE", Ordering::Equal);
        check(c, "über", "uber", Ordering::Equal);
        check(c, "ångström", "ANGSTROM", Ordering::Equal);
        check(c, "abc", "ABC  ", Ordering::Equal);
        check(c, "a\t", "a", Ordering::Less);
        check(c, "a", "b", Ordering::Less);
        check(c, "ß", "s", Ordering::Equal);
        check(c, "ß", "ss", Ordering::Less);
        check(c, "😀", "😁", Ordering::Equal);
        check(c, "", "   ", Ordering::Equal);
    }

    #[test]
    fn unicode_ci() {
        let c = Collation::UnicodeCi;
        check(c, "café", "CAFE", Ordering::Equal);
        check(c, "ß", "ss", Ordering::Equal);
        check(c, "ß", "s", Ordering::Greater);
        check(c, "a\u{0}b", "ab", Ordering::Equal);
        check(c, "a\u{A0}", "a", Ordering::Equal);
        check(c, "a\t", "a", Ordering::Less);
        check(c, "æ", "ae", Ordering::Greater); // a letter of its own in UCA 4.0.0
        check(c, "😀", "😁", Ordering::Equal);
        check(c, "中", "文", Ordering::Less);
        check(c, "a", "B", Ordering::Less);
        // The ASCII fast path and the general path agree.
        assert_eq!(
            c.compare(b"a\x01b ", b"AB"),
            pad_cmp(Weights::new(c, b"a\x01b "), Weights::new(c, b"AB"), 0x209)
        );
        assert_eq!(key(c, "a"), vec![0x0E, 0x33]);
    }

    #[test]
    fn bin_and_latin1() {
        let c = Collation::BinPadSpace;
        check(c, "a  ", "a", Ordering::Equal);
        check(c, "a\t", "a", Ordering::Less);
        check(c, "a", "B", Ordering::Greater);
        check(c, "é", "z", Ordering::Greater);
        let b = Collation::Binary;
        assert_eq!(b.compare(b"a ", b"a"), Ordering::Greater);
        assert_ne!(key(b, "a "), key(b, "a"));
        let l = Collation::Latin1SwedishCi;
        let (a_ring, a_uml, ae) = ([0xE5u8], [0xE4u8], [0xC6u8]);
        assert_eq!(l.compare(&a_uml, &ae), Ordering::Equal); // ä = Æ in Swedish
        assert_eq!(l.compare(&a_ring, &a_uml), Ordering::Less); // å < ä
        assert_eq!(l.compare(b"z", &a_ring), Ordering::Less);
        assert_eq!(l.compare(b"A ", b"a"), Ordering::Equal);
    }

    #[test]
    fn latin1_columns_read_through_utf8() {
        assert_eq!(
            Collation::id_of_name("latin1_swedish_ci"),
            Some(charset::LATIN1_SWEDISH_CI)
        );
        assert_eq!(Collation::id_of_name("utf8_bin"), Some(charset::UTF8_BIN));
        assert_eq!(Collation::id_of_name("utf8mb4_uca1400_ai_ci"), None);
        let over = |real, wire| Collation::over(real, wire);
        assert_eq!(over(224, 45), Some(Collation::UnicodeCi));
        assert_eq!(over(8, 63), Some(Collation::Latin1SwedishCi));
        assert_eq!(over(8, 45), Some(Collation::Latin1SwedishCiOverUtf8));
        assert_eq!(over(47, 33), Some(Collation::Latin1BinOverUtf8));
        assert_eq!(
            over(224, 8),
            Some(Collation::Utf8OverLatin1(Utf8Kind::UnicodeCi))
        );
        let u = Collation::Utf8OverLatin1(Utf8Kind::UnicodeCi);
        assert_eq!(u.compare(&[0xDF], b"ss"), Ordering::Equal); // ß = ss
        assert_eq!(
            u.compare(&[0x80], b"EUR"),
            Collation::UnicodeCi.compare("€".as_bytes(), b"EUR")
        );
        assert_eq!(over(45, 28), None); // gbk: not converted
        assert_eq!(over(255, 45), None);
        let l = Collation::Latin1SwedishCiOverUtf8;
        check(l, "ä", "Æ", Ordering::Equal);
        check(l, "å", "ä", Ordering::Less);
        check(l, "z", "å", Ordering::Less);
        check(l, "ß", "ss", Ordering::Greater); // a letter of its own here
        assert_eq!(key(l, "ä "), key(l, "Æ"));
        let b = Collation::Latin1BinOverUtf8;
        check(b, "€", "a", Ordering::Greater);
        check(b, "€", "é", Ordering::Less); // 0x80 < 0xE9, though U+20AC > U+00E9
        assert_eq!(utf8_to_latin1("€x中".as_bytes()), vec![0x80, b'x', b'?']);
        let col = ColumnDefinition {
            column_type: ty::VAR_STRING,
            charset: 45,
            compare_collation: Some(8),
            ..ColumnDefinition::default()
        };
        assert_eq!(Collation::of_column(&col), Ok(l));
    }

    #[test]
    fn invalid_utf8_is_deterministic_and_keys_are_prefix_free() {
        let c = Collation::GeneralCi;
        assert_eq!(c.compare(b"\xff", b"\xef\xbf\xbf"), Ordering::Greater);
        assert_ne!(key(c, "\u{FFFF}"), {
            let mut k = Vec::new();
            c.key(b"\xff", &mut k);
            k
        });
        assert_eq!(decode_utf8(b"\xe0\x80\x80"), Some(Err(0xE0)));
        assert_eq!(decode_utf8(b"\xed\xa0\x80"), Some(Err(0xED)));
        assert_eq!(decode_utf8("😀".as_bytes()), Some(Ok((0x1F600, 4))));
    }
}
