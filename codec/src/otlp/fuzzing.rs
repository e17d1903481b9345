//! The OTLP decoder's entry point for the cargo-fuzz target (`fuzz/fuzz_targets/otlp_export.rs`) and
//! the corpus replay test: arbitrary bytes must never panic, and whatever decodes must re-encode to
//! bytes that decode to the same value (encode ∘ decode is a fixed point).

use super::{Value, decode_export, encode_export};

/// A violated invariant.
pub type Violation = String;

/// Decodes `data`; on success checks the round trip.
pub fn export(data: &[u8]) -> Result<(), Violation> {
    let Ok(first) = decode_export(data) else {
        return Ok(());
    };
    if first.iter().map(|r| r.spans.len()).sum::<usize>() > super::MAX_SPANS {
        return Err("more spans than the cap decoded".into());
    }
    let again = encode_export(&first, "fuzz");
    let second =
        decode_export(&again).map_err(|e| format!("re-encoded request does not decode: {e}"))?;
    // Nested values are not re-encoded (they decode as an empty string), and NaN never equals
    // itself: compare with those normalised.
    let norm = |v: &Value| match v {
        Value::Nested(_) => Value::Str(String::new()),
        Value::Double(d) if d.is_nan() => Value::Str("NaN".into()),
        v => v.clone(),
    };
    let flat = |rs: &[super::ResourceSpans]| {
        rs.iter()
            .map(|r| {
                let mut r = r.clone();
                for a in r.resource.iter_mut() {
                    a.1 = norm(&a.1);
                }
                for s in r.spans.iter_mut() {
                    for a in s.attrs.iter_mut() {
                        a.1 = norm(&a.1);
                    }
                }
                r
            })
            .collect::<Vec<_>>()
    };
    if flat(&first) != flat(&second) {
        return Err("decode(encode(decode(x))) differs from decode(x)".into());
    }
    Ok(())
}

/// Parses `data` as an OTLP/HTTP answer head (`super::http`): never panics, and a connection is
/// only ever reused after a body of known length.
pub fn answer_head(data: &[u8]) -> Result<(), Violation> {
    match super::http::parse_answer_head(data) {
        Ok(a) if a.reusable && a.content_length.is_none() => {
            Err("a connection reused after a body of unknown length".into())
        }
        _ => Ok(()),
    }
}
