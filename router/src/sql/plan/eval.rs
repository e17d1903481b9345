//! Expressions evaluated by the proxy over merged rows: projections over aggregates (`SUM(a)/COUNT(*)`,
//! AVG as SUM/COUNT), HAVING filters and computed sort keys. Arithmetic follows MySQL: integer and
//! decimal arithmetic is exact, `/` yields a decimal with 4 more fractional digits, division by zero
//! is NULL, and anything with a DOUBLE is DOUBLE.

use std::cmp::Ordering;
use std::fmt;

use bytes::Bytes;
use codec::mysql::consts::{charset, column_flag, column_type};
use codec::mysql::{ColumnDefinition, Value};

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
        }
    }
}

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

    /// MySQL division: the dividend's scale plus 4 (`div_precision_increment`), rounded.
    fn div(self, o: Dec) -> Option<Option<Dec>> {
        if o.mantissa == 0 {
            return Some(None);
        }
        let target = self.scale + 4;
        // a/10^sa / (b/10^sb) = a*10^(sb + target + 1 - sa) / b / 10^(target+1)
        let shift = (o.scale + target + 1).checked_sub(self.scale)?;
        let num = self.mantissa.checked_mul(10i128.checked_pow(shift)?)?;
        let q = Dec {
            mantissa: num / o.mantissa,
            scale: target + 1,
        };
        Some(q.rescale(target))
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

fn num_value(n: Num) -> Value {
    match n {
        Num::Int(i) => {
            i64::try_from(i).map_or_else(|_| Value::Decimal(Bytes::from(i.to_string())), Value::Int)
        }
        Num::Dec(d) => Value::Decimal(Bytes::from(d.text())),
        Num::Double(f) => Value::Double(f),
    }
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

/// `a op b` for arithmetic operators; NULL on NULL input, overflow or division by zero.
pub fn arith(op: Op, a: &Value, b: &Value) -> Value {
    let (Some(x), Some(y)) = (num_of(a), num_of(b)) else {
        return Value::Null;
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
                _ if q == 0.0 => None,
                _ => Some(Num::Double(p / q)),
            }
        }
        _ => {
            let (Some(p), Some(q)) = (as_dec(x), as_dec(y)) else {
                return Value::Null;
            };
            match op {
                Op::Add => p.add(q).map(Num::Dec),
                Op::Sub => p.add(q.neg()).map(Num::Dec),
                Op::Mul => p.mul(q).map(Num::Dec),
                _ => p.div(q).flatten().map(Num::Dec),
            }
        }
    };
    r.map_or(Value::Null, num_value)
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

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Null => None,
        other => num_of(other).map(|n| as_f64(n) != 0.0).or(Some(false)),
    }
}

fn bool_value(b: Option<bool>) -> Value {
    b.map_or(Value::Null, |b| Value::Int(i64::from(b)))
}

