//! Typed column/parameter values: text and binary protocol encodings, and the ORDER BY
//! comparison the sharding merge uses (strings by [`super::collation`]).

use std::cmp::Ordering;
use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::collation::Collation;
use super::consts::{column_flag, column_type as ty};
use super::resultset::ColumnDefinition;
use super::wire::{Reader, put_lenenc_bytes};
use super::{MysqlError, Result};

/// A calendar date (`0000-00-00` is representable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Date {
    /// Year (0..=9999).
    pub year: u16,
    /// Month (0..=12).
    pub month: u8,
    /// Day (0..=31).
    pub day: u8,
}

/// A date and time with microseconds (DATETIME and TIMESTAMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DateTime {
    /// The date part.
    pub date: Date,
    /// Hour (0..=23).
    pub hour: u8,
    /// Minute.
    pub minute: u8,
    /// Second.
    pub second: u8,
    /// Microseconds (0..=999999).
    pub micro: u32,
}

/// A TIME value: a signed duration of up to 838:59:59.999999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Time {
    /// Whether the duration is negative.
    pub negative: bool,
    /// Whole days.
    pub days: u32,
    /// Hours (0..=23).
    pub hours: u8,
    /// Minutes.
    pub minutes: u8,
    /// Seconds.
    pub seconds: u8,
    /// Microseconds.
    pub micro: u32,
}

impl Time {
    /// The duration in microseconds, signed.
    pub fn as_micros(&self) -> i128 {
        let secs = i128::from(self.days) * 86_400
            + i128::from(self.hours) * 3600
            + i128::from(self.minutes) * 60
            + i128::from(self.seconds);
        let v = secs * 1_000_000 + i128::from(self.micro);
        if self.negative { -v } else { v }
    }
}

/// One column or parameter value. Strings and binary strings are both `Bytes` (the column's
/// charset says which); DECIMAL keeps its exact decimal text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A signed integer (TINYINT..BIGINT).
    Int(i64),
    /// An unsigned integer (UNSIGNED columns, YEAR).
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// DECIMAL as exact decimal text, e.g. `-12.340`.
    Decimal(Bytes),
    /// Strings, binary strings, BIT, ENUM, SET, JSON, GEOMETRY.
    Bytes(Bytes),
    /// DATE.
    Date(Date),
    /// TIME.
    Time(Time),
    /// DATETIME or TIMESTAMP.
    DateTime(DateTime),
}

fn is_int_type(t: u8) -> bool {
    matches!(
        t,
        ty::TINY | ty::SHORT | ty::LONG | ty::INT24 | ty::LONGLONG | ty::YEAR
    )
}

fn is_datetime_type(t: u8) -> bool {
    matches!(
        t,
        ty::DATETIME | ty::TIMESTAMP | ty::DATETIME2 | ty::TIMESTAMP2
    )
}

// ---------------------------------------------------------------- binary protocol

/// Reads one binary-protocol value of type `col_type` (`unsigned` from the column flags or the
/// parameter's unsigned bit).
pub fn decode_binary(r: &mut Reader, col_type: u8, unsigned: bool) -> Result<Value> {
    Ok(match col_type {
        ty::NULL => Value::Null,
        ty::TINY => {
            let b = r.u8("TINYINT")?;
            if unsigned {
                Value::UInt(u64::from(b))
            } else {
                Value::Int(i64::from(b as i8))
            }
        }
        ty::SHORT | ty::YEAR => {
            let v = r.u16("SMALLINT")?;
            if unsigned {
                Value::UInt(u64::from(v))
            } else {
                Value::Int(i64::from(v as i16))
            }
        }
        ty::LONG | ty::INT24 => {
            let v = r.u32("INT")?;
            if unsigned {
                Value::UInt(u64::from(v))
            } else {
                Value::Int(i64::from(v as i32))
            }
        }
        ty::LONGLONG => {
            let v = r.u64("BIGINT")?;
            if unsigned {
                Value::UInt(v)
            } else {
                Value::Int(v as i64)
            }
        }
        ty::FLOAT => Value::Float(f32::from_bits(r.u32("FLOAT")?)),
        ty::DOUBLE => Value::Double(f64::from_bits(r.u64("DOUBLE")?)),
        ty::DECIMAL | ty::NEWDECIMAL => Value::Decimal(r.lenenc_bytes("DECIMAL")?),
        ty::DATE | ty::NEWDATE => {
            let dt = decode_binary_datetime(r)?;
            if (dt.hour, dt.minute, dt.second, dt.micro) != (0, 0, 0, 0) {
                return Err(MysqlError::InvalidValue("DATE with a time part"));
            }
            Value::Date(dt.date)
        }
        t if is_datetime_type(t) => Value::DateTime(decode_binary_datetime(r)?),
        ty::TIME | ty::TIME2 => Value::Time(decode_binary_time(r)?),
        _ => Value::Bytes(r.lenenc_bytes("string value")?),
    })
}

