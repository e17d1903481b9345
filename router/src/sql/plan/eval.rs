//! Expressions evaluated by the proxy over merged rows: projections over aggregates (`SUM(a)/COUNT(*)`,
//! AVG as SUM/COUNT, `ROUND(AVG(x), 2)`, `CAST(SUM(x) AS SIGNED)`, `GREATEST(MIN(a), 1)`), HAVING
//! filters (comparisons, BETWEEN) and computed sort keys, with MariaDB's semantics:
//!
//! - Integer and decimal arithmetic is exact; anything with a DOUBLE is DOUBLE.
//! - A quotient (`/`, AVG) is carried with more digits than it shows, exactly as MariaDB's
//!   `do_div_mod` (strings/decimal.c) computes it: the operands' fractional digits are counted in
//!   9-digit words, `div_precision_increment` (4) is added less the padding those words gave, the
//!   total is rounded up to whole words and the quotient is *truncated* there (`1/3` is
//!   `0.333333333` inside, so `1/3*3` shows `1.0000`; a zero dividend gives a plain 0). Only the
//!   final output ([`OutExpr::output`]) rounds to the column's decimals (half away from zero).
//! - Functions see the carried value: `ROUND(AVG(x), 2)` rounds `1.666666666`, not `1.6667`;
//!   so do CAST, GREATEST/LEAST, IFNULL/COALESCE and BETWEEN (`Item_func_between` compares the
//!   raw decimals).
//! - `=`, `<`, ... round each decimal side to its own shown decimals first (MariaDB's
//!   `Arg_comparator::compare_decimal` does `round_self_if_needed`): `AVG(x) = 1.6667` holds for
//!   an average of 1.666666666.
//! - Division by zero is NULL; a value the proxy cannot represent exactly (beyond 38 digits), an
//!   out-of-range CAST or BIGINT result, and functions over DOUBLE or text arguments are refused
//!   (ERR 1235) rather than answered approximately.
//!
//! The session's `div_precision_increment` is assumed to be the default 4.

use std::cmp::Ordering;
use std::fmt;

use bytes::Bytes;
use codec::mysql::consts::{charset, column_flag, column_type};
use codec::mysql::{ColumnDefinition, Value};

use super::ShardError;

/// A binary operator the evaluator supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `AND`
    And,
    /// `OR`
    Or,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::And => "AND",
            Op::Or => "OR",
        }
    }

    fn is_arith(self) -> bool {
        matches!(self, Op::Add | Op::Sub | Op::Mul | Op::Div)
    }
}

/// A function the evaluator applies after the merge (over aggregates or their aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `ROUND(x, n)` (`n` a literal; 0 when absent).
    Round(i32),
    /// `TRUNCATE(x, n)`.
    Truncate(i32),
    /// `GREATEST(a, b, ...)`.
    Greatest,
    /// `LEAST(a, b, ...)`.
    Least,
    /// `IFNULL(a, b)` and `COALESCE(a, b, ...)`: the first non-NULL argument.
    Coalesce,
    /// `CAST(x AS SIGNED)`.
    CastSigned,
    /// `CAST(x AS UNSIGNED)`.
    CastUnsigned,
    /// `CAST(x AS DECIMAL(m, d))`.
    CastDecimal(u32, u32),
    /// `CAST(x AS CHAR)`.
    CastChar,
    /// `x BETWEEN lo AND hi` (`true`: `NOT BETWEEN`); arguments `[x, lo, hi]`.
    Between(bool),
    /// VARIANCE/STDDEV family from the merged `[COUNT(x), SUM(x), SUM(x*x)]`: the sample
    /// (`samp`, n - 1) or population variance, its square root when `sqrt`.
    Variance {
        /// Divide by n - 1 (VAR_SAMP, STDDEV_SAMP).
        samp: bool,
        /// The standard deviation.
        sqrt: bool,
    },
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Func::Round(n) => write!(f, "ROUND/{n}"),
            Func::Truncate(n) => write!(f, "TRUNCATE/{n}"),
            Func::Greatest => write!(f, "GREATEST"),
            Func::Least => write!(f, "LEAST"),
            Func::Coalesce => write!(f, "COALESCE"),
            Func::CastSigned => write!(f, "CAST_SIGNED"),
            Func::CastUnsigned => write!(f, "CAST_UNSIGNED"),
            Func::CastDecimal(m, d) => write!(f, "CAST_DECIMAL/{m},{d}"),
            Func::CastChar => write!(f, "CAST_CHAR"),
            Func::Between(false) => write!(f, "BETWEEN"),
            Func::Between(true) => write!(f, "NOT_BETWEEN"),
            Func::Variance { samp, sqrt } => write!(
                f,
                "{}_{}",
                if *sqrt { "STDDEV" } else { "VAR" },
                if *samp { "SAMP" } else { "POP" }
            ),
        }
    }
}

/// An expression over the columns of a merged row.
#[derive(Debug, Clone, PartialEq)]
pub enum OutExpr {
    /// The value of column `i`.
    Col(usize),
    /// A literal.
    Lit(Value),
    /// A binary operation.
    Bin(Op, Box<OutExpr>, Box<OutExpr>),
    /// `NOT e`.
    Not(Box<OutExpr>),
    /// `e IS NULL` (`true`) or `e IS NOT NULL` (`false`).
    IsNull(Box<OutExpr>, bool),
    /// A function call.
    Call(Func, Vec<OutExpr>),
}

impl fmt::Display for OutExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutExpr::Col(i) => write!(f, "#{i}"),
            OutExpr::Lit(v) => match v {
                Value::Int(i) => write!(f, "{i}"),
                Value::UInt(i) => write!(f, "{i}"),
                Value::Decimal(b) | Value::Bytes(b) => {
                    write!(f, "'{}'", String::from_utf8_lossy(b))
                }
                Value::Double(d) => write!(f, "{d}"),
                Value::Null => write!(f, "NULL"),
                other => write!(f, "{other:?}"),
            },
            OutExpr::Bin(op, a, b) => write!(f, "({a} {} {b})", op.text()),
            OutExpr::Not(e) => write!(f, "NOT {e}"),
            OutExpr::IsNull(e, true) => write!(f, "{e} IS NULL"),
            OutExpr::IsNull(e, false) => write!(f, "{e} IS NOT NULL"),
            OutExpr::Call(func, args) => {
                let args: Vec<String> = args.iter().map(ToString::to_string).collect();
                write!(f, "{func}({})", args.join(", "))
            }
        }
    }
}

