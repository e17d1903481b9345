//! Map steps that read their item list from data: a SQL map step runs a query through a Furrow MySQL
//! listener (once per listed shard with the shard hint, or once through the listener's own routing) and
//! makes one item per result row; a Redis map step sends a command to each listed address (servers or a
//! Furrow Redis listener) and makes one item per value of the reply.
//!
//! Both are bounded while the reply is read, not after: at most [`MAX_MAP_ITEMS`] items and
//! [`MAX_MAP_BYTES`] of item parameters in all, and a larger reply stops the read and fails the map step
//! with the bound it passed (the connection is dropped rather than drained). The list goes back as the map
//! item's result (a JSON array), which the scheduler turns into items as it does a shell step's output.

use std::io::{Read, Write};
use std::time::Duration;

use codec::resp::Frame;
use serde_json::{Map, Value as Json};

use super::model::MAX_ITEMS;

/// The most items a SQL or Redis map step makes (all shards together).
pub const MAX_MAP_ITEMS: usize = MAX_ITEMS;
/// The most bytes of item parameters (as JSON) a SQL or Redis map step makes, all shards together; also
/// bounds what is read of a reply. The list travels in one worker report, under the API's body limit.
pub const MAX_MAP_BYTES: usize = 512 * 1024;

/// `{shard}` and `{index}` in `s` replaced by a listed shard and its position.
fn subst(s: &str, shard: &str, index: usize) -> String {
    s.replace("{shard}", shard)
        .replace("{index}", &index.to_string())
}

/// Counts items and bytes against the bounds.
struct Budget {
    items: usize,
    bytes: usize,
}

impl Budget {
    fn take(&mut self, item: &Json) -> Result<(), String> {
        self.items += 1;
        if self.items > MAX_MAP_ITEMS {
            return Err(format!(
                "the map step's data has more than {MAX_MAP_ITEMS} items (the most one run may have)"
            ));
        }
        self.bytes += item.to_string().len() + 1;
        if self.bytes > MAX_MAP_BYTES {
            return Err(format!(
                "the map step's items are over {} KiB of parameters",
                MAX_MAP_BYTES / 1024
            ));
        }
        Ok(())
    }
}

/// One item's parameters from a result row: `{"shard": NAME}` (when run on a listed shard) and the row's
/// columns by name, values as text (NULL as null). A later column of the same name wins.
pub fn row_item(shard: Option<&str>, columns: &[String], row: &[Option<bytes::Bytes>]) -> Json {
    let mut m = Map::new();
    if let Some(s) = shard {
        m.insert("shard".into(), Json::String(s.into()));
    }
    for (i, cell) in row.iter().enumerate() {
        let name = columns.get(i).cloned().unwrap_or_else(|| format!("col{i}"));
        let v = match cell {
            Some(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
            None => Json::Null,
        };
        m.insert(name, v);
    }
    Json::Object(m)
}

/// What a SQL map step connects with.
pub struct SqlSource<'a> {
    /// The Furrow MySQL listener.
    pub listener: &'a str,
    /// User.
    pub user: &'a str,
    /// Password.
    pub password: &'a str,
    /// Database to `USE` first (empty: none).
    pub database: &'a str,
    /// Shards to run on with the hint (empty: once, routed by the listener).
    pub shards: &'a [String],
}

