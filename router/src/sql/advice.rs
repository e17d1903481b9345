//! Index advice, the pure half: which columns of which tables a `SELECT` compares for equality,
//! bounds by a range, joins on, groups and orders by ([`analyze`], [`Analysis::needs`]), and the
//! index that would serve a table's part of it unless an existing index already does
//! ([`candidate`], [`covered_by`]).
//!
//! The I/O half (schema and index statistics from `information_schema`, `EXPLAIN` on a server)
//! is the admin port's `INDEX ADVICE` in the `furrow` binary.
//!
//! What is read: the `WHERE` clause and every `JOIN ... ON` as a conjunction (`AND`); a branch
//! under `OR`/`NOT` or a column inside a function call is not indexable as written and is left
//! out. `col = const`, `col <=> const` and `col IS NULL` are equalities; `<`, `>`, `<=`, `>=`,
//! `BETWEEN`, `IN (...)` and `LIKE 'prefix%'` are ranges; `a.x = b.y` is a join (an equality on
//! each side, for the table the server reads second).

use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, InTarget, JoinConstraint, JoinOperator, OrderByKind,
    OrderBySort, SetExpr, Statement, TableFactor, Value,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

/// Most columns an advised index gets.
pub const MAX_INDEX_COLUMNS: usize = 5;

/// Why a statement gets no analysis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdviceError {
    /// The statement does not parse.
    #[error("syntax: {0}")]
    Syntax(String),
    /// A statement form advice does not read.
    #[error("not advised: {0}")]
    Unsupported(String),
}

/// A table of the `FROM` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// The schema when the statement names it (`db.t`).
    pub schema: Option<String>,
    /// The table name.
    pub name: String,
    /// The alias (`t AS o`), which is what `EXPLAIN` shows in its `table` column.
    pub alias: Option<String>,
}

impl TableRef {
    /// The name `EXPLAIN` shows for it: the alias, else the table name.
    pub fn shown(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    fn answers_to(&self, qualifier: &str) -> bool {
        match &self.alias {
            Some(a) => a.eq_ignore_ascii_case(qualifier),
            None => self.name.eq_ignore_ascii_case(qualifier),
        }
    }
}

/// A column as written: `c`, `t.c` or `db.t.c` (the schema part is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRef {
    /// The table or alias it is qualified with.
    pub qualifier: Option<String>,
    /// The column name.
    pub column: String,
}

/// How a statement uses columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// The tables read, in `FROM`/`JOIN` order.
    pub tables: Vec<TableRef>,
    /// `col = const`, `col <=> const`, `col IS NULL`.
    pub eq: Vec<ColumnRef>,
    /// Range conditions.
    pub range: Vec<ColumnRef>,
    /// Column-to-column equalities.
    pub join: Vec<(ColumnRef, ColumnRef)>,
    /// `GROUP BY` columns (empty when any item is not a plain column).
    pub group_by: Vec<ColumnRef>,
    /// `ORDER BY` columns (empty when any item is not a plain column or directions are mixed).
    pub order_by: Vec<ColumnRef>,
}

/// What one table's part of a statement could use an index for (column names as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableNeeds {
    /// Equality columns, joins included, in order of appearance.
    pub eq: Vec<String>,
    /// Range columns.
    pub range: Vec<String>,
    /// `GROUP BY` columns when all of them are this table's.
    pub group_by: Vec<String>,
    /// `ORDER BY` columns when all of them are this table's.
    pub order_by: Vec<String>,
}

/// Reads a `SELECT`'s column use. Other statements are [`AdviceError::Unsupported`].
pub fn analyze(sql: &str) -> Result<Analysis, AdviceError> {
    super::guard::check(sql).map_err(|e| AdviceError::Unsupported(e.to_string()))?;
    let mut stmts = Parser::new(&MySqlDialect {})
        .with_recursion_limit(super::plan::RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| AdviceError::Syntax(e.to_string()))?;
    if stmts.len() != 1 {
        return Err(AdviceError::Unsupported(format!(
            "{} statements in one text",
            stmts.len()
        )));
    }
    let Statement::Query(q) = stmts.remove(0) else {
        return Err(AdviceError::Unsupported("only SELECT statements".into()));
    };
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return Err(AdviceError::Unsupported(
            "UNION, VALUES and parenthesised query bodies".into(),
        ));
    };
    let mut a = Analysis::default();
    for twj in &sel.from {
        table_of(&twj.relation, &mut a.tables);
        for j in &twj.joins {
            table_of(&j.relation, &mut a.tables);
            if let Some(JoinConstraint::On(e)) = constraint(&j.join_operator) {
                conjuncts(e, &mut a);
            }
        }
    }
    if a.tables.is_empty() {
        return Err(AdviceError::Unsupported("no table in FROM".into()));
    }
    if let Some(w) = &sel.selection {
        conjuncts(w, &mut a);
    }
    if let GroupByExpr::Expressions(v, _) = &sel.group_by {
        a.group_by = v
            .iter()
            .map(column_of)
            .collect::<Option<_>>()
            .unwrap_or_default();
    }
    if let Some(ob) = &q.order_by
        && let OrderByKind::Expressions(v) = &ob.kind
    {
        let desc =
            |o: &sqlparser::ast::OrderByExpr| matches!(o.options.sort, Some(OrderBySort::Desc));
        let same_direction = v.windows(2).all(|w| desc(&w[0]) == desc(&w[1]));
        if same_direction {
            a.order_by = v
                .iter()
                .map(|o| column_of(&o.expr))
                .collect::<Option<_>>()
                .unwrap_or_default();
        }
    }
    Ok(a)
}

