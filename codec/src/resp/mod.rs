//! RESP2/RESP3: frames, incremental decoding, encoding.
//!
//! Three decoders, one per job of a Redis proxy:
//! - [`CommandDecoder`]: client requests (arrays of bulk strings or inline lines) into [`Command`]s
//!   that keep their exact wire bytes for forwarding and expose the arguments as cheap views.
//! - [`ReplyScanner`]: the byte length of the next complete reply, without building it, so replies
//!   can be forwarded as they are.
//! - [`FrameDecoder`]: full [`Frame`]s, for when replies must be read (merging fan-out replies).
//!
//! All three are resumable: "incomplete" is `Ok(None)` and the next call continues where the last
//! one stopped, so a frame split over many reads is checked once. Caps come from [`Limits`].

mod command;
mod decode;
mod frame;
pub mod fuzzing;
mod scan;
mod write;

pub use command::{Command, CommandDecoder, UpperName};
pub use decode::FrameDecoder;
pub use frame::Frame;
pub use scan::ReplyScanner;
pub use write::{
    RespVersion, write_array_header, write_bool, write_bulk, write_double, write_error,
    write_integer, write_map_header, write_null, write_null_array, write_simple,
};

/// Caps on what the decoders accept; the default values are Redis's own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (and blob error, verbatim string) payload, in bytes (Redis
    /// `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Most elements in one array, set or push, and most pairs in one map or attribute.
    pub max_array_len: usize,
    /// Deepest nesting of aggregates in a reply (client commands are never nested).
    pub max_depth: usize,
    /// Longest inline command line, in bytes (Redis `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
    /// Largest client command in wire bytes (Redis `client-query-buffer-limit`, 1 GiB); at most
    /// `u32::MAX`, larger values are clamped.
    pub max_command_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: i32::MAX as usize,
            max_depth: 64,
            max_inline_len: 64 * 1024,
            max_command_len: 1024 * 1024 * 1024,
        }
    }
}

/// A malformed or over-limit RESP input. The `Display` text is what Redis itself answers (as
/// `-ERR <text>`) where Redis has such an error; a connection that produced one must be closed,
/// as Redis does, because the stream position is lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// A `*<count>` line that is not a number, is negative where not allowed, or exceeds
    /// [`Limits::max_array_len`].
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$<len>` line that is not a number, is negative, or exceeds [`Limits::max_bulk_len`].
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A `*` count line with no CRLF within a sane length.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `$` length line with no CRLF within a sane length.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// A command array element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// An inline command line longer than [`Limits::max_inline_len`].
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    /// An inline command line with a quote that is not closed (or not followed by a space).
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A client command larger than [`Limits::max_command_len`].
    #[error("Protocol error: command larger than {max} bytes")]
    TooBigCommand {
        /// The cap that was exceeded.
        max: usize,
    },
    /// A frame whose first byte is not a RESP2/RESP3 type.
    #[error("Protocol error: invalid type byte 0x{0:02x}")]
    InvalidType(u8),
    /// A line or payload not terminated by CRLF where one was required.
    #[error("Protocol error: expected CRLF")]
    ExpectedCrlf,
    /// A simple string or error line longer than [`Limits::max_bulk_len`].
    #[error("Protocol error: too big simple string")]
    TooBigLine,
    /// A `:` line that is not a 64-bit signed integer.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// A `,` line that is not a double.
    #[error("Protocol error: invalid double")]
    InvalidDouble,
    /// A `#` line other than `t` or `f`.
    #[error("Protocol error: invalid boolean")]
    InvalidBoolean,
    /// A `(` line that is not an optionally signed run of digits.
    #[error("Protocol error: invalid big number")]
    InvalidBigNumber,
    /// A `_` line with content.
    #[error("Protocol error: invalid null")]
    InvalidNull,
    /// A verbatim string shorter than its `xxx:` format prefix.
    #[error("Protocol error: invalid verbatim string")]
    InvalidVerbatim,
    /// Aggregates nested deeper than [`Limits::max_depth`].
    #[error("Protocol error: nesting deeper than {max}")]
    TooDeep {
        /// The cap that was exceeded.
        max: usize,
    },
    /// RESP3 streamed strings and aggregates (`$?`, `*?`), which Redis never sends.
    #[error("Protocol error: streamed RESP3 types are not supported")]
    StreamedUnsupported,
}

/// Parses a RESP length or integer the way Redis's `string2ll` does: an optional `-`, then
/// digits with no leading zero (except `0` itself), no overflow.
#[inline]
pub(crate) fn parse_i64(line: &[u8]) -> Option<i64> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    match digits {
        [] => return None,
        [b'0'] => return if neg { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    if digits.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        let x = d.wrapping_sub(b'0');
        if x > 9 {
            return None;
        }
        v = v * 10 + u64::from(x); // ok: at most 19 digits, fits in u64
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_i64_like_redis() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"12"), Some(12));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b"1a",
            b" 1",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_match_redis() {
        assert_eq!(
            RespError::InvalidBulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            RespError::TooBigInline.to_string(),
            "Protocol error: too big inline request"
        );
        assert_eq!(
            RespError::ExpectedBulk(b'+').to_string(),
            "Protocol error: expected '$', got '+'"
        );
    }
}
