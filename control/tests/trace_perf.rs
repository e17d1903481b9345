//! Span store measurements (ignored by default): `cargo test -p control --test trace_perf -- --ignored
//! --nocapture`. They print spans per second taken in (tail sampling, encoding, segment append), disk
//! bytes per span and the index's memory estimate; they check correctness only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codec::otlp::{Span, Value};
use control::trace::model::SpanRec;
use control::trace::store::{Store, StoreOptions};

fn spans(trace: u128) -> Vec<SpanRec> {
    let svc: Arc<str> = Arc::from("furrow-proxy");
    (0..5u64)
        .map(|i| SpanRec {
            service: svc.clone(),
            origin: Default::default(),
            span: Span {
                trace_id: trace.to_be_bytes(),
                span_id: (i + 1).to_be_bytes(),
                parent_id: i.to_be_bytes(),
                name: "SELECT * FROM orders WHERE id = ?".into(),
                kind: 2,
                start_ns: 1_700_000_000_000_000_000 + i,
                end_ns: 1_700_000_000_000_300_000 + i,
                attrs: vec![
                    ("db.system".into(), Value::Str("mysql".into())),
                    (
                        "db.statement".into(),
                        Value::Str("SELECT * FROM orders WHERE id = ?".into()),
                    ),
                    ("peer.service".into(), Value::Str("mysql:primary".into())),
                    ("client.address".into(), Value::Str("10.0.0.7".into())),
                    ("db.response.rows".into(), Value::Int(1)),
                ],
                ..Default::default()
            },
        })
        .collect()
}

fn run(dir: Option<std::path::PathBuf>, what: &str) {
    let n = 40_000u128;
    let opts = StoreOptions {
        dir,
        sample_rate: 1.0,
        decision_wait: Duration::from_millis(0),
        max_bytes: 1 << 40,
        ..Default::default()
    };
    let mut st = Store::open(opts, 0).unwrap();
    let weight: usize = spans(0).iter().map(SpanRec::weight).sum();
    let t = Instant::now();
    for tr in 1..=n {
        st.add(spans(tr), tr as u64);
        if tr % 100 == 0 {
            st.tick(tr as u64 + 1);
        }
    }
    st.tick(n as u64 + 10);
    let took = t.elapsed().as_secs_f64();
    let (traces, _, _, segs, bytes) = st.sizes();
    assert_eq!(traces as u128, n);
    let per_span = bytes as f64 / (5 * n) as f64;
    println!(
        "{what}: {:.0} spans/s into the store; {per_span:.0} B/span on disk, ~{} B/span in the index; {segs} segments",
        (5 * n) as f64 / took,
        weight / 5
    );
}

/// The embedded span store's intake and sizes (printed). Ignored by plan: a rate on a shared machine
/// is no pass/fail test (store correctness runs in `control::trace::store`'s unit tests); run by hand
/// when the store changes, figures in docs/tracing.md.
#[test]
#[ignore = "a measurement, not a test: prints store intake and sizes; run by hand (see the module doc), figures in docs/tracing.md"]
fn store_ingest_rate_and_sizes() {
    run(None, "in memory");
    let dir = tempfile::tempdir().unwrap();
    run(Some(dir.path().to_path_buf()), "segment files");
}
