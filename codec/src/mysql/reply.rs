//! Where does a reply end? A small state machine fed with the server's payloads after a command,
//! so a proxy can forward a reply packet by packet and know when it is complete (and what the
//! final status flags were) without decoding rows.

use super::consts::capability::CLIENT_DEPRECATE_EOF;
use super::consts::{com, status};
use super::response::OkRef;
use super::response::{EOF_HEADER, ERR_HEADER, OK_HEADER, is_end_of_rows};
use super::wire::lenenc_int_at;
use super::{MysqlError, Result};

/// Whether the server answers command `code` at all (COM_QUIT, COM_STMT_CLOSE and
/// COM_STMT_SEND_LONG_DATA get no reply).
pub fn expects_reply(code: u8) -> bool {
    !matches!(code, com::QUIT | com::STMT_CLOSE | com::STMT_SEND_LONG_DATA)
}

/// What kind of reply a command gets: the shape the tracker starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// OK, ERR, LOCAL INFILE request, or result sets (several with SERVER_MORE_RESULTS_EXISTS):
    /// COM_QUERY, COM_STMT_EXECUTE and most others.
    ResultSet,
    /// COM_STMT_PREPARE: PREPARE_OK, parameter and column definitions; or ERR.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to EOF; or ERR.
    FieldList,
    /// COM_STMT_FETCH: rows up to EOF; or ERR.
    Fetch,
    /// Exactly one packet of any shape (COM_STATISTICS' text, or an OK/ERR whose status is not
    /// followed: COM_PING, COM_INIT_DB, COM_RESET_CONNECTION).
    Single,
}

impl ReplyKind {
    /// The reply kind of command `code` (`None` for commands without a reply).
    pub fn of(code: u8) -> Option<ReplyKind> {
        Some(match code {
            _ if !expects_reply(code) => return None,
            com::STMT_PREPARE => ReplyKind::Prepare,
            com::STATISTICS => ReplyKind::Single,
            com::FIELD_LIST => ReplyKind::FieldList,
            com::STMT_FETCH => ReplyKind::Fetch,
            _ => ReplyKind::ResultSet,
        })
    }
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

/// The numbers of an OK packet (see [`OkRef`] for its strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkSummary {
    /// Affected (or found) rows.
    pub affected_rows: u64,
    /// Last insert id.
    pub last_insert_id: u64,
    /// Server status flags.
    pub status: u16,
    /// Warning count.
    pub warnings: u16,
}

/// What one reply packet was, as far as the tracker read it (rows and definitions are not
/// decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// An OK packet; also the 0xFE OK that ends rows under CLIENT_DEPRECATE_EOF.
    Ok(OkSummary),
    /// An ERR packet with its error code (0 when the packet is too short to carry one).
    Err {
        /// The error code.
        code: u16,
    },
    /// A classic EOF after definitions or rows.
    Eof {
        /// Its status flags (0 for a pre-4.1 EOF without them).
        status: u16,
    },
    /// The column count that opens a result set; its column definitions follow.
    ColumnCount(u32),
    /// The column count of a result set whose definitions the server left out (MariaDB's
    /// metadata-follows byte 0, under MARIADB_CLIENT_CACHE_METADATA: a prepared statement's
    /// execution whose columns are those the connection was last sent). The EOF that closes
    /// the (empty) definition block still follows unless EOFs are deprecated.
    ColumnCountCached(u32),
    /// A column or parameter definition.
    Definition,
    /// A text or binary row.
    Row,
    /// COM_STMT_PREPARE_OK.
    PrepareOk {
        /// The server's statement id.
        statement_id: u32,
        /// Result columns.
        columns: u16,
        /// Parameters.
        params: u16,
    },
    /// A LOCAL INFILE request (header 0xFB).
    LocalInfile,
    /// Another single packet (COM_STATISTICS' text).
    Other,
}

/// A fed packet: what it was and whether the reply goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// What the packet was.
    pub seen: Seen,
    /// Whether the reply is complete.
    pub step: Step,
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
    /// A single packet of any shape.
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

/// A run of complete row packets ([`ReplyTracker::row_run`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowRun {
    /// Bytes of the run, headers included (0: no complete row packet at the front).
    pub len: usize,
    /// Row packets in it.
    pub rows: u64,
    /// Sequence id of its last packet (meaningless when `rows` is 0).
    pub last_seq: u8,
}

