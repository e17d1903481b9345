//! Where does a reply end? A small state machine fed with the server's payloads after a command,
//! so a proxy can forward a reply packet by packet and know when it is complete (and what the
//! final status flags were) without decoding rows.

use super::consts::capability::CLIENT_DEPRECATE_EOF;
use super::consts::{com, status};
use super::response::{EOF_HEADER, ERR_HEADER, OK_HEADER, is_end_of_rows};
use super::wire::Reader;
use super::{MysqlError, OkPacket, Result};

/// Whether the server answers command `code` at all (COM_QUIT, COM_STMT_CLOSE and
/// COM_STMT_SEND_LONG_DATA get no reply).
pub fn expects_reply(code: u8) -> bool {
    !matches!(code, com::QUIT | com::STMT_CLOSE | com::STMT_SEND_LONG_DATA)
}

/// What a fed packet meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The reply continues.
    More,
    /// The reply is complete.
    Done(ReplyEnd),
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyEnd {
    /// OK, or a result set (or a series of them) ended normally, with these status flags.
    Ok {
        /// Server status flags of the last OK/EOF (0 when the reply carries none).
        status: u16,
    },
    /// The server sent an ERR packet.
    Err,
    /// The server asks the client to send a local file (`LOAD DATA LOCAL INFILE`, header 0xFB):
    /// the client must answer with file packets and an empty packet; a generic reply follows.
    LocalInfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting the first packet of a (next) reply to a generic command.
    Start,
    /// Expecting COM_STMT_PREPARE_OK or ERR.
    PrepareStart,
    /// Reading `left` definitions; then an EOF unless deprecated; then `then`.
    Defs { left: u32, then: After },
    /// Expecting the EOF that closes a definition block; then `then`.
    DefsEof { then: After },
    /// Reading rows until the end marker.
    Rows,
    /// A single packet of any shape (COM_STATISTICS).
    AnyOne,
    /// Column definitions until EOF (COM_FIELD_LIST).
    FieldList,
    /// The reply is complete.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Parameter definitions of a prepare; then `columns` column definitions.
    PrepareColumns { columns: u32 },
    /// End of a prepare reply.
    Done,
    /// Result-set metadata; rows follow (unless a cursor was opened).
    Rows,
}

/// Tracks one reply to one command.
#[derive(Debug, Clone)]
pub struct ReplyTracker {
    state: State,
    deprecate_eof: bool,
    capabilities: u32,
}

impl ReplyTracker {
    /// A tracker for the reply to command `code` on a connection with `capabilities`. Commands
    /// without a reply ([`expects_reply`] is false) start finished.
    pub fn new(code: u8, capabilities: u32) -> Self {
        let state = match code {
            _ if !expects_reply(code) => State::Finished,
            com::STMT_PREPARE => State::PrepareStart,
            com::STATISTICS => State::AnyOne,
            com::FIELD_LIST => State::FieldList,
            com::STMT_FETCH => State::Rows,
            _ => State::Start,
        };
        ReplyTracker {
            state,
            deprecate_eof: capabilities & CLIENT_DEPRECATE_EOF != 0,
            capabilities,
        }
    }

    /// Whether the reply is complete.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Feeds the next reply payload.
    pub fn feed(&mut self, payload: &[u8]) -> Result<Step> {
        let first = *payload
            .first()
            .ok_or(MysqlError::Truncated("reply packet"))?;
        let step = match self.state {
            State::Finished => {
                return Err(MysqlError::Malformed(
                    "packet after the end of a reply".into(),
                ));
            }
            State::AnyOne => self.done(ReplyEnd::Ok { status: 0 }),
            State::Start => match first {
                ERR_HEADER => self.done(ReplyEnd::Err),
                OK_HEADER => {
                    let status = self.ok_status(payload)?;
                    self.after_status(status)
                }
                0xFB => self.done(ReplyEnd::LocalInfile),
                _ => {
                    let mut r = Reader::new(bytes::Bytes::copy_from_slice(
                        &payload[..payload.len().min(9)],
                    ));
                    let n = r.lenenc_int("column count")?;
                    let n =
                        u32::try_from(n).map_err(|_| MysqlError::InvalidValue("column count"))?;
                    if n == 0 {
                        return Err(MysqlError::InvalidValue("column count"));
                    }
                    self.start_block(n, After::Rows)
                }
            },
            State::PrepareStart => match first {
                ERR_HEADER => self.done(ReplyEnd::Err),
                OK_HEADER if payload.len() >= 9 => {
                    let columns = u32::from(u16::from_le_bytes([payload[5], payload[6]]));
                    let params = u32::from(u16::from_le_bytes([payload[7], payload[8]]));
                    self.start_block(params, After::PrepareColumns { columns })
                }
                _ => {
                    return Err(MysqlError::UnexpectedHeader {
                        header: first,
                        what: "COM_STMT_PREPARE reply",
                    });
                }
            },
            State::Defs { left, then } => {
                if first == ERR_HEADER {
                    self.done(ReplyEnd::Err)
                } else if left > 1 {
                    self.state = State::Defs {
                        left: left - 1,
                        then,
                    };
                    Step::More
                } else if self.deprecate_eof {
                    self.proceed(then, 0)
                } else {
                    self.state = State::DefsEof { then };
                    Step::More
                }
            }
            State::DefsEof { then } => {
                if first != EOF_HEADER {
                    return Err(MysqlError::UnexpectedHeader {
                        header: first,
                        what: "EOF after definitions",
                    });
                }
                self.proceed(then, eof_status(payload))
            }
            State::Rows => {
                if first == ERR_HEADER {
                    self.done(ReplyEnd::Err)
                } else if is_end_of_rows(payload, self.deprecate_eof) {
                    let status = if self.deprecate_eof {
                        self.ok_status(payload)?
                    } else {
                        eof_status(payload)
                    };
                    self.after_status(status)
                } else {
                    Step::More
                }
            }
            State::FieldList => match first {
                ERR_HEADER => self.done(ReplyEnd::Err),
                _ if is_end_of_rows(payload, self.deprecate_eof) => {
                    let status = if self.deprecate_eof {
                        self.ok_status(payload)?
                    } else {
                        eof_status(payload)
                    };
                    self.done(ReplyEnd::Ok { status })
                }
                _ => Step::More,
            },
        };
        Ok(step)
    }

