//! Generic response packets: OK (0x00, or 0xFE with CLIENT_DEPRECATE_EOF), ERR (0xFF), EOF (0xFE).

use bytes::{BufMut, Bytes, BytesMut};

use super::consts::capability::{CLIENT_PROTOCOL_41, CLIENT_SESSION_TRACK, CLIENT_TRANSACTIONS};
use super::consts::status::SERVER_SESSION_STATE_CHANGED;
use super::wire::{Reader, put_lenenc_bytes, put_lenenc_int};
use super::{MysqlError, Result};

/// Header byte of an OK packet.
pub const OK_HEADER: u8 = 0x00;
/// Header byte of an EOF packet (and of the OK that replaces it with CLIENT_DEPRECATE_EOF).
pub const EOF_HEADER: u8 = 0xFE;
/// Header byte of an ERR packet.
pub const ERR_HEADER: u8 = 0xFF;

/// Whether `payload` is an ERR packet.
pub fn is_err(payload: &[u8]) -> bool {
    payload.first() == Some(&ERR_HEADER)
}

/// Whether `payload` is an OK packet (0x00 header).
pub fn is_ok(payload: &[u8]) -> bool {
    payload.first() == Some(&OK_HEADER)
}

/// Whether `payload` is an end-of-rows marker: a classic EOF (0xFE, under 9 bytes) or, with
/// CLIENT_DEPRECATE_EOF, an OK with a 0xFE header (a row starting with 0xFE is at least 9 bytes
/// for an 8-byte length, and a row packet is never 0xFFFFFF bytes of OK).
#[inline]
pub fn is_end_of_rows(payload: &[u8], deprecate_eof: bool) -> bool {
    payload.first() == Some(&EOF_HEADER)
        && (payload.len() < 9 || (deprecate_eof && payload.len() < 0xFF_FFFF))
}

/// Where the status flags sit in an OK or classic EOF payload (protocol 4.1), for a proxy that
/// patches them in place (e.g. to set SERVER_MORE_RESULTS_EXISTS when it joins replies); `None`
/// for other packets or when the payload is too short to hold them.
pub fn status_offset(payload: &[u8]) -> Option<usize> {
    let at = match *payload.first()? {
        EOF_HEADER if payload.len() < 9 => 3,
        OK_HEADER => {
            let mut pos = 1;
            super::wire::lenenc_int_at(payload, &mut pos, "affected rows").ok()?;
            super::wire::lenenc_int_at(payload, &mut pos, "last insert id").ok()?;
            pos
        }
        _ => return None,
    };
    (at + 2 <= payload.len()).then_some(at)
}

/// An OK packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OkPacket {
    /// 0x00, or 0xFE for the OK that ends a result set with CLIENT_DEPRECATE_EOF.
    pub header: u8,
    /// Affected (or found) rows.
    pub affected_rows: u64,
    /// Last insert id.
    pub last_insert_id: u64,
    /// Server status flags.
    pub status: u16,
    /// Warning count.
    pub warnings: u16,
    /// Human-readable info.
    pub info: Bytes,
    /// Raw session-state-change block (with CLIENT_SESSION_TRACK and
    /// SERVER_SESSION_STATE_CHANGED).
    pub session_state: Option<Bytes>,
}

/// An OK packet read in place: numbers plus slices of the payload, no allocation. What the reply
/// tracker and the proxy's forwarding read on every statement; [`OkPacket::decode`] is built on
/// it, so both accept exactly the same packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkRef<'a> {
    /// 0x00, or 0xFE for the OK that ends a result set with CLIENT_DEPRECATE_EOF.
    pub header: u8,
    /// Affected (or found) rows.
    pub affected_rows: u64,
    /// Last insert id.
    pub last_insert_id: u64,
    /// Server status flags.
    pub status: u16,
    /// Warning count.
    pub warnings: u16,
    /// Human-readable info.
    pub info: &'a [u8],
    /// Raw session-state-change block (with CLIENT_SESSION_TRACK and
    /// SERVER_SESSION_STATE_CHANGED); walk it with [`OkRef::session_entries`].
    pub session_state: Option<&'a [u8]>,
}