/// Tracks one reply to one command: incremental (one payload at a time, any split across reads
/// is the caller's framing) and zero-copy (payloads are borrowed, nothing is allocated). The one
/// place that knows where a reply ends: the proxy's forwarding, the shard executor's buffered
/// reads and the codec's own tests all feed it.
#[derive(Debug, Clone)]
pub struct ReplyTracker {
    state: State,
    deprecate_eof: bool,
    cache_metadata: bool,
    capabilities: u32,
}

impl ReplyTracker {
    /// A tracker for the reply to command `code` on a connection with `capabilities`. Commands
    /// without a reply ([`expects_reply`] is false) start finished.
    pub fn new(code: u8, capabilities: u32) -> Self {
        match ReplyKind::of(code) {
            Some(kind) => ReplyTracker::for_kind(kind, capabilities),
            None => ReplyTracker {
                state: State::Finished,
                deprecate_eof: capabilities & CLIENT_DEPRECATE_EOF != 0,
                cache_metadata: false,
                capabilities,
            },
        }
    }

    /// A tracker for a reply of `kind` on a connection with `capabilities`.
    #[inline]
    pub fn for_kind(kind: ReplyKind, capabilities: u32) -> Self {
        let state = match kind {
            ReplyKind::ResultSet => State::Start,
            ReplyKind::Prepare => State::PrepareStart,
            ReplyKind::FieldList => State::FieldList,
            ReplyKind::Fetch => State::Rows,
            ReplyKind::Single => State::AnyOne,
        };
        ReplyTracker {
            state,
            deprecate_eof: capabilities & CLIENT_DEPRECATE_EOF != 0,
            cache_metadata: false,
            capabilities,
        }
    }

    /// For a connection that negotiated MariaDB's MARIADB_CLIENT_CACHE_METADATA: a column count
    /// carries a metadata-follows byte, and when it is 0 no definitions follow
    /// ([`Seen::ColumnCountCached`]).
    #[inline]
    pub fn with_cache_metadata(mut self, on: bool) -> Self {
        self.cache_metadata = on;
        self
    }

    /// Whether the reply is complete.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Feeds the next reply payload; says whether the reply goes on.
    #[inline]
    pub fn feed(&mut self, payload: &[u8]) -> Result<Step> {
        self.advance(payload).map(|f| f.step)
    }