/// Runs a SQL map step: the item list as a JSON array text.
pub fn sql_items(src: &SqlSource<'_>, sql: &str, timeout: Duration) -> Result<String, String> {
    let url = crate::mysql::MysqlUrl {
        user: src.user.into(),
        password: src.password.into(),
        addr: src.listener.into(),
        database: "furrow".into(),
    };
    let mut c = crate::mysql::Conn::connect(&url, timeout.min(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    if !src.database.is_empty() {
        c.query(&format!("USE `{}`", src.database.replace('`', "``")))
            .map_err(|e| e.to_string())?;
    }
    let mut budget = Budget { items: 0, bytes: 0 };
    let mut items = Vec::new();
    let runs: Vec<(Option<&str>, String)> = if src.shards.is_empty() {
        vec![(None, sql.to_string())]
    } else {
        src.shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    Some(s.as_str()),
                    format!("/* furrow:shard={s} */ {}", subst(sql, s, i)),
                )
            })
            .collect()
    };
    for (shard, text) in runs {
        // One row past what is left ends the read at the bound.
        let left_rows = MAX_MAP_ITEMS - budget.items;
        let left_bytes = MAX_MAP_BYTES - budget.bytes;
        let t = c
            .query_bounded(&text, left_rows, left_bytes)
            .map_err(|e| match (e, shard) {
                (crate::mysql::MysqlClientError::TooLarge(_), _) => format!(
                    "the map query's rows are over the bound ({MAX_MAP_ITEMS} items, {} KiB of parameters in all)",
                    MAX_MAP_BYTES / 1024
                ),
                (e, Some(s)) => format!("shard {s}: {e}"),
                (e, None) => e.to_string(),
            })?;
        for row in &t.rows {
            let item = row_item(shard, &t.columns, row);
            budget.take(&item)?;
            items.push(item);
        }
    }
    Ok(Json::Array(items).to_string())
}

/// The items one Redis reply makes: an array, set or push reply gives one per element, a map reply one
/// per pair (`key`, `value`), a nil reply none, any other one item; `{"shard": ADDRESS}` is added to each.
/// An error reply fails the step.
pub fn reply_items(shard: &str, f: &Frame) -> Result<Vec<Json>, String> {
    let item = |fields: Vec<(&str, Json)>| {
        let mut m = Map::new();
        m.insert("shard".into(), Json::String(shard.into()));
        for (k, v) in fields {
            m.insert(k.into(), v);
        }
        Json::Object(m)
    };
    Ok(match f {
        Frame::Error(b) | Frame::BlobError(b) => {
            return Err(format!(
                "{shard} answered an error: {}",
                String::from_utf8_lossy(b)
            ));
        }
        Frame::NullBulk | Frame::NullArray | Frame::Null => vec![],
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => v
            .iter()
            .map(|e| item(vec![("value", super::worker::frame_json(e))]))
            .collect(),
        Frame::Map(m) => m
            .iter()
            .map(|(k, v)| {
                item(vec![
                    ("key", super::worker::frame_json(k)),
                    ("value", super::worker::frame_json(v)),
                ])
            })
            .collect(),
        Frame::Attribute { value, .. } => return reply_items(shard, value),
        other => vec![item(vec![("value", super::worker::frame_json(other))])],
    })
}

/// Why a Redis call failed.
#[derive(Debug)]
pub enum CallError {
    /// The reply is past the caller's bounds (bytes, or elements in one aggregate); the read stopped.
    Bound(String),
    /// Connecting, sending or reading failed, or the reply is malformed.
    Io(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Bound(s) | CallError::Io(s) => f.write_str(s),
        }
    }
}

