//! MySQL client/server protocol: packets, handshake, auth, commands, result sets, values.
//!
//! Layout: [`packet`] frames payloads (sequence ids, 16 MiB splitting, size cap); [`wire`] holds the
//! bounds-checked reader and the length-encoded helpers every other module uses; [`consts`] the
//! protocol constants; [`handshake`] and [`auth`] the connection phase's packets and scrambles,
//! [`login`] the client side of it as one sans-IO state machine; [`command`] the `COM_*`
//! requests; [`response`] OK/ERR/EOF; [`reply`] finds where a reply ends; [`resultset`] column
//! definitions, prepare-OK and rows;
//! [`value`] typed values and the ORDER BY comparison; [`collation`] how strings compare and group.

pub mod auth;
pub mod collation;
pub mod command;
pub mod consts;
pub mod fuzzing;
mod general_ci_table;
pub mod handshake;
mod latin1_table;
pub mod login;
pub mod packet;
pub mod reply;
pub mod response;
pub mod resultset;
mod unicode_ci_table;
pub mod value;
pub mod wire;

pub use collation::{Collation, UnknownCollation, Utf8Kind};
pub use command::{ChangeUser, Command, ExecuteParams, StmtExecute};
pub use handshake::{
    AuthMoreData, AuthSwitchRequest, ClientHandshake, HandshakeResponse41, HandshakeV10, SslRequest,
};
pub use login::{ClientLogin, LoginConfig, LoginError, LoginStep, Outgoing};
pub use packet::{MAX_FRAGMENT, Packet, PacketDecoder, encode_packet, payload_len};
pub use reply::{Fed, OkSummary, ReplyKind, ReplyTracker, RowRun, Seen};
pub use response::{EofPacket, ErrPacket, OkPacket, OkRef, end_of_rows, eof_payload};
pub use resultset::{BinaryRow, ColumnDefinition, StmtPrepareOk, TextRow};
pub use value::{Date, DateTime, Time, Value, compare_values};

/// A malformed or over-limit MySQL packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MysqlError {
    /// The input is not a valid packet for the expected state.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A read ran past the end of the payload while decoding the named item.
    #[error("truncated packet while reading {0}")]
    Truncated(&'static str),
    /// A (joined) payload would exceed the configured maximum (`max_allowed_packet`).
    #[error("packet of {size} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge {
        /// Size announced so far (may be a lower bound for split packets).
        size: usize,
        /// The configured cap.
        max: usize,
    },
    /// A continuation fragment of a split packet carried an unexpected sequence id.
    #[error("packet sequence id {got}, expected {expected}")]
    SequenceMismatch {
        /// The sequence id the decoder expected.
        expected: u8,
        /// The sequence id on the wire.
        got: u8,
    },
    /// The first byte of a payload is not a known header for the expected packet.
    #[error("unexpected packet header 0x{header:02x} for {what}")]
    UnexpectedHeader {
        /// The header byte seen.
        header: u8,
        /// What packet was expected.
        what: &'static str,
    },
    /// Bytes were left over after a complete packet was decoded.
    #[error("{0} trailing bytes after {1}")]
    TrailingBytes(usize, &'static str),
    /// A value does not fit the column or parameter type it was read or written as.
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
    /// A prepared-statement parameter count or type list does not match the statement.
    #[error("prepared statement parameters: {0}")]
    Params(&'static str),
}

impl MysqlError {
    /// Whether the error comes from the peer sending something invalid (as opposed to a cap).
    pub fn is_protocol_violation(&self) -> bool {
        !matches!(self, MysqlError::PacketTooLarge { .. })
    }
}

impl MysqlError {
    /// The ERR packet a proxy sends a client whose input caused this error, with MySQL's own
    /// codes: 1153/08S01 for an over-size packet, 1156/08S01 for out-of-order packets, and
    /// 1835/HY000 (ER_MALFORMED_PACKET) otherwise.
    pub fn to_err_packet(&self) -> ErrPacket {
        match self {
            MysqlError::PacketTooLarge { .. } => ErrPacket::new(
                1153,
                "08S01",
                "Got a packet bigger than 'max_allowed_packet' bytes",
            ),
            MysqlError::SequenceMismatch { .. } => {
                ErrPacket::new(1156, "08S01", "Got packets out of order")
            }
            other => ErrPacket::new(
                1835,
                "HY000",
                format!("Malformed communication packet: {other}"),
            ),
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, MysqlError>;