fn decode_binary_datetime(r: &mut Reader) -> Result<DateTime> {
    let len = r.u8("temporal length")?;
    let mut dt = DateTime::default();
    if !matches!(len, 0 | 4 | 7 | 11) {
        return Err(MysqlError::InvalidValue("DATETIME length"));
    }
    if len >= 4 {
        dt.date = Date {
            year: r.u16("year")?,
            month: r.u8("month")?,
            day: r.u8("day")?,
        };
    }
    if len >= 7 {
        dt.hour = r.u8("hour")?;
        dt.minute = r.u8("minute")?;
        dt.second = r.u8("second")?;
    }
    if len == 11 {
        dt.micro = r.u32("microseconds")?;
    }
    Ok(dt)
}

fn decode_binary_time(r: &mut Reader) -> Result<Time> {
    let len = r.u8("time length")?;
    let mut t = Time::default();
    if !matches!(len, 0 | 8 | 12) {
        return Err(MysqlError::InvalidValue("TIME length"));
    }
    if len >= 8 {
        t.negative = r.u8("time sign")? != 0;
        t.days = r.u32("days")?;
        t.hours = r.u8("hours")?;
        t.minutes = r.u8("minutes")?;
        t.seconds = r.u8("seconds")?;
    }
    if len == 12 {
        t.micro = r.u32("microseconds")?;
    }
    Ok(t)
}

/// Appends `v` in the binary protocol as type `col_type` (NULL is written by the null bitmap,
/// not here). Integers are range-checked against the type width.
pub fn encode_binary(v: &Value, col_type: u8, out: &mut BytesMut) -> Result<()> {
    match (col_type, v) {
        (_, Value::Null) | (ty::NULL, _) => {}
        (ty::TINY | ty::SHORT | ty::YEAR | ty::LONG | ty::INT24 | ty::LONGLONG, _) => {
            let raw: u64 = match *v {
                Value::Int(i) => i as u64,
                Value::UInt(u) => u,
                _ => return Err(MysqlError::InvalidValue("integer column")),
            };
            match col_type {
                ty::TINY => out.put_u8(raw as u8),
                ty::SHORT | ty::YEAR => out.put_u16_le(raw as u16),
                ty::LONG | ty::INT24 => out.put_u32_le(raw as u32),
                _ => out.put_u64_le(raw),
            }
        }
        (ty::FLOAT, Value::Float(f)) => out.put_u32_le(f.to_bits()),
        (ty::FLOAT, Value::Double(f)) => out.put_u32_le((*f as f32).to_bits()),
        (ty::DOUBLE, Value::Double(f)) => out.put_u64_le(f.to_bits()),
        (ty::DOUBLE, Value::Float(f)) => out.put_u64_le(f64::from(*f).to_bits()),
        (ty::DATE | ty::NEWDATE, Value::Date(d)) => encode_binary_datetime(
            &DateTime {
                date: *d,
                ..Default::default()
            },
            out,
        ),
        (ty::DATE | ty::NEWDATE, Value::DateTime(dt)) => encode_binary_datetime(dt, out),
        (t, Value::DateTime(dt)) if is_datetime_type(t) => encode_binary_datetime(dt, out),
        (t, Value::Date(d)) if is_datetime_type(t) => encode_binary_datetime(
            &DateTime {
                date: *d,
                ..Default::default()
            },
            out,
        ),
        (ty::TIME | ty::TIME2, Value::Time(t)) => encode_binary_time(t, out),
        (_, Value::Bytes(b) | Value::Decimal(b)) => put_lenenc_bytes(out, b),
        (_, Value::Int(i)) => put_lenenc_bytes(out, i.to_string().as_bytes()),
        (_, Value::UInt(u)) => put_lenenc_bytes(out, u.to_string().as_bytes()),
        _ => {
            return Err(MysqlError::InvalidValue(
                "value does not match the column type",
            ));
        }
    }
    Ok(())
}