/// MariaDB's default `div_precision_increment`.
const DIV_PRECISION_INCREMENT: u32 = 4;

/// An exact decimal: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec {
    /// Unscaled value.
    pub mantissa: i128,
    /// Fractional digits.
    pub scale: u32,
}

impl Dec {
    /// Parses decimal text such as `-12.340`.
    pub fn parse(s: &str) -> Option<Dec> {
        let s = s.trim();
        let (neg, digits) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty()
            || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
            || int.len() + frac.len() > 36
        {
            return None;
        }
        let mut m: i128 = 0;
        for c in int.chars().chain(frac.chars()) {
            m = m * 10 + i128::from(c as u8 - b'0');
        }
        Some(Dec {
            mantissa: if neg { -m } else { m },
            scale: frac.len() as u32,
        })
    }

    /// This value with `scale` fractional digits (rounded half away from zero when shrinking).
    pub fn rescale(self, scale: u32) -> Option<Dec> {
        if scale >= self.scale {
            let m = self
                .mantissa
                .checked_mul(10i128.checked_pow(scale - self.scale)?)?;
            Some(Dec { mantissa: m, scale })
        } else {
            let d = 10i128.checked_pow(self.scale - scale)?;
            let (q, r) = (self.mantissa / d, self.mantissa % d);
            let q = if r.abs() * 2 >= d {
                q + self.mantissa.signum()
            } else {
                q
            };
            Some(Dec { mantissa: q, scale })
        }
    }

    fn add(self, o: Dec) -> Option<Dec> {
        let s = self.scale.max(o.scale);
        let (a, b) = (self.rescale(s)?, o.rescale(s)?);
        Some(Dec {
            mantissa: a.mantissa.checked_add(b.mantissa)?,
            scale: s,
        })
    }

    fn neg(self) -> Dec {
        Dec {
            mantissa: -self.mantissa,
            scale: self.scale,
        }
    }

    fn mul(self, o: Dec) -> Option<Dec> {
        Some(Dec {
            mantissa: self.mantissa.checked_mul(o.mantissa)?,
            scale: self.scale + o.scale,
        })
    }

    /// MariaDB's decimal division (`do_div_mod` with `div_precision_increment` = 4): the
    /// quotient truncated to the fractional digits MariaDB carries (see the module doc). `None`
    /// when it does not fit; `Some(None)` for a zero divisor.
    fn div(self, o: Dec) -> Option<Option<Dec>> {
        if o.mantissa == 0 {
            return Some(None);
        }
        if self.mantissa == 0 {
            return Some(Some(Dec {
                mantissa: 0,
                scale: 0,
            }));
        }
        let words = |f: u32| f.div_ceil(9) * 9;
        let (f1, f2) = (words(self.scale), words(o.scale));
        let padding = (f1 - self.scale) + (f2 - o.scale);
        let incr = DIV_PRECISION_INCREMENT.saturating_sub(padding);
        let frac = words(f1 + f2 + incr);
        // a/10^sa / (b/10^sb) truncated at 10^-frac = trunc(a * 10^(frac + sb - sa) / b).
        let shift = (frac + o.scale).checked_sub(self.scale)?;
        let num = self.mantissa.checked_mul(10i128.checked_pow(shift)?)?;
        Some(Some(Dec {
            mantissa: num / o.mantissa,
            scale: frac,
        }))
    }

    /// Rounded (half away from zero) or truncated at `n` fractional digits (`n` < 0: at tens,
    /// hundreds, ...), as ROUND/TRUNCATE do; the result has `max(n, 0)` fractional digits.
    fn round_at(self, n: i32, truncate: bool) -> Option<Dec> {
        let keep = n.max(0).unsigned_abs();
        if keep >= self.scale && n >= 0 {
            return self.rescale(keep);
        }
        // Drop `drop` digits, then scale back up by `up` (negative n).
        let drop = i64::from(self.scale) - i64::from(n);
        let d = 10i128.checked_pow(u32::try_from(drop).ok()?)?;
        let (q, r) = (self.mantissa / d, self.mantissa % d);
        let q = if !truncate && r.abs().checked_mul(2)? >= d {
            q + self.mantissa.signum()
        } else {
            q
        };
        let up = u32::try_from(-i64::from(n.min(0))).ok()?;
        Some(Dec {
            mantissa: q.checked_mul(10i128.checked_pow(up)?)?,
            scale: keep,
        })
    }

    fn to_f64(self) -> f64 {
        self.mantissa as f64 / 10f64.powi(self.scale as i32)
    }

    fn cmp(self, o: Dec) -> Ordering {
        let s = self.scale.max(o.scale);
        match (self.rescale(s), o.rescale(s)) {
            (Some(a), Some(b)) => a.mantissa.cmp(&b.mantissa),
            _ => self.to_f64().total_cmp(&o.to_f64()),
        }
    }

    /// The decimal text (`-0.50`).
    pub fn text(self) -> String {
        let neg = self.mantissa < 0;
        let digits = self.mantissa.unsigned_abs().to_string();
        let s = self.scale as usize;
        let body = if s == 0 {
            digits
        } else if digits.len() > s {
            format!(
                "{}.{}",
                &digits[..digits.len() - s],
                &digits[digits.len() - s..]
            )
        } else {
            format!("0.{}{}", "0".repeat(s - digits.len()), digits)
        };
        if neg { format!("-{body}") } else { body }
    }
}

/// A number during evaluation.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Dec(Dec),
    Double(f64),
}