    /// Starts a block of `count` definitions followed by `then`.
    fn start_block(&mut self, count: u32, then: After) -> Step {
        if count == 0 {
            return self.proceed(then, 0);
        }
        self.state = State::Defs { left: count, then };
        Step::More
    }

    /// Continues after a definition block; `status` comes from its EOF (0 without one).
    fn proceed(&mut self, then: After, status: u16) -> Step {
        match then {
            // A cursor was opened: rows come later through COM_STMT_FETCH.
            After::Rows if status & status::SERVER_STATUS_CURSOR_EXISTS != 0 => {
                self.done(ReplyEnd::Ok { status })
            }
            After::Rows => {
                self.state = State::Rows;
                Step::More
            }
            After::PrepareColumns { columns } => self.start_block(columns, After::Done),
            After::Done => self.done(ReplyEnd::Ok { status }),
        }
    }

    fn done(&mut self, end: ReplyEnd) -> Step {
        self.state = State::Finished;
        Step::Done(end)
    }

    fn after_status(&mut self, status: u16) -> Step {
        if status & status::SERVER_MORE_RESULTS_EXISTS != 0 {
            self.state = State::Start;
            Step::More
        } else {
            self.done(ReplyEnd::Ok { status })
        }
    }

    fn ok_status(&self, payload: &[u8]) -> Result<u16> {
        Ok(OkPacket::decode(bytes::Bytes::copy_from_slice(payload), self.capabilities)?.status)
    }
}

fn eof_status(payload: &[u8]) -> u16 {
    match payload {
        [_, _, _, a, b, ..] => u16::from_le_bytes([*a, *b]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::consts::capability::DEFAULT_CLIENT;

    const EOF_MORE: &[u8] = &[0xFE, 0, 0, 0x0A, 0];
    const EOF_END: &[u8] = &[0xFE, 0, 0, 0x02, 0];

    fn run(code: u8, caps: u32, packets: &[&[u8]]) -> Vec<Step> {
        let mut t = ReplyTracker::new(code, caps);
        packets.iter().map(|p| t.feed(p).unwrap()).collect()
    }

    #[test]
    fn result_sets_with_more_results() {
        let steps = run(
            com::QUERY,
            DEFAULT_CLIENT,
            &[
                &[1],
                b"coldef",
                EOF_END,
                b"\x011",
                EOF_MORE,
                &[0, 0, 0, 2, 0, 0, 0],
            ],
        );
        assert_eq!(steps[..5], [Step::More; 5]);
        assert_eq!(steps[5], Step::Done(ReplyEnd::Ok { status: 2 }));
    }

    #[test]
    fn err_local_infile_and_no_reply() {
        assert_eq!(
            run(com::QUERY, DEFAULT_CLIENT, &[b"\xff\x01\x02"]),
            [Step::Done(ReplyEnd::Err)]
        );
        assert_eq!(
            run(com::QUERY, DEFAULT_CLIENT, &[b"\xfbfile.csv"]),
            [Step::Done(ReplyEnd::LocalInfile)]
        );
        let steps = run(
            com::QUERY,
            DEFAULT_CLIENT,
            &[&[1], b"coldef", EOF_END, b"\x011", b"\xff\x01\x02"],
        );
        assert_eq!(steps[4], Step::Done(ReplyEnd::Err));
        assert!(ReplyTracker::new(com::STMT_CLOSE, DEFAULT_CLIENT).is_finished());
        let mut t = ReplyTracker::new(com::QUIT, DEFAULT_CLIENT);
        assert!(t.feed(&[0]).is_err());
    }

    #[test]
    fn prepare_and_cursor() {
        // 0 params, 0 columns: the PREPARE_OK alone.
        let ok = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            run(com::STMT_PREPARE, DEFAULT_CLIENT, &[&ok]),
            [Step::Done(ReplyEnd::Ok { status: 0 })]
        );
        // 1 column, 2 params, with EOFs; and without them under CLIENT_DEPRECATE_EOF.
        let ok = [0, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        let steps = run(
            com::STMT_PREPARE,
            DEFAULT_CLIENT,
            &[&ok, b"p", b"p", EOF_END, b"c", EOF_END],
        );
        assert_eq!(steps[5], Step::Done(ReplyEnd::Ok { status: 2 }));
        let steps = run(
            com::STMT_PREPARE,
            DEFAULT_CLIENT | CLIENT_DEPRECATE_EOF,
            &[&ok, b"p", b"p", b"c"],
        );
        assert_eq!(steps[3], Step::Done(ReplyEnd::Ok { status: 0 }));
        // Execute that opens a cursor: metadata only.
        let cursor_eof = [0xFE, 0, 0, 0x42, 0];
        let steps = run(
            com::STMT_EXECUTE,
            DEFAULT_CLIENT,
            &[&[1], b"c", &cursor_eof],
        );
        assert_eq!(steps[2], Step::Done(ReplyEnd::Ok { status: 0x42 }));
    }
}
