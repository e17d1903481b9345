//! Every run is a trace: a root span for the run and a child span per item attempt, stored in the tracing
//! service of the control node that saw them end (`crate::trace`, service `furrow-jobs`).
//!
//! The ids are derived from the run id (SHA-256), not stored: the node that hands an item to a worker
//! computes the item span's id and sends it as a W3C `traceparent` (`TRACEPARENT` in a shell item's
//! environment, the `traceparent` header of an HTTP item, [`super::worker::ItemCtx::traceparent`] for
//! in-process functions), and whichever node records the span later computes the same ids. So an
//! instrumented program run by a job joins the run's trace without any id travelling through the runtime
//! tables, and the two scheduler nodes of a run agree without talking to each other.
//!
//! A hand-back (graceful worker shutdown) is no attempt and gets no span; its attempt number is used again
//! by the next worker, which then gets the span.

use std::sync::Arc;

use codec::otlp::{self, Value};
use sha2::{Digest, Sha256};

use crate::trace::model::{SpanRec, hex};

/// The service name of the scheduler's spans.
pub const SERVICE: &str = "furrow-jobs";

/// OTLP span kind internal.
const KIND_INTERNAL: u8 = 1;
/// OTLP span kind client (an HTTP item calls a peer).
const KIND_CLIENT: u8 = 3;

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// The trace id of a run and the span id of its root span.
pub fn run_ids(run: &str) -> ([u8; 16], [u8; 8]) {
    let d = digest(&["furrow-job-run", run]);
    let mut t = [0u8; 16];
    let mut s = [0u8; 8];
    t.copy_from_slice(&d[..16]);
    s.copy_from_slice(&d[16..24]);
    // All-zero ids are invalid in W3C trace context; a digest of zeros is as likely as a collision.
    if t == [0; 16] {
        t[15] = 1;
    }
    if s == [0; 8] {
        s[7] = 1;
    }
    (t, s)
}

/// The span id of one attempt of one item.
pub fn item_span_id(run: &str, idx: i64, attempt: i64) -> [u8; 8] {
    let d = digest(&[
        "furrow-job-item",
        run,
        &idx.to_string(),
        &attempt.to_string(),
    ]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&d[..8]);
    if s == [0; 8] {
        s[7] = 1;
    }
    s
}

/// The W3C `traceparent` an item attempt runs under (sampled: the collector's tail sampling decides).
pub fn traceparent(run: &str, idx: i64, attempt: i64) -> String {
    let (t, _) = run_ids(run);
    format!(
        "00-{}-{}-01",
        hex(&t),
        hex(&item_span_id(run, idx, attempt))
    )
}

fn ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

fn status(state: &str) -> u8 {
    match state {
        "ok" => 1,
        "failed" | "lost" | "timeout" => crate::trace::model::STATUS_ERROR,
        _ => 0,
    }
}

/// The root span of a run: from its firing to its end.
pub struct RunSpan<'a> {
    /// The run id.
    pub run: &'a str,
    /// Environment.
    pub env: &'a str,
    /// Job.
    pub job: &'a str,
    /// `schedule`, `manual`, `dag`.
    pub cause: &'a str,
    /// The run's end state.
    pub state: &'a str,
    /// Why it failed or was skipped.
    pub detail: &'a str,
    /// When it fired, ms.
    pub fired_ms: i64,
    /// When it ended, ms.
    pub ended_ms: i64,
}

impl RunSpan<'_> {
    /// The span record.
    pub fn record(&self) -> SpanRec {
        let (trace_id, span_id) = run_ids(self.run);
        SpanRec {
            service: Arc::from(SERVICE),
            origin: Default::default(),
            span: otlp::Span {
                trace_id,
                span_id,
                parent_id: [0; 8],
                name: format!("job {}/{}", self.env, self.job),
                kind: KIND_INTERNAL,
                start_ns: ns(self.fired_ms),
                end_ns: ns(self.ended_ms.max(self.fired_ms)),
                attrs: vec![
                    (
                        "furrow.job".into(),
                        Value::Str(format!("{}/{}", self.env, self.job)),
                    ),
                    ("furrow.run".into(), Value::Str(self.run.into())),
                    ("furrow.cause".into(), Value::Str(self.cause.into())),
                    ("furrow.state".into(), Value::Str(self.state.into())),
                ],
                dropped_attrs: 0,
                status: status(self.state),
                status_message: self.detail.into(),
            },
        }
    }
}