impl<'a> OkRef<'a> {
    /// Parses an OK payload given the negotiated capabilities.
    #[inline]
    pub fn parse(payload: &'a [u8], capabilities: u32) -> Result<Self> {
        use super::wire::{lenenc_int_at, lenenc_slice_at, u16_at};
        let header = *payload.first().ok_or(MysqlError::Truncated("OK header"))?;
        if header != OK_HEADER && header != EOF_HEADER {
            return Err(MysqlError::UnexpectedHeader { header, what: "OK" });
        }
        let mut pos = 1;
        let mut ok = OkRef {
            header,
            affected_rows: lenenc_int_at(payload, &mut pos, "affected rows")?,
            last_insert_id: lenenc_int_at(payload, &mut pos, "last insert id")?,
            ..Default::default()
        };
        if capabilities & CLIENT_PROTOCOL_41 != 0 {
            ok.status = u16_at(payload, &mut pos, "status flags")?;
            ok.warnings = u16_at(payload, &mut pos, "warnings")?;
        } else if capabilities & CLIENT_TRANSACTIONS != 0 {
            ok.status = u16_at(payload, &mut pos, "status flags")?;
        }
        if capabilities & CLIENT_SESSION_TRACK != 0 {
            if pos < payload.len() {
                ok.info = lenenc_slice_at(payload, &mut pos, "info")?;
            }
            if ok.status & SERVER_SESSION_STATE_CHANGED != 0 {
                ok.session_state = Some(lenenc_slice_at(payload, &mut pos, "session state")?);
            }
            if pos != payload.len() {
                return Err(MysqlError::TrailingBytes(payload.len() - pos, "OK"));
            }
        } else {
            ok.info = &payload[pos..];
        }
        Ok(ok)
    }

    /// The entries of the session-state-change block as `(type, data)` slices (none when there
    /// is no block), e.g. type 3 for `session_track_gtids`.
    pub fn session_entries(&self) -> SessionEntries<'a> {
        SessionEntries {
            block: self.session_state.unwrap_or(&[]),
            pos: 0,
        }
    }

    /// The GTID data of the session-state-change block (`session_track_gtids`), if any.
    pub fn gtids(&self) -> Result<Option<&'a [u8]>> {
        for e in self.session_entries() {
            let (kind, data) = e?;
            if kind == SESSION_TRACK_GTIDS {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }
}

/// Session-state-change entry type of `session_track_gtids`.
pub const SESSION_TRACK_GTIDS: u8 = 3;

/// Walks a session-state-change block in place: `(type, data)` per entry.
#[derive(Debug, Clone)]
pub struct SessionEntries<'a> {
    block: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for SessionEntries<'a> {
    type Item = Result<(u8, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let kind = *self.block.get(self.pos)?;
        self.pos += 1;
        let r = super::wire::lenenc_slice_at(self.block, &mut self.pos, "session state data");
        if r.is_err() {
            self.pos = self.block.len();
        }
        Some(r.map(|d| (kind, d)))
    }
}

impl OkPacket {
    /// Parses an OK payload given the negotiated capabilities (strings are slices of `payload`).
    pub fn decode(payload: Bytes, capabilities: u32) -> Result<Self> {
        let r = OkRef::parse(&payload, capabilities)?;
        Ok(OkPacket {
            header: r.header,
            affected_rows: r.affected_rows,
            last_insert_id: r.last_insert_id,
            status: r.status,
            warnings: r.warnings,
            info: payload.slice_ref(r.info),
            session_state: r.session_state.map(|s| payload.slice_ref(s)),
        })
    }

