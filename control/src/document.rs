//! Document formats (JSON, YAML, XML, TOML, properties): validation on save and conversion to JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::{ControlError, ErrorCode, Result};

/// A document format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocFormat {
    /// JSON (serde_json).
    Json,
    /// YAML 1.2 (saphyr-parser); anchors and aliases are resolved.
    Yaml,
    /// XML (roxmltree); well-formedness only, converted to its text for schema purposes.
    Xml,
    /// TOML (toml).
    Toml,
    /// Java-style properties, parsed here.
    Properties,
}

/// The deepest nesting of arrays, objects, mappings, sequences or elements any document may have.
///
/// Every later step (schema checks, JSON serialization, dropping the value) recurses over the parsed tree, so a
/// hostile document of a few kilobytes (`"- " * 20000`) would otherwise overflow the stack and abort the whole
/// service. serde_json stops at 128 on its own; YAML is converted by our own loop (bounded here), TOML by the
/// `toml` parser (bounded by its own recursion check), XML by roxmltree (checked after parsing, iteratively).
pub const MAX_DEPTH: usize = 100;

fn too_deep(format: &str) -> ControlError {
    invalid(format, format!("nesting deeper than {MAX_DEPTH} levels"))
}

/// The nesting depth of a JSON value (a scalar is 0), computed without recursion.
pub fn json_depth(v: &Json) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Json::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Json::Object(o) => {
                max = max.max(d + 1);
                stack.extend(o.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    max
}

fn bounded(format: &str, v: Json) -> Result<Json> {
    if json_depth(&v) > MAX_DEPTH {
        return Err(too_deep(format));
    }
    Ok(v)
}

fn xml_depth(doc: &roxmltree::Document) -> usize {
    let mut max = 0;
    let mut stack = vec![(doc.root(), 0usize)];
    while let Some((n, d)) = stack.pop() {
        max = max.max(d);
        stack.extend(n.children().filter(|c| c.is_element()).map(|c| (c, d + 1)));
    }
    max
}

fn invalid(format: &str, message: impl std::fmt::Display) -> ControlError {
    ControlError::new(
        ErrorCode::InvalidDocument,
        format!("invalid {format} document: {message}"),
    )
    .with_field("value")
}

impl DocFormat {
    /// Parses `text`; returns it as JSON (XML: the text itself as a JSON string) or a precise `invalid_document`.
    pub fn validate(self, text: &str) -> Result<Json> {
        match self {
            DocFormat::Json => bounded(
                "json",
                serde_json::from_str(text).map_err(|e| invalid("json", e))?,
            ),
            DocFormat::Toml => {
                let v: toml::Value =
                    toml::from_str(text).map_err(|e| invalid("toml", e.to_string().trim_end()))?;
                let v = serde_json::to_value(v).map_err(|e| invalid("toml", e))?;
                bounded("toml", v)
            }
            DocFormat::Yaml => yaml_to_json(text),
            DocFormat::Xml => {
                let doc = roxmltree::Document::parse(text).map_err(|e| invalid("xml", e))?;
                if xml_depth(&doc) > MAX_DEPTH {
                    return Err(too_deep("xml"));
                }
                Ok(Json::String(text.to_string()))
            }
            DocFormat::Properties => parse_properties(text).map(|pairs| {
                Json::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k, Json::String(v)))
                        .collect(),
                )
            }),
        }
    }
}

