//! A small blocking MySQL/MariaDB client over the project's `codec` (codec's `ClientLogin` for the
//! handshake, `COM_QUERY` with text result sets read through codec's `ReplyTracker`), enough for
//! the shared store.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::capability::*;
use codec::mysql::reply::Step;
use codec::mysql::{
    ClientLogin, ColumnDefinition, Command, ErrPacket, LoginConfig, LoginError, LoginStep,
    PacketDecoder, ReplyKind, ReplyTracker, Seen, TextRow, encode_packet,
};

/// A failure talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum MysqlClientError {
    /// Socket trouble.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something we cannot parse.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server answered with an error packet.
    #[error("server error {code}: {message}")]
    Server {
        /// The error code.
        code: u16,
        /// The message.
        message: String,
    },
    /// A result set past the caller's bound ([`Conn::query_bounded`]); the connection is left mid-reply.
    #[error("{0}")]
    TooLarge(String),
}

type Result<T> = std::result::Result<T, MysqlClientError>;

fn proto(e: impl std::fmt::Display) -> MysqlClientError {
    MysqlClientError::Protocol(e.to_string())
}

/// Connection parameters parsed from `mysql://USER:PASSWORD@HOST:PORT/DATABASE`.
#[derive(Clone, Debug, PartialEq)]
pub struct MysqlUrl {
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// `HOST:PORT`.
    pub addr: String,
    /// Database (created when missing).
    pub database: String,
}

impl MysqlUrl {
    /// Parses the URL.
    pub fn parse(url: &str) -> Option<MysqlUrl> {
        let rest = url.strip_prefix("mysql://")?;
        let (cred, rest) = rest.rsplit_once('@')?;
        let (user, password) = cred.split_once(':').unwrap_or((cred, ""));
        let (addr, database) = rest.split_once('/')?;
        if user.is_empty() || addr.is_empty() || database.is_empty() {
            return None;
        }
        let ok_db = database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        ok_db.then(|| MysqlUrl {
            user: user.into(),
            password: password.into(),
            addr: addr.into(),
            database: database.into(),
        })
    }
}

/// One connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: PacketDecoder,
    seq: u8,
    /// The negotiated capabilities (how replies are shaped).
    caps: u32,
}

/// The result of a query: rows of nullable byte cells (empty for statements without a result set).
pub type Rows = Vec<Vec<Option<Bytes>>>;

impl Conn {
    /// Connects and authenticates (no default database).
    pub fn connect(url: &MysqlUrl, timeout: Duration) -> Result<Conn> {
        Conn::connect_within(url, timeout, Duration::from_secs(10))
    }