fn encode_binary_datetime(dt: &DateTime, out: &mut BytesMut) {
    let has_time = (dt.hour, dt.minute, dt.second) != (0, 0, 0);
    let has_date = dt.date != Date::default();
    let len = if dt.micro != 0 {
        11
    } else if has_time {
        7
    } else if has_date {
        4
    } else {
        0
    };
    out.put_u8(len);
    if len >= 4 {
        out.put_u16_le(dt.date.year);
        out.put_u8(dt.date.month);
        out.put_u8(dt.date.day);
    }
    if len >= 7 {
        out.put_u8(dt.hour);
        out.put_u8(dt.minute);
        out.put_u8(dt.second);
    }
    if len == 11 {
        out.put_u32_le(dt.micro);
    }
}

fn encode_binary_time(t: &Time, out: &mut BytesMut) {
    let len = if t.micro != 0 {
        12
    } else if t.days != 0 || t.hours != 0 || t.minutes != 0 || t.seconds != 0 {
        8
    } else {
        0
    };
    out.put_u8(len);
    if len >= 8 {
        out.put_u8(u8::from(t.negative));
        out.put_u32_le(t.days);
        out.put_u8(t.hours);
        out.put_u8(t.minutes);
        out.put_u8(t.seconds);
    }
    if len == 12 {
        out.put_u32_le(t.micro);
    }
}

// ---------------------------------------------------------------- text protocol

fn parse_ascii<T: std::str::FromStr>(b: &[u8], what: &'static str) -> Result<T> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(MysqlError::InvalidValue(what))
}

fn digits(b: &[u8], what: &'static str) -> Result<u32> {
    if b.is_empty() || b.len() > 9 {
        return Err(MysqlError::InvalidValue(what));
    }
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return Err(MysqlError::InvalidValue(what));
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Ok(v)
}

/// Parses `[-]digits` without going through `str` (the hot path of typed text rows).
fn parse_u64(b: &[u8], what: &'static str) -> Result<u64> {
    if b.is_empty() {
        return Err(MysqlError::InvalidValue(what));
    }
    let mut v = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return Err(MysqlError::InvalidValue(what));
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or(MysqlError::InvalidValue(what))?;
    }
    Ok(v)
}

fn parse_i64(b: &[u8], what: &'static str) -> Result<i64> {
    match b.split_first() {
        Some((b'-', rest)) => {
            let m = parse_u64(rest, what)?;
            0i64.checked_sub_unsigned(m)
                .ok_or(MysqlError::InvalidValue(what))
        }
        _ => i64::try_from(parse_u64(b, what)?).map_err(|_| MysqlError::InvalidValue(what)),
    }
}

fn parse_date(b: &[u8]) -> Result<Date> {
    // YYYY-MM-DD
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(MysqlError::InvalidValue("DATE text"));
    }
    Ok(Date {
        year: digits(&b[0..4], "year")? as u16,
        month: digits(&b[5..7], "month")? as u8,
        day: digits(&b[8..10], "day")? as u8,
    })
}

fn parse_micro(frac: &[u8]) -> Result<u32> {
    if frac.len() > 6 {
        return Err(MysqlError::InvalidValue("fractional seconds"));
    }
    let v = digits(frac, "fractional seconds")?;
    Ok(v * 10u32.pow(6 - frac.len() as u32))
}

fn split_frac(b: &[u8]) -> (&[u8], Option<&[u8]>) {
    match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    }
}