fn num_of(v: &Value) -> Option<Num> {
    Some(match v {
        Value::Int(i) => Num::Int(i128::from(*i)),
        Value::UInt(u) => Num::Int(i128::from(*u)),
        Value::Float(f) => Num::Double(f64::from(*f)),
        Value::Double(f) => Num::Double(*f),
        Value::Decimal(b) => Num::Dec(Dec::parse(std::str::from_utf8(b).ok()?)?),
        Value::Bytes(b) => {
            let s = std::str::from_utf8(b).ok()?;
            match Dec::parse(s) {
                Some(d) => Num::Dec(d),
                None => Num::Double(s.trim().parse().ok()?),
            }
        }
        _ => return None,
    })
}

/// A non-NULL operand as a number; `None` for NULL. A value the proxy cannot read exactly (a
/// number beyond 38 digits, text that is not a number, a date) is refused: the server would
/// convert it by rules the proxy does not model, so NULL or 0 here would be a wrong answer.
fn operand(v: &Value) -> Result<Option<Num>, ShardError> {
    match v {
        Value::Null => Ok(None),
        v => num_of(v).map(Some).ok_or_else(|| {
            unsupported("arithmetic or a function over a value the proxy cannot read as a number")
        }),
    }
}

/// A non-NULL operand as an exact decimal (see [`operand`]); a DOUBLE is refused too.
fn exact(v: &Value) -> Result<Option<Dec>, ShardError> {
    match operand(v)? {
        None => Ok(None),
        Some(n) => as_dec(n)
            .map(Some)
            .ok_or_else(|| unsupported("a function over a DOUBLE value")),
    }
}

fn too_big() -> ShardError {
    ShardError::Unsupported(
        "a number beyond the 38 digits the proxy evaluates exactly (after the merge)".into(),
    )
}

fn num_value(n: Num) -> Result<Value, ShardError> {
    Ok(match n {
        Num::Int(i) => match i64::try_from(i) {
            Ok(i) => Value::Int(i),
            Err(_) => match u64::try_from(i) {
                Ok(u) => Value::UInt(u),
                Err(_) => {
                    return Err(ShardError::Unsupported(
                        "a BIGINT result out of range".into(),
                    ));
                }
            },
        },
        Num::Dec(d) => Value::Decimal(Bytes::from(d.text())),
        Num::Double(f) => Value::Double(f),
    })
}

fn as_dec(n: Num) -> Option<Dec> {
    match n {
        Num::Int(i) => Some(Dec {
            mantissa: i,
            scale: 0,
        }),
        Num::Dec(d) => Some(d),
        Num::Double(_) => None,
    }
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Dec(d) => d.to_f64(),
        Num::Double(f) => f,
    }
}

/// `a op b` for arithmetic operators: NULL on NULL input or division by zero; a quotient carries
/// MariaDB's internal digits (see the module doc). Fails on a result the proxy cannot hold.
pub fn arith(op: Op, a: &Value, b: &Value) -> Result<Value, ShardError> {
    if matches!(a, Value::Null) || matches!(b, Value::Null) {
        return Ok(Value::Null);
    }
    let (Some(x), Some(y)) = (operand(a)?, operand(b)?) else {
        return Ok(Value::Null);
    };
    let r = match (op, x, y) {
        (Op::Add, Num::Int(p), Num::Int(q)) => p.checked_add(q).map(Num::Int),
        (Op::Sub, Num::Int(p), Num::Int(q)) => p.checked_sub(q).map(Num::Int),
        (Op::Mul, Num::Int(p), Num::Int(q)) => p.checked_mul(q).map(Num::Int),
        (_, Num::Double(_), _) | (_, _, Num::Double(_)) => {
            let (p, q) = (as_f64(x), as_f64(y));
            match op {
                Op::Add => Some(Num::Double(p + q)),
                Op::Sub => Some(Num::Double(p - q)),
                Op::Mul => Some(Num::Double(p * q)),
                _ if q == 0.0 => return Ok(Value::Null),
                _ => Some(Num::Double(p / q)),
            }
        }
        _ => {
            let (Some(p), Some(q)) = (as_dec(x), as_dec(y)) else {
                return Ok(Value::Null);
            };
            match op {
                Op::Add => p.add(q).map(Num::Dec),
                Op::Sub => p.add(q.neg()).map(Num::Dec),
                Op::Mul => p.mul(q).map(Num::Dec),
                _ => match p.div(q) {
                    Some(None) => return Ok(Value::Null),
                    Some(Some(d)) => Some(Num::Dec(d)),
                    None => None,
                },
            }
        }
    };
    num_value(r.ok_or_else(too_big)?)
}

/// Compares two values for `=`/`<` in expressions: numbers numerically, text by the collation
/// of `col` (the operand column's definition), or `utf8mb4_general_ci` (the connection's) when
/// neither operand is a column. `None` when either is NULL.
pub fn compare(a: &Value, b: &Value, col: Option<&ColumnDefinition>) -> Option<Ordering> {
    if matches!(a, Value::Null) || matches!(b, Value::Null) {
        return None;
    }
    let text = |v: &Value| matches!(v, Value::Bytes(_));
    if !(text(a) && text(b))
        && let (Some(x), Some(y)) = (num_of(a), num_of(b))
    {
        return Some(match (as_dec(x), as_dec(y)) {
            (Some(p), Some(q)) => p.cmp(q),
            _ => as_f64(x).total_cmp(&as_f64(y)),
        });
    }
    if let Some(c) = col.filter(|c| c.column_type != column_type::NULL) {
        // Strings by the column's collation (a binary column's bytewise).
        let mut text = c.clone();
        text.column_type = column_type::VAR_STRING;
        return Some(codec::mysql::compare_values(a, b, &text));
    }
    let col = ColumnDefinition::new(
        "",
        column_type::VAR_STRING,
        charset::UTF8MB4_GENERAL_CI,
        0,
        0,
        0,
    );
    Some(codec::mysql::compare_values(a, b, &col))
}

/// A value as a condition: NULL is unknown, a number is true when not 0. Text that is not a
/// number is refused (the server reads a numeric prefix, `'1abc'` is true).
fn truth(v: &Value) -> Result<Option<bool>, ShardError> {
    Ok(operand(v)?.map(|n| as_f64(n) != 0.0))
}

