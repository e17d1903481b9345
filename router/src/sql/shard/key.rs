//! Shard-key values as the routing functions see them, taken from SQL literals or bound parameters.

use codec::mysql::Value;

/// A shard-key value normalised for routing: integers (and strings that spell an integer, so that
/// `WHERE id = '42'` routes like `WHERE id = 42`, as MySQL compares them) and other text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    /// SQL NULL (routes to partition 0 for hash-like rules, nowhere for `=`).
    Null,
    /// An integer.
    Int(i128),
    /// Any other value, as text (dates as `YYYY-MM-DD[ hh:mm:ss]`).
    Str(String),
}

impl KeyValue {
    /// Normalises text: an integer spelling becomes [`KeyValue::Int`].
    pub fn from_text(s: &str) -> Self {
        // The usual key, a short run of digits, without the general parse (every routed point
        // statement asks): at most 18 digits cannot overflow a u64, and give what parsing gives.
        let b = s.as_bytes();
        if !b.is_empty() && b.len() <= 18 && b.iter().all(u8::is_ascii_digit) {
            let v = b.iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
            return KeyValue::Int(i128::from(v));
        }
        match s.trim().parse::<i128>() {
            Ok(v) => KeyValue::Int(v),
            Err(_) => KeyValue::Str(s.to_string()),
        }
    }

    /// Converts a protocol value (a bound parameter, a row cell).
    pub fn from_value(v: &Value) -> Self {
        match v {
            Value::Null => KeyValue::Null,
            Value::Int(i) => KeyValue::Int(i128::from(*i)),
            Value::UInt(u) => KeyValue::Int(i128::from(*u)),
            Value::Float(f) => float_key(f64::from(*f)),
            Value::Double(f) => float_key(*f),
            Value::Decimal(b) | Value::Bytes(b) => Self::from_text(&String::from_utf8_lossy(b)),
            Value::Date(d) => KeyValue::Str(format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)),
            Value::DateTime(t) => KeyValue::Str(format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.date.year, t.date.month, t.date.day, t.hour, t.minute, t.second
            )),
            Value::Time(t) => KeyValue::Str(format!("{}", t.as_micros())),
        }
    }

    /// The bytes hashed by hash rules: decimal text for integers, lower-cased text otherwise (so that
    /// values equal under a case-insensitive collation land on the same shard).
    pub fn hash_bytes(&self) -> Vec<u8> {
        match self {
            KeyValue::Null => Vec::new(),
            KeyValue::Int(i) => i.to_string().into_bytes(),
            KeyValue::Str(s) => s.to_lowercase().into_bytes(),
        }
    }
}

fn float_key(f: f64) -> KeyValue {
    if f.fract() == 0.0 && f.abs() < 1e30 {
        KeyValue::Int(f as i128)
    } else {
        KeyValue::Str(f.to_string())
    }
}

/// FNV-1a 64-bit: a stable hash that does not change between Rust releases (routing must not).
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Parses `YYYY-MM-DD` optionally followed by a time, into (year, month, day).
pub fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let s = s.trim();
    let date = s.split([' ', 'T']).next()?;
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    (it.next().is_none() && (1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_text_is_an_integer() {
        assert_eq!(KeyValue::from_text(" 42"), KeyValue::Int(42));
        assert_eq!(KeyValue::from_text("4x"), KeyValue::Str("4x".into()));
        assert_eq!(KeyValue::from_value(&Value::UInt(7)), KeyValue::Int(7));
        assert_eq!(KeyValue::Str("AbC".into()).hash_bytes(), b"abc".to_vec());
    }

    /// What `from_text` gave before its digit fast path: the general parse.
    fn parsed(s: &str) -> KeyValue {
        match s.trim().parse::<i128>() {
            Ok(v) => KeyValue::Int(v),
            Err(_) => KeyValue::Str(s.to_string()),
        }
    }

    #[test]
    fn the_digit_fast_path_gives_what_parsing_gives() {
        for s in [
            "0",
            "007",
            "42",
            "999999999999999999",
            "1000000000000000000",
            "99999999999999999999999",
            "",
            " 5",
            "+5",
            "-5",
            "5 ",
            "1.0",
            "١٢",
        ] {
            assert_eq!(KeyValue::from_text(s), parsed(s), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_keys_as_parsing_does(s in "[0-9+ -]{0,24}|[0-9]{0,40}|\\PC{0,8}") {
            proptest::prop_assert_eq!(KeyValue::from_text(&s), parsed(&s));
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(parse_date("2024-02-29 10:00:00"), Some((2024, 2, 29)));
        assert_eq!(parse_date("2024-13-01"), None);
    }

    #[test]
    fn fnv_reference() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