fn parse_datetime(b: &[u8]) -> Result<DateTime> {
    if b.len() < 19 || b[10] != b' ' {
        return Err(MysqlError::InvalidValue("DATETIME text"));
    }
    let date = parse_date(&b[..10])?;
    let (hms, frac) = split_frac(&b[11..]);
    if hms.len() != 8 || hms[2] != b':' || hms[5] != b':' {
        return Err(MysqlError::InvalidValue("DATETIME text"));
    }
    Ok(DateTime {
        date,
        hour: digits(&hms[0..2], "hour")? as u8,
        minute: digits(&hms[3..5], "minute")? as u8,
        second: digits(&hms[6..8], "second")? as u8,
        micro: frac.map(parse_micro).transpose()?.unwrap_or(0),
    })
}

fn parse_time(b: &[u8]) -> Result<Time> {
    let (negative, b) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let (hms, frac) = split_frac(b);
    let mut parts = hms.split(|&c| c == b':');
    let (Some(h), Some(m), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MysqlError::InvalidValue("TIME text"));
    };
    let hours = digits(h, "hours")?;
    Ok(Time {
        negative,
        days: hours / 24,
        hours: (hours % 24) as u8,
        minutes: digits(m, "minutes")? as u8,
        seconds: digits(s, "seconds")? as u8,
        micro: frac.map(parse_micro).transpose()?.unwrap_or(0),
    })
}

/// Converts one text-protocol cell (`None` = NULL) into a typed value for `col`.
pub fn decode_text(cell: Option<&Bytes>, col: &ColumnDefinition) -> Result<Value> {
    let Some(b) = cell else {
        return Ok(Value::Null);
    };
    let unsigned = col.flags & column_flag::UNSIGNED != 0;
    Ok(match col.column_type {
        t if is_int_type(t) => {
            if unsigned || t == ty::YEAR {
                Value::UInt(parse_u64(b, "unsigned integer text")?)
            } else {
                Value::Int(parse_i64(b, "integer text")?)
            }
        }
        ty::FLOAT => Value::Float(parse_ascii(b, "FLOAT text")?),
        ty::DOUBLE => Value::Double(parse_ascii(b, "DOUBLE text")?),
        ty::DECIMAL | ty::NEWDECIMAL => Value::Decimal(b.clone()),
        ty::DATE | ty::NEWDATE => Value::Date(parse_date(b)?),
        t if is_datetime_type(t) => Value::DateTime(parse_datetime(b)?),
        ty::TIME | ty::TIME2 => Value::Time(parse_time(b)?),
        _ => Value::Bytes(b.clone()),
    })
}

/// Formats a float the way MariaDB's text protocol does for FLOAT/DOUBLE columns without fixed
/// decimals (`my_gcvt`): DOUBLE with the shortest round-trip digits, FLOAT rounded to 6
/// significant digits (FLT_DIG); plain notation when the decimal exponent `decpt` satisfies
/// `-14 <= decpt && (decpt <= 15 || digits > decpt)`, otherwise `d.ddde[-]N`.
pub fn format_float(v: f64, single: bool, out: &mut String) {
    if !v.is_finite() {
        let _ = write!(out, "{v}");
        return;
    }
    let sci = if single {
        format!("{:.5e}", v.abs())
    } else {
        format!("{:e}", v.abs())
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    let decpt = exp + 1;
    let len = digits.len() as i32;
    if decpt >= -14 && (decpt <= 15 || len > decpt) {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (decpt - len) as usize));
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if len > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{exp}");
    }
}

