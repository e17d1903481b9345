//! OTLP trace export messages (`opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`)
//! in the protobuf wire format: decoded by the collector in `furrow control`, encoded by the proxies'
//! span exporter.
//!
//! Only the fields Furrow uses are modelled (resource attributes, spans with their ids, name, kind,
//! times, attributes and status); every other field — events, links, trace state, schema URLs,
//! scope versions, and fields a newer OTLP adds — is skipped by wire type. Caps keep a hostile
//! request from costing more than its own size: spans per request, attributes per span (the rest
//! are counted as dropped), the length of a kept string. Nested attribute values (arrays, key-value
//! lists) are not recursed into: they are kept as a short placeholder, so decoding has a fixed
//! nesting depth.

pub mod fuzzing;
pub mod http;
pub mod wire;

use wire::{FIXED64, LEN, Reader, VARINT, Writer};

/// Most spans one request may carry.
pub const MAX_SPANS: usize = 65_536;
/// Most attributes kept per span or resource; more are counted in `dropped_attrs`.
pub const MAX_ATTRS: usize = 128;
/// Longest string value kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_STRING: usize = 8192;

/// Why a request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    /// The message ends inside a field.
    #[error("truncated protobuf: {0}")]
    Truncated(&'static str),
    /// Bytes that are not valid protobuf.
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    /// A known field with an unexpected wire type.
    #[error("wrong wire type for {0}")]
    WrongType(&'static str),
    /// More spans than [`MAX_SPANS`].
    #[error("more than {MAX_SPANS} spans in one request")]
    TooManySpans,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An array or key-value list, not decoded (its kind name).
    Nested(&'static str),
}

/// A key and its value.
pub type Attr = (String, Value);

/// One span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte span id.
    pub span_id: [u8; 8],
    /// The parent's span id; all zero for a root.
    pub parent_id: [u8; 8],
    /// Operation name.
    pub name: String,
    /// SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: u8,
    /// Start, ns since the epoch.
    pub start_ns: u64,
    /// End, ns since the epoch.
    pub end_ns: u64,
    /// Attributes (at most [`MAX_ATTRS`]).
    pub attrs: Vec<Attr>,
    /// Attributes dropped by the sender or by the cap.
    pub dropped_attrs: u32,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status: u8,
    /// Status message.
    pub status_message: String,
}

/// The spans of one resource (one process of one service).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceSpans {
    /// Resource attributes (`service.name` among them).
    pub resource: Vec<Attr>,
    /// Spans of every instrumentation scope, flattened.
    pub spans: Vec<Span>,
}

impl ResourceSpans {
    /// The `service.name` resource attribute, or `unknown_service` as the SDKs default.
    pub fn service_name(&self) -> &str {
        self.resource
            .iter()
            .find_map(|(k, v)| match v {
                Value::Str(s) if k == "service.name" => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("unknown_service")
    }
}

fn string(b: &[u8]) -> String {
    let b = if b.len() > MAX_STRING {
        let mut end = MAX_STRING;
        // Cut at a UTF-8 character boundary (continuation bytes are 10xxxxxx).
        while end > 0 && b[end] & 0xc0 == 0x80 {
            end -= 1;
        }
        &b[..end]
    } else {
        b
    };
    String::from_utf8_lossy(b).into_owned()
}

fn id<const N: usize>(b: &[u8], what: &'static str) -> Result<[u8; N], OtlpError> {
    match b.len() {
        0 => Ok([0; N]),
        n if n == N => {
            let mut a = [0; N];
            a.copy_from_slice(b);
            Ok(a)
        }
        _ => Err(OtlpError::Malformed(what)),
    }
}

/// Decodes an `ExportTraceServiceRequest`.
pub fn decode_export(buf: &[u8]) -> Result<Vec<ResourceSpans>, OtlpError> {
    let mut out = Vec::new();
    let mut spans = 0usize;
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, wt) = r.key()?;
        if f == 1 {
            r.check_wire_type(wt, LEN, "resource_spans")?;
            let rs = resource_spans(r.bytes()?, &mut spans)?;
            out.push(rs);
        } else {
            r.skip(wt)?;
        }
    }
    Ok(out)
}

