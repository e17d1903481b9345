//! What a session answers or resets by itself, without a backend, the same way on plain and
//! sharded listeners (one implementation for [`crate::session`] and [`crate::shard`]).

use bytes::BytesMut;
use codec::mysql::ColumnDefinition;
use codec::mysql::consts::{charset, column_flag, column_type};
use router::sql::{Classified, StmtKind};

use crate::conn::Conn;

/// Whether `c` (whose digest text is `digest`) is exactly `SELECT LAST_INSERT_ID()`: answered from
/// the session's own value, since the connection that ran its last INSERT may serve another
/// client by now.
pub fn is_last_insert_id_query(c: &Classified, digest: &str) -> bool {
    c.kind == StmtKind::Select
        && c.flags & router::sql::classify::flags::LAST_INSERT_ID != 0
        && digest == "SELECT LAST_INSERT_ID ()"
}

/// Queues the result a server gives `sql` (a [`is_last_insert_id_query`]): one BIGINT UNSIGNED
/// NOT NULL column named as the client wrote the expression, one row with `id`.
pub fn queue_last_insert_id(client: &mut Conn, sql: &str, id: u64, status: u16) {
    queue_select_u64(client, sql, "LAST_INSERT_ID()", id, status);
}

/// Queues the answer to a `SELECT <expression>` the proxy computes itself: one BIGINT UNSIGNED NOT
/// NULL column named as the client wrote the expression (`default_name` when it cannot be read), one
/// row with `v`.
pub fn queue_select_u64(client: &mut Conn, sql: &str, default_name: &str, v: u64, status: u16) {
    let text = sql.trim().trim_end_matches(';').trim();
    let name = text.get(6..).map_or(default_name, str::trim);
    let mut p = BytesMut::with_capacity(64);
    // One column; with cached metadata, the metadata-follows byte (they follow).
    if client.cache_meta {
        p.extend_from_slice(&[1, 1]);
    } else {
        p.extend_from_slice(&[1]);
    }
    let mut seq = client.queue(1, &p);
    let col = ColumnDefinition::new(
        name,
        column_type::LONGLONG,
        charset::BINARY,
        21,
        column_flag::BINARY | column_flag::UNSIGNED | column_flag::NOT_NULL,
        0,
    );
    p.clear();
    col.encode(&mut p);
    seq = client.queue(seq, &p);
    seq = client.queue_eof(seq, status);
    p.clear();
    codec::mysql::wire::put_lenenc_bytes(&mut p, v.to_string().as_bytes());
    seq = client.queue(seq, &p);
    client.queue_eof(seq, status);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_lid(sql: &str) -> bool {
        is_last_insert_id_query(&router::sql::classify(sql), &router::sql::digest(sql).text)
    }

    #[test]
    fn only_the_plain_query_is_answered_locally() {
        assert!(is_lid("SELECT LAST_INSERT_ID()"));
        assert!(is_lid("select last_insert_id() ;"));
        // Anything more runs on a server.
        assert!(!is_lid("SELECT LAST_INSERT_ID(), 1"));
        assert!(!is_lid("SELECT LAST_INSERT_ID(5)"));
        assert!(!is_lid("SELECT 1"));
        assert!(!is_lid("INSERT INTO t VALUES (LAST_INSERT_ID())"));
    }
}
