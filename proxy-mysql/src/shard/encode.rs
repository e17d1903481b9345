//! Replies for sharded statements: merged rows as a text- or binary-protocol result set (column
//! count, definitions, EOF, rows, EOF; clients are not offered DEPRECATE_EOF), and ERR packets.
//! The streamed paths encode with the same functions (`columns`, `text_row`, `binary_row`,
//! `decode_row`), so a client cannot tell a streamed result from a buffered one.

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::{charset, column_flag, column_type};
use codec::mysql::{BinaryRow, ColumnDefinition, ErrPacket, TextRow, Value};
use router::sql::plan::{RowSource, ShardError};

use crate::conn::Conn;

/// Queues an ERR packet answering the command.
pub fn err(client: &mut Conn, e: &ErrPacket) {
    client.queue_err(1, e);
}

fn eof(client: &mut Conn, seq: u8, status: u16) -> u8 {
    client.queue_eof(seq, status)
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
    let mut seq = columns(client, 1, &cols, status);
    let mut p = BytesMut::with_capacity(256);
    while let Some(row) = src.next_row()? {
        p.clear();
        if binary {
            binary_row(row, &cols, &mut p)?;
        } else {
            text_row(&row, &cols, &mut p)?;
        }
        seq = client.queue(seq, &p);
    }
    eof(client, seq, status);
    Ok(())
}

/// Queues the head of a result set from sequence id `seq`: the column count, `cols` and the EOF.
/// Returns the next sequence id. Shared by the buffered path and the streamed GROUP BY, so both
/// send the same column definitions.
pub(crate) fn columns(client: &mut Conn, seq: u8, cols: &[ColumnDefinition], status: u16) -> u8 {
    let mut p = BytesMut::with_capacity(256);
    codec::mysql::resultset::encode_column_count(cols.len() as u64, &mut p);
    let mut seq = client.queue(seq, &p);
    for c in cols {
        p.clear();
        c.encode(&mut p);
        seq = client.queue(seq, &p);
    }
    eof(client, seq, status)
}

/// Encodes one merged row in the text protocol into `p` (values re-rendered for `cols`).
pub(crate) fn text_row(
    row: &[Value],
    cols: &[ColumnDefinition],
    p: &mut BytesMut,
) -> Result<(), ShardError> {
    TextRow::encode_values(row, cols, p).map_err(encoding)
}

/// Encodes one merged row in the binary protocol into `p` (values encoded for `cols`).
pub(crate) fn binary_row(
    row: Vec<Value>,
    cols: &[ColumnDefinition],
    p: &mut BytesMut,
) -> Result<(), ShardError> {
    BinaryRow { values: row }.encode(cols, p).map_err(encoding)
}

/// Decodes a shard's text-protocol row into typed values, each cell by its column `cols` (as the
/// buffered path reads every row). `cells` is scratch space.
pub(crate) fn decode_row(
    payload: Bytes,
    cols: &[ColumnDefinition],
    cells: &mut Vec<Option<Bytes>>,
) -> Result<Vec<Value>, codec::mysql::MysqlError> {
    TextRow::decode_into(payload, cols.len(), cells)?;
    cells
        .iter()
        .zip(cols)
        .map(|(cell, col)| codec::mysql::value::decode_text(cell.as_ref(), col))
        .collect()
}

fn encoding(e: codec::mysql::MysqlError) -> ShardError {
    ShardError::Backend {
        shard: "merge".into(),
        message: format!("encoding a merged row: {e}"),
    }
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
