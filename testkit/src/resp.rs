//! A minimal blocking RESP2 client over `std::net::TcpStream`, enough to seed and inspect servers.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$n` payload (lossy UTF-8).
    Bulk(String),
    /// `$-1` / `*-1`
    Nil,
    /// `*n` elements.
    Array(Vec<Reply>),
}

impl Reply {
    /// Renders the reply as text: scalars as themselves, nil as "", arrays one element per line.
    pub(crate) fn to_text(&self) -> String {
        match self {
            Reply::Simple(s) | Reply::Bulk(s) | Reply::Error(s) => s.clone(),
            Reply::Integer(i) => i.to_string(),
            Reply::Nil => String::new(),
            Reply::Array(items) => items
                .iter()
                .map(Reply::to_text)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A connection to one Redis server.
pub(crate) struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects with `timeout` for connect, reads and writes.
    pub(crate) fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply.
    pub(crate) fn call(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            buf.extend_from_slice(arg.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&buf)?;
        read_reply(&mut self.reader, 0)
    }
}

/// Reads one reply; `depth` bounds nesting.
fn read_reply(reader: &mut impl BufRead, depth: usize) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    if depth > 32 {
        return Err(bad("reply nested too deeply"));
    }
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| bad("empty reply line"))?;
    let number = || rest.parse::<i64>().map_err(|_| bad("bad length"));
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Integer(number()?)),
        "$" => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut data = vec![0; len as usize + 2];
            reader.read_exact(&mut data)?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(String::from_utf8_lossy(&data).into_owned()))
        }
        "*" => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            (0..len)
                .map(|_| read_reply(reader, depth + 1))
                .collect::<std::io::Result<Vec<_>>>()
                .map(Reply::Array)
        }
        _ => Err(bad("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_nested_replies() {
        let bytes = b"*3\r\n$3\r\nfoo\r\n:42\r\n*2\r\n$-1\r\n+OK\r\n";
        let reply = read_reply(&mut &bytes[..], 0).unwrap();
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Bulk("foo".into()),
                Reply::Integer(42),
                Reply::Array(vec![Reply::Nil, Reply::Simple("OK".into())]),
            ])
        );
        assert_eq!(reply.to_text(), "foo\n42\n\nOK");
    }

    #[test]
    fn rejects_garbage() {
        assert!(read_reply(&mut &b"?x\r\n"[..], 0).is_err());
        assert!(read_reply(&mut &b"$5\r\nab"[..], 0).is_err());
    }
}