fn bool_value(b: Option<bool>) -> Value {
    b.map_or(Value::Null, |b| Value::Int(i64::from(b)))
}

/// How MariaDB types a value for the functions the proxy evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// An integer type of this rank (TINY < SHORT < INT24 < LONG < LONGLONG); `true`: unsigned.
    Int(u8, bool),
    /// DECIMAL with these shown decimals.
    Dec(u32),
    /// FLOAT/DOUBLE.
    Double,
    /// The NULL literal.
    Null,
    /// Anything else (text, dates).
    Other,
}

const INT_TYPES: [u8; 5] = [
    column_type::TINY,
    column_type::SHORT,
    column_type::INT24,
    column_type::LONG,
    column_type::LONGLONG,
];

fn class(def: &ColumnDefinition) -> Class {
    let t = def.column_type;
    if let Some(rank) = INT_TYPES.iter().position(|&x| x == t) {
        Class::Int(rank as u8, def.flags & column_flag::UNSIGNED != 0)
    } else if t == column_type::NEWDECIMAL || t == column_type::DECIMAL {
        Class::Dec(u32::from(def.decimals))
    } else if t == column_type::DOUBLE || t == column_type::FLOAT {
        Class::Double
    } else if t == column_type::NULL {
        Class::Null
    } else {
        Class::Other
    }
}

fn num_def(name: &str, column_type: u8, length: u32, flags: u16, decimals: u8) -> ColumnDefinition {
    ColumnDefinition::new(
        name,
        column_type,
        charset::BINARY,
        length,
        column_flag::BINARY | flags,
        decimals,
    )
}

fn dec_def(decimals: u32) -> ColumnDefinition {
    num_def(
        "",
        column_type::NEWDECIMAL,
        66,
        0,
        u8::try_from(decimals.min(38)).unwrap_or(38),
    )
}

fn unsupported(what: impl fmt::Display) -> ShardError {
    ShardError::Unsupported(format!("{what} after a cross-shard merge"))
}

/// The class several arguments aggregate to (GREATEST/LEAST/COALESCE): integers to the widest
/// integer, integers and decimals to a decimal with the most decimals; NULL literals do not
/// count. `None` for DOUBLE, text or unsigned arguments (refused).
fn common_class(classes: &[Class]) -> Option<Class> {
    let mut out = Class::Null;
    for &c in classes {
        out = match (out, c) {
            (_, Class::Null) => out,
            (Class::Null, c @ (Class::Int(_, false) | Class::Dec(_))) => c,
            (Class::Int(a, _), Class::Int(b, false)) => Class::Int(a.max(b), false),
            (Class::Int(..), Class::Dec(d)) | (Class::Dec(d), Class::Int(_, false)) => {
                Class::Dec(d)
            }
            (Class::Dec(a), Class::Dec(b)) => Class::Dec(a.max(b)),
            _ => return None,
        };
    }
    Some(out)
}

fn is_exact(c: Class) -> bool {
    matches!(c, Class::Int(..) | Class::Dec(_) | Class::Null)
}

impl OutExpr {
    /// The value as MariaDB carries it inside an expression (a quotient with its extra digits),
    /// over `row`, whose columns are `cols` (text compares by their collations).
    pub fn eval(&self, row: &[Value], cols: &[ColumnDefinition]) -> Result<Value, ShardError> {
        Ok(match self {
            OutExpr::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            OutExpr::Lit(v) => v.clone(),
            OutExpr::Not(e) => bool_value(truth(&e.eval(row, cols)?)?.map(|b| !b)),
            OutExpr::IsNull(e, want) => {
                bool_value(Some(matches!(e.eval(row, cols)?, Value::Null) == *want))
            }
            OutExpr::Bin(op, a, b) => {
                let (x, y) = (a.eval(row, cols)?, b.eval(row, cols)?);
                match op {
                    Op::And => bool_value(match (truth(&x)?, truth(&y)?) {
                        (Some(false), _) | (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    }),
                    Op::Or => bool_value(match (truth(&x)?, truth(&y)?) {
                        (Some(true), _) | (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    }),
                    op if op.is_arith() => arith(*op, &x, &y)?,
                    op => {
                        // Decimal sides compare at their shown decimals (compare_decimal's
                        // round_self_if_needed).
                        let (x, y) = (a.shown(x, cols), b.shown(y, cols));
                        // A column operand's collation decides (it outranks a literal's, as in
                        // the server's collation derivation).
                        let def = match (&**a, &**b) {
                            (OutExpr::Col(i), _) | (_, OutExpr::Col(i)) => cols.get(*i),
                            _ => None,
                        };
                        bool_value(compare(&x, &y, def).map(|o| match op {
                            Op::Eq => o == Ordering::Equal,
                            Op::Ne => o != Ordering::Equal,
                            Op::Lt => o == Ordering::Less,
                            Op::Le => o != Ordering::Greater,
                            Op::Gt => o == Ordering::Greater,
                            _ => o != Ordering::Less,
                        }))
                    }
                }
            }
            OutExpr::Call(func, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(row, cols)?);
                }
                self.call(*func, args, vals, cols)?
            }
        })
    }

