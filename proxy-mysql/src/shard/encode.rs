//! Replies for sharded statements: merged rows as a text- or binary-protocol result set (column
//! count, definitions, EOF, rows, EOF; clients are not offered DEPRECATE_EOF), and ERR packets.
//! Rows are encoded by router's streaming executor's functions (`router::sql::plan::stream`), so a
//! client cannot tell a streamed result from a buffered one.

use bytes::{Bytes, BytesMut};
use codec::mysql::{ColumnDefinition, ErrPacket, Value};
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
    router::sql::plan::stream::encode_text_row(row, cols, p)
}

/// Encodes one merged row in the binary protocol into `p` (values encoded for `cols`).
pub(crate) fn binary_row(
    row: Vec<Value>,
    cols: &[ColumnDefinition],
    p: &mut BytesMut,
) -> Result<(), ShardError> {
    router::sql::plan::stream::encode_binary_row(row, cols, p)
}

/// Decodes a shard's text-protocol row into typed values, each cell by its column `cols` (as the
/// buffered path reads every row). `cells` is scratch space.
pub(crate) fn decode_row(
    payload: Bytes,
    cols: &[ColumnDefinition],
    cells: &mut Vec<Option<Bytes>>,
) -> Result<Vec<Value>, codec::mysql::MysqlError> {
    router::sql::plan::stream::decode_row(payload, cols, cells)
}
