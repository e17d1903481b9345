//! Config errors: every problem found in a file, each with file, line, column, the dotted key path and
//! what was expected.

use std::fmt;
use std::ops::Range;

/// One problem, located by byte span (turned into line and column when the error is built).
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Byte range in the source.
    pub span: Range<usize>,
    /// Dotted key path, e.g. `listeners[0].address`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// One located problem, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted key path (empty for syntax errors).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Everything wrong with one config source. Never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file name (or source name) used in messages.
    pub file: String,
    /// The problems, in source order.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// Builds the error from diagnostics over `source`, sorted by position.
    pub fn new(file: &str, source: &str, mut diags: Vec<Diagnostic>) -> Self {
        diags.sort_by_key(|d| d.span.start);
        let problems = diags
            .into_iter()
            .map(|d| {
                let (line, column) = line_col(source, d.span.start);
                Problem {
                    line,
                    column,
                    path: d.path,
                    message: d.message,
                }
            })
            .collect();
        Self {
            file: file.to_string(),
            problems,
        }
    }

    /// An error that is not tied to a position (e.g. the file cannot be read).
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                path: String::new(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, p) in self.problems.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            if p.line == 0 {
                write!(f, "{}: error: {}", self.file, p.message)?;
            } else if p.path.is_empty() {
                write!(
                    f,
                    "{}:{}:{}: error: {}",
                    self.file, p.line, p.column, p.message
                )?;
            } else {
                write!(
                    f,
                    "{}:{}:{}: error: {}: {}",
                    self.file, p.line, p.column, p.path, p.message
                )?;
            }
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 11), (2, 6));
    }
}
