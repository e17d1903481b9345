//! A minimal synchronous MySQL client for the harness's own loads: handshake (codec's
//! `ClientLogin`: native, caching_sha2 fast path) and `COM_QUERY` with text result sets (ends found
//! by codec's `ReplyTracker`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use codec::mysql::consts::capability::*;
use codec::mysql::reply::Step;
use codec::mysql::{
    ClientLogin, ErrPacket, LoginConfig, LoginError, LoginStep, ReplyKind, ReplyTracker, Seen,
};

/// A text value of a result row (`None` = SQL NULL).
pub type Cell = Option<Vec<u8>>;

/// One open connection.
#[derive(Debug)]
pub struct MyConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The negotiated capabilities (how replies are shaped).
    caps: u32,
}

/// A query failed: connection or protocol problem, or an ERR packet from the server.
#[derive(Debug)]
pub enum MyError {
    /// Socket error.
    Io(io::Error),
    /// The server answered with an ERR packet.
    Server(String),
    /// The bytes did not make sense.
    Protocol(String),
}

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MyError::Io(e) => write!(f, "i/o: {e}"),
            MyError::Server(m) => write!(f, "server error: {m}"),
            MyError::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl From<io::Error> for MyError {
    fn from(e: io::Error) -> Self {
        MyError::Io(e)
    }
}

fn err_text(payload: &[u8]) -> MyError {
    match ErrPacket::decode(Bytes::copy_from_slice(payload)) {
        Ok(e) => MyError::Server(format!(
            "{} ({}): {}",
            e.code,
            e.sql_state_str(),
            String::from_utf8_lossy(&e.message)
        )),
        Err(e) => MyError::Protocol(format!("bad ERR packet: {e}")),
    }
}

impl MyConn {
    /// Connects and logs in as `user`, optionally selecting `db`.
    pub fn connect(
        addr: SocketAddr,
        user: &str,
        password: &str,
        db: Option<&str>,
    ) -> Result<MyConn, MyError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = MyConn {
            stream,
            buf: Vec::with_capacity(4096),
            caps: 0,
        };
        let caps = CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_TRANSACTIONS
            | CLIENT_MULTI_RESULTS;
        let mut login = ClientLogin::new(LoginConfig {
            user: user.to_string(),
            password: password.as_bytes().to_vec(),
            database: db.map(String::from),
            capabilities: caps,
            charset: 45,
            max_packet_size: 16 * 1024 * 1024,
            tls: false,
            mariadb_capabilities: 0,
        });
        loop {
            let (seq, p) = c.read_packet()?;
            let step = login.on_packet(seq, Bytes::from(p)).map_err(|e| match e {
                LoginError::Refused(err) => MyError::Server(format!(
                    "{} ({}): {}",
                    err.code,
                    err.sql_state_str(),
                    String::from_utf8_lossy(&err.message)
                )),
                other => MyError::Protocol(other.to_string()),
            })?;
            match step {
                LoginStep::Done => break,
                LoginStep::Read => {}
                LoginStep::Send(o) | LoginStep::StartTls(o) => c.write_packet(o.seq, &o.payload)?,
            }
        }
        c.caps = login.capabilities();
        Ok(c)
    }

    fn read_packet(&mut self) -> Result<(u8, Vec<u8>), MyError> {
        let mut payload = Vec::new();
        let seq = read_packet_into(&mut self.stream, &mut payload)?;
        Ok((seq, payload))
    }

    /// The logged-in socket and the negotiated capabilities, for a load that writes and reads
    /// on separate threads (the open-loop generator). Nothing is buffered past the login.
    pub fn into_parts(self) -> (TcpStream, u32) {
        (self.stream, self.caps)
    }

    fn write_packet(&mut self, seq: u8, payload: &[u8]) -> Result<(), MyError> {
        self.buf.clear();
        let len = payload.len();
        self.buf
            .extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, seq]);
        self.buf.extend_from_slice(payload);
        self.stream.write_all(&self.buf)?;
        Ok(())
    }

    /// Sends a `COM_QUERY` without waiting for the answer (see [`Self::read_result`]).
    pub fn send_query(&mut self, sql: &str) -> Result<(), MyError> {
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(0x03);
        p.extend_from_slice(sql.as_bytes());
        self.write_packet(0, &p)
    }

    /// Reads the answer to a sent query: its rows (empty for statements without a result set).
    pub fn read_result(&mut self) -> Result<Vec<Vec<Cell>>, MyError> {
        let mut tracker = ReplyTracker::for_kind(ReplyKind::ResultSet, self.caps);
        let mut columns = 0;
        let mut rows = Vec::new();
        loop {
            let (_, p) = self.read_packet()?;
            let fed = tracker
                .advance(&p)
                .map_err(|e| MyError::Protocol(e.to_string()))?;
            match fed.seen {
                Seen::Err { .. } => return Err(err_text(&p)),
                Seen::ColumnCount(n) => columns = n as usize,
                Seen::Row => rows.push(parse_text_row(&p, columns)?),
                Seen::LocalInfile => {
                    return Err(MyError::Protocol(
                        "the server asked for a local file".into(),
                    ));
                }
                _ => {}
            }
            if fed.step != Step::More {
                return Ok(rows);
            }
        }
    }

    /// Runs one query and returns its rows.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Cell>>, MyError> {
        self.send_query(sql)?;
        self.read_result()
    }
}