    fn call(
        &self,
        func: Func,
        args: &[OutExpr],
        vals: Vec<Value>,
        cols: &[ColumnDefinition],
    ) -> Result<Value, ShardError> {
        let dec_of = exact;
        Ok(match func {
            Func::Round(n) | Func::Truncate(n) => {
                let first = vals.into_iter().next().unwrap_or(Value::Null);
                let Some(d) = dec_of(&first)? else {
                    return Ok(Value::Null);
                };
                if matches!(first, Value::Int(_) | Value::UInt(_)) && n >= 0 {
                    // ROUND(int, n >= 0) is the integer itself.
                    return Ok(first);
                }
                let r = d
                    .round_at(n, matches!(func, Func::Truncate(_)))
                    .ok_or_else(too_big)?;
                num_value(Num::Dec(r))?
            }
            Func::Greatest | Func::Least => {
                let mut best: Option<(Dec, &Value)> = None;
                for v in &vals {
                    let Some(d) = dec_of(v)? else {
                        return Ok(Value::Null);
                    };
                    let better = best.as_ref().is_none_or(|(b, _)| {
                        let o = d.cmp(*b);
                        if func == Func::Greatest {
                            o == Ordering::Greater
                        } else {
                            o == Ordering::Less
                        }
                    });
                    if better {
                        best = Some((d, v));
                    }
                }
                best.map_or(Value::Null, |(_, v)| v.clone())
            }
            Func::Coalesce => vals
                .into_iter()
                .find(|v| !matches!(v, Value::Null))
                .unwrap_or(Value::Null),
            Func::CastSigned | Func::CastUnsigned => {
                let Some(d) = vals.first().map(dec_of).transpose()?.flatten() else {
                    return Ok(Value::Null);
                };
                let i = d.rescale(0).ok_or_else(too_big)?.mantissa;
                if func == Func::CastSigned {
                    Value::Int(
                        i64::try_from(i).map_err(|_| unsupported("CAST AS SIGNED out of range"))?,
                    )
                } else {
                    Value::UInt(u64::try_from(i).map_err(|_| {
                        unsupported("CAST AS UNSIGNED of a negative or too large value")
                    })?)
                }
            }
            Func::CastDecimal(m, d) => {
                let Some(x) = vals.first().map(dec_of).transpose()?.flatten() else {
                    return Ok(Value::Null);
                };
                let r = x.rescale(d).ok_or_else(too_big)?;
                let limit = 10i128.checked_pow(m).ok_or_else(too_big)?;
                if r.mantissa.abs() >= limit {
                    return Err(unsupported(format!(
                        "CAST AS DECIMAL({m},{d}) out of range"
                    )));
                }
                Value::Decimal(Bytes::from(r.text()))
            }
            Func::CastChar => {
                let v = vals.into_iter().next().unwrap_or(Value::Null);
                let v = match args.first() {
                    Some(a) => a.shown(v, cols),
                    None => v,
                };
                match v {
                    Value::Null => Value::Null,
                    Value::Int(i) => Value::Bytes(Bytes::from(i.to_string())),
                    Value::UInt(u) => Value::Bytes(Bytes::from(u.to_string())),
                    Value::Decimal(b) => Value::Bytes(b),
                    _ => return Err(unsupported("CAST AS CHAR of this type")),
                }
            }
            Func::Variance { samp, sqrt } => {
                let d = vals
                    .iter()
                    .map(dec_of)
                    .collect::<Result<Vec<Option<Dec>>, ShardError>>()?;
                let (Some(Some(n)), Some(sum), Some(sq)) = (d.first(), d.get(1), d.get(2)) else {
                    return Ok(Value::Null);
                };
                let n = n.mantissa;
                if n == 0 || (samp && n == 1) {
                    return Ok(Value::Null);
                }
                let (Some(sum), Some(sq)) = (sum, sq) else {
                    return Ok(Value::Null);
                };
                // Exact n*SUM(x*x) - SUM(x)^2 over n*n (or n*(n-1)), then one division in
                // DOUBLE. MariaDB runs a Welford recurrence in DOUBLE over its rows, so its own
                // last bits depend on the row order; the shown decimals almost never see that.
                let num = Dec {
                    mantissa: n,
                    scale: 0,
                }
                .mul(*sq)
                .and_then(|a| sum.mul(*sum).and_then(|b| a.add(b.neg())))
                .ok_or_else(too_big)?;
                let den = n
                    .checked_mul(if samp { n - 1 } else { n })
                    .ok_or_else(too_big)?;
                let v = (num.to_f64() / den as f64).max(0.0);
                Value::Double(if sqrt { v.sqrt() } else { v })
            }
            Func::Between(negated) => {
                let d = vals
                    .iter()
                    .map(dec_of)
                    .collect::<Result<Vec<Option<Dec>>, ShardError>>()?;
                let (Some(x), Some(lo), Some(hi)) = (d.first(), d.get(1), d.get(2)) else {
                    return Ok(Value::Null);
                };
                let Some(x) = x else {
                    return Ok(Value::Null);
                };
                // Item_func_between::val_int_cmp_decimal, raw values, NULL bounds included.
                let ge = |b: &Dec| x.cmp(*b) != Ordering::Less;
                let le = |b: &Dec| x.cmp(*b) != Ordering::Greater;
                bool_value(match (lo, hi) {
                    (Some(lo), Some(hi)) => Some((ge(lo) && le(hi)) != negated),
                    (None, None) => None,
                    (None, Some(hi)) => (!le(hi)).then_some(negated),
                    (Some(lo), None) => (!ge(lo)).then_some(negated),
                })
            }
        })
    }

    /// `v` (this expression's carried value) as the client sees it: a decimal rounded (half away
    /// from zero) or padded to the column's decimals, an integer of a DECIMAL column as a decimal.
    fn shown(&self, v: Value, cols: &[ColumnDefinition]) -> Value {
        let def = self.def(cols);
        if !matches!(class(&def), Class::Dec(_)) {
            return v;
        }
        let d = match &v {
            Value::Decimal(b) => std::str::from_utf8(b).ok().and_then(Dec::parse),
            Value::Int(i) => Some(Dec {
                mantissa: i128::from(*i),
                scale: 0,
            }),
            Value::UInt(u) => Some(Dec {
                mantissa: i128::from(*u),
                scale: 0,
            }),
            _ => None,
        };
        match d.and_then(|d| d.rescale(u32::from(def.decimals))) {
            Some(r) => Value::Decimal(Bytes::from(r.text())),
            None => v,
        }
    }

    /// The value sent to the client for `row` of `cols`: [`OutExpr::eval`], then rounded to the
    /// result column's decimals.
    pub fn output(&self, row: &[Value], cols: &[ColumnDefinition]) -> Result<Value, ShardError> {
        let v = self.eval(row, cols)?;
        Ok(self.shown(v, cols))
    }