    /// Appends the payload for the given capabilities.
    pub fn encode(&self, capabilities: u32, out: &mut BytesMut) {
        out.put_u8(self.header);
        put_lenenc_int(out, self.affected_rows);
        put_lenenc_int(out, self.last_insert_id);
        if capabilities & CLIENT_PROTOCOL_41 != 0 {
            out.put_u16_le(self.status);
            out.put_u16_le(self.warnings);
        } else if capabilities & CLIENT_TRANSACTIONS != 0 {
            out.put_u16_le(self.status);
        }
        if capabilities & CLIENT_SESSION_TRACK != 0 {
            let state = self
                .session_state
                .as_ref()
                .filter(|_| self.status & SERVER_SESSION_STATE_CHANGED != 0);
            if !self.info.is_empty() || state.is_some() {
                put_lenenc_bytes(out, &self.info);
            }
            if let Some(s) = state {
                put_lenenc_bytes(out, s);
            }
        } else {
            out.put_slice(&self.info);
        }
    }
}

/// One entry of an OK packet's session-state-change block (CLIENT_SESSION_TRACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// A tracked system variable changed (`session_track_system_variables`).
    SystemVariable {
        /// Variable name.
        name: Bytes,
        /// New value.
        value: Bytes,
    },
    /// The default schema changed (`USE db`, COM_INIT_DB).
    Schema(Bytes),
    /// Some session state changed (`session_track_state_change`); the payload is `1`.
    StateChanged(Bytes),
    /// GTIDs (`session_track_gtids`), raw.
    Gtids(Bytes),
    /// Transaction characteristics as SQL (`session_track_transaction_info=CHARACTERISTICS`).
    TransactionCharacteristics(Bytes),
    /// Transaction state flags (`session_track_transaction_info`).
    TransactionState(Bytes),
    /// Another entry type, raw.
    Other {
        /// The entry type byte.
        kind: u8,
        /// Its data.
        data: Bytes,
    },
}

impl OkPacket {
    /// Parses the session-state-change block into its entries (empty when there is none).
    pub fn session_changes(&self) -> Result<Vec<SessionChange>> {
        let Some(block) = &self.session_state else {
            return Ok(Vec::new());
        };
        let mut r = Reader::new(block.clone());
        let mut out = Vec::new();
        while !r.is_empty() {
            let kind = r.u8("session state type")?;
            let data = r.lenenc_bytes("session state data")?;
            let mut d = Reader::new(data.clone());
            out.push(match kind {
                0 => {
                    let name = d.lenenc_bytes("variable name")?;
                    let value = d.lenenc_bytes("variable value")?;
                    SessionChange::SystemVariable { name, value }
                }
                1 => SessionChange::Schema(d.lenenc_bytes("schema")?),
                2 => SessionChange::StateChanged(d.lenenc_bytes("state change")?),
                3 => SessionChange::Gtids(data),
                4 => SessionChange::TransactionCharacteristics(
                    d.lenenc_bytes("transaction characteristics")?,
                ),
                5 => SessionChange::TransactionState(d.lenenc_bytes("transaction state")?),
                _ => SessionChange::Other { kind, data },
            });
        }
        Ok(out)
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    /// Error code (e.g. 1045).
    pub code: u16,
    /// SQLSTATE; absent in pre-4.1 errors and some early handshake errors.
    pub sql_state: Option<[u8; 5]>,
    /// Message.
    pub message: Bytes,
}

impl ErrPacket {
    /// A proxy-generated error, e.g. `ErrPacket::new(1045, "28000", "Access denied ...")`.
    /// A SQLSTATE that is not 5 bytes becomes `HY000`.
    pub fn new(code: u16, sql_state: &str, message: impl Into<String>) -> Self {
        let state = <[u8; 5]>::try_from(sql_state.as_bytes()).unwrap_or(*b"HY000");
        ErrPacket {
            code,
            sql_state: Some(state),
            message: Bytes::from(message.into()),
        }
    }

    /// Parses an ERR payload (the `#` SQLSTATE marker is detected, so it works before the
    /// capabilities are known).
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let header = r.u8("ERR header")?;
        if header != ERR_HEADER {
            return Err(MysqlError::UnexpectedHeader {
                header,
                what: "ERR",
            });
        }
        let code = r.u16("error code")?;
        let sql_state = if r.peek() == Some(b'#') && r.remaining() >= 6 {
            r.skip(1, "sqlstate marker")?;
            Some(r.array("sqlstate")?)
        } else {
            None
        };
        Ok(ErrPacket {
            code,
            sql_state,
            message: r.rest(),
        })
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(ERR_HEADER);
        out.put_u16_le(self.code);
        if let Some(s) = &self.sql_state {
            out.put_u8(b'#');
            out.put_slice(s);
        }
        out.put_slice(&self.message);
    }