fn constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::StraightJoin(c) => Some(c),
        _ => None,
    }
}

fn table_of(f: &TableFactor, out: &mut Vec<TableRef>) {
    if let TableFactor::Table { name, alias, .. } = f {
        let parts: Vec<&str> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.as_str()))
            .collect();
        let (schema, table) = match parts.as_slice() {
            [t] => (None, *t),
            [s, t] => (Some(s.to_string()), *t),
            _ => return,
        };
        out.push(TableRef {
            schema,
            name: table.to_string(),
            alias: alias.as_ref().map(|a| a.name.value.clone()),
        });
    }
}

fn column_of(e: &Expr) -> Option<ColumnRef> {
    match e {
        Expr::Identifier(i) => Some(ColumnRef {
            qualifier: None,
            column: i.value.clone(),
        }),
        Expr::CompoundIdentifier(v) if v.len() >= 2 => Some(ColumnRef {
            qualifier: Some(v[v.len() - 2].value.clone()),
            column: v[v.len() - 1].value.clone(),
        }),
        Expr::Nested(e) => column_of(e),
        _ => None,
    }
}

/// A value that does not depend on any row: a literal, a placeholder, or arithmetic/casts of them.
fn is_const(e: &Expr) -> bool {
    match e {
        Expr::Value(_) | Expr::TypedString { .. } => true,
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) | Expr::Cast { expr, .. } => is_const(expr),
        Expr::BinaryOp { left, right, .. } => is_const(left) && is_const(right),
        _ => false,
    }
}

fn conjuncts(e: &Expr, a: &mut Analysis) {
    match e {
        Expr::Nested(inner) => conjuncts(inner, a),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, a);
            conjuncts(right, a);
        }
        Expr::BinaryOp { left, op, right } => {
            let eq = matches!(op, BinaryOperator::Eq | BinaryOperator::Spaceship);
            let range = matches!(
                op,
                BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq
            );
            if !eq && !range {
                return;
            }
            match (column_of(left), column_of(right)) {
                (Some(l), Some(r)) if eq => a.join.push((l, r)),
                (Some(c), None) if is_const(right) => push(a, c, eq),
                (None, Some(c)) if is_const(left) => push(a, c, eq),
                _ => {}
            }
        }
        Expr::IsNull(inner) => {
            if let Some(c) = column_of(inner) {
                a.eq.push(c);
            }
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } if is_const(low) && is_const(high) => {
            if let Some(c) = column_of(expr) {
                a.range.push(c);
            }
        }
        Expr::In {
            expr,
            target: InTarget::List(list),
            negated: false,
            ..
        } if list.iter().all(is_const) => {
            if let Some(c) = column_of(expr) {
                // One value is an equality; several are a range of points for the index.
                push(a, c, list.len() == 1);
            }
        }
        Expr::Like {
            negated: false,
            expr,
            pattern,
            ..
        } => {
            let prefix = match pattern.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                        !s.is_empty() && !s.starts_with(['%', '_'])
                    }
                    _ => false,
                },
                _ => false,
            };
            if prefix && let Some(c) = column_of(expr) {
                a.range.push(c);
            }
        }
        _ => {}
    }
}

fn push(a: &mut Analysis, c: ColumnRef, eq: bool) {
    if eq { a.eq.push(c) } else { a.range.push(c) }
}

fn add_unique(v: &mut Vec<String>, c: &str) {
    if !v.iter().any(|x| x.eq_ignore_ascii_case(c)) {
        v.push(c.to_string());
    }
}