    /// Feeds the next reply payload; says what it was and whether the reply goes on.
    /// Always inlined: it runs for every packet the proxy forwards, and inlined into the caller's
    /// loop its result is consumed in registers. Measured with callgrind (bench `sharding
    /// --callgrind`): as a call it cost ~350 instructions per point select (+3.5 %); a plain
    /// `#[inline]` was not taken inside `BackendConn::forward`'s large async body.
    #[inline(always)]
    pub fn advance(&mut self, payload: &[u8]) -> Result<Fed> {
        let first = *payload
            .first()
            .ok_or(MysqlError::Truncated("reply packet"))?;
        let fed = match self.state {
            State::Finished => {
                return Err(MysqlError::Malformed(
                    "packet after the end of a reply".into(),
                ));
            }
            State::AnyOne => match first {
                ERR_HEADER => self.err(payload),
                OK_HEADER => {
                    let ok = self.ok(payload)?;
                    let step = self.done(ReplyEnd::Ok { status: ok.status });
                    fed(Seen::Ok(ok), step)
                }
                _ => fed(Seen::Other, self.done(ReplyEnd::Ok { status: 0 })),
            },
            State::Start => match first {
                ERR_HEADER => self.err(payload),
                OK_HEADER => {
                    let ok = self.ok(payload)?;
                    fed(Seen::Ok(ok), self.after_status(ok.status))
                }
                0xFB => fed(Seen::LocalInfile, self.done(ReplyEnd::LocalInfile)),
                _ => {
                    let mut pos = 0;
                    // A byte may follow the count (MariaDB's metadata-follows flag with
                    // MARIADB_CLIENT_CACHE_METADATA): read only when the connection negotiated it.
                    let n = lenenc_int_at(payload, &mut pos, "column count")?;
                    let n = u32::try_from(n)
                        .ok()
                        .filter(|&n| n != 0)
                        .ok_or(MysqlError::InvalidValue("column count"))?;
                    if self.cache_metadata && payload.get(pos) == Some(&0) {
                        // No definitions: straight to the EOF that closes the block.
                        let step = if self.deprecate_eof {
                            self.proceed(After::Rows, 0)
                        } else {
                            self.state = State::DefsEof { then: After::Rows };
                            Step::More
                        };
                        return Ok(fed(Seen::ColumnCountCached(n), step));
                    }
                    fed(Seen::ColumnCount(n), self.start_block(n, After::Rows))
                }
            },
            State::PrepareStart => match first {
                ERR_HEADER => self.err(payload),
                OK_HEADER if payload.len() >= 9 => {
                    let statement_id =
                        u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
                    let columns = u16::from_le_bytes([payload[5], payload[6]]);
                    let params = u16::from_le_bytes([payload[7], payload[8]]);
                    let step = self.start_block(
                        u32::from(params),
                        After::PrepareColumns {
                            columns: u32::from(columns),
                        },
                    );
                    let seen = Seen::PrepareOk {
                        statement_id,
                        columns,
                        params,
                    };
                    fed(seen, step)
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
                    self.err(payload)
                } else if left > 1 {
                    self.state = State::Defs {
                        left: left - 1,
                        then,
                    };
                    fed(Seen::Definition, Step::More)
                } else if self.deprecate_eof {
                    fed(Seen::Definition, self.proceed(then, 0))
                } else {
                    self.state = State::DefsEof { then };
                    fed(Seen::Definition, Step::More)
                }
            }
            State::DefsEof { then } => {
                if first != EOF_HEADER || payload.len() >= 9 {
                    return Err(MysqlError::UnexpectedHeader {
                        header: first,
                        what: "EOF after definitions",
                    });
                }
                let status = eof_status(payload);
                fed(Seen::Eof { status }, self.proceed(then, status))
            }
            State::Rows => {
                if first == ERR_HEADER {
                    self.err(payload)
                } else if is_end_of_rows(payload, self.deprecate_eof) {
                    let (seen, status) = self.end_marker(payload)?;
                    fed(seen, self.after_status(status))
                } else {
                    fed(Seen::Row, Step::More)
                }
            }
            State::FieldList => match first {
                ERR_HEADER => self.err(payload),
                _ if is_end_of_rows(payload, self.deprecate_eof) => {
                    let (seen, status) = self.end_marker(payload)?;
                    fed(seen, self.done(ReplyEnd::Ok { status }))
                }
                _ => fed(Seen::Definition, Step::More),
            },
        };
        Ok(fed)
    }

    /// In the rows of a result set, the run of complete row packets at the front of `wire`
    /// (packets with their 4-byte headers, as read from the connection), up to `max_len` bytes:
    /// what feeding them one by one to [`ReplyTracker::advance`] would call [`Seen::Row`], each
    /// leaving the reply in its rows. The run stops before the first packet that is anything
    /// else (the end of the rows, an ERR, an empty payload), before an incomplete packet, before
    /// a packet of 16 MiB or more (whose continuation the caller frames) and where `max_len`
    /// would be exceeded; those are for `advance`. A relay copies the run at once instead of
    /// packet by packet. Outside the rows the run is empty. The tracker's state does not change.
    #[inline]
    pub fn row_run(&self, wire: &[u8], max_len: usize) -> RowRun {
        let mut run = RowRun::default();
        if self.state != State::Rows {
            return run;
        }
        let limit = max_len.min(wire.len());
        while run.len + 4 <= limit {
            let h = &wire[run.len..run.len + 4];
            let n = super::packet::payload_len(h);
            let end = run.len + 4 + n;
            if n == 0 || n >= 0xFF_FFFF || end > limit {
                break;
            }
            let payload = &wire[run.len + 4..end];
            if payload[0] == ERR_HEADER || is_end_of_rows(payload, self.deprecate_eof) {
                break;
            }
            run.last_seq = h[3];
            run.rows += 1;
            run.len = end;
        }
        run
    }

