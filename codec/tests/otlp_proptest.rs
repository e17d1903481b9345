//! Property tests of the OTLP trace decoder: encode∘decode is the identity for generated requests,
//! every prefix and every single-byte corruption of a valid request decodes or fails cleanly, and
//! arbitrary bytes never panic. The fuzz corpora (`fuzz/corpus/otlp_export`, `otlp_http_answer`)
//! are replayed too; the OTLP/HTTP answer head parser has its own properties at the end.

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
    type Check = fn(&[u8]) -> Result<(), otlp::fuzzing::Violation>;
    let corpus: [(&str, Check); 2] = [
        ("otlp_export", otlp::fuzzing::export),
        ("otlp_http_answer", otlp::fuzzing::answer_head),
    ];
    for (target, check) in corpus {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            check(&data).unwrap();
            n += 1;
        }
        assert!(n >= 2, "only {n} corpus files in {}", dir.display());
    }
}

proptest! {
    /// The OTLP/HTTP answer head (`codec::otlp::http`): a head written from its parts parses back
    /// to them, whatever other headers and case surround them, and arbitrary bytes never panic.
    #[test]
    fn answer_heads_parse_back(
        status in 100u16..600,
        retry in proptest::option::of(0u64..100_000),
        len in proptest::option::of(0usize..1 << 20),
        close in any::<bool>(),
        upper in any::<bool>(),
        noise in vec("[A-Za-z-]{1,12}: [ -~]{0,20}", 0..4),
    ) {
        let name = |s: &str| if upper { s.to_uppercase() } else { s.to_string() };
        let mut head = format!("HTTP/1.1 {status} Reason phrase\r\n");
        for n in &noise {
            let key = n.split(':').next().unwrap_or("").to_ascii_lowercase();
            if ["content-length", "retry-after", "connection", "transfer-encoding"].contains(&key.as_str()) {
                continue;
            }
            head.push_str(n);
            head.push_str("\r\n");
        }
        if let Some(r) = retry {
            head.push_str(&format!("{}: {r}\r\n", name("Retry-After")));
        }
        if let Some(l) = len {
            head.push_str(&format!("{}:{l}\r\n", name("Content-Length")));
        }
        if close {
            head.push_str(&format!("{}: close\r\n", name("Connection")));
        }
        head.push_str("\r\nbody bytes");
        let a = otlp::http::parse_answer_head(head.as_bytes()).unwrap();
        prop_assert_eq!(a.status, status);
        prop_assert_eq!(a.retry_after, retry.map(std::time::Duration::from_secs));
        prop_assert_eq!(a.content_length, len);
        prop_assert_eq!(a.reusable, !close && len.is_some());
    }

    #[test]
    fn answer_heads_of_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = otlp::http::parse_answer_head(&bytes);
    }
}