impl Analysis {
    /// The table a column belongs to: by its qualifier, else the only table, else the only table
    /// whose columns (`columns_of(table index)`) include it. None when unknown or ambiguous.
    pub fn owner(&self, c: &ColumnRef, columns_of: &dyn Fn(usize) -> Vec<String>) -> Option<usize> {
        if let Some(q) = &c.qualifier {
            return self.tables.iter().position(|t| t.answers_to(q));
        }
        if self.tables.len() == 1 {
            return Some(0);
        }
        let mut found = None;
        for i in 0..self.tables.len() {
            if columns_of(i)
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&c.column))
            {
                if found.is_some() {
                    return None;
                }
                found = Some(i);
            }
        }
        found
    }

    /// What table `t` (an index into [`Analysis::tables`]) could use an index for.
    pub fn needs(&self, t: usize, columns_of: &dyn Fn(usize) -> Vec<String>) -> TableNeeds {
        let mut n = TableNeeds::default();
        let mine = |c: &ColumnRef| self.owner(c, columns_of) == Some(t);
        for c in self.eq.iter().filter(|c| mine(c)) {
            add_unique(&mut n.eq, &c.column);
        }
        for (l, r) in &self.join {
            // `a.x = b.y`: when this table is read second, x (or y) is known for each row.
            match (mine(l), mine(r)) {
                (true, false) => add_unique(&mut n.eq, &l.column),
                (false, true) => add_unique(&mut n.eq, &r.column),
                _ => {}
            }
        }
        for c in self.range.iter().filter(|c| mine(c)) {
            add_unique(&mut n.range, &c.column);
        }
        if !self.group_by.is_empty() && self.group_by.iter().all(mine) {
            for c in &self.group_by {
                add_unique(&mut n.group_by, &c.column);
            }
        }
        if !self.order_by.is_empty() && self.order_by.iter().all(mine) {
            for c in &self.order_by {
                add_unique(&mut n.order_by, &c.column);
            }
        }
        n
    }
}

/// The index to propose for a table's needs: its equality columns first (any order serves them),
/// then the first range column; without a range, the `GROUP BY` columns, else the `ORDER BY`
/// columns (so that the server reads in order instead of sorting). At most
/// [`MAX_INDEX_COLUMNS`]. Returns the columns and how many of them are equalities; empty when
/// nothing is indexable.
pub fn candidate(n: &TableNeeds) -> (Vec<String>, usize) {
    let mut cols = n.eq.clone();
    cols.truncate(MAX_INDEX_COLUMNS);
    let n_eq = cols.len();
    let tail: &[String] = if let Some(r) = n.range.iter().find(|r| !contains(&cols, r)) {
        std::slice::from_ref(r)
    } else if !n.group_by.is_empty() {
        &n.group_by
    } else {
        &n.order_by
    };
    for c in tail {
        if cols.len() >= MAX_INDEX_COLUMNS {
            break;
        }
        add_unique(&mut cols, c);
    }
    (cols, n_eq)
}

fn contains(v: &[String], c: &str) -> bool {
    v.iter().any(|x| x.eq_ignore_ascii_case(c))
}