/// Parses a properties document into (key, value) pairs in order: `key=value`, `key: value` or `key value`,
/// `#`/`!` comments, `\` line continuations and `\t \n \r \f \\ \uXXXX` escapes.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((no, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let mut logical = String::new();
        let mut cur = trimmed.to_string();
        loop {
            let trailing = cur.chars().rev().take_while(|c| *c == '\\').count();
            if trailing % 2 == 1 {
                cur.pop();
                logical.push_str(&cur);
                match lines.next() {
                    Some((_, next)) => cur = next.trim_start().to_string(),
                    None => break,
                }
            } else {
                logical.push_str(&cur);
                break;
            }
        }
        let (key, value) = split_property(&logical);
        let key =
            unescape(&key).map_err(|m| invalid("properties", format!("line {}: {m}", no + 1)))?;
        let value =
            unescape(&value).map_err(|m| invalid("properties", format!("line {}: {m}", no + 1)))?;
        if key.is_empty() {
            return Err(invalid("properties", format!("line {}: empty key", no + 1)));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn split_property(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                key.push('\\');
                if let Some(n) = chars.next() {
                    key.push(n);
                }
            }
            '=' | ':' => break,
            c if c.is_whitespace() => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|c| *c == '=' || *c == ':') {
                    chars.next();
                }
                break;
            }
            c => key.push(c),
        }
    }
    let rest: String = chars.collect();
    (key, rest.trim_start().to_string())
}

fn unescape(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("bad unicode escape \\u{hex}"))?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

fn yaml_scalar(text: &str, plain: bool) -> Json {
    if !plain {
        return Json::String(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Json::Null,
        "true" | "True" | "TRUE" => return Json::Bool(true),
        "false" | "False" | "FALSE" => return Json::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return i.into();
    }
    if text.bytes().any(|b| b.is_ascii_digit())
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Json::Number(n);
    }
    Json::String(text.to_string())
}

enum Frame {
    Seq(Vec<Json>, usize),
    Map(Map<String, Json>, Option<String>, usize),
}