fn resource_spans(buf: &[u8], count: &mut usize) -> Result<ResourceSpans, OtlpError> {
    let mut rs = ResourceSpans::default();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, wt) = r.key()?;
        match f {
            1 => {
                r.check_wire_type(wt, LEN, "resource")?;
                let mut rr = Reader::new(r.bytes()?);
                let mut dropped = 0;
                while !rr.done() {
                    let (f, wt) = rr.key()?;
                    if f == 1 {
                        rr.check_wire_type(wt, LEN, "resource.attributes")?;
                        push_attr(&mut rs.resource, &mut dropped, rr.bytes()?)?;
                    } else {
                        rr.skip(wt)?;
                    }
                }
            }
            2 => {
                r.check_wire_type(wt, LEN, "scope_spans")?;
                let mut sr = Reader::new(r.bytes()?);
                while !sr.done() {
                    let (f, wt) = sr.key()?;
                    if f == 2 {
                        sr.check_wire_type(wt, LEN, "spans")?;
                        *count += 1;
                        if *count > MAX_SPANS {
                            return Err(OtlpError::TooManySpans);
                        }
                        rs.spans.push(span(sr.bytes()?)?);
                    } else {
                        sr.skip(wt)?;
                    }
                }
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(rs)
}

fn span(buf: &[u8]) -> Result<Span, OtlpError> {
    let mut s = Span::default();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, wt) = r.key()?;
        match (f, wt) {
            (1, LEN) => s.trace_id = id(r.bytes()?, "trace_id is not 16 bytes")?,
            (2, LEN) => s.span_id = id(r.bytes()?, "span_id is not 8 bytes")?,
            (4, LEN) => s.parent_id = id(r.bytes()?, "parent_span_id is not 8 bytes")?,
            (5, LEN) => s.name = string(r.bytes()?),
            (6, VARINT) => s.kind = r.varint()?.min(255) as u8,
            (7, FIXED64) => s.start_ns = r.fixed64()?,
            (8, FIXED64) => s.end_ns = r.fixed64()?,
            (9, LEN) => push_attr(&mut s.attrs, &mut s.dropped_attrs, r.bytes()?)?,
            (10, VARINT) => {
                let n = r.varint()?.min(u64::from(u32::MAX)) as u32;
                s.dropped_attrs = s.dropped_attrs.saturating_add(n);
            }
            (15, LEN) => {
                let mut sr = Reader::new(r.bytes()?);
                while !sr.done() {
                    match sr.key()? {
                        (2, LEN) => s.status_message = string(sr.bytes()?),
                        (3, VARINT) => s.status = sr.varint()?.min(255) as u8,
                        (_, wt) => sr.skip(wt)?,
                    }
                }
            }
            (1 | 2 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 15, _) => {
                return Err(OtlpError::WrongType("a span field"));
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(s)
}

fn push_attr(out: &mut Vec<Attr>, dropped: &mut u32, buf: &[u8]) -> Result<(), OtlpError> {
    let mut key = String::new();
    let mut value = Value::Str(String::new());
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.key()? {
            (1, LEN) => key = string(r.bytes()?),
            (2, LEN) => value = any_value(r.bytes()?)?,
            (1 | 2, _) => return Err(OtlpError::WrongType("a key-value field")),
            (_, wt) => r.skip(wt)?,
        }
    }
    if out.len() < MAX_ATTRS {
        out.push((key, value));
    } else {
        *dropped = dropped.saturating_add(1);
    }
    Ok(())
}

fn any_value(buf: &[u8]) -> Result<Value, OtlpError> {
    let mut v = Value::Str(String::new());
    let mut r = Reader::new(buf);
    while !r.done() {
        v = match r.key()? {
            (1, LEN) => Value::Str(string(r.bytes()?)),
            (2, VARINT) => Value::Bool(r.varint()? != 0),
            (3, VARINT) => Value::Int(r.varint()? as i64),
            (4, FIXED64) => Value::Double(f64::from_bits(r.fixed64()?)),
            (5, LEN) => {
                r.bytes()?;
                Value::Nested("array")
            }
            (6, LEN) => {
                r.bytes()?;
                Value::Nested("kvlist")
            }
            (7, LEN) => {
                let b = r.bytes()?;
                Value::Bytes(b[..b.len().min(MAX_STRING)].to_vec())
            }
            (1..=7, _) => return Err(OtlpError::WrongType("an any-value field")),
            (_, wt) => {
                r.skip(wt)?;
                continue;
            }
        };
    }
    Ok(v)
}

/// Encodes an `ExportTraceServiceRequest` (one scope per resource, named `scope`).
pub fn encode_export(resources: &[ResourceSpans], scope: &str) -> Vec<u8> {
    let mut w = Writer::default();
    for rs in resources {
        encode_resource_spans(&mut w, &rs.resource, scope, |w| {
            for s in &rs.spans {
                w.message(2, |w| encode_span(w, s));
            }
        });
    }
    w.buf
}

/// Appends one `ResourceSpans` (field 1 of the request) with its resource attributes and one scope
/// named `scope`, whose spans `spans` writes: each as `w.message(2, ...)` of its fields
/// ([`encode_span_head`], attributes by [`encode_attr_str`] / [`encode_attr_int`],
/// [`encode_span_tail`]). For senders that keep spans in their own form and encode them straight
/// into the batch (the proxies' exporter), with the resource and scope written once.
pub fn encode_resource_spans(
    w: &mut Writer,
    resource: &[Attr],
    scope: &str,
    spans: impl FnOnce(&mut Writer),
) {
    w.message(1, |w| {
        w.message(1, |w| {
            for a in resource {
                w.message(1, |w| encode_attr(w, a));
            }
        });
        w.message(2, |w| {
            w.message(1, |w| w.bytes(1, scope.as_bytes()));
            spans(w);
        });
    });
}

/// The bytes of a request's `ResourceSpans` (as [`encode_resource_spans`] writes it) that come
/// before its spans, when the spans' fields (`spans_len` bytes) are written apart: a sender that
/// encodes its spans first writes this in front of them without moving them (the nested lengths
/// depend on `spans_len`, so they cannot be written before the spans in place).
pub fn resource_spans_head(resource: &[Attr], scope: &str, spans_len: usize) -> Vec<u8> {
    let mut res = Writer::default();
    res.message(1, |w| {
        for a in resource {
            w.message(1, |w| encode_attr(w, a));
        }
    });
    let mut sc = Writer::default();
    sc.message(1, |w| w.bytes(1, scope.as_bytes()));
    let scope_spans = sc.buf.len() + spans_len;
    let mut inner = res;
    inner.key(2, LEN);
    inner.varint(scope_spans as u64);
    inner.buf.extend_from_slice(&sc.buf);
    let mut head = Writer::default();
    head.key(1, LEN);
    head.varint((inner.buf.len() + spans_len) as u64);
    head.buf.extend_from_slice(&inner.buf);
    head.buf
}

/// The fields of a span that come before its attributes.
#[derive(Debug, Clone, Copy)]
pub struct SpanHead<'a> {
    /// 16-byte trace id.
    pub trace_id: &'a [u8; 16],
    /// 8-byte span id.
    pub span_id: &'a [u8; 8],
    /// The parent's span id; all zero for a root.
    pub parent_id: &'a [u8; 8],
    /// Operation name.
    pub name: &'a [u8],
    /// SpanKind (see [`Span::kind`]).
    pub kind: u8,
    /// Start, ns since the epoch.
    pub start_ns: u64,
    /// End, ns since the epoch.
    pub end_ns: u64,
}

