//! A complexity guard in front of `sqlparser`.
//!
//! sqlparser's recursion limit counts nesting (parentheses, subqueries) but not chains: `a + b + c ...`
//! is parsed into a left-deep tree without recursion, and then every clone, print and drop of that tree
//! recurses once per operator; `t JOIN t JOIN t ...` without `ON` recurses once per join inside the
//! parser itself. A long enough chain overflows the thread's stack, which aborts the whole process (a
//! stack overflow is not a panic). Found by the router's property tests; see
//! `router/tests/prop_sql.rs::long_chains_are_refused_or_planned_without_a_crash`.
//!
//! So every statement that goes to sqlparser is first counted with the cheap fast-path tokenizer and
//! refused when it has more operators or joins than a thread with [`MIN_STACK_BYTES`] of stack can
//! handle. The limits are far above what applications send (an `IN (...)` list is not an operator
//! chain and is not limited); a refused statement gets a clear error and never reaches the parser.

use super::lexer::{Token, tokenize};

/// The stack a thread must have to parse and plan any statement that passes [`check`]. The data-path
/// executors are started with this much (virtual memory: pages are only touched when used).
pub const MIN_STACK_BYTES: usize = 64 << 20;

/// Most binary operators (`+ - * / % = < > AND OR XOR || && | & ^ ...`) in one statement.
pub const MAX_OPERATORS: usize = 2000;

/// Most `JOIN`s in one statement.
pub const MAX_JOINS: usize = 64;

/// Why a statement was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TooComplex {
    /// Too many operators.
    #[error("statement too complex for the proxy: {0} operators (at most {MAX_OPERATORS})")]
    Operators(usize),
    /// Too many joins.
    #[error("statement too complex for the proxy: {0} joins (at most {MAX_JOINS})")]
    Joins(usize),
}

/// Counts operators and joins; `Err` when the statement must not be handed to sqlparser.
pub fn check(sql: &str) -> Result<(), TooComplex> {
    let mut hints = Vec::new();
    let mut toks = Vec::new();
    tokenize(sql, &mut hints, &mut toks);
    let mut operators = 0usize;
    let mut joins = 0usize;
    for t in &toks {
        match t {
            Token::Punct('+' | '-' | '*' | '/' | '%' | '=' | '<' | '>' | '|' | '&' | '^') => {
                operators += 1
            }
            Token::Word(w)
                if ["AND", "OR", "XOR", "DIV", "MOD", "LIKE", "REGEXP", "RLIKE"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                operators += 1
            }
            Token::Word(w) if w.eq_ignore_ascii_case("JOIN") => joins += 1,
            _ => {}
        }
    }
    if joins > MAX_JOINS {
        return Err(TooComplex::Joins(joins));
    }
    if operators > MAX_OPERATORS {
        return Err(TooComplex::Operators(operators));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_chains_not_lists() {
        assert!(check("SELECT * FROM t WHERE id IN (1,2,3,4,5) AND a = 1").is_ok());
        let list = format!(
            "SELECT * FROM t WHERE id IN ({})",
            vec!["7"; 50_000].join(",")
        );
        assert!(check(&list).is_ok(), "long IN lists are common and safe");
        let chain = format!("SELECT {} FROM t", vec!["1"; MAX_OPERATORS + 2].join(" + "));
        assert_eq!(check(&chain), Err(TooComplex::Operators(MAX_OPERATORS + 1)));
        let joins = format!("SELECT * FROM {}", vec!["t"; MAX_JOINS + 2].join(" join "));
        assert_eq!(check(&joins), Err(TooComplex::Joins(MAX_JOINS + 1)));
        // operators inside strings and comments do not count
        let quoted = format!(
            "SELECT '{}' /* {} */",
            "+".repeat(10_000),
            "OR ".repeat(5000)
        );
        assert!(check(&quoted).is_ok());
    }
}