/// Appends `v` as a text-protocol cell for `col` (length-encoded; NULL as 0xFB).
pub fn encode_text(v: &Value, col: &ColumnDefinition, out: &mut BytesMut) -> Result<()> {
    let mut s = String::new();
    match v {
        Value::Null => {
            out.put_u8(super::wire::NULL_MARKER);
            return Ok(());
        }
        Value::Bytes(b) | Value::Decimal(b) => {
            put_lenenc_bytes(out, b);
            return Ok(());
        }
        Value::Int(i) => {
            let _ = write!(s, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(s, "{u}");
        }
        // A FLOAT/DOUBLE column with fixed decimals (below NOT_FIXED_DEC = 31: `DOUBLE(10,2)`,
        // STDDEV(int) with 4) is shown with exactly those decimals, as the server's my_fcvt.
        Value::Float(f) if fixed_decimals(col) => {
            let _ = write!(s, "{:.*}", usize::from(col.decimals), f64::from(*f));
        }
        Value::Double(f) if fixed_decimals(col) => {
            let _ = write!(s, "{:.*}", usize::from(col.decimals), f);
        }
        Value::Float(f) => format_float(f64::from(*f), true, &mut s),
        Value::Double(f) => format_float(*f, false, &mut s),
        Value::Date(d) => write_date(d, &mut s),
        Value::DateTime(dt) => {
            write_date(&dt.date, &mut s);
            let _ = write!(s, " {:02}:{:02}:{:02}", dt.hour, dt.minute, dt.second);
            write_frac(dt.micro, col.decimals, &mut s);
        }
        Value::Time(t) => {
            if t.negative {
                s.push('-');
            }
            let hours = u64::from(t.days) * 24 + u64::from(t.hours);
            let _ = write!(s, "{hours:02}:{:02}:{:02}", t.minutes, t.seconds);
            write_frac(t.micro, col.decimals, &mut s);
        }
    }
    if col.flags & column_flag::ZEROFILL != 0 && matches!(v, Value::Int(_) | Value::UInt(_)) {
        let width = col.column_length as usize;
        if s.len() < width {
            let pad = width - s.len();
            s.insert_str(0, &"0".repeat(pad));
        }
    }
    put_lenenc_bytes(out, s.as_bytes());
    Ok(())
}

/// Whether `col` is a FLOAT/DOUBLE column shown with fixed decimals (fewer than 31).
fn fixed_decimals(col: &ColumnDefinition) -> bool {
    matches!(col.column_type, ty::FLOAT | ty::DOUBLE) && col.decimals < 31
}

fn write_date(d: &Date, s: &mut String) {
    let _ = write!(s, "{:04}-{:02}-{:02}", d.year, d.month, d.day);
}

fn write_frac(micro: u32, decimals: u8, s: &mut String) {
    let d = u32::from(decimals.min(6));
    if d > 0 {
        let _ = write!(
            s,
            ".{:0width$}",
            micro / 10u32.pow(6 - d),
            width = d as usize
        );
    }
}

// ---------------------------------------------------------------- ORDER BY comparison

/// Orders two values of a column as MySQL/MariaDB `ORDER BY col ASC` does: NULL first; integers,
/// floats and decimals numerically (exactly for integers and decimals); temporals
/// chronologically; strings by the column's collation ([`Collation::of_column`]). A string column
/// whose collation Furrow does not know compares bytewise here, which is deterministic but not
/// the server's order: callers that merge rows check [`Collation::of_column`] first and refuse.
pub fn compare_values(a: &Value, b: &Value, col: &ColumnDefinition) -> Ordering {
    use Value::*;
    match (a, b) {
        (Null, Null) => Ordering::Equal,
        (Null, _) => Ordering::Less,
        (_, Null) => Ordering::Greater,
        (Int(x), Int(y)) => x.cmp(y),
        (UInt(x), UInt(y)) => x.cmp(y),
        (Int(x), UInt(y)) => i128::from(*x).cmp(&i128::from(*y)),
        (UInt(x), Int(y)) => i128::from(*x).cmp(&i128::from(*y)),
        (Decimal(x), Decimal(y)) => decimal_cmp(x, y),
        (Decimal(x), Int(_) | UInt(_)) => decimal_cmp(x, int_text(b).as_bytes()),
        (Int(_) | UInt(_), Decimal(y)) => decimal_cmp(int_text(a).as_bytes(), y),
        (Date(x), Date(y)) => x.cmp(y),
        (DateTime(x), DateTime(y)) => x.cmp(y),
        (Date(x), DateTime(y)) => self::DateTime {
            date: *x,
            ..Default::default()
        }
        .cmp(y),
        (DateTime(x), Date(y)) => x.cmp(&self::DateTime {
            date: *y,
            ..Default::default()
        }),
        (Time(x), Time(y)) => x.as_micros().cmp(&y.as_micros()),
        (Bytes(x), Bytes(y)) => match Collation::of_column(col) {
            Ok(c) => c.compare(x, y),
            Err(_) => x.as_ref().cmp(y.as_ref()),
        },
        _ => match (as_f64(a), as_f64(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            // Mixed kinds that cannot be compared numerically: fall back to a fixed kind order.
            _ => kind_rank(a).cmp(&kind_rank(b)),
        },
    }
}

fn int_text(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        _ => String::new(),
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) => Some(f64::from(*f)),
        Value::Double(d) => Some(*d),
        Value::Decimal(d) => std::str::from_utf8(d).ok()?.parse().ok(),
        _ => None,
    }
}