/// Writes a span's ids, name, kind and times (fields 1-8).
pub fn encode_span_head(w: &mut Writer, h: &SpanHead<'_>) {
    w.bytes(1, h.trace_id);
    w.bytes(2, h.span_id);
    if *h.parent_id != [0; 8] {
        w.bytes(4, h.parent_id);
    }
    w.bytes(5, h.name);
    w.uint(6, u64::from(h.kind));
    w.fixed64(7, h.start_ns);
    w.fixed64(8, h.end_ns);
}

/// Writes a span's dropped-attribute count and status (fields 10 and 15; the status only when set).
pub fn encode_span_tail(w: &mut Writer, dropped_attrs: u32, status: u8, message: &[u8]) {
    w.uint(10, u64::from(dropped_attrs));
    if status != 0 || !message.is_empty() {
        w.message(15, |w| {
            w.bytes(2, message);
            w.uint(3, u64::from(status));
        });
    }
}

/// Encodes one span's fields (the body of a `Span` message).
pub fn encode_span(w: &mut Writer, s: &Span) {
    encode_span_head(
        w,
        &SpanHead {
            trace_id: &s.trace_id,
            span_id: &s.span_id,
            parent_id: &s.parent_id,
            name: s.name.as_bytes(),
            kind: s.kind,
            start_ns: s.start_ns,
            end_ns: s.end_ns,
        },
    );
    for a in &s.attrs {
        w.message(9, |w| encode_attr(w, a));
    }
    encode_span_tail(w, s.dropped_attrs, s.status, s.status_message.as_bytes());
}

/// Writes a string attribute of a span (field 9), `value` being UTF-8.
pub fn encode_attr_str(w: &mut Writer, key: &str, value: &[u8]) {
    w.message(9, |w| {
        w.bytes(1, key.as_bytes());
        w.message(2, |w| string_value(w, value));
    });
}

/// Writes an integer attribute of a span (field 9).
pub fn encode_attr_int(w: &mut Writer, key: &str, value: i64) {
    w.message(9, |w| {
        w.bytes(1, key.as_bytes());
        w.message(2, |w| int_value(w, value));
    });
}

// An empty string is still a string value: the field is written even when empty.
fn string_value(w: &mut Writer, s: &[u8]) {
    w.key(1, LEN);
    w.varint(s.len() as u64);
    w.buf.extend_from_slice(s);
}

fn int_value(w: &mut Writer, i: i64) {
    w.key(3, VARINT);
    w.varint(i as u64);
}