impl OutExpr {
    /// Evaluates over `row`, whose columns are `cols` (text compares by their collations).
    pub fn eval(&self, row: &[Value], cols: &[ColumnDefinition]) -> Value {
        match self {
            OutExpr::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            OutExpr::Lit(v) => v.clone(),
            OutExpr::Not(e) => bool_value(truth(&e.eval(row, cols)).map(|b| !b)),
            OutExpr::IsNull(e, want) => {
                bool_value(Some(matches!(e.eval(row, cols), Value::Null) == *want))
            }
            OutExpr::Bin(op, a, b) => {
                let (x, y) = (a.eval(row, cols), b.eval(row, cols));
                // A column operand's collation decides (it outranks a literal's, as in the
                // server's collation derivation).
                let def = match (&**a, &**b) {
                    (OutExpr::Col(i), _) | (_, OutExpr::Col(i)) => cols.get(*i),
                    _ => None,
                };
                match op {
                    Op::And => bool_value(match (truth(&x), truth(&y)) {
                        (Some(false), _) | (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    }),
                    Op::Or => bool_value(match (truth(&x), truth(&y)) {
                        (Some(true), _) | (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    }),
                    op if op.is_arith() => arith(*op, &x, &y),
                    op => bool_value(compare(&x, &y, def).map(|o| match op {
                        Op::Eq => o == Ordering::Equal,
                        Op::Ne => o != Ordering::Equal,
                        Op::Lt => o == Ordering::Less,
                        Op::Le => o != Ordering::Greater,
                        Op::Gt => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    })),
                }
            }
        }
    }

    /// Whether the expression holds for `row` of `cols` (NULL is false), as WHERE/HAVING treat
    /// it.
    pub fn holds(&self, row: &[Value], cols: &[ColumnDefinition]) -> bool {
        truth(&self.eval(row, cols)) == Some(true)
    }

    /// The column definition of this expression's results, named `name`.
    pub fn column(&self, cols: &[ColumnDefinition], name: &str) -> ColumnDefinition {
        let mut def = match self {
            OutExpr::Col(i) => match cols.get(*i) {
                Some(c) => c.clone(),
                None => ColumnDefinition::new(
                    name,
                    column_type::NULL,
                    charset::BINARY,
                    0,
                    column_flag::BINARY,
                    0,
                ),
            },
            OutExpr::Lit(Value::Bytes(_)) => ColumnDefinition::new(
                name,
                column_type::VAR_STRING,
                charset::UTF8MB4_GENERAL_CI,
                255,
                0,
                0,
            ),
            OutExpr::Bin(op, a, b) if op.is_arith() => {
                let (ca, cb) = (a.column(cols, name), b.column(cols, name));
                let float = |c: &ColumnDefinition| {
                    matches!(c.column_type, column_type::DOUBLE | column_type::FLOAT)
                        || c.column_type == column_type::VAR_STRING
                };
                let int = |c: &ColumnDefinition| {
                    matches!(
                        c.column_type,
                        column_type::TINY
                            | column_type::SHORT
                            | column_type::LONG
                            | column_type::INT24
                            | column_type::LONGLONG
                            | column_type::YEAR
                    )
                };
                if float(&ca) || float(&cb) {
                    ColumnDefinition::new(
                        name,
                        column_type::DOUBLE,
                        charset::BINARY,
                        23,
                        column_flag::BINARY,
                        31,
                    )
                } else if *op != Op::Div && int(&ca) && int(&cb) {
                    ColumnDefinition::new(
                        name,
                        column_type::LONGLONG,
                        charset::BINARY,
                        21,
                        column_flag::BINARY,
                        0,
                    )
                } else {
                    let d = |c: &ColumnDefinition| if int(c) { 0 } else { c.decimals.min(30) };
                    let scale = match op {
                        Op::Div => d(&ca) + 4,
                        Op::Mul => d(&ca) + d(&cb),
                        _ => d(&ca).max(d(&cb)),
                    }
                    .min(30);
                    ColumnDefinition::new(
                        name,
                        column_type::NEWDECIMAL,
                        charset::BINARY,
                        66,
                        column_flag::BINARY,
                        scale,
                    )
                }
            }
            _ => ColumnDefinition::new(
                name,
                column_type::LONGLONG,
                charset::BINARY,
                1,
                column_flag::BINARY,
                0,
            ),
        };
        def.name = Bytes::copy_from_slice(name.as_bytes());
        def
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
        assert_eq!(arith(Op::Add, &dec("1.10"), &dec("2.205")), dec("3.305"));
        assert_eq!(arith(Op::Div, &dec("10"), &Value::Int(4)), dec("2.5000"));
        assert_eq!(arith(Op::Div, &dec("2"), &Value::Int(3)), dec("0.6667"));
        assert_eq!(arith(Op::Div, &dec("-2"), &Value::Int(3)), dec("-0.6667"));
        assert_eq!(arith(Op::Div, &Value::Int(1), &Value::Int(0)), Value::Null);
        assert_eq!(
            arith(Op::Mul, &Value::Int(6), &Value::Int(7)),
            Value::Int(42)
        );
        assert_eq!(
            arith(Op::Add, &Value::Double(0.5), &Value::Int(1)),
            Value::Double(1.5)
        );
        assert_eq!(arith(Op::Sub, &dec("0.05"), &dec("0.1")), dec("-0.05"));
    }

    #[test]
    fn predicates() {
        let row = vec![Value::Int(3), dec("2.50"), Value::Null];
        let gt = OutExpr::Bin(Op::Gt, Box::new(OutExpr::Col(0)), Box::new(OutExpr::Col(1)));
        assert!(gt.holds(&row, &[]));
        let null_cmp = OutExpr::Bin(Op::Eq, Box::new(OutExpr::Col(2)), Box::new(OutExpr::Col(0)));
        assert!(!null_cmp.holds(&row, &[]));
        assert!(!OutExpr::Not(Box::new(null_cmp.clone())).holds(&row, &[]));
        let or = OutExpr::Bin(Op::Or, Box::new(null_cmp), Box::new(gt));
        assert!(or.holds(&row, &[]));
        assert!(OutExpr::IsNull(Box::new(OutExpr::Col(2)), true).holds(&row, &[]));
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
        assert!(eq.holds(&row, std::slice::from_ref(&col)));
        col.compare_collation = Some(charset::UTF8MB4_BIN);
        assert!(!eq.holds(&row, std::slice::from_ref(&col)));
        // Literals alone: the connection's collation.
        let lits = OutExpr::Bin(
            Op::Eq,
            Box::new(OutExpr::Lit(s("a"))),
            Box::new(OutExpr::Lit(s("A"))),
        );
        assert!(lits.holds(&[], &[]));
    }
}
