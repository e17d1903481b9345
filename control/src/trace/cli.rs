//! `furrow ctl trace ...`: one subcommand per query of the collector.

use clap::Subcommand;
use serde_json::Value as Json;

use crate::client::{ApiClient, ClientError, encode};

/// `furrow ctl trace ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum TraceCmd {
    /// One trace as a call tree with timings (text; `--json` for the API's tree).
    Get {
        /// The trace id (32 hex digits).
        id: String,
        /// Print the JSON tree instead of the text rendering.
        #[arg(long)]
        json: bool,
    },
    /// Traces with a span matching every given criterion, newest first.
    Search {
        /// Service name.
        #[arg(long)]
        service: Option<String>,
        /// Operation (span name).
        #[arg(long)]
        operation: Option<String>,
        /// Minimum span duration, ms.
        #[arg(long)]
        min_duration_ms: Option<u64>,
        /// error, ok or any.
        #[arg(long)]
        status: Option<String>,
        /// KEY=VALUE attribute filter (repeatable).
        #[arg(long = "attr")]
        attrs: Vec<String>,
        /// Look back this many seconds.
        #[arg(long, default_value_t = 3600)]
        since_s: u64,
        /// The most traces listed.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// The service dependency graph: calls, error rate, QPS and latency percentiles per edge.
    Deps {
        /// Look back this many seconds.
        #[arg(long, default_value_t = 3600)]
        since_s: u64,
    },
    /// A service's operations, slowest (p99) first.
    Slowest {
        /// The service.
        service: String,
        /// Look back this many seconds.
        #[arg(long, default_value_t = 3600)]
        since_s: u64,
        /// The most operations listed.
        #[arg(long, default_value_t = 10)]
        limit: u64,
    },
    /// A service's p99 per operation per hour, regressions flagged.
    Trend {
        /// The service.
        service: String,
        /// Hours back.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Traced statements per digest, by total time, with slow samples and their trace ids.
    Sql {
        /// Look back this many seconds.
        #[arg(long, default_value_t = 3600)]
        since_s: u64,
        /// The most digests listed.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Every live proxy's MySQL digest table (all statements), merged by fingerprint.
    Digests {
        /// The most merged digests listed.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Every live proxy's slow MySQL statements, newest first, with the trace each belongs to.
    Slow {
        /// Entries asked of each proxy.
        #[arg(long, default_value_t = 100)]
        n: u64,
        /// The most entries listed.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Every Furrow process of the fleet (this control node, each live proxy): CPU, memory,
    /// threads, open files.
    Processes,
    /// Collector counters: ingest, queue, sampling, store.
    Stats,
}

/// Runs one trace subcommand (the text tree is printed here and answers null).
pub async fn run_trace(api: &ApiClient, cmd: TraceCmd) -> Result<Json, ClientError> {
    use TraceCmd::*;
    match cmd {
        Get { id, json } => {
            let v = api
                .call("GET", &format!("/v1/trace/traces/{}", encode(&id)), None)
                .await?;
            if json {
                return Ok(v);
            }
            print!("{}", v["text"].as_str().unwrap_or_default());
            Ok(Json::Null)
        }
        Search {
            service,
            operation,
            min_duration_ms,
            status,
            attrs,
            since_s,
            limit,
        } => {
            let mut q = format!("since_s={since_s}&limit={limit}");
            for (k, v) in [
                ("service", service),
                ("operation", operation),
                ("status", status),
            ] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", encode(&v)));
                }
            }
            if let Some(d) = min_duration_ms {
                q.push_str(&format!("&min_duration_ms={d}"));
            }
            if !attrs.is_empty() {
                q.push_str(&format!("&attr={}", encode(&attrs.join(","))));
            }
            api.call("GET", &format!("/v1/trace/search?{q}"), None)
                .await
        }
        Deps { since_s } => {
            api.call(
                "GET",
                &format!("/v1/trace/dependencies?since_s={since_s}"),
                None,
            )
            .await
        }
        Slowest {
            service,
            since_s,
            limit,
        } => {
            api.call(
                "GET",
                &format!(
                    "/v1/trace/services/{}/slowest?since_s={since_s}&limit={limit}",
                    encode(&service)
                ),
                None,
            )
            .await
        }
        Trend { service, hours } => {
            api.call(
                "GET",
                &format!(
                    "/v1/trace/services/{}/trend?hours={hours}",
                    encode(&service)
                ),
                None,
            )
            .await
        }
        Sql { since_s, limit } => {
            api.call(
                "GET",
                &format!("/v1/trace/sql?since_s={since_s}&limit={limit}"),
                None,
            )
            .await
        }
        Digests { limit } => {
            api.call(
                "GET",
                &format!("/v1/trace/fleet/digests?limit={limit}"),
                None,
            )
            .await
        }
        Slow { n, limit } => {
            api.call(
                "GET",
                &format!("/v1/trace/fleet/slow?n={n}&limit={limit}"),
                None,
            )
            .await
        }
        Processes => api.call("GET", "/v1/trace/processes", None).await,
        Stats => api.call("GET", "/v1/trace/stats", None).await,
    }
}