    /// An EOF, or the OK replacing it under CLIENT_DEPRECATE_EOF, and its status flags.
    #[inline]
    fn end_marker(&self, payload: &[u8]) -> Result<(Seen, u16)> {
        if self.deprecate_eof {
            let ok = self.ok(payload)?;
            Ok((Seen::Ok(ok), ok.status))
        } else {
            let status = eof_status(payload);
            Ok((Seen::Eof { status }, status))
        }
    }

    #[inline]
    fn err(&mut self, payload: &[u8]) -> Fed {
        let code = match payload {
            [_, a, b, ..] => u16::from_le_bytes([*a, *b]),
            _ => 0,
        };
        fed(Seen::Err { code }, self.done(ReplyEnd::Err))
    }

    /// Starts a block of `count` definitions followed by `then`.
    #[inline]
    fn start_block(&mut self, count: u32, then: After) -> Step {
        if count == 0 {
            return self.proceed(then, 0);
        }
        self.state = State::Defs { left: count, then };
        Step::More
    }

    /// Continues after a definition block; `status` comes from its EOF (0 without one).
    #[inline]
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

    #[inline]
    fn done(&mut self, end: ReplyEnd) -> Step {
        self.state = State::Finished;
        Step::Done(end)
    }

    #[inline]
    fn after_status(&mut self, status: u16) -> Step {
        if status & status::SERVER_MORE_RESULTS_EXISTS != 0 {
            self.state = State::Start;
            Step::More
        } else {
            self.done(ReplyEnd::Ok { status })
        }
    }

    #[inline]
    fn ok(&self, payload: &[u8]) -> Result<OkSummary> {
        let ok = OkRef::parse(payload, self.capabilities)?;
        Ok(OkSummary {
            affected_rows: ok.affected_rows,
            last_insert_id: ok.last_insert_id,
            status: ok.status,
            warnings: ok.warnings,
        })
    }
}

#[inline]
fn fed(seen: Seen, step: Step) -> Fed {
    Fed { seen, step }
}