/// Reads one packet from `r` into `payload` (replacing its contents); returns its sequence id.
fn read_packet_into(r: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<u8> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head)?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    payload.clear();
    payload.resize(len, 0);
    r.read_exact(payload)?;
    Ok(head[3])
}

/// Reads the whole reply to one command from `r` (a connection with capabilities `caps`),
/// discarding its rows; `Ok(true)` when the server answered with an ERR packet. `buf` is reused
/// between calls.
pub fn read_reply(r: &mut impl Read, caps: u32, buf: &mut Vec<u8>) -> Result<bool, MyError> {
    let mut tracker = ReplyTracker::for_kind(ReplyKind::ResultSet, caps);
    loop {
        read_packet_into(r, buf)?;
        let fed = tracker
            .advance(buf)
            .map_err(|e| MyError::Protocol(e.to_string()))?;
        match fed.seen {
            Seen::Err { .. } => return Ok(true),
            Seen::LocalInfile => {
                return Err(MyError::Protocol(
                    "the server asked for a local file".into(),
                ));
            }
            _ => {}
        }
        if fed.step != Step::More {
            return Ok(false);
        }
    }
}

/// Appends a `COM_QUERY` packet (sequence id 0) for `sql` to `out`.
pub fn encode_query(out: &mut Vec<u8>, sql: &str) {
    let len = sql.len() + 1;
    out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, 0, 0x03]);
    out.extend_from_slice(sql.as_bytes());
}

/// Reads a length-encoded integer at `at`: (value, bytes used).
fn lenenc(p: &[u8], at: usize) -> Option<(u64, usize)> {
    let b = *p.get(at)?;
    let le = |n: usize| -> Option<u64> {
        let s = p.get(at + 1..at + 1 + n)?;
        Some(s.iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x)))
    };
    match b {
        0..=0xfa => Some((u64::from(b), 1)),
        0xfc => Some((le(2)?, 3)),
        0xfd => Some((le(3)?, 4)),
        0xfe => Some((le(8)?, 9)),
        _ => None,
    }
}

/// Parses a text-protocol row of `columns` values.
pub fn parse_text_row(p: &[u8], columns: usize) -> Result<Vec<Cell>, MyError> {
    let mut at = 0;
    let mut row = Vec::with_capacity(columns);
    for _ in 0..columns {
        if p.get(at) == Some(&0xfb) {
            row.push(None);
            at += 1;
            continue;
        }
        let (len, used) = lenenc(p, at).ok_or_else(|| MyError::Protocol("bad row".into()))?;
        let start = at + used;
        let end = start + len as usize;
        let v = p
            .get(start..end)
            .ok_or_else(|| MyError::Protocol("truncated row".into()))?;
        row.push(Some(v.to_vec()));
        at = end;
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_forms() {
        assert_eq!(lenenc(&[0x05], 0), Some((5, 1)));
        assert_eq!(lenenc(&[0xfc, 0x34, 0x12], 0), Some((0x1234, 3)));
        assert_eq!(lenenc(&[0xfd, 1, 2, 3], 0), Some((0x030201, 4)));
        assert_eq!(lenenc(&[0xfc, 1], 0), None);
        assert_eq!(lenenc(&[0xff], 0), None);
    }

    #[test]
    fn text_row_with_null() {
        let p = [2, b'4', b'2', 0xfb, 3, b'a', b'b', b'c'];
        let row = parse_text_row(&p, 3).unwrap();
        assert_eq!(row, vec![Some(b"42".to_vec()), None, Some(b"abc".to_vec())]);
        assert!(parse_text_row(&p[..5], 3).is_err());
    }
}