/// One attempt of one item on one worker.
pub struct ItemSpan<'a> {
    /// The run id.
    pub run: &'a str,
    /// Environment.
    pub env: &'a str,
    /// Job.
    pub job: &'a str,
    /// The item index.
    pub idx: i64,
    /// The attempt, from 1.
    pub attempt: i64,
    /// The worker that ran it.
    pub worker: &'a str,
    /// How the attempt ended: `ok`, `failed`, `timeout`, `stopped`, `lost`, or `retry` (taken back from a
    /// dead worker and run again).
    pub state: &'a str,
    /// The exit status or HTTP status, if any.
    pub exit_code: Option<i64>,
    /// The result text (first 256 bytes kept).
    pub result: &'a str,
    /// `host:port` an HTTP item called (the dependency graph's edge), if any.
    pub peer: Option<&'a str>,
    /// When the worker got it, ms.
    pub started_ms: i64,
    /// When it ended, ms.
    pub ended_ms: i64,
}

impl ItemSpan<'_> {
    /// The span record.
    pub fn record(&self) -> SpanRec {
        let (trace_id, parent_id) = run_ids(self.run);
        let mut attrs = vec![
            (
                "furrow.job".into(),
                Value::Str(format!("{}/{}", self.env, self.job)),
            ),
            ("furrow.run".into(), Value::Str(self.run.into())),
            ("furrow.item".into(), Value::Int(self.idx)),
            ("furrow.attempt".into(), Value::Int(self.attempt)),
            ("furrow.worker".into(), Value::Str(self.worker.into())),
            ("furrow.state".into(), Value::Str(self.state.into())),
        ];
        if let Some(c) = self.exit_code {
            attrs.push(("furrow.exit_code".into(), Value::Int(c)));
        }
        if let Some(p) = self.peer {
            attrs.push(("server.address".into(), Value::Str(p.into())));
        }
        let mut msg = self.result.to_string();
        if msg.len() > 256 {
            let mut cut = 256;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
        }
        SpanRec {
            service: Arc::from(SERVICE),
            origin: Default::default(),
            span: otlp::Span {
                trace_id,
                span_id: item_span_id(self.run, self.idx, self.attempt),
                parent_id,
                name: format!("item {}", self.idx),
                kind: if self.peer.is_some() {
                    KIND_CLIENT
                } else {
                    KIND_INTERNAL
                },
                start_ns: ns(self.started_ms),
                end_ns: ns(self.ended_ms.max(self.started_ms)),
                attrs,
                dropped_attrs: 0,
                status: if self.state == "retry" {
                    crate::trace::model::STATUS_ERROR
                } else {
                    status(self.state)
                },
                status_message: msg,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_valid_trace_context() {
        let run = "DEV/nightly/0001767225600000";
        let tp = traceparent(run, 3, 2);
        assert_eq!(
            tp,
            traceparent(run, 3, 2),
            "a pure function of run, item, attempt"
        );
        let parsed: Vec<&str> = tp.split('-').collect();
        assert_eq!(parsed.len(), 4);
        assert_eq!((parsed[0], parsed[3]), ("00", "01"));
        assert_eq!(parsed[1], hex(&run_ids(run).0));
        assert_eq!(parsed[2], hex(&item_span_id(run, 3, 2)));
        assert_ne!(traceparent(run, 3, 1), tp, "each attempt its own span");
        assert_ne!(traceparent(run, 4, 2), tp, "each item its own span");
        assert_ne!(run_ids(run).0, run_ids("DEV/nightly/0001767225601000").0);
        assert_ne!(run_ids(run).1, item_span_id(run, 0, 1));
    }

    #[test]
    fn item_spans_hang_under_their_run_span() {
        let run = "DEV/a/0000000001000";
        let root = RunSpan {
            run,
            env: "DEV",
            job: "a",
            cause: "manual",
            state: "failed",
            detail: "1 item(s) failed or lost",
            fired_ms: 1000,
            ended_ms: 2500,
        }
        .record();
        let item = ItemSpan {
            run,
            env: "DEV",
            job: "a",
            idx: 0,
            attempt: 1,
            worker: "w1",
            state: "failed",
            exit_code: Some(3),
            result: &"x".repeat(1000),
            peer: Some("10.0.0.1:80"),
            started_ms: 1100,
            ended_ms: 2400,
        }
        .record();
        assert_eq!(root.parent(), 0);
        assert_eq!(item.trace(), root.trace());
        assert_eq!(item.parent(), root.id());
        assert!(root.is_error() && item.is_error());
        assert_eq!(item.duration_ns(), 1_300_000_000);
        assert_eq!(item.span.status_message.len(), 256);
        assert_eq!(
            item.attr_text("server.address").as_deref(),
            Some("10.0.0.1:80")
        );
        assert_eq!(item.attr_text("furrow.exit_code").as_deref(), Some("3"));
        let ok = ItemSpan {
            state: "ok",
            peer: None,
            exit_code: None,
            result: "",
            ..ItemSpan {
                run,
                env: "DEV",
                job: "a",
                idx: 1,
                attempt: 1,
                worker: "w1",
                state: "",
                exit_code: None,
                result: "",
                peer: None,
                started_ms: 5,
                ended_ms: 1,
            }
        }
        .record();
        assert!(!ok.is_error());
        assert_eq!(ok.duration_ns(), 0, "an end before the start is clamped");
    }
}
