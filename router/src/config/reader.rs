//! A small walker over a spanned TOML document that turns it into typed values while collecting every
//! problem it meets (unknown keys, wrong types, out-of-range values) with the byte span it belongs to.
//!
//! Why not `serde::Deserialize`: serde stops at the first error and cannot list all unknown keys with
//! their positions. Operators fix a broken file faster when they see every problem at once.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::Diagnostic;

/// Byte range in the source text.
pub type Span = Range<usize>;

/// Collects diagnostics while a document is read.
#[derive(Default)]
pub struct Diags {
    pub(crate) list: Vec<Diagnostic>,
}

impl Diags {
    /// Records a problem at `span`.
    pub fn error(&mut self, span: Span, path: &str, message: impl Into<String>) {
        self.list.push(Diagnostic {
            span,
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// A table being read: remembers which keys were asked for so that `finish` can report the rest.
pub struct TableReader<'a, 'i> {
    table: &'a DeTable<'i>,
    span: Span,
    path: String,
    asked: Vec<&'static str>,
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'a, 'i> TableReader<'a, 'i> {
    /// Starts reading `table`, whose dotted path (for messages) is `path`.
    pub fn new(table: &'a DeTable<'i>, span: Span, path: impl Into<String>) -> Self {
        Self {
            table,
            span,
            path: path.into(),
            asked: Vec::new(),
        }
    }

    /// The span of the whole table (used for "missing key" messages).
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// The dotted path of this table.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    fn raw(&mut self, key: &'static str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.asked.push(key);
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    fn wrong_type(&self, d: &mut Diags, key: &str, v: &Spanned<DeValue<'_>>, expected: &str) {
        d.error(
            v.span(),
            &self.child_path(key),
            format!("expected {expected}, found {}", type_name(v.get_ref())),
        );
    }

    fn missing(&self, d: &mut Diags, key: &str, expected: &str) {
        d.error(
            self.span.clone(),
            &self.child_path(key),
            format!("missing required key `{key}` ({expected})"),
        );
    }

    /// An optional string.
    pub fn opt_str(&mut self, d: &mut Diags, key: &'static str) -> Option<Spanned<String>> {
        let v = self.raw(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Spanned::new(v.span(), s.to_string())),
            _ => {
                self.wrong_type(d, key, v, "a string");
                None
            }
        }
    }

    /// A required string.
    pub fn req_str(&mut self, d: &mut Diags, key: &'static str) -> Option<Spanned<String>> {
        let present = self.table.iter().any(|(k, _)| k.get_ref().as_ref() == key);
        if !present {
            self.asked.push(key);
            self.missing(d, key, "a string");
            return None;
        }
        self.opt_str(d, key)
    }

    /// An optional string that must be one of `choices` (case-sensitive, as written in the docs).
    pub fn opt_choice(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        choices: &[&'static str],
    ) -> Option<Spanned<&'static str>> {
        let s = self.opt_str(d, key)?;
        match choices.iter().find(|c| **c == s.get_ref().as_str()) {
            Some(c) => Some(Spanned::new(s.span(), *c)),
            None => {
                d.error(
                    s.span(),
                    &self.child_path(key),
                    format!(
                        "unknown value `{}`; expected one of: {}",
                        s.get_ref(),
                        choices.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// A required string that must be one of `choices`.
    pub fn req_choice(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        choices: &[&'static str],
    ) -> Option<Spanned<&'static str>> {
        let present = self.table.iter().any(|(k, _)| k.get_ref().as_ref() == key);
        if !present {
            self.asked.push(key);
            let expected = format!("one of: {}", choices.join(", "));
            self.missing(d, key, &expected);
            return None;
        }
        self.opt_choice(d, key, choices)
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, d: &mut Diags, key: &'static str) -> Option<Spanned<bool>> {
        let v = self.raw(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(v.span(), *b)),
            _ => {
                self.wrong_type(d, key, v, "a boolean");
                None
            }
        }
    }

    /// An optional unsigned integer within `min..=max`.
    pub fn opt_u64(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        min: u64,
        max: u64,
    ) -> Option<Spanned<u64>> {
        let v = self.raw(key)?;
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(d, key, v, "an integer");
            return None;
        };
        let parsed = i64::from_str_radix(i.as_str(), i.radix()).ok();
        match parsed {
            Some(n) if n >= 0 && (n as u64) >= min && (n as u64) <= max => {
                Some(Spanned::new(v.span(), n as u64))
            }
            _ => {
                d.error(
                    v.span(),
                    &self.child_path(key),
                    format!("value out of range; expected an integer from {min} to {max}"),
                );
                None
            }
        }
    }

    /// An optional duration written in milliseconds (keys end in `_ms` by convention).
    pub fn opt_ms(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        min_ms: u64,
        max_ms: u64,
    ) -> Option<Duration> {
        self.opt_u64(d, key, min_ms, max_ms)
            .map(|v| Duration::from_millis(*v.get_ref()))
    }

    /// An optional array of strings.
    pub fn opt_str_list(&mut self, d: &mut Diags, key: &'static str) -> Vec<Spanned<String>> {
        let Some(v) = self.raw(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(d, key, v, "an array of strings");
            return Vec::new();
        };
        let path = self.child_path(key);
        let mut out = Vec::new();
        for (n, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                other => d.error(
                    item.span(),
                    &format!("{path}[{n}]"),
                    format!("expected a string, found {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// An optional sub-table.
    pub fn opt_table(&mut self, d: &mut Diags, key: &'static str) -> Option<TableReader<'a, 'i>> {
        let path = self.child_path(key);
        let v = self.raw(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(TableReader::new(t, v.span(), path)),
            _ => {
                self.wrong_type(d, key, v, "a table");
                None
            }
        }
    }

    /// An optional table of named sub-tables (`[groups.NAME]`): yields (name, its span, reader).
    pub fn opt_named_tables(
        &mut self,
        d: &mut Diags,
        key: &'static str,
    ) -> Vec<(Spanned<String>, TableReader<'a, 'i>)> {
        let Some(outer) = self.opt_table(d, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in outer.table.iter() {
            let name: &Cow<'_, str> = k.get_ref();
            let path = outer.child_path(name);
            match v.get_ref() {
                DeValue::Table(t) => out.push((
                    Spanned::new(k.span(), name.to_string()),
                    TableReader::new(t, v.span(), path),
                )),
                other => d.error(
                    v.span(),
                    &path,
                    format!("expected a table, found {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// An optional array of tables (`[[key]]` or `key = [{...}]`).
    pub fn opt_table_list(&mut self, d: &mut Diags, key: &'static str) -> Vec<TableReader<'a, 'i>> {
        let path = self.child_path(key);
        let Some(v) = self.raw(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(d, key, v, "an array of tables");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (n, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::Table(t) => {
                    out.push(TableReader::new(t, item.span(), format!("{path}[{n}]")))
                }
                other => d.error(
                    item.span(),
                    &format!("{path}[{n}]"),
                    format!("expected a table, found {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// Reports every key of the table that was never asked for, naming the keys that are allowed.
    pub fn finish(self, d: &mut Diags) {
        for (k, _) in self.table.iter() {
            let name: &str = k.get_ref().as_ref();
            if !self.asked.contains(&name) {
                let mut allowed = self.asked.clone();
                allowed.sort_unstable();
                allowed.dedup();
                let hint = closest(name, &allowed)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                d.error(
                    k.span(),
                    &self.child_path(name),
                    format!(
                        "unknown key `{name}`{hint}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
}

/// The allowed key nearest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'k>(name: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed
        .iter()
        .map(|a| (edit_distance(name, a), *a))
        .filter(|(dist, a)| *dist <= 2.max(a.len() / 4))
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_finds_typos() {
        assert_eq!(edit_distance("adress", "address"), 1);
        assert_eq!(closest("adress", &["address", "name"]), Some("address"));
        assert_eq!(closest("zzzzzz", &["address", "name"]), None);
    }
}
