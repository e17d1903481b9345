//! Replies for sharded statements: merged rows as a text- or binary-protocol result set (column
//! count, definitions, EOF, rows, EOF; clients are not offered DEPRECATE_EOF), and ERR packets.

use bytes::BytesMut;
use codec::mysql::consts::{charset, column_flag, column_type};
use codec::mysql::{BinaryRow, ColumnDefinition, ErrPacket, TextRow};
use router::sql::plan::{RowSource, ShardError};

use crate::conn::Conn;

/// Queues an ERR packet answering the command.
pub fn err(client: &mut Conn, e: &ErrPacket) {
    client.queue_err(1, e);
}

fn eof(client: &mut Conn, seq: u8, status: u16) -> u8 {
    let s = status.to_le_bytes();
    client.queue(seq, &[0xFE, 0, 0, s[0], s[1]])
}

/// Queues a result set with `src`'s columns and rows. On an error while reading rows nothing is
/// queued (the caller sends an ERR instead).
pub fn rows(
    client: &mut Conn,
    mut src: Box<dyn RowSource>,
    status: u16,
    binary: bool,
) -> Result<(), ShardError> {
    let mark = client.wbuf.len();
    let r = write_rows(client, &mut *src, status, binary);
    if r.is_err() {
        client.wbuf.truncate(mark);
    }
    r
}

fn write_rows(
    client: &mut Conn,
    src: &mut dyn RowSource,
    status: u16,
    binary: bool,
) -> Result<(), ShardError> {
    let cols: Vec<ColumnDefinition> = src.columns().to_vec();
    let mut p = BytesMut::with_capacity(256);
    codec::mysql::resultset::encode_column_count(cols.len() as u64, &mut p);
    let mut seq = client.queue(1, &p);
    for c in &cols {
        p.clear();
        c.encode(&mut p);
        seq = client.queue(seq, &p);
    }
    seq = eof(client, seq, status);
    while let Some(row) = src.next_row()? {
        p.clear();
        let r = if binary {
            let row = BinaryRow { values: row };
            row.encode(&cols, &mut p)
        } else {
            TextRow::encode_values(&row, &cols, &mut p)
        };
        r.map_err(|e| ShardError::Backend {
            shard: "merge".into(),
            message: format!("encoding a merged row: {e}"),
        })?;
        seq = client.queue(seq, &p);
    }
    eof(client, seq, status);
    Ok(())
}

/// Answers `SELECT LAST_INSERT_ID()` from the session's own value.
pub fn last_insert_id(client: &mut Conn, id: u64, status: u16) {
    let col = ColumnDefinition::new(
        "LAST_INSERT_ID()",
        column_type::LONGLONG,
        charset::BINARY,
        21,
        column_flag::BINARY | column_flag::UNSIGNED | column_flag::NOT_NULL,
        0,
    );
    let src = router::sql::plan::VecRows::new(vec![col], vec![vec![codec::mysql::Value::UInt(id)]]);
    let _ = rows(client, Box::new(src), status, false); // ok: one integer always encodes
}