/// Sends one command to `addr` and reads its reply, refusing a reply over `max_bytes` or with more than
/// `max_elems` elements in one aggregate (the read stops there).
pub fn redis_call(
    addr: &str,
    args: &[String],
    timeout: Duration,
    max_bytes: usize,
    max_elems: usize,
) -> Result<Frame, CallError> {
    use codec::resp::RespError;
    let io = |e: &dyn std::fmt::Display| CallError::Io(format!("{addr}: {e}"));
    let sa: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| CallError::Io(format!("address {addr:?}: {e}")))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout.min(Duration::from_secs(10)))
        .map_err(|e| io(&e))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| io(&e))?;
    let cmd = codec::resp::Command::from_args(args.iter().map(|a| a.as_bytes()));
    s.write_all(cmd.raw()).map_err(|e| io(&e))?;
    let mut dec = codec::resp::FrameDecoder::new(codec::resp::Limits {
        max_bulk_len: max_bytes,
        max_array_len: max_elems,
        ..Default::default()
    });
    let mut buf = bytes::BytesMut::with_capacity(4096);
    let mut tmp = [0u8; 8192];
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(RespError::InvalidMultibulkLength) => {
                return Err(CallError::Bound(format!(
                    "{addr}'s reply has an aggregate of more than {max_elems} elements (or a bad length)"
                )));
            }
            Err(RespError::InvalidBulkLength) => {
                return Err(CallError::Bound(format!(
                    "{addr}'s reply has a string over {max_bytes} bytes (or a bad length)"
                )));
            }
            Err(e) => return Err(CallError::Io(format!("{addr}'s reply: {e}"))),
        }
        if buf.len() > max_bytes {
            return Err(CallError::Bound(format!(
                "{addr}'s reply is over {max_bytes} bytes"
            )));
        }
        let n = s.read(&mut tmp).map_err(|e| io(&e))?;
        if n == 0 {
            return Err(CallError::Io(format!(
                "{addr} closed the connection before the reply"
            )));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Runs a Redis map step over `shards` (addresses): the item list as a JSON array text.
pub fn redis_items(
    shards: &[String],
    command: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let mut budget = Budget { items: 0, bytes: 0 };
    let mut items = Vec::new();
    for (i, addr) in shards.iter().enumerate() {
        let args: Vec<String> = command.iter().map(|c| subst(c, addr, i)).collect();
        let f = redis_call(
            addr,
            &args,
            timeout,
            MAX_MAP_BYTES - budget.bytes,
            MAX_MAP_ITEMS - budget.items,
        )
        .map_err(|e| match e {
            CallError::Bound(e) => format!(
                "the map command's reply is over the bound ({MAX_MAP_ITEMS} items, {} KiB of parameters in all): {e}",
                MAX_MAP_BYTES / 1024
            ),
            CallError::Io(e) => e,
        })?;
        for item in reply_items(addr, &f)? {
            budget.take(&item)?;
            items.push(item);
        }
    }
    Ok(Json::Array(items).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn rows_become_items_by_column_name() {
        let cols = vec!["id".to_string(), "name".to_string()];
        let row = vec![Some(Bytes::from_static(b"7")), None];
        assert_eq!(
            row_item(Some("s1"), &cols, &row),
            json!({"shard": "s1", "id": "7", "name": null})
        );
        // Without a shard (routed by the listener) and with a cell past the names.
        let row = vec![
            Some(Bytes::from_static(b"1")),
            Some(Bytes::from_static(b"x")),
            Some(Bytes::from_static(b"y")),
        ];
        assert_eq!(
            row_item(None, &cols, &row),
            json!({"id": "1", "name": "x", "col2": "y"})
        );
    }

    #[test]
    fn replies_become_items() {
        let arr = Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"a")),
            Frame::Integer(2),
        ]);
        assert_eq!(
            reply_items("h:1", &arr).unwrap(),
            vec![
                json!({"shard": "h:1", "value": "a"}),
                json!({"shard": "h:1", "value": 2})
            ]
        );
        assert!(reply_items("h:1", &Frame::NullArray).unwrap().is_empty());
        assert_eq!(
            reply_items("h:1", &Frame::Integer(5)).unwrap(),
            vec![json!({"shard": "h:1", "value": 5})]
        );
        let map = Frame::Map(vec![(
            Frame::Bulk(Bytes::from_static(b"k")),
            Frame::Bulk(Bytes::from_static(b"v")),
        )]);
        assert_eq!(
            reply_items("h:1", &map).unwrap(),
            vec![json!({"shard": "h:1", "key": "k", "value": "v"})]
        );
        let err = reply_items("h:1", &Frame::Error(Bytes::from_static(b"ERR nope"))).unwrap_err();
        assert!(err.contains("ERR nope"), "{err}");
    }

    #[test]
    fn the_budget_stops_at_the_bounds() {
        let mut b = Budget { items: 0, bytes: 0 };
        for _ in 0..MAX_MAP_ITEMS {
            b.take(&json!({})).unwrap();
        }
        let e = b.take(&json!({})).unwrap_err();
        assert!(e.contains("more than 10000 items"), "{e}");
        let mut b = Budget { items: 0, bytes: 0 };
        let big = json!({"v": "x".repeat(MAX_MAP_BYTES)});
        let e = b.take(&big).unwrap_err();
        assert!(e.contains("512 KiB"), "{e}");
    }

    #[test]
    fn shard_and_index_are_replaced() {
        assert_eq!(
            subst("SELECT {index} FROM t_{shard}", "s2", 2),
            "SELECT 2 FROM t_s2"
        );
    }
}