    /// Whether the expression holds for `row` of `cols` (NULL is false), as WHERE/HAVING treat
    /// it.
    pub fn holds(&self, row: &[Value], cols: &[ColumnDefinition]) -> Result<bool, ShardError> {
        Ok(truth(&self.eval(row, cols)?)? == Some(true))
    }

    /// Refuses, from the input columns' types, what the proxy cannot evaluate exactly: functions
    /// over DOUBLE, text or unsigned arguments, arithmetic on unsigned integers (MariaDB's
    /// unsigned overflow rules are not modelled).
    pub fn check(&self, cols: &[ColumnDefinition]) -> Result<(), ShardError> {
        match self {
            OutExpr::Col(_) | OutExpr::Lit(_) => Ok(()),
            OutExpr::Not(e) | OutExpr::IsNull(e, _) => e.check(cols),
            OutExpr::Bin(op, a, b) => {
                a.check(cols)?;
                b.check(cols)?;
                if op.is_arith()
                    && [a, b]
                        .iter()
                        .any(|x| matches!(class(&x.def(cols)), Class::Int(_, true)))
                {
                    return Err(unsupported(format!(
                        "arithmetic on an unsigned integer (`{self}`)"
                    )));
                }
                Ok(())
            }
            OutExpr::Call(func, args) => {
                for a in args {
                    a.check(cols)?;
                }
                let classes: Vec<Class> = args.iter().map(|a| class(&a.def(cols))).collect();
                let ok = match func {
                    Func::Round(_) | Func::Truncate(_) | Func::CastDecimal(..) => {
                        classes.iter().all(|&c| is_exact(c))
                    }
                    Func::CastSigned | Func::CastUnsigned | Func::CastChar => {
                        classes.iter().all(|&c| is_exact(c))
                    }
                    Func::Greatest | Func::Least | Func::Coalesce => {
                        common_class(&classes).is_some()
                    }
                    Func::Between(_) => classes
                        .iter()
                        .all(|&c| matches!(c, Class::Int(_, false) | Class::Dec(_) | Class::Null)),
                    Func::Variance { .. } => classes
                        .iter()
                        .all(|&c| matches!(c, Class::Int(..) | Class::Dec(_))),
                };
                if ok {
                    Ok(())
                } else {
                    Err(unsupported(format!(
                        "`{self}` over DOUBLE, text or unsigned values"
                    )))
                }
            }
        }
    }

    /// The column definition of this expression's results, named `name`.
    pub fn column(&self, cols: &[ColumnDefinition], name: &str) -> ColumnDefinition {
        let mut def = self.def(cols);
        def.name = Bytes::copy_from_slice(name.as_bytes());
        def
    }

