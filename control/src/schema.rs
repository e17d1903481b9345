//! A JSON Schema subset checked on save: `type`, `enum`, `const`, `minimum`/`maximum`,
//! `exclusiveMinimum`/`exclusiveMaximum`, `minLength`/`maxLength`, `pattern`-free strings, `items`,
//! `minItems`/`maxItems`, `properties`, `required`, `additionalProperties` (boolean or schema).
//! Other keywords are rejected when the schema is saved, so a schema never silently checks less than it says.

use serde_json::Value as Json;

use crate::error::{ControlError, ErrorCode, Result};

const KEYWORDS: &[&str] = &[
    "$schema",
    "title",
    "description",
    "default",
    "examples",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "items",
    "minItems",
    "maxItems",
    "properties",
    "required",
    "additionalProperties",
];

fn bad_schema(path: &str, msg: impl Into<String>) -> ControlError {
    ControlError::bad(&format!("schema{path}"), msg)
}

/// Checks that a schema only uses the supported subset.
pub fn check_schema(schema: &Json) -> Result<()> {
    check_at(schema, "")
}

fn check_at(schema: &Json, path: &str) -> Result<()> {
    let Json::Object(obj) = schema else {
        return match schema {
            Json::Bool(_) => Ok(()),
            _ => Err(bad_schema(path, "a schema must be an object or a boolean")),
        };
    };
    for (k, v) in obj {
        if !KEYWORDS.contains(&k.as_str()) {
            return Err(bad_schema(
                path,
                format!("unsupported schema keyword {k:?}"),
            ));
        }
        match k.as_str() {
            "type" => {
                let names: Vec<&Json> = match v {
                    Json::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for n in names {
                    let ok = n.as_str().is_some_and(|s| {
                        matches!(
                            s,
                            "string"
                                | "integer"
                                | "number"
                                | "boolean"
                                | "array"
                                | "object"
                                | "null"
                        )
                    });
                    if !ok {
                        return Err(bad_schema(path, format!("unknown type {n}")));
                    }
                }
            }
            "items" | "additionalProperties" => check_at(v, &format!("{path}/{k}"))?,
            "properties" => {
                let Json::Object(props) = v else {
                    return Err(bad_schema(path, "properties must be an object"));
                };
                for (name, s) in props {
                    check_at(s, &format!("{path}/properties/{name}"))?;
                }
            }
            "required" | "enum" if !v.is_array() => {
                return Err(bad_schema(path, format!("{k} must be an array")));
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" if !v.is_number() => {
                return Err(bad_schema(path, format!("{k} must be a number")));
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" if !v.is_u64() => {
                return Err(bad_schema(
                    path,
                    format!("{k} must be a non-negative integer"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn violation(path: &str, msg: impl Into<String>) -> ControlError {
    ControlError::new(ErrorCode::SchemaViolation, msg).with_field(format!("value{path}"))
}

fn type_matches(name: &str, v: &Json) -> bool {
    match name {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// Validates `value` against `schema`; the error's field is the JSON path of the first violation.
pub fn validate(schema: &Json, value: &Json) -> Result<()> {
    validate_at(schema, value, "")
}

fn validate_at(schema: &Json, v: &Json, path: &str) -> Result<()> {
    let obj = match schema {
        Json::Bool(true) => return Ok(()),
        Json::Bool(false) => return Err(violation(path, "no value is allowed here")),
        Json::Object(o) => o,
        _ => return Ok(()),
    };
    if let Some(t) = obj.get("type") {
        let ok = match t {
            Json::Array(names) => names
                .iter()
                .any(|n| n.as_str().is_some_and(|n| type_matches(n, v))),
            Json::String(n) => type_matches(n, v),
            _ => true,
        };
        if !ok {
            return Err(violation(path, format!("expected type {t}, got {v}")));
        }
    }
    if let Some(Json::Array(options)) = obj.get("enum")
        && !options.contains(v)
    {
        return Err(violation(
            path,
            format!("{v} is not one of {}", Json::Array(options.clone())),
        ));
    }
    if let Some(c) = obj.get("const")
        && c != v
    {
        return Err(violation(path, format!("{v} is not {c}")));
    }
    if let Some(x) = v.as_f64() {
        let num = |k: &str| obj.get(k).and_then(Json::as_f64);
        if let Some(m) = num("minimum").filter(|m| x < *m) {
            return Err(violation(path, format!("{x} is less than the minimum {m}")));
        }
        if let Some(m) = num("maximum").filter(|m| x > *m) {
            return Err(violation(
                path,
                format!("{x} is greater than the maximum {m}"),
            ));
        }
        if let Some(m) = num("exclusiveMinimum").filter(|m| x <= *m) {
            return Err(violation(path, format!("{x} must be greater than {m}")));
        }
        if let Some(m) = num("exclusiveMaximum").filter(|m| x >= *m) {
            return Err(violation(path, format!("{x} must be less than {m}")));
        }
    }
    let size = |k: &str| obj.get(k).and_then(Json::as_u64);
    if let Some(s) = v.as_str() {
        let n = s.chars().count() as u64;
        if let Some(m) = size("minLength").filter(|m| n < *m) {
            return Err(violation(path, format!("string shorter than {m}")));
        }
        if let Some(m) = size("maxLength").filter(|m| n > *m) {
            return Err(violation(path, format!("string longer than {m}")));
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if let Some(m) = size("minItems").filter(|m| n < *m) {
            return Err(violation(path, format!("fewer than {m} items")));
        }
        if let Some(m) = size("maxItems").filter(|m| n > *m) {
            return Err(violation(path, format!("more than {m} items")));
        }
        if let Some(s) = obj.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate_at(s, item, &format!("{path}/{i}"))?;
            }
        }
    }
    if let Some(map) = v.as_object() {
        if let Some(Json::Array(req)) = obj.get("required") {
            for r in req.iter().filter_map(Json::as_str) {
                if !map.contains_key(r) {
                    return Err(violation(
                        &format!("{path}/{r}"),
                        format!("required property {r:?} is missing"),
                    ));
                }
            }
        }
        let props = obj.get("properties").and_then(Json::as_object);
        for (k, item) in map {
            let sub = format!("{path}/{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate_at(s, item, &sub)?,
                None => {
                    if let Some(extra) = obj.get("additionalProperties") {
                        validate_at(extra, item, &sub).map_err(|e| {
                            if extra == &Json::Bool(false) {
                                violation(&sub, format!("property {k:?} is not allowed"))
                            } else {
                                e
                            }
                        })?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Json {
        json!({
            "type": "object",
            "required": ["port"],
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "mode": {"enum": ["a", "b"]},
                "hosts": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 2}
            },
            "additionalProperties": false
        })
    }

    #[test]
    fn accepts_valid() {
        check_schema(&schema()).unwrap();
        validate(&schema(), &json!({"port": 80, "mode": "a", "hosts": ["x"]})).unwrap();
    }

    #[test]
    fn reports_the_path() {
        let s = schema();
        let e = validate(&s, &json!({"port": 0})).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::SchemaViolation, Some("value/port"))
        );
        assert_eq!(
            validate(&s, &json!({})).unwrap_err().field.as_deref(),
            Some("value/port")
        );
        assert_eq!(
            validate(&s, &json!({"port":1,"hosts":["a",""]}))
                .unwrap_err()
                .field
                .as_deref(),
            Some("value/hosts/1")
        );
        assert_eq!(
            validate(&s, &json!({"port":1,"x":1}))
                .unwrap_err()
                .field
                .as_deref(),
            Some("value/x")
        );
        assert!(validate(&s, &json!({"port":1,"mode":"c"})).is_err());
        assert!(validate(&s, &json!({"port":1,"hosts":["a","b","c"]})).is_err());
        assert!(validate(&json!({"type":["string","null"]}), &json!(null)).is_ok());
        assert!(validate(&json!({"type":"number","exclusiveMaximum":1}), &json!(1)).is_err());
    }

    #[test]
    fn rejects_unsupported_keywords() {
        let e = check_schema(&json!({"properties": {"a": {"pattern": "x"}}})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("schema/properties/a"));
        assert!(check_schema(&json!({"type": "strng"})).is_err());
        assert!(check_schema(&json!(3)).is_err());
    }
}