fn kind_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Double(_) | Value::Decimal(_) => {
            1
        }
        Value::Date(_) | Value::DateTime(_) => 2,
        Value::Time(_) => 3,
        Value::Bytes(_) => 4,
    }
}

/// Compares two exact decimal texts (`[-]digits[.digits]`) numerically without rounding.
pub fn decimal_cmp(a: &[u8], b: &[u8]) -> Ordering {
    fn split(s: &[u8]) -> (bool, &[u8], &[u8]) {
        let s = s.trim_ascii();
        let (neg, s) = match s.split_first() {
            Some((b'-', r)) => (true, r),
            Some((b'+', r)) => (false, r),
            _ => (false, s),
        };
        let (int, frac) = match s.iter().position(|&c| c == b'.') {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => (s, &s[s.len()..]),
        };
        let first = int.iter().position(|&c| c != b'0').unwrap_or(int.len());
        let last = frac.iter().rposition(|&c| c != b'0').map_or(0, |i| i + 1);
        (neg, &int[first..], &frac[..last])
    }
    let (na, ia, fa) = split(a);
    let (nb, ib, fb) = split(b);
    let zero_a = ia.is_empty() && fa.is_empty();
    let zero_b = ib.is_empty() && fb.is_empty();
    let na = na && !zero_a;
    let nb = nb && !zero_b;
    let magnitude = ia
        .len()
        .cmp(&ib.len())
        .then_with(|| ia.cmp(ib))
        .then_with(|| fa.cmp(fb));
    match (na, nb) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::consts::charset;

    fn col(t: u8, flags: u16, charset: u16, decimals: u8) -> ColumnDefinition {
        ColumnDefinition {
            column_type: t,
            flags,
            charset,
            decimals,
            ..ColumnDefinition::default()
        }
    }

    #[test]
    fn binary_datetime_exact() {
        let dt = DateTime {
            date: Date {
                year: 2024,
                month: 2,
                day: 29,
            },
            hour: 13,
            minute: 5,
            second: 9,
            micro: 123_456,
        };
        let mut out = BytesMut::new();
        encode_binary(&Value::DateTime(dt), ty::DATETIME, &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[11, 0xE8, 0x07, 2, 29, 13, 5, 9, 0x40, 0xE2, 0x01, 0x00]
        );
        let mut r = Reader::new(out.freeze());
        assert_eq!(
            decode_binary(&mut r, ty::DATETIME, false).unwrap(),
            Value::DateTime(dt)
        );
    }

    #[test]
    fn text_formats() {
        let c = col(ty::DATETIME, 0, 63, 6);
        let dt = parse_datetime(b"2024-01-02 03:04:05.000120").unwrap();
        let mut out = BytesMut::new();
        encode_text(&Value::DateTime(dt), &c, &mut out).unwrap();
        assert_eq!(&out[1..], b"2024-01-02 03:04:05.000120");
        let t = parse_time(b"-838:59:59.5").unwrap();
        assert_eq!(t.days, 34);
        let mut out = BytesMut::new();
        encode_text(&Value::Time(t), &col(ty::TIME, 0, 63, 1), &mut out).unwrap();
        assert_eq!(&out[1..], b"-838:59:59.5");
        for (v, single, text) in [
            (1e20, false, "1e20"),
            (1e-7, false, "0.0000001"),
            (1e-30, false, "1e-30"),
            (123456789.125, false, "123456789.125"),
            (-1.7976931348623157e308, false, "-1.7976931348623157e308"),
            (f64::from(-3.4028235e38f32), true, "-3.40282e38"),
            (f64::from(1.23456f32), true, "1.23456"),
            (f64::from(123.4567f32), true, "123.457"),
            (f64::from(0.1f32), true, "0.1"),
            (0.0, false, "0"),
            (1e15, false, "1e15"),
            (123456789012345.0, false, "123456789012345"),
        ] {
            let mut s = String::new();
            format_float(v, single, &mut s);
            assert_eq!(s, text);
        }
        let zf = ColumnDefinition {
            column_length: 5,
            ..col(ty::LONG, column_flag::ZEROFILL, 63, 0)
        };
        let mut out = BytesMut::new();
        encode_text(&Value::UInt(42), &zf, &mut out).unwrap();
        assert_eq!(&out[1..], b"00042");
    }

    #[test]
    fn doubles_with_fixed_decimals_show_exactly_those() {
        // STDDEV over an INT column is DOUBLE with 4 decimals: the server prints 2.3452.
        let fixed = col(ty::DOUBLE, column_flag::BINARY, charset::BINARY, 4);
        let mut out = BytesMut::new();
        encode_text(&Value::Double(2.345_207_879_911_715), &fixed, &mut out).expect("encode");
        assert_eq!(&out[1..], b"2.3452");
        let mut out = BytesMut::new();
        encode_text(&Value::Double(0.0), &fixed, &mut out).expect("encode");
        assert_eq!(&out[1..], b"0.0000");
        // A plain DOUBLE (31 = NOT_FIXED_DEC) keeps the shortest round-trip text.
        let plain = col(ty::DOUBLE, column_flag::BINARY, charset::BINARY, 31);
        let mut out = BytesMut::new();
        encode_text(&Value::Double(0.5), &plain, &mut out).expect("encode");
        assert_eq!(&out[1..], b"0.5");
    }

    #[test]
    fn integer_text_parsing() {
        assert_eq!(parse_i64(b"-9223372036854775808", "x"), Ok(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807", "x"), Ok(i64::MAX));
        assert!(parse_i64(b"9223372036854775808", "x").is_err());
        assert!(parse_i64(b"-9223372036854775809", "x").is_err());
        assert_eq!(parse_u64(b"18446744073709551615", "x"), Ok(u64::MAX));
        assert!(parse_u64(b"18446744073709551616", "x").is_err());
        assert!(parse_u64(b"", "x").is_err());
        assert!(parse_i64(b"-", "x").is_err());
        assert!(parse_u64(b"1a", "x").is_err());
    }

    #[test]
    fn ordering() {
        let d = col(ty::NEWDECIMAL, 0, 63, 2);
        let dec = |s: &'static str| Value::Decimal(Bytes::from_static(s.as_bytes()));
        assert_eq!(
            compare_values(&dec("-1.50"), &dec("-1.5"), &d),
            Ordering::Equal
        );
        assert_eq!(
            compare_values(&dec("-2"), &dec("-1.99"), &d),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&dec("10.01"), &dec("9.999"), &d),
            Ordering::Greater
        );
        assert_eq!(compare_values(&Value::Null, &dec("-9"), &d), Ordering::Less);
        let i = col(ty::LONGLONG, 0, 63, 0);
        assert_eq!(
            compare_values(&Value::Int(-1), &Value::UInt(u64::MAX), &i),
            Ordering::Less
        );
        let s = col(ty::VAR_STRING, 0, charset::UTF8MB4_GENERAL_CI, 0);
        let b = |s: &'static str| Value::Bytes(Bytes::from_static(s.as_bytes()));
        assert_eq!(compare_values(&b("abc"), &b("ABC  "), &s), Ordering::Equal);
        assert_eq!(compare_values(&b("Ä"), &b("a"), &s), Ordering::Equal);
        assert_eq!(compare_values(&b("a"), &b("B"), &s), Ordering::Less);
        let bin = col(ty::VAR_STRING, column_flag::BINARY, charset::BINARY, 0);
        assert_eq!(compare_values(&b("a"), &b("B"), &bin), Ordering::Greater);
    }
}