fn encode_attr(w: &mut Writer, (k, v): &Attr) {
    w.bytes(1, k.as_bytes());
    w.message(2, |w| match v {
        Value::Str(s) => string_value(w, s.as_bytes()),
        Value::Bool(b) => {
            w.key(2, VARINT);
            w.varint(u64::from(*b));
        }
        Value::Int(i) => int_value(w, *i),
        Value::Double(d) => {
            w.key(4, FIXED64);
            w.buf.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Value::Bytes(b) => {
            w.key(7, LEN);
            w.varint(b.len() as u64);
            w.buf.extend_from_slice(b);
        }
        // Not decoded, so not re-encoded: an empty AnyValue.
        Value::Nested(_) => {}
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResourceSpans {
        ResourceSpans {
            resource: vec![("service.name".into(), Value::Str("shop".into()))],
            spans: vec![Span {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent_id: [3; 8],
                name: "SELECT".into(),
                kind: 3,
                start_ns: 1_700_000_000_000_000_000,
                end_ns: 1_700_000_000_001_000_000,
                attrs: vec![
                    ("db.rows".into(), Value::Int(-4)),
                    ("ok".into(), Value::Bool(true)),
                    ("x".into(), Value::Double(1.5)),
                    ("empty".into(), Value::Str(String::new())),
                    ("b".into(), Value::Bytes(vec![0, 1])),
                ],
                dropped_attrs: 0,
                status: 2,
                status_message: "boom".into(),
            }],
        }
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let rs = vec![sample()];
        let buf = encode_export(&rs, "furrow");
        assert_eq!(decode_export(&buf).unwrap(), rs);
        assert_eq!(rs[0].service_name(), "shop");
    }

    #[test]
    fn bad_ids_and_wire_types_are_errors_not_panics() {
        let mut w = Writer::default();
        w.message(1, |w| {
            w.message(2, |w| w.message(2, |w| w.bytes(1, &[1, 2, 3])))
        });
        assert_eq!(
            decode_export(&w.buf),
            Err(OtlpError::Malformed("trace_id is not 16 bytes"))
        );
        let mut w = Writer::default();
        w.uint(1, 7);
        assert!(matches!(
            decode_export(&w.buf),
            Err(OtlpError::WrongType(_))
        ));
    }

    #[test]
    fn spans_written_field_by_field_match_encode_span() {
        let rs = sample();
        let s = &rs.spans[0];
        let mut w = Writer::default();
        encode_resource_spans(&mut w, &rs.resource, "furrow", |w| {
            w.message(2, |w| {
                encode_span_head(
                    w,
                    &SpanHead {
                        trace_id: &s.trace_id,
                        span_id: &s.span_id,
                        parent_id: &s.parent_id,
                        name: s.name.as_bytes(),
                        kind: s.kind,
                        start_ns: s.start_ns,
                        end_ns: s.end_ns,
                    },
                );
                encode_attr_int(w, "db.rows", -4);
                encode_attr_str(w, "empty", b"");
                encode_span_tail(w, 0, s.status, s.status_message.as_bytes());
            });
        });
        let mut want = rs.clone();
        want.spans[0].attrs = vec![
            ("db.rows".into(), Value::Int(-4)),
            ("empty".into(), Value::Str(String::new())),
        ];
        assert_eq!(w.buf, encode_export(&[want.clone()], "furrow"));
        assert_eq!(decode_export(&w.buf).unwrap(), vec![want]);
    }

    #[test]
    fn a_head_written_apart_is_the_same_request() {
        for n in [1usize, 3, 200, 2000] {
            let mut rs = sample();
            rs.spans = std::iter::repeat_n(rs.spans[0].clone(), n).collect();
            let mut spans = Writer::default();
            for s in &rs.spans {
                spans.message(2, |w| encode_span(w, s));
            }
            let mut got = resource_spans_head(&rs.resource, "furrow", spans.buf.len());
            got.extend_from_slice(&spans.buf);
            assert_eq!(got, encode_export(&[rs], "furrow"), "{n} spans");
        }
    }

    #[test]
    fn attributes_past_the_cap_are_counted_as_dropped() {
        let mut rs = sample();
        rs.spans[0].attrs = (0..MAX_ATTRS + 5)
            .map(|i| (format!("k{i}"), Value::Int(i as i64)))
            .collect();
        let back = decode_export(&encode_export(&[rs], "s")).unwrap();
        assert_eq!(back[0].spans[0].attrs.len(), MAX_ATTRS);
        assert_eq!(back[0].spans[0].dropped_attrs, 5);
    }

    #[test]
    fn long_strings_are_cut_at_a_char_boundary() {
        let mut rs = sample();
        rs.spans[0].name = "é".repeat(MAX_STRING);
        let back = decode_export(&encode_export(&[rs], "s")).unwrap();
        let name = &back[0].spans[0].name;
        assert!(name.len() <= MAX_STRING && name.len() >= MAX_STRING - 1);
        assert!(name.chars().all(|c| c == 'é'));
    }
}
