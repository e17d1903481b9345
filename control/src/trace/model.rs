//! The collector's span model: one OTLP span with the service it came from, ids as integers (hex on
//! the wire of the API), and the two ways spans arrive — OTLP protobuf (decoded by `codec::otlp`) and
//! OTLP/JSON (decoded here) — plus masking of sensitive values before anything is stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use codec::otlp::{self, Value};
use serde_json::{Value as Json, json};

use crate::error::{ControlError, ErrorCode, Result};

/// SpanKind client (the caller's side of a remote call).
pub const KIND_CLIENT: u8 = 3;
/// SpanKind server (a request received).
pub const KIND_SERVER: u8 = 2;
/// SpanKind consumer (a message received).
pub const KIND_CONSUMER: u8 = 5;
/// Status code error.
pub const STATUS_ERROR: u8 = 2;

/// Longest origin attribute kept (bytes; longer values are cut at a character boundary).
pub const MAX_ORIGIN_LEN: usize = 256;

/// Which process of its service a span came from: the resource attributes that tell a canary host from a
/// baseline host (OpenTelemetry semantic conventions). Empty when the resource did not say. Shared by every
/// span of one resource, stored with them in the segments (as resource attributes) and bounded in length.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `host.name`.
    pub host: String,
    /// `service.instance.id`.
    pub instance: String,
    /// `service.version`.
    pub version: String,
}

impl Origin {
    /// The origin named by a resource's attributes.
    pub fn of(resource: &[otlp::Attr]) -> Origin {
        let get = |key: &str| {
            resource
                .iter()
                .find_map(|(k, v)| (k == key).then(|| value_text(v)))
                .map(|s| cut_to(&s, MAX_ORIGIN_LEN))
                .unwrap_or_default()
        };
        Origin {
            host: get("host.name"),
            instance: get("service.instance.id"),
            version: get("service.version"),
        }
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.host.is_empty() && self.instance.is_empty() && self.version.is_empty()
    }

    /// The origin as resource attributes (the ones that are set), after `service.name`.
    pub fn attrs(&self) -> impl Iterator<Item = otlp::Attr> + '_ {
        [
            ("host.name", &self.host),
            ("service.instance.id", &self.instance),
            ("service.version", &self.version),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), Value::Str(v.clone())))
    }

    /// Whether the span's process runs on `host`: its `host.name` or its `service.instance.id` is `host`.
    pub fn is_on(&self, host: &str) -> bool {
        !host.is_empty() && (self.host == host || self.instance == host)
    }

    /// The name a deployment host is matched against: `host.name`, else `service.instance.id`.
    pub fn key(&self) -> &str {
        if self.host.is_empty() {
            &self.instance
        } else {
            &self.host
        }
    }
}

/// One stored span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRec {
    /// The service (`service.name` of its resource).
    pub service: Arc<str>,
    /// Its process: host, instance and version of its resource (shared by the resource's spans).
    pub origin: Arc<Origin>,
    /// The span itself.
    pub span: otlp::Span,
}

impl SpanRec {
    /// The trace id as an integer (big-endian bytes).
    pub fn trace(&self) -> u128 {
        u128::from_be_bytes(self.span.trace_id)
    }

    /// The span id.
    pub fn id(&self) -> u64 {
        u64::from_be_bytes(self.span.span_id)
    }

    /// The parent span id (0 for a root).
    pub fn parent(&self) -> u64 {
        u64::from_be_bytes(self.span.parent_id)
    }

    /// Duration in ns (0 when the end precedes the start).
    pub fn duration_ns(&self) -> u64 {
        self.span.end_ns.saturating_sub(self.span.start_ns)
    }

    /// Whether the span failed.
    pub fn is_error(&self) -> bool {
        self.span.status == STATUS_ERROR
    }