    /// The result column definition (unnamed), with MariaDB's result types and decimals.
    fn def(&self, cols: &[ColumnDefinition]) -> ColumnDefinition {
        match self {
            OutExpr::Col(i) => match cols.get(*i) {
                Some(c) => c.clone(),
                None => num_def("", column_type::NULL, 0, 0, 0),
            },
            OutExpr::Lit(Value::Bytes(_)) => ColumnDefinition::new(
                "",
                column_type::VAR_STRING,
                charset::UTF8MB4_GENERAL_CI,
                255,
                0,
                0,
            ),
            // An integer literal is INT while it has at most 9 characters
            // (type_handler_long_or_longlong), BIGINT beyond.
            OutExpr::Lit(Value::Int(i)) if i.to_string().len() <= 9 => {
                num_def("", column_type::LONG, 11, 0, 0)
            }
            OutExpr::Lit(Value::Int(_)) => num_def("", column_type::LONGLONG, 21, 0, 0),
            OutExpr::Lit(Value::Decimal(b)) => dec_def(
                std::str::from_utf8(b)
                    .ok()
                    .and_then(Dec::parse)
                    .map_or(0, |d| d.scale),
            ),
            OutExpr::Lit(Value::Double(_)) => num_def("", column_type::DOUBLE, 23, 0, 31),
            OutExpr::Lit(Value::Null) => num_def("", column_type::NULL, 0, 0, 0),
            OutExpr::Bin(op, a, b) if op.is_arith() => {
                let (ca, cb) = (a.def(cols), b.def(cols));
                let float = |c: &ColumnDefinition| {
                    matches!(c.column_type, column_type::DOUBLE | column_type::FLOAT)
                        || c.column_type == column_type::VAR_STRING
                };
                let int = |c: &ColumnDefinition| {
                    matches!(class(c), Class::Int(..)) || c.column_type == column_type::YEAR
                };
                if float(&ca) || float(&cb) {
                    num_def("", column_type::DOUBLE, 23, 0, 31)
                } else if *op != Op::Div && int(&ca) && int(&cb) {
                    num_def("", column_type::LONGLONG, 21, 0, 0)
                } else {
                    let d = |c: &ColumnDefinition| {
                        if int(c) {
                            0
                        } else {
                            u32::from(c.decimals).min(38)
                        }
                    };
                    let scale = match op {
                        Op::Div => d(&ca) + DIV_PRECISION_INCREMENT,
                        Op::Mul => d(&ca) + d(&cb),
                        _ => d(&ca).max(d(&cb)),
                    };
                    dec_def(scale)
                }
            }
            OutExpr::Call(func, args) => {
                let first = args.first().map(|a| a.def(cols));
                let first_class = first.as_ref().map_or(Class::Null, class);
                match func {
                    Func::Round(n) | Func::Truncate(n) => match (first, first_class) {
                        // ROUND(int, n >= 0) keeps the argument's type; n < 0 gives DECIMAL.
                        (Some(c), Class::Int(..)) if *n >= 0 => c,
                        _ => dec_def((*n).max(0).unsigned_abs()),
                    },
                    Func::Greatest | Func::Least | Func::Coalesce => {
                        let classes: Vec<Class> =
                            args.iter().map(|a| class(&a.def(cols))).collect();
                        match common_class(&classes) {
                            Some(Class::Int(rank, _)) => {
                                let t = INT_TYPES[usize::from(rank).min(4)];
                                let len = if t == column_type::LONGLONG { 21 } else { 11 };
                                num_def("", t, len, 0, 0)
                            }
                            Some(Class::Dec(d)) => dec_def(d),
                            _ => num_def("", column_type::NULL, 0, 0, 0),
                        }
                    }
                    Func::CastSigned => num_def("", column_type::LONGLONG, 21, 0, 0),
                    Func::CastUnsigned => {
                        num_def("", column_type::LONGLONG, 20, column_flag::UNSIGNED, 0)
                    }
                    Func::CastDecimal(_, d) => dec_def(*d),
                    Func::CastChar => ColumnDefinition::new(
                        "",
                        column_type::VAR_STRING,
                        charset::UTF8MB4_GENERAL_CI,
                        255,
                        0,
                        0,
                    ),
                    Func::Between(_) => num_def("", column_type::LONG, 1, 0, 0),
                    // DOUBLE shown with the argument's decimals + 4 (the SUM partial has the
                    // argument's decimals).
                    Func::Variance { .. } => {
                        let d = args.get(1).map_or(0, |a| {
                            let c = a.def(cols);
                            if matches!(class(&c), Class::Dec(_)) {
                                c.decimals
                            } else {
                                0
                            }
                        });
                        num_def("", column_type::DOUBLE, 23, 0, (d + 4).min(31))
                    }
                }
            }
            _ => num_def("", column_type::LONGLONG, 1, 0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Value {
        Value::Decimal(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn decimal_arithmetic_is_exact_and_mysql_scaled() {
        assert_eq!(
            arith(Op::Add, &dec("1.10"), &dec("2.205")).unwrap(),
            dec("3.305")
        );
        assert_eq!(
            arith(Op::Div, &dec("10"), &Value::Int(4)).unwrap(),
            dec("2.500000000")
        );
        assert_eq!(
            arith(Op::Div, &dec("2"), &Value::Int(3)).unwrap(),
            dec("0.666666666")
        );
        assert_eq!(
            arith(Op::Div, &dec("-2"), &Value::Int(3)).unwrap(),
            dec("-0.666666666")
        );
        assert_eq!(
            arith(Op::Div, &Value::Int(1), &Value::Int(0)).unwrap(),
            Value::Null
        );
        assert_eq!(
            arith(Op::Mul, &Value::Int(6), &Value::Int(7)).unwrap(),
            Value::Int(42)
        );
        assert_eq!(
            arith(Op::Add, &Value::Double(0.5), &Value::Int(1)).unwrap(),
            Value::Double(1.5)
        );
        assert_eq!(
            arith(Op::Sub, &dec("0.05"), &dec("0.1")).unwrap(),
            dec("-0.05")
        );
    }

    #[test]
    fn predicates() {
        let row = vec![Value::Int(3), dec("2.50"), Value::Null];
        let gt = OutExpr::Bin(Op::Gt, Box::new(OutExpr::Col(0)), Box::new(OutExpr::Col(1)));
        assert!(gt.holds(&row, &[]).unwrap());
        let null_cmp = OutExpr::Bin(Op::Eq, Box::new(OutExpr::Col(2)), Box::new(OutExpr::Col(0)));
        assert!(!null_cmp.holds(&row, &[]).unwrap());
        assert!(
            !OutExpr::Not(Box::new(null_cmp.clone()))
                .holds(&row, &[])
                .unwrap()
        );
        let or = OutExpr::Bin(Op::Or, Box::new(null_cmp), Box::new(gt));
        assert!(or.holds(&row, &[]).unwrap());
        assert!(
            OutExpr::IsNull(Box::new(OutExpr::Col(2)), true)
                .holds(&row, &[])
                .unwrap()
        );
    }

    #[test]
    fn text_compares_by_the_column_operands_collation() {
        let s = |v: &str| Value::Bytes(Bytes::copy_from_slice(v.as_bytes()));
        let row = vec![s("café")];
        let eq = OutExpr::Bin(
            Op::Eq,
            Box::new(OutExpr::Col(0)),
            Box::new(OutExpr::Lit(s("CAFE"))),
        );
        let mut col = ColumnDefinition::new("c", column_type::VAR_STRING, 45, 80, 0, 0);
        assert!(eq.holds(&row, std::slice::from_ref(&col)).unwrap());
        col.compare_collation = Some(charset::UTF8MB4_BIN);
        assert!(!eq.holds(&row, std::slice::from_ref(&col)).unwrap());
        // Literals alone: the connection's collation.
        let lits = OutExpr::Bin(
            Op::Eq,
            Box::new(OutExpr::Lit(s("a"))),
            Box::new(OutExpr::Lit(s("A"))),
        );
        assert!(lits.holds(&[], &[]).unwrap());
    }

    fn col(t: u8, decimals: u8) -> ColumnDefinition {
        ColumnDefinition::new("c", t, charset::BINARY, 20, column_flag::BINARY, decimals)
    }

    fn call(f: Func, args: Vec<OutExpr>) -> OutExpr {
        OutExpr::Call(f, args)
    }

    fn bin(op: Op, a: OutExpr, b: OutExpr) -> OutExpr {
        OutExpr::Bin(op, Box::new(a), Box::new(b))
    }

    #[test]
    fn quotients_carry_mariadbs_nine_digit_words() {
        // 1/3 is 0.333333333 inside (one 9-digit word), so 1/3*3 shows 1.0000.
        assert_eq!(
            arith(Op::Div, &Value::Int(1), &Value::Int(3)).unwrap(),
            dec("0.333333333")
        );
        let e = bin(
            Op::Mul,
            bin(
                Op::Div,
                OutExpr::Lit(Value::Int(1)),
                OutExpr::Lit(Value::Int(3)),
            ),
            OutExpr::Lit(Value::Int(3)),
        );
        assert_eq!(e.output(&[], &[]).unwrap(), dec("1.0000"));
        // A dividend with 6 decimals: 9 + (4 - 3 padding) = 10 digits, two words.
        assert_eq!(
            arith(Op::Div, &dec("1.000000"), &Value::Int(3)).unwrap(),
            dec("0.333333333333333333")
        );
        // Two decimals: the word's padding (7) swallows the increment: one word.
        assert_eq!(
            arith(Op::Div, &dec("2.00"), &Value::Int(3)).unwrap(),
            dec("0.666666666")
        );
        // Truncated, not rounded; a zero dividend is a plain 0.
        assert_eq!(
            arith(Op::Div, &dec("-2"), &Value::Int(3)).unwrap(),
            dec("-0.666666666")
        );
        assert_eq!(
            arith(Op::Div, &Value::Int(0), &Value::Int(7)).unwrap(),
            dec("0")
        );
    }

    #[test]
    fn round_truncate_cast_see_the_carried_value() {
        // AVG = SUM / COUNT over 1, 2, 2: 1.666666666 inside, shown 1.6667.
        let cols = [
            col(column_type::NEWDECIMAL, 0),
            col(column_type::LONGLONG, 0),
        ];
        let row = [dec("5"), Value::Int(3)];
        let avg = || bin(Op::Div, OutExpr::Col(0), OutExpr::Col(1));
        assert_eq!(avg().output(&row, &cols).unwrap(), dec("1.6667"));
        let r = call(Func::Round(2), vec![avg()]);
        assert_eq!(r.output(&row, &cols).unwrap(), dec("1.67"));
        assert_eq!(r.column(&cols, "r").decimals, 2);
        let r9 = call(Func::Round(12), vec![avg()]);
        assert_eq!(r9.output(&row, &cols).unwrap(), dec("1.666666666000"));
        let t = call(Func::Truncate(5), vec![avg()]);
        assert_eq!(t.output(&row, &cols).unwrap(), dec("1.66666"));
        let neg = call(Func::Round(-1), vec![OutExpr::Lit(dec("15.5"))]);
        assert_eq!(neg.output(&[], &[]).unwrap(), dec("20"));
        // ROUND(int, n >= 0) keeps the integer and its type.
        let ri = call(Func::Round(2), vec![OutExpr::Col(1)]);
        assert_eq!(ri.output(&row, &cols).unwrap(), Value::Int(3));
        assert_eq!(ri.column(&cols, "x").column_type, column_type::LONGLONG);
        let cs = call(
            Func::CastSigned,
            vec![bin(Op::Mul, avg(), OutExpr::Lit(Value::Int(3)))],
        );
        assert_eq!(cs.output(&row, &cols).unwrap(), Value::Int(5));
        let cd = call(Func::CastDecimal(20, 12), vec![avg()]);
        assert_eq!(cd.output(&row, &cols).unwrap(), dec("1.666666666000"));
        let small = call(Func::CastDecimal(3, 2), vec![OutExpr::Lit(dec("12.5"))]);
        assert!(small.output(&[], &[]).is_err(), "out of range is refused");
        let ch = call(Func::CastChar, vec![avg()]);
        assert_eq!(
            ch.output(&row, &cols).unwrap(),
            Value::Bytes(Bytes::from_static(b"1.6667"))
        );
        // A DOUBLE argument is refused from the types, before any row.
        let d = call(Func::Round(2), vec![OutExpr::Col(0)]);
        assert!(d.check(&[col(column_type::DOUBLE, 31)]).is_err());
        assert!(d.check(&cols).is_ok());
    }

    #[test]
    fn values_the_proxy_cannot_read_exactly_are_refused_not_nulled() {
        let text = Value::Bytes(Bytes::from_static(b"abc"));
        assert!(arith(Op::Add, &Value::Int(1), &text).is_err());
        let huge = dec("1234567890123456789012345678901234567890.5");
        assert!(arith(Op::Add, &huge, &Value::Int(1)).is_err());
        assert!(
            call(Func::Round(1), vec![OutExpr::Lit(huge)])
                .output(&[], &[])
                .is_err()
        );
        // NULL stays NULL.
        assert_eq!(arith(Op::Add, &Value::Null, &text).unwrap(), Value::Null);
        // Beyond i64 an integer result is an error on the server too (BIGINT out of range).
        assert!(arith(Op::Mul, &Value::Int(i64::MAX), &Value::Int(-2)).is_err());
    }

    #[test]
    fn comparisons_round_each_side_between_does_not() {
        let cols = [
            col(column_type::NEWDECIMAL, 0),
            col(column_type::LONGLONG, 0),
        ];
        let row = [dec("5"), Value::Int(3)];
        let avg = || bin(Op::Div, OutExpr::Col(0), OutExpr::Col(1));
        let lit = |s: &str| OutExpr::Lit(dec(s));
        assert!(
            bin(Op::Eq, avg(), lit("1.6667"))
                .holds(&row, &cols)
                .unwrap()
        );
        assert!(
            !bin(Op::Lt, avg(), lit("1.66667"))
                .holds(&row, &cols)
                .unwrap()
        );
        let btw = |lo: &str, hi: &str| call(Func::Between(false), vec![avg(), lit(lo), lit(hi)]);
        assert!(btw("1.6666", "1.666666666").holds(&row, &cols).unwrap());
        assert!(!btw("1.66667", "1.67").holds(&row, &cols).unwrap());
        let open = call(
            Func::Between(true),
            vec![avg(), OutExpr::Lit(Value::Null), lit("1")],
        );
        // x > hi: NOT BETWEEN holds even with a NULL bound.
        assert!(open.holds(&row, &cols).unwrap());
        let g = call(Func::Greatest, vec![avg(), lit("1.6666666661")]);
        assert_eq!(g.output(&row, &cols).unwrap(), dec("1.6666666661"));
        let g3 = bin(
            Op::Mul,
            call(Func::Greatest, vec![avg(), OutExpr::Lit(Value::Int(1))]),
            OutExpr::Lit(Value::Int(3)),
        );
        assert_eq!(g3.output(&row, &cols).unwrap(), dec("5.0000"));
        let c = call(
            Func::Coalesce,
            vec![OutExpr::Lit(Value::Null), OutExpr::Col(1)],
        );
        assert_eq!(c.output(&row, &cols).unwrap(), Value::Int(3));
    }
}