/// Parses YAML (the first document) into JSON; mapping keys must be scalars.
fn yaml_to_json(text: &str) -> Result<Json> {
    use saphyr_parser::{Event, Parser, ScalarStyle};
    let mut anchors: std::collections::HashMap<usize, Json> = Default::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Json> = None;
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| invalid("yaml", e))?;
        let line = span.start.line();
        let done = |v: Json,
                    anchor: usize,
                    stack: &mut Vec<Frame>,
                    anchors: &mut std::collections::HashMap<usize, Json>,
                    root: &mut Option<Json>|
         -> Result<()> {
            if anchor > 0 {
                anchors.insert(anchor, v.clone());
            }
            match stack.last_mut() {
                None => {
                    if root.is_none() {
                        *root = Some(v);
                    }
                }
                Some(Frame::Seq(items, _)) => items.push(v),
                Some(Frame::Map(map, key, _)) => match key.take() {
                    None => match v {
                        Json::String(s) => *key = Some(s),
                        Json::Null => *key = Some("null".into()),
                        Json::Bool(_) | Json::Number(_) => *key = Some(v.to_string()),
                        _ => {
                            return Err(invalid(
                                "yaml",
                                format!("line {line}: mapping keys must be scalars"),
                            ));
                        }
                    },
                    Some(k) => {
                        map.insert(k, v);
                    }
                },
            }
            Ok(())
        };
        match ev {
            Event::Scalar(s, style, anchor, _) => done(
                yaml_scalar(&s, style == ScalarStyle::Plain),
                anchor,
                &mut stack,
                &mut anchors,
                &mut root,
            )?,
            Event::Alias(id) => {
                let v = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| invalid("yaml", format!("line {line}: unknown alias")))?;
                done(v, 0, &mut stack, &mut anchors, &mut root)?
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                return Err(too_deep("yaml"));
            }
            Event::SequenceStart(anchor, _) => stack.push(Frame::Seq(Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => stack.push(Frame::Map(Map::new(), None, anchor)),
            Event::SequenceEnd | Event::MappingEnd => {
                let (v, anchor) = match stack.pop() {
                    Some(Frame::Seq(items, a)) => (Json::Array(items), a),
                    Some(Frame::Map(map, _, a)) => (Json::Object(map), a),
                    None => return Err(invalid("yaml", "unbalanced structure")),
                };
                done(v, anchor, &mut stack, &mut anchors, &mut root)?
            }
            _ => {}
        }
    }
    Ok(root.unwrap_or(Json::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_toml() {
        assert_eq!(
            DocFormat::Json.validate(r#"{"a":[1,2]}"#).unwrap(),
            json!({"a":[1,2]})
        );
        let e = DocFormat::Json.validate(r#"{"a":"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidDocument);
        assert!(e.message.contains("line 1"), "{}", e.message);
        assert_eq!(
            DocFormat::Toml.validate("a = 1\n[b]\nc = \"x\"\n").unwrap(),
            json!({"a":1,"b":{"c":"x"}})
        );
        assert!(DocFormat::Toml.validate("a = \n").is_err());
    }

    #[test]
    fn yaml() {
        let v = DocFormat::Yaml
            .validate("a: 1\nb: [x, 'y', true]\nc:\n  d: 1.5\n  e: ~\nf: &x {g: 2}\nh: *x\n")
            .unwrap();
        assert_eq!(
            v,
            json!({"a":1,"b":["x","y",true],"c":{"d":1.5,"e":null},"f":{"g":2},"h":{"g":2}})
        );
        assert_eq!(
            DocFormat::Yaml.validate("a: [1, 2\n").unwrap_err().code,
            ErrorCode::InvalidDocument
        );
        assert_eq!(
            DocFormat::Yaml.validate("x: '007'").unwrap(),
            json!({"x":"007"})
        );
    }

    #[test]
    fn xml() {
        assert!(DocFormat::Xml.validate("<a><b x='1'/></a>").is_ok());
        assert_eq!(
            DocFormat::Xml.validate("<a><b></a>").unwrap_err().code,
            ErrorCode::InvalidDocument
        );
    }

    /// Issue 17, item 1: a deeply nested document of any format is a 400, never a stack overflow.
    #[test]
    fn nesting_depth_is_bounded_for_every_format() {
        let n = 20_000;
        let cases = [
            (DocFormat::Yaml, format!("{}x", "- ".repeat(n))),
            (
                DocFormat::Yaml,
                format!("{}x{}", "[".repeat(n), "]".repeat(n)),
            ),
            (
                DocFormat::Json,
                format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            ),
            (
                DocFormat::Toml,
                format!("a = {}1{}", "[".repeat(n), "]".repeat(n)),
            ),
            (
                DocFormat::Toml,
                format!("a = {}{}", "{b = ".repeat(n), "}".repeat(n)),
            ),
            (
                DocFormat::Xml,
                format!("{}{}", "<a>".repeat(n), "</a>".repeat(n)),
            ),
        ];
        for (f, text) in cases {
            let e = f.validate(&text).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidDocument, "{f:?}: {}", e.message);
        }
        // Just below the bound everything still parses.
        let ok = MAX_DEPTH;
        assert!(
            DocFormat::Json
                .validate(&format!("{}1{}", "[".repeat(ok), "]".repeat(ok)))
                .is_ok()
        );
        let y = DocFormat::Yaml
            .validate(&format!("{}x", "- ".repeat(ok)))
            .unwrap();
        assert_eq!(json_depth(&y), ok);
        assert!(
            DocFormat::Xml
                .validate(&format!("{}{}", "<a>".repeat(ok), "</a>".repeat(ok)))
                .is_ok()
        );
        let e = DocFormat::Yaml
            .validate(&format!("{}x", "- ".repeat(ok + 1)))
            .unwrap_err();
        assert!(e.message.contains("nesting"), "{}", e.message);
    }

    #[test]
    fn properties() {
        let text = "# comment\n! other\na=1\nb : two words\nc three\nlong = first \\\n   second\nuni=\\u0041\\tB\n";
        let p = parse_properties(text).unwrap();
        assert_eq!(
            p,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "two words".into()),
                ("c".into(), "three".into()),
                ("long".into(), "first second".into()),
                ("uni".into(), "A\tB".into()),
            ]
        );
        assert!(parse_properties("x=\\u12").is_err());
        assert!(parse_properties("=novalue").is_err());
        assert_eq!(
            DocFormat::Properties.validate("k=v").unwrap(),
            json!({"k":"v"})
        );
    }
}