    /// An attribute's value, if present.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.span
            .attrs
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The span's namespace ([`NAMESPACE_ATTR`]), if it names one.
    pub fn namespace(&self) -> Option<&str> {
        match self.attr(NAMESPACE_ATTR) {
            Some(Value::Str(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    /// An attribute as text (strings as they are, numbers and booleans printed).
    pub fn attr_text(&self, key: &str) -> Option<String> {
        self.attr(key).map(value_text)
    }

    /// A resource attribute of the span's origin as text (`host.name`, `service.instance.id`,
    /// `service.version`; None when unknown).
    pub fn resource_text(&self, key: &str) -> Option<String> {
        let v = match key {
            "host.name" => &self.origin.host,
            "service.instance.id" => &self.origin.instance,
            "service.version" => &self.origin.version,
            _ => return None,
        };
        (!v.is_empty()).then(|| v.clone())
    }

    /// Approximate bytes held in memory (for the store's accounting).
    pub fn weight(&self) -> usize {
        let attrs: usize = self
            .span
            .attrs
            .iter()
            .map(|(k, v)| {
                k.len()
                    + 32
                    + match v {
                        Value::Str(s) => s.len(),
                        Value::Bytes(b) => b.len(),
                        _ => 0,
                    }
            })
            .sum();
        160 + self.span.name.len() + self.span.status_message.len() + attrs
    }

    /// Whether the span is where a request entered its service: a server or consumer span, or a root.
    pub fn is_entry(&self) -> bool {
        matches!(self.span.kind, KIND_SERVER | KIND_CONSUMER) || self.parent() == 0
    }

    /// The API's JSON form of the span.
    pub fn to_json(&self) -> Json {
        let s = &self.span;
        let attrs: BTreeMap<&str, Json> = s
            .attrs
            .iter()
            .map(|(k, v)| (k.as_str(), value_json(v)))
            .collect();
        let mut j = json!({
            "trace_id": hex(&s.trace_id),
            "span_id": hex(&s.span_id),
            "service": &*self.service,
            "name": s.name,
            "kind": kind_name(s.kind),
            "start_ns": s.start_ns,
            "duration_us": self.duration_ns() / 1000,
            "status": status_name(s.status),
            "attributes": attrs,
        });
        if self.parent() != 0 {
            j["parent_id"] = json!(hex(&s.parent_id));
        }
        if !s.status_message.is_empty() {
            j["status_message"] = json!(s.status_message);
        }
        for (key, v) in [
            ("host", &self.origin.host),
            ("instance", &self.origin.instance),
            ("version", &self.origin.version),
        ] {
            if !v.is_empty() {
                j[key] = json!(v);
            }
        }
        j
    }
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses a hex id of exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The name of a SpanKind.
pub fn kind_name(k: u8) -> &'static str {
    match k {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// The name of a status code.
pub fn status_name(s: u8) -> &'static str {
    match s {
        1 => "ok",
        STATUS_ERROR => "error",
        _ => "unset",
    }
}

/// An attribute value as text.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bytes(b) => hex(b),
        Value::Nested(k) => format!("<{k}>"),
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Str(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Double(d) => json!(d),
        Value::Bytes(b) => json!(hex(b)),
        Value::Nested(k) => json!(format!("<{k}>")),
    }
}

/// The attribute naming a span's namespace (the OpenTelemetry resource attribute, copied onto each span
/// record by [`records`]): with `service.name`, what trace permissions are decided on (`super::access`).
pub const NAMESPACE_ATTR: &str = "service.namespace";

/// Flattens decoded resources into span records. The resource's `service.namespace` is copied onto each
/// span that does not carry one (a record keeps of its resource only the service and the [`Origin`],
/// and the stored and exported form is rebuilt from records), so permissions by namespace hold after a
/// restart too.
pub fn records(resources: Vec<otlp::ResourceSpans>) -> Vec<SpanRec> {
    let mut out = Vec::new();
    for rs in resources {
        let service: Arc<str> = Arc::from(rs.service_name());
        let origin = Arc::new(Origin::of(&rs.resource));
        let ns = rs.resource.iter().find_map(|(k, v)| match v {
            Value::Str(s) if k == NAMESPACE_ATTR => Some(s.clone()),
            _ => None,
        });
        for mut span in rs.spans {
            if let Some(ns) = &ns
                && !span.attrs.iter().any(|(k, _)| k == NAMESPACE_ATTR)
            {
                span.attrs
                    .push((NAMESPACE_ATTR.into(), Value::Str(ns.clone())));
            }
            out.push(SpanRec {
                service: service.clone(),
                origin: origin.clone(),
                span,
            });
        }
    }
    out
}

fn bad(msg: impl Into<String>) -> ControlError {
    ControlError::new(ErrorCode::BadRequest, msg)
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` (the protobuf JSON mapping: lowerCamelCase field names,
/// trace and span ids as hex, 64-bit integers as strings or numbers, enums as integers). Unknown fields are
/// ignored as in protobuf; the same caps as the binary decoder apply.
pub fn decode_json(body: &[u8]) -> Result<Vec<otlp::ResourceSpans>> {
    let v: Json =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid OTLP/JSON: {e}")))?;
    let mut out = Vec::new();
    let mut count = 0usize;
    for rs in arr(&v, "resourceSpans") {
        let mut r = otlp::ResourceSpans::default();
        let mut dropped = 0u32;
        for kv in arr(&rs["resource"], "attributes") {
            push_attr(&mut r.resource, &mut dropped, kv);
        }
        for ss in arr(rs, "scopeSpans") {
            for s in arr(ss, "spans") {
                count += 1;
                if count > otlp::MAX_SPANS {
                    return Err(bad(format!(
                        "more than {} spans in one request",
                        otlp::MAX_SPANS
                    )));
                }
                r.spans.push(json_span(s)?);
            }
        }
        out.push(r);
    }
    Ok(out)
}

fn arr<'a>(v: &'a Json, key: &str) -> impl Iterator<Item = &'a Json> {
    v.get(key)
        .and_then(Json::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

fn json_u64(v: &Json) -> Option<u64> {
    match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn json_id<const N: usize>(v: &Json, field: &str) -> Result<[u8; N]> {
    match v.as_str() {
        None | Some("") => Ok([0; N]),
        Some(s) => unhex::<N>(s)
            .ok_or_else(|| bad(format!("{field} must be {} hex digits", 2 * N)).with_field(field)),
    }
}

fn cut(s: &str) -> String {
    cut_to(s, otlp::MAX_STRING)
}

fn cut_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn json_span(s: &Json) -> Result<otlp::Span> {
    let mut span = otlp::Span {
        trace_id: json_id(&s["traceId"], "traceId")?,
        span_id: json_id(&s["spanId"], "spanId")?,
        parent_id: json_id(&s["parentSpanId"], "parentSpanId")?,
        name: cut(s["name"].as_str().unwrap_or_default()),
        kind: json_u64(&s["kind"]).unwrap_or(0).min(255) as u8,
        start_ns: json_u64(&s["startTimeUnixNano"]).unwrap_or(0),
        end_ns: json_u64(&s["endTimeUnixNano"]).unwrap_or(0),
        status: json_u64(&s["status"]["code"]).unwrap_or(0).min(255) as u8,
        status_message: cut(s["status"]["message"].as_str().unwrap_or_default()),
        ..Default::default()
    };
    span.dropped_attrs = json_u64(&s["droppedAttributesCount"])
        .unwrap_or(0)
        .min(u32::MAX.into()) as u32;
    for kv in arr(s, "attributes") {
        push_attr(&mut span.attrs, &mut span.dropped_attrs, kv);
    }
    Ok(span)
}

fn push_attr(out: &mut Vec<otlp::Attr>, dropped: &mut u32, kv: &Json) {
    if out.len() >= otlp::MAX_ATTRS {
        *dropped = dropped.saturating_add(1);
        return;
    }
    let key = cut(kv["key"].as_str().unwrap_or_default());
    let v = &kv["value"];
    let value = if let Some(s) = v.get("stringValue").and_then(Json::as_str) {
        Value::Str(cut(s))
    } else if let Some(b) = v.get("boolValue").and_then(Json::as_bool) {
        Value::Bool(b)
    } else if let Some(i) = v.get("intValue") {
        match i {
            Json::Number(n) => Value::Int(n.as_i64().unwrap_or(0)),
            Json::String(s) => Value::Int(s.parse().unwrap_or(0)),
            _ => Value::Int(0),
        }
    } else if let Some(d) = v.get("doubleValue").and_then(Json::as_f64) {
        Value::Double(d)
    } else if v.get("arrayValue").is_some() {
        Value::Nested("array")
    } else if v.get("kvlistValue").is_some() {
        Value::Nested("kvlist")
    } else {
        Value::Str(String::new())
    };
    out.push((key, value));
}

/// What is masked before spans are stored.
#[derive(Clone, Debug)]
pub struct Masking {
    /// Attributes holding SQL: their value is replaced by the statement's digest (literals become `?`).
    pub sql_keys: Vec<String>,
    /// Attributes whose value is replaced by `***` entirely.
    pub mask_keys: Vec<String>,
}

impl Default for Masking {
    fn default() -> Self {
        Masking {
            sql_keys: vec!["db.statement".into(), "db.query.text".into()],
            mask_keys: Vec::new(),
        }
    }
}

impl Masking {
    /// Masks one span's attributes in place.
    pub fn apply(&self, span: &mut otlp::Span) {
        for (k, v) in span.attrs.iter_mut() {
            if self.mask_keys.iter().any(|m| m == k) {
                *v = Value::Str("***".into());
            } else if self.sql_keys.iter().any(|m| m == k)
                && let Value::Str(sql) = v
            {
                // The proxies' digest: one normal form for every statement of the same shape, so
                // nothing a client typed as a literal reaches the store.
                *sql = router::sql::digest(sql).text;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_requests_decode_like_the_sdks_send_them() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
          "scopeSpans":[{"scope":{"name":"x"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
          "parentSpanId":"","name":"GET","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
          "attributes":[{"key":"n","value":{"intValue":"42"}},{"key":"b","value":{"boolValue":true}}],"status":{"code":2,"message":"x"}}]}]}]}"#;
        let rs = decode_json(body).unwrap();
        let recs = records(rs);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(&*r.service, "shop");
        assert_eq!(hex(&r.span.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(r.parent(), 0);
        assert_eq!(r.duration_ns(), 1_000_000_000);
        assert!(r.is_error());
        assert_eq!(r.attr("n"), Some(&Value::Int(42)));
        let e =
            decode_json(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#)
                .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("traceId"));
        assert!(decode_json(b"not json").is_err());
    }

    #[test]
    fn resource_attributes_name_the_origin_and_survive_the_segment_encoding() {
        let long = "h".repeat(MAX_ORIGIN_LEN + 50);
        let body = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"web"}}}},
            {{"key":"host.name","value":{{"stringValue":"h1"}}}},{{"key":"service.version","value":{{"stringValue":"v3"}}}},
            {{"key":"service.instance.id","value":{{"stringValue":"{long}"}}}}]}},
            "scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","kind":2}}]}}]}},
            {{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"web"}}}}]}},
            "scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","parentSpanId":"eee19b7ec3c1b174"}}]}}]}}]}}"#
        );
        let recs = records(decode_json(body.as_bytes()).unwrap());
        assert_eq!(recs[0].origin.host, "h1");
        assert_eq!(recs[0].origin.version, "v3");
        assert_eq!(recs[0].origin.instance.len(), MAX_ORIGIN_LEN);
        assert!(recs[0].origin.is_on("h1") && !recs[0].origin.is_on(""));
        assert!(recs[0].is_entry() && !recs[1].is_entry());
        assert!(recs[1].origin.is_empty());
        assert_eq!(
            recs[0].resource_text("service.version").as_deref(),
            Some("v3")
        );
        assert_eq!(recs[1].resource_text("host.name"), None);
        let j = recs[0].to_json();
        assert_eq!(
            (j["host"].as_str(), j["version"].as_str()),
            (Some("h1"), Some("v3"))
        );
        assert!(recs[1].to_json().get("host").is_none());
        // The store writes a resource per service and origin: read back, every span has its origin.
        let back = records(otlp::decode_export(&super::super::store::encode(&recs)).unwrap());
        assert_eq!(back, recs);
    }

    #[test]
    fn sql_is_stored_as_its_digest_and_masked_keys_are_hidden() {
        let mut s = otlp::Span {
            attrs: vec![
                (
                    "db.statement".into(),
                    Value::Str(
                        "SELECT * FROM users WHERE email = 'a@b.c' AND id IN (1,2,3)".into(),
                    ),
                ),
                ("user.password".into(), Value::Str("hunter2".into())),
                ("other".into(), Value::Str("kept".into())),
            ],
            ..Default::default()
        };
        let m = Masking {
            mask_keys: vec!["user.password".into()],
            ..Default::default()
        };
        m.apply(&mut s);
        let text = value_text(&s.attrs[0].1);
        assert!(!text.contains("a@b.c") && text.contains('?'), "{text}");
        assert_eq!(s.attrs[1].1, Value::Str("***".into()));
        assert_eq!(s.attrs[2].1, Value::Str("kept".into()));
    }

    #[test]
    fn hex_ids_round_trip() {
        let id = [0xab; 16];
        assert_eq!(unhex::<16>(&hex(&id)), Some(id));
        assert_eq!(unhex::<8>("zz"), None);
        assert_eq!(unhex::<8>("00112233445566778"), None);
    }
}
