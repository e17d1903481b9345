//! Property tests of the OTLP trace decoder: encode∘decode is the identity for generated requests,
//! every prefix and every single-byte corruption of a valid request decodes or fails cleanly, and
//! arbitrary bytes never panic. The fuzz corpus (`fuzz/corpus/otlp_export`) is replayed too.

use codec::otlp::{self, ResourceSpans, Span, Value};
use proptest::collection::vec;
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        ".{0,12}".prop_map(Value::Str),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("NaN never equals itself", |d| !d.is_nan())
            .prop_map(Value::Double),
        vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
    ]
}

fn span() -> impl Strategy<Value = Span> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 8]>(),
        any::<[u8; 8]>(),
        ".{0,16}",
        0u8..6,
        any::<u64>(),
        any::<u64>(),
        vec((".{0,8}", value()), 0..6),
        0u8..3,
        ".{0,8}",
    )
        .prop_map(|(t, s, p, name, kind, a, b, attrs, status, msg)| Span {
            trace_id: t,
            span_id: s,
            parent_id: p,
            name,
            kind,
            start_ns: a,
            end_ns: b,
            attrs,
            dropped_attrs: 0,
            status,
            status_message: msg,
        })
}

fn request() -> impl Strategy<Value = Vec<ResourceSpans>> {
    vec(
        (vec((".{0,8}", value()), 0..4), vec(span(), 0..5))
            .prop_map(|(resource, spans)| ResourceSpans { resource, spans }),
        0..4,
    )
}

proptest! {
    #[test]
    fn encode_decode_round_trip(req in request()) {
        let buf = otlp::encode_export(&req, "p");
        prop_assert_eq!(otlp::decode_export(&buf).unwrap(), req);
    }

    #[test]
    fn prefixes_and_corruptions_never_panic(req in request(), at in any::<usize>(), byte in any::<u8>()) {
        let mut buf = otlp::encode_export(&req, "p");
        for end in 0..buf.len().min(200) {
            otlp::fuzzing::export(&buf[..end]).unwrap();
        }
        if !buf.is_empty() {
            let i = at % buf.len();
            buf[i] = byte;
            otlp::fuzzing::export(&buf).unwrap();
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..256)) {
        otlp::fuzzing::export(&data).unwrap();
    }
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/otlp_export");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        otlp::fuzzing::export(&data).unwrap();
        n += 1;
    }
    assert!(n >= 2, "only {n} corpus files in {}", dir.display());
}
