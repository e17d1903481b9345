//! Text helpers: binding prepared-statement parameters as literals, literals as shard keys.

use std::fmt::Write as _;

use codec::mysql::Value;
use sqlparser::ast::{Expr, UnaryOperator, Value as SqlValue};

use super::ShardError;
use crate::sql::shard::KeyValue;

/// A protocol value as a MySQL literal.
pub fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Double(f) => format!("{f:?}"),
        Value::Decimal(b) => String::from_utf8_lossy(b).into_owned(),
        // Text as a quoted string; bytes that are not UTF-8 as a hex literal (never altered).
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => quote(s),
            Err(_) => {
                let mut out = String::with_capacity(b.len() * 2 + 3);
                out.push_str("X'");
                for byte in b.iter() {
                    let _ = write!(out, "{byte:02X}");
                }
                out.push('\'');
                out
            }
        },
        Value::Date(d) => format!("'{:04}-{:02}-{:02}'", d.year, d.month, d.day),
        Value::DateTime(t) => format!(
            "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
            t.date.year, t.date.month, t.date.day, t.hour, t.minute, t.second, t.micro
        ),
        Value::Time(t) => {
            let us = t.as_micros();
            let (sign, us) = if us < 0 { ("-", -us) } else { ("", us) };
            let s = us / 1_000_000;
            format!(
                "'{sign}{}:{:02}:{:02}.{:06}'",
                s / 3600,
                s / 60 % 60,
                s % 60,
                us % 1_000_000
            )
        }
    }
}

/// A single-quoted string literal with MySQL escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Replaces each `?` placeholder with the literal of the matching parameter. Everything else is
/// the statement's own text, byte for byte.
pub fn bind_params(sql: &str, params: &[Value]) -> Result<String, ShardError> {
    let src = super::splice::Source::new(sql);
    let mut out = String::with_capacity(sql.len() + params.len() * 8);
    let mut next = params.iter();
    let mut at = 0;
    for t in src
        .toks()
        .iter()
        .filter(|t| t.kind == super::splice::Kind::Punct(b'?'))
    {
        let v = next
            .next()
            .ok_or_else(|| ShardError::Syntax("more placeholders than bound parameters".into()))?;
        out.push_str(sql.get(at..t.start).unwrap_or_default());
        out.push_str(&literal(v));
        at = t.end;
    }
    out.push_str(sql.get(at..).unwrap_or_default());
    if next.next().is_some() {
        return Err(ShardError::Syntax(
            "more bound parameters than placeholders".into(),
        ));
    }
    Ok(out)
}

/// The shard-key value of a literal expression (`42`, `-3`, `'abc'`), if it is one.
pub fn key_of_literal(e: &Expr) -> Option<KeyValue> {
    match e {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => Some(KeyValue::from_text(n)),
            SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => {
                Some(KeyValue::from_text(s))
            }
            SqlValue::Null => Some(KeyValue::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match key_of_literal(expr)? {
            KeyValue::Int(i) => Some(KeyValue::Int(-i)),
            _ => None,
        },
        Expr::Nested(e) => key_of_literal(e),
        _ => None,
    }
}

/// A literal expression as a protocol value (for proxy-side evaluation).
pub fn value_of_literal(e: &Expr) -> Option<Value> {
    match e {
        Expr::Value(v) => match &v.value {
            // `1e3` is a DOUBLE literal in MySQL, `1.5` a DECIMAL, `15` an integer.
            SqlValue::Number(n, _) if n.contains(['e', 'E']) => {
                Some(Value::Double(n.parse().ok()?))
            }
            SqlValue::Number(n, _) => Some(match n.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Decimal(bytes::Bytes::from(n.clone())),
            }),
            SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => {
                Some(Value::Bytes(bytes::Bytes::from(s.clone())))
            }
            SqlValue::Null => Some(Value::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match value_of_literal(expr)? {
            Value::Int(i) => Some(Value::Int(-i)),
            Value::Decimal(d) => Some(Value::Decimal(bytes::Bytes::from(format!(
                "-{}",
                String::from_utf8_lossy(&d)
            )))),
            Value::Double(d) => Some(Value::Double(-d)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_placeholders_outside_strings() {
        let p = [
            Value::Int(7),
            Value::Bytes(bytes::Bytes::from_static(b"o'k")),
        ];
        let s = bind_params("SELECT '?' FROM t WHERE a = ? AND b = ?", &p).unwrap_or_default();
        assert_eq!(s, "SELECT '?' FROM t WHERE a = 7 AND b = 'o''k'");
        assert!(bind_params("SELECT ?", &[]).is_err());
        assert!(bind_params("SELECT 1", &p).is_err());
    }
}