#[inline]
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
    use crate::mysql::encode_packet;
    use bytes::BytesMut;

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

    #[test]
    fn cached_metadata_skips_the_definitions() {
        // As MariaDB 10.11 answers a COM_STMT_EXECUTE under MARIADB_CLIENT_CACHE_METADATA
        // (captured): count 1 with flag 0, the EOF, one binary row, the EOF.
        let row = [0u8, 0, 3, b'a', b'b', b'c'];
        let mut t =
            ReplyTracker::for_kind(ReplyKind::ResultSet, DEFAULT_CLIENT).with_cache_metadata(true);
        let seen: Vec<Fed> = [&[1u8, 0][..], EOF_END, &row, EOF_END]
            .iter()
            .map(|p| t.advance(p).unwrap())
            .collect();
        assert_eq!(seen[0].seen, Seen::ColumnCountCached(1));
        assert_eq!(seen[1].seen, Seen::Eof { status: 2 });
        assert_eq!(seen[2].seen, Seen::Row);
        assert_eq!(seen[3].step, Step::Done(ReplyEnd::Ok { status: 2 }));
        // Flag 1: the definitions follow as usual.
        let mut t =
            ReplyTracker::for_kind(ReplyKind::ResultSet, DEFAULT_CLIENT).with_cache_metadata(true);
        let seen: Vec<Fed> = [&[1u8, 1][..], b"coldef", EOF_END, &row, EOF_END]
            .iter()
            .map(|p| t.advance(p).unwrap())
            .collect();
        assert_eq!(seen[0].seen, Seen::ColumnCount(1));
        assert_eq!(seen[1].seen, Seen::Definition);
        assert_eq!(seen[4].step, Step::Done(ReplyEnd::Ok { status: 2 }));
        // Without the capability the byte is not read: a 0 there is not a flag.
        let mut t = ReplyTracker::for_kind(ReplyKind::ResultSet, DEFAULT_CLIENT);
        assert_eq!(t.advance(&[1, 0]).unwrap().seen, Seen::ColumnCount(1));
        assert_eq!(t.advance(b"coldef").unwrap().seen, Seen::Definition);
        // Under CLIENT_DEPRECATE_EOF: rows right after the count.
        let mut t =
            ReplyTracker::for_kind(ReplyKind::ResultSet, DEFAULT_CLIENT | CLIENT_DEPRECATE_EOF)
                .with_cache_metadata(true);
        assert_eq!(t.advance(&[2, 0]).unwrap().seen, Seen::ColumnCountCached(2));
        assert_eq!(t.advance(&row).unwrap().seen, Seen::Row);
    }

    fn advance_all(kind: ReplyKind, caps: u32, packets: &[&[u8]]) -> Vec<Fed> {
        let mut t = ReplyTracker::for_kind(kind, caps);
        packets.iter().map(|p| t.advance(p).unwrap()).collect()
    }

    #[test]
    fn seen_reports_ok_numbers_rows_and_errors() {
        // INSERT's OK: 2 rows, insert id 300, autocommit, 1 warning; then nothing more.
        let ok = [0, 2, 0xFC, 0x2C, 0x01, 0x02, 0, 1, 0];
        let f = advance_all(ReplyKind::ResultSet, DEFAULT_CLIENT, &[&ok]);
        let want = OkSummary {
            affected_rows: 2,
            last_insert_id: 300,
            status: 2,
            warnings: 1,
        };
        assert_eq!(f[0].seen, Seen::Ok(want));
        assert_eq!(f[0].step, Step::Done(ReplyEnd::Ok { status: 2 }));
        // A point select: count, one definition, EOF, one row, EOF.
        let f = advance_all(
            ReplyKind::ResultSet,
            DEFAULT_CLIENT,
            &[&[1], b"\x03def", EOF_END, b"\x011", EOF_END],
        );
        let seen: Vec<Seen> = f.iter().map(|f| f.seen).collect();
        assert_eq!(
            seen,
            [
                Seen::ColumnCount(1),
                Seen::Definition,
                Seen::Eof { status: 2 },
                Seen::Row,
                Seen::Eof { status: 2 },
            ]
        );
        // ERR code, in any state.
        let f = advance_all(
            ReplyKind::Fetch,
            DEFAULT_CLIENT,
            &[b"\x011", b"\xff\x15\x04#28000x"],
        );
        assert_eq!(f[1].seen, Seen::Err { code: 1045 });
        // Under CLIENT_DEPRECATE_EOF rows end with an OK (0xFE header) that carries the numbers.
        let caps = DEFAULT_CLIENT | CLIENT_DEPRECATE_EOF;
        let f = advance_all(
            ReplyKind::ResultSet,
            caps,
            &[&[1], b"\x03def", b"\x011", &[0xFE, 0, 0, 0x22, 0, 0, 0]],
        );
        assert!(matches!(
            f[3].seen,
            Seen::Ok(OkSummary { status: 0x22, .. })
        ));
        assert_eq!(f[3].step, Step::Done(ReplyEnd::Ok { status: 0x22 }));
    }

    #[test]
    fn prepare_ok_single_and_kinds() {
        let ok = [0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let f = advance_all(ReplyKind::Prepare, DEFAULT_CLIENT, &[&ok, b"c", EOF_END]);
        assert_eq!(
            f[0].seen,
            Seen::PrepareOk {
                statement_id: 7,
                columns: 1,
                params: 0
            }
        );
        assert_eq!(f[2].step, Step::Done(ReplyEnd::Ok { status: 2 }));
        // Single: one packet whatever it is; an OK is read, an ERR reported.
        let f = advance_all(ReplyKind::Single, DEFAULT_CLIENT, &[b"Uptime: 5"]);
        assert_eq!(
            f[0],
            fed(Seen::Other, Step::Done(ReplyEnd::Ok { status: 0 }))
        );
        let f = advance_all(ReplyKind::Single, DEFAULT_CLIENT, &[&[0, 0, 0, 2, 0, 0, 0]]);
        assert_eq!(f[0].step, Step::Done(ReplyEnd::Ok { status: 2 }));
        let f = advance_all(ReplyKind::Single, DEFAULT_CLIENT, &[b"\xff\x01\x02"]);
        assert_eq!(f[0].step, Step::Done(ReplyEnd::Err));
        assert_eq!(ReplyKind::of(com::QUIT), None);
        assert_eq!(ReplyKind::of(com::STMT_PREPARE), Some(ReplyKind::Prepare));
        assert_eq!(ReplyKind::of(com::PING), Some(ReplyKind::ResultSet));
        // Malformed input is an error, never a guess.
        let mut t = ReplyTracker::for_kind(ReplyKind::ResultSet, DEFAULT_CLIENT);
        assert!(t.advance(&[0xFC, 1]).is_err());
        let mut t = ReplyTracker::for_kind(ReplyKind::ResultSet, DEFAULT_CLIENT);
        assert!(t.advance(&[0, 0xFD, 1]).is_err());
        let mut t = ReplyTracker::for_kind(ReplyKind::ResultSet, DEFAULT_CLIENT);
        assert!(t.advance(&[0]).is_err());
    }

    #[test]
    fn row_runs_stop_where_a_row_does_not_follow() {
        let mut t = ReplyTracker::for_kind(ReplyKind::ResultSet, DEFAULT_CLIENT);
        // Not in the rows yet: nothing.
        assert_eq!(t.row_run(&[1, 0, 0, 1, 7], usize::MAX), RowRun::default());
        for p in [&[1u8][..], b"coldef", EOF_END] {
            t.advance(p).unwrap();
        }
        let mut w = BytesMut::new();
        encode_packet(3, b"\x01a", &mut w);
        encode_packet(4, b"\xfbNULL-ish text row", &mut w);
        let rows_len = w.len();
        encode_packet(5, EOF_END, &mut w);
        let r = t.row_run(&w, usize::MAX);
        assert_eq!(
            r,
            RowRun {
                len: rows_len,
                rows: 2,
                last_seq: 4
            }
        );
        // A limit inside the second row: only the first.
        assert_eq!(t.row_run(&w, rows_len - 1).rows, 1);
        // An incomplete packet ends the run; so does an ERR, an empty payload, a 16 MiB packet.
        assert_eq!(t.row_run(&w[..rows_len - 1], usize::MAX).rows, 1);
        let mut e = BytesMut::new();
        encode_packet(3, b"\xff\x01\x02#HY000oops", &mut e);
        assert_eq!(t.row_run(&e, usize::MAX).rows, 0);
        assert_eq!(t.row_run(&[0, 0, 0, 3], usize::MAX).rows, 0);
        assert_eq!(t.row_run(&[0xff, 0xff, 0xff, 3, 1], usize::MAX).rows, 0);
        // A text row may start with 0xFE when it is 9 bytes or longer (a length-encoded string).
        let mut long = BytesMut::new();
        encode_packet(3, b"\xfe\x01\0\0\0\0\0\0\0x", &mut long);
        assert_eq!(t.row_run(&long, usize::MAX).rows, 1);
        // Under CLIENT_DEPRECATE_EOF such a packet ends the rows as an OK (shorter than 16 MiB).
        let mut d = ReplyTracker::for_kind(ReplyKind::Fetch, CLIENT_DEPRECATE_EOF);
        assert_eq!(d.row_run(&long, usize::MAX).rows, 0);
        assert!(!matches!(
            d.advance(&long[4..]),
            Ok(Fed {
                seen: Seen::Row,
                ..
            })
        ));
    }

    proptest::proptest! {
        /// A row run is exactly the packets `advance` calls rows, one by one, from the front.
        #[test]
        fn row_run_agrees_with_advance(
            rows in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40), 0..12),
            end in 0u8..4,
            cut in 0usize..600,
            limit in proptest::prop_oneof![proptest::strategy::Just(usize::MAX), 0usize..600],
            deprecate in proptest::prelude::any::<bool>(),
        ) {
            let caps = if deprecate { CLIENT_DEPRECATE_EOF } else { DEFAULT_CLIENT };
            let mut w = BytesMut::new();
            for (i, r) in rows.iter().enumerate() {
                encode_packet(i as u8, r, &mut w);
            }
            match end {
                0 => {
                    encode_packet(99, EOF_END, &mut w);
                }
                1 => {
                    encode_packet(99, &[0, 0, 0, 2, 0, 0, 0], &mut w);
                }
                2 => {
                    encode_packet(99, b"\xff\x01\x02#HY000e", &mut w);
                }
                _ => {}
            }
            let w = &w[..cut.min(w.len())];
            let t = ReplyTracker::for_kind(ReplyKind::Fetch, caps);
            if let Err(violation) = crate::mysql::fuzzing::row_run_matches_advance(&t, w, limit) {
                proptest::prop_assert!(false, "{}", violation);
            }
        }
    }
}