    /// The SQLSTATE as text (`HY000` when absent).
    pub fn sql_state_str(&self) -> &str {
        self.sql_state
            .as_ref()
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("HY000")
    }
}

/// A classic EOF packet (protocol 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EofPacket {
    /// Warning count.
    pub warnings: u16,
    /// Server status flags.
    pub status: u16,
}

impl EofPacket {
    /// Parses an EOF payload.
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let header = r.u8("EOF header")?;
        if header != EOF_HEADER || r.remaining() > 7 {
            return Err(MysqlError::UnexpectedHeader {
                header,
                what: "EOF",
            });
        }
        if r.is_empty() {
            return Ok(EofPacket::default());
        }
        let warnings = r.u16("warnings")?;
        let status = r.u16("status flags")?;
        r.finish("EOF")?;
        Ok(EofPacket { warnings, status })
    }

    /// Appends the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.to_array());
    }

    /// The payload as a fixed array (no buffer needed).
    pub fn to_array(&self) -> [u8; 5] {
        let [w0, w1] = self.warnings.to_le_bytes();
        let [s0, s1] = self.status.to_le_bytes();
        [EOF_HEADER, w0, w1, s0, s1]
    }
}

/// The payload of an EOF packet with no warnings and status flags `status`: what a proxy sends
/// after column definitions and rows it produced itself (clients are not offered
/// CLIENT_DEPRECATE_EOF; with it, use [`end_of_rows`]).
pub fn eof_payload(status: u16) -> [u8; 5] {
    EofPacket {
        warnings: 0,
        status,
    }
    .to_array()
}