/// The first existing index (name, columns in order) that serves `cand` as well as `cand` would:
/// its leading columns are `cand`'s equality columns in any order, followed by the rest of `cand`
/// in order.
pub fn covered_by<'a>(
    cand: &[String],
    n_eq: usize,
    indexes: &'a [(String, Vec<String>)],
) -> Option<&'a str> {
    indexes.iter().find_map(|(name, cols)| {
        if cols.len() < cand.len() {
            return None;
        }
        let eq_ok = cols[..n_eq].iter().all(|c| contains(&cand[..n_eq], c));
        let rest_ok = cols[n_eq..cand.len()]
            .iter()
            .zip(&cand[n_eq..])
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
        (eq_ok && rest_ok).then_some(name.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_of(sql: &str, columns: &[&[&str]]) -> Vec<TableNeeds> {
        let a = analyze(sql).expect("analyzes");
        let cols = |i: usize| -> Vec<String> {
            columns
                .get(i)
                .map(|c| c.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        };
        (0..a.tables.len()).map(|t| a.needs(t, &cols)).collect()
    }

    fn cand(sql: &str) -> Vec<String> {
        candidate(&needs_of(sql, &[])[0]).0
    }

    #[test]
    fn equality_then_order() {
        assert_eq!(
            cand(
                "SELECT * FROM orders WHERE customer_id = 42 AND status = 'new' ORDER BY created_at DESC LIMIT 10"
            ),
            ["customer_id", "status", "created_at"]
        );
    }

    #[test]
    fn range_before_order_and_like_prefix() {
        assert_eq!(
            cand("SELECT id FROM t WHERE a = 1 AND b > 5 AND c < 3 ORDER BY d"),
            ["a", "b"]
        );
        assert_eq!(cand("SELECT id FROM t WHERE name LIKE 'ab%'"), ["name"]);
        assert!(cand("SELECT id FROM t WHERE name LIKE '%ab'").is_empty());
        assert_eq!(cand("SELECT id FROM t WHERE x BETWEEN 1 AND 9"), ["x"]);
        assert_eq!(
            cand("SELECT id FROM t WHERE x IN (1, 2) AND y = 3"),
            ["y", "x"]
        );
        assert_eq!(
            cand("SELECT id FROM t WHERE x IN (1) AND y IS NULL"),
            ["x", "y"]
        );
        assert_eq!(cand("SELECT id FROM t WHERE 5 <= x"), ["x"]);
    }

    #[test]
    fn group_by_and_mixed_order() {
        assert_eq!(
            cand("SELECT k, COUNT(*) FROM t WHERE a = 1 GROUP BY k ORDER BY k"),
            ["a", "k"]
        );
        assert_eq!(
            cand("SELECT * FROM t WHERE a = 1 ORDER BY b, c DESC"),
            ["a"]
        );
        assert_eq!(cand("SELECT * FROM t ORDER BY b, c"), ["b", "c"]);
    }

    #[test]
    fn or_functions_and_negations_are_not_indexable() {
        assert!(cand("SELECT * FROM t WHERE a = 1 OR b = 2").is_empty());
        assert!(cand("SELECT * FROM t WHERE DATE(a) = '2024-01-01'").is_empty());
        assert!(cand("SELECT * FROM t WHERE a <> 1 AND b NOT IN (1,2)").is_empty());
        assert!(cand("SELECT * FROM t WHERE a = b + 1").is_empty());
        assert_eq!(
            cand("SELECT * FROM t WHERE (a = 1 OR b = 2) AND c = -3"),
            ["c"]
        );
    }

    #[test]
    fn joins_resolve_by_qualifier_alias_and_columns() {
        let n = needs_of(
            "SELECT o.id FROM customers c JOIN shop.orders o ON o.customer_id = c.id \
             WHERE c.country = 'NL' AND total > 10",
            &[&["id", "country"], &["id", "customer_id", "total"]],
        );
        assert_eq!(n[0].eq, ["country", "id"]);
        assert_eq!(n[1].eq, ["customer_id"]);
        assert_eq!(n[1].range, ["total"]);
        let a = analyze("SELECT 1 FROM customers c JOIN shop.orders o ON o.customer_id = c.id")
            .expect("analyzes");
        assert_eq!(a.tables[1].schema.as_deref(), Some("shop"));
        assert_eq!(a.tables[1].shown(), "o");
        // An unqualified column both tables have is ambiguous: left out.
        let n = needs_of(
            "SELECT 1 FROM a JOIN b ON a.id = b.a_id WHERE name = 'x'",
            &[&["id", "name"], &["a_id", "name"]],
        );
        assert_eq!(n[0].eq, ["id"]);
        assert_eq!(n[1].eq, ["a_id"]);
    }

    #[test]
    fn other_statements_are_refused() {
        assert!(matches!(
            analyze("UPDATE t SET a = 1 WHERE b = 2"),
            Err(AdviceError::Unsupported(_))
        ));
        assert!(matches!(
            analyze("SELECT 1 UNION SELECT 2"),
            Err(AdviceError::Unsupported(_))
        ));
        assert!(matches!(
            analyze("SELECT 1"),
            Err(AdviceError::Unsupported(_))
        ));
        assert!(matches!(analyze("SELEC x"), Err(AdviceError::Syntax(_))));
        assert!(matches!(
            analyze("SELECT 1 FROM t; SELECT 2 FROM t"),
            Err(AdviceError::Unsupported(_))
        ));
    }

    #[test]
    fn existing_indexes_cover_by_prefix_with_free_equality_order() {
        let idx = |n: &str, c: &[&str]| (n.to_string(), c.iter().map(|s| s.to_string()).collect());
        let have = vec![
            idx("PRIMARY", &["id"]),
            idx("k_b_a_c", &["b", "a", "c", "d"]),
        ];
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(covered_by(&s(&["a", "b", "c"]), 2, &have), Some("k_b_a_c"));
        assert_eq!(covered_by(&s(&["a", "b"]), 1, &have), None);
        assert_eq!(covered_by(&s(&["ID"]), 1, &have), Some("PRIMARY"));
        assert_eq!(covered_by(&s(&["a", "b", "d"]), 2, &have), None);
    }
}
