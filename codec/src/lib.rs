//! Furrow wire formats: RESP2/RESP3 frames and MySQL packets.
//!
//! Pure code: bytes in, frames out, and back. No sockets, no runtime. Decoders are incremental
//! ("need more bytes" is a normal result, never an error), slice payloads out of the read buffer
//! (`bytes::Bytes`) instead of copying them, and enforce hard caps on sizes, counts and depth.

pub mod mysql;
pub mod otlp;
pub mod resp;

/// Every error this crate produces, one variant per protocol.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A RESP frame was malformed or exceeded a cap.
    #[error(transparent)]
    Resp(#[from] resp::RespError),
    /// A MySQL packet was malformed or exceeded a cap.
    #[error(transparent)]
    Mysql(#[from] mysql::MysqlError),
}