/// Appends the marker that ends rows for a client with `capabilities`: a classic EOF, or under
/// CLIENT_DEPRECATE_EOF the OK packet with a 0xFE header that replaces it.
pub fn end_of_rows(status: u16, warnings: u16, capabilities: u32, out: &mut BytesMut) {
    if capabilities & super::consts::capability::CLIENT_DEPRECATE_EOF != 0 {
        OkPacket {
            header: EOF_HEADER,
            status,
            warnings,
            ..Default::default()
        }
        .encode(capabilities, out);
    } else {
        EofPacket { warnings, status }.encode(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::consts::capability::DEFAULT_CLIENT;

    #[test]
    fn ok_exact_bytes() {
        let ok = OkPacket {
            affected_rows: 1,
            last_insert_id: 300,
            status: 2,
            ..Default::default()
        };
        let mut out = BytesMut::new();
        ok.encode(DEFAULT_CLIENT, &mut out);
        assert_eq!(
            &out[..],
            &[0x00, 0x01, 0xFC, 0x2C, 0x01, 0x02, 0x00, 0x00, 0x00]
        );
        assert_eq!(OkPacket::decode(out.freeze(), DEFAULT_CLIENT).unwrap(), ok);
        let with_state = OkPacket {
            status: SERVER_SESSION_STATE_CHANGED | 2,
            session_state: Some(Bytes::from_static(&[1, 3, 2, b'd', b'b'])),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        with_state.encode(DEFAULT_CLIENT, &mut out);
        assert_eq!(
            OkPacket::decode(out.freeze(), DEFAULT_CLIENT).unwrap(),
            with_state
        );
    }

    #[test]
    fn err_exact_bytes() {
        let e = ErrPacket::new(1045, "28000", "Access denied");
        let mut out = BytesMut::new();
        e.encode(&mut out);
        assert_eq!(
            &out[..9],
            &[0xFF, 0x15, 0x04, b'#', b'2', b'8', b'0', b'0', b'0']
        );
        assert_eq!(&out[9..], b"Access denied");
        assert_eq!(ErrPacket::decode(out.freeze()).unwrap(), e);
        let early = ErrPacket::decode(Bytes::from_static(b"\xff\x10\x04Too many")).unwrap();
        assert_eq!(early.sql_state, None);
        assert_eq!(&early.message[..], b"Too many");
    }

    #[test]
    fn eof_and_end_of_rows() {
        let e = EofPacket {
            warnings: 0,
            status: 0x22,
        };
        let mut out = BytesMut::new();
        e.encode(&mut out);
        assert_eq!(&out[..], &[0xFE, 0, 0, 0x22, 0]);
        assert!(is_end_of_rows(&out, false));
        assert_eq!(EofPacket::decode(out.freeze()).unwrap(), e);
        let mut row = vec![0xFE];
        row.extend_from_slice(&[0; 8]);
        assert!(!is_end_of_rows(&row, false));
    }

    #[test]
    fn status_offsets() {
        assert_eq!(status_offset(&eof_payload(2)), Some(3));
        assert_eq!(status_offset(&[0x00, 0xFC, 1, 0, 5, 2, 0, 0, 0]), Some(5));
        assert_eq!(status_offset(&[0x00, 1, 2]), None);
        assert_eq!(status_offset(&[0xFE, 0, 0]), None);
        assert_eq!(status_offset(&[0xFF, 0x15, 0x04]), None);
    }

    #[test]
    fn eof_helpers() {
        assert_eq!(eof_payload(0x0203), [0xFE, 0, 0, 0x03, 0x02]);
        let mut out = BytesMut::new();
        end_of_rows(2, 1, DEFAULT_CLIENT, &mut out);
        assert_eq!(&out[..], &[0xFE, 1, 0, 2, 0]);
        out.clear();
        let caps = DEFAULT_CLIENT | crate::mysql::consts::capability::CLIENT_DEPRECATE_EOF;
        end_of_rows(2, 1, caps, &mut out);
        assert!(is_end_of_rows(&out, true));
        let ok = OkRef::parse(&out, caps).unwrap();
        assert_eq!((ok.header, ok.status, ok.warnings), (EOF_HEADER, 2, 1));
    }

    #[test]
    fn ok_ref_in_place_and_session_track() {
        let caps = DEFAULT_CLIENT | CLIENT_SESSION_TRACK;
        // GTID entry: type 3, data = encoding spec 0 + lenenc "0-1-7".
        let gtid_entry: &[u8] = &[3, 7, 0, 5, b'0', b'-', b'1', b'-', b'7'];
        let schema_entry: &[u8] = &[1, 3, 2, b'd', b'b'];
        let mut block = Vec::new();
        block.extend_from_slice(schema_entry);
        block.extend_from_slice(gtid_entry);
        let ok = OkPacket {
            affected_rows: 70_000,
            last_insert_id: 1 << 40,
            status: SERVER_SESSION_STATE_CHANGED | 2,
            warnings: 3,
            info: Bytes::from_static(b"Rows matched"),
            session_state: Some(Bytes::from(block)),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        ok.encode(caps, &mut out);
        let r = OkRef::parse(&out, caps).unwrap();
        assert_eq!(r.affected_rows, 70_000);
        assert_eq!(r.last_insert_id, 1 << 40);
        assert_eq!(
            (r.status, r.warnings),
            (SERVER_SESSION_STATE_CHANGED | 2, 3)
        );
        assert_eq!(r.info, b"Rows matched");
        let kinds: Vec<u8> = r.session_entries().map(|e| e.unwrap().0).collect();
        assert_eq!(kinds, [1, 3]);
        assert_eq!(r.gtids().unwrap(), Some(&gtid_entry[2..]));
        // Borrowed and owned parsers agree, and both refuse truncation and trailing bytes.
        assert_eq!(OkPacket::decode(out.clone().freeze(), caps).unwrap(), ok);
        assert!(OkRef::parse(&out[..out.len() - 1], caps).is_err());
        let mut long = out.to_vec();
        long.push(0);
        assert!(OkRef::parse(&long, caps).is_err());
        assert!(OkRef::parse(&[0x00, 0xFC, 1], DEFAULT_CLIENT).is_err());
        assert!(OkRef::parse(&[0xFF, 0, 0], DEFAULT_CLIENT).is_err());
    }
}