    /// Connects within `timeout` and authenticates with every read and write bounded by `io`.
    pub fn connect_within(url: &MysqlUrl, timeout: Duration, io: Duration) -> Result<Conn> {
        let addr = url
            .addr
            .parse::<std::net::SocketAddr>()
            .map_err(|e| proto(format!("address {:?}: {e}", url.addr)))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io))?;
        stream.set_write_timeout(Some(io))?;
        let mut c = Conn {
            stream,
            buf: BytesMut::with_capacity(16384),
            decoder: PacketDecoder::new(64 << 20),
            seq: 0,
            caps: 0,
        };
        let mut login = ClientLogin::new(LoginConfig {
            user: url.user.clone(),
            password: url.password.as_bytes().to_vec(),
            database: None,
            capabilities: CLIENT_LONG_PASSWORD
                | CLIENT_LONG_FLAG
                | CLIENT_PROTOCOL_41
                | CLIENT_TRANSACTIONS
                | CLIENT_SECURE_CONNECTION
                | CLIENT_MULTI_RESULTS
                | CLIENT_PLUGIN_AUTH
                | CLIENT_DEPRECATE_EOF,
            charset: 45,
            max_packet_size: 1 << 24,
            tls: false,
            mariadb_capabilities: 0,
        });
        loop {
            let p = c.read_packet()?;
            let step = login
                .on_packet(c.seq.wrapping_sub(1), p)
                .map_err(|e| match e {
                    LoginError::Refused(err) => MysqlClientError::Server {
                        code: err.code,
                        message: String::from_utf8_lossy(&err.message).into_owned(),
                    },
                    other => proto(other),
                })?;
            match step {
                LoginStep::Done => break,
                LoginStep::Read => {}
                LoginStep::Send(o) | LoginStep::StartTls(o) => {
                    c.seq = o.seq;
                    c.write_packet(&o.payload)?;
                }
            }
        }
        c.caps = login.capabilities();
        Ok(c)
    }

    fn read_packet(&mut self) -> Result<Bytes> {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf).map_err(proto)? {
                self.seq = p.last_seq.wrapping_add(1);
                return Ok(p.payload);
            }
            let mut tmp = [0u8; 16384];
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Err(MysqlClientError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    fn write_packet(&mut self, payload: &[u8]) -> Result<()> {
        let mut out = BytesMut::with_capacity(payload.len() + 8);
        self.seq = encode_packet(self.seq, payload, &mut out);
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// COM_PING: Ok when the server answers OK.
    pub fn ping(&mut self) -> Result<()> {
        let mut out = BytesMut::with_capacity(1);
        Command::Ping.encode(&mut out);
        self.seq = 0;
        self.write_packet(&out)?;
        let p = self.read_packet()?;
        match p.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(server_err(p)),
            _ => Err(proto("COM_PING: not an OK packet")),
        }
    }

    /// Runs one statement; returns its rows (empty for statements without a result set).
    pub fn query(&mut self, sql: &str) -> Result<Rows> {
        self.read_result(sql, usize::MAX, usize::MAX)
            .map(|t| t.rows)
    }

    /// Runs one statement and reads at most `max_rows` rows holding at most `max_bytes` of cell data, with
    /// the column names. Past either bound it stops reading and answers [`MysqlClientError::TooLarge`]; the
    /// rest of the reply is left unread, so drop the connection then.
    pub fn query_bounded(&mut self, sql: &str, max_rows: usize, max_bytes: usize) -> Result<Table> {
        self.read_result(sql, max_rows, max_bytes)
    }

    fn read_result(&mut self, sql: &str, max_rows: usize, max_bytes: usize) -> Result<Table> {
        let mut out = BytesMut::with_capacity(sql.len() + 1);
        Command::Query(Bytes::copy_from_slice(sql.as_bytes())).encode(&mut out);
        self.seq = 0;
        self.write_packet(&out)?;
        let mut tracker = ReplyTracker::for_kind(ReplyKind::ResultSet, self.caps);
        let mut ncols = 0;
        let mut t = Table::default();
        let mut bytes = 0usize;
        loop {
            let p = self.read_packet()?;
            let fed = tracker.advance(&p).map_err(proto)?;
            match fed.seen {
                Seen::Err { .. } => return Err(server_err(p)),
                Seen::ColumnCount(n) => ncols = n as usize,
                Seen::Definition if t.columns.len() < ncols => {
                    let def = ColumnDefinition::decode(p).map_err(proto)?;
                    t.columns
                        .push(String::from_utf8_lossy(&def.name).into_owned());
                }
                Seen::Row => {
                    if t.rows.len() >= max_rows {
                        return Err(MysqlClientError::TooLarge(format!(
                            "more than {max_rows} rows"
                        )));
                    }
                    let cells = TextRow::decode(p, ncols).map_err(proto)?.cells;
                    bytes += cells.iter().flatten().map(|c| c.len()).sum::<usize>();
                    if bytes > max_bytes {
                        return Err(MysqlClientError::TooLarge(format!(
                            "more than {max_bytes} bytes of rows"
                        )));
                    }
                    t.rows.push(cells);
                }
                Seen::LocalInfile => return Err(proto("the server asked for a local file")),
                _ => {}
            }
            if fed.step != Step::More {
                return Ok(t);
            }
        }
    }
}

/// A result set with its column names (empty for statements without one).
#[derive(Debug, Default)]
pub struct Table {
    /// The column names (aliases), in order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Rows,
}

fn server_err(p: Bytes) -> MysqlClientError {
    match ErrPacket::decode(p) {
        Ok(e) => MysqlClientError::Server {
            code: e.code,
            message: String::from_utf8_lossy(&e.message).into_owned(),
        },
        Err(e) => proto(e),
    }
}

/// A hex literal (`X'..'`) for arbitrary bytes: no escaping questions.
pub fn hex_literal(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2 + 3);
    s.push_str("X'");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = MysqlUrl::parse("mysql://furrow:pw@127.0.0.1:3307/furrow_control").unwrap();
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.addr.as_str()),
            ("furrow", "pw", "127.0.0.1:3307")
        );
        assert_eq!(u.database, "furrow_control");
        assert!(MysqlUrl::parse("mysql://u@h:1/").is_none());
        assert!(MysqlUrl::parse("mysql://u@h:1/bad-name").is_none());
        assert!(MysqlUrl::parse("postgres://u@h:1/x").is_none());
        assert_eq!(hex_literal(b"a'"), "X'6127'");
    }
}
