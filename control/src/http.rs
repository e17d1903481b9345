//! A small HTTP/1.1 client over a tokio `TcpStream` (one request per connection), enough for the API.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status and body.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

/// Why a request failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server URL is not `http://HOST:PORT`.
    #[error("bad server URL {0:?}: use http://HOST:PORT")]
    BadUrl(String),
    /// The connection could not be made: nothing was sent, so any request may go to another node.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Writing or reading failed (the request may or may not have been applied).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No complete response in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The response is not valid HTTP/1.1.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// The `HOST:PORT` of an `http://HOST:PORT[/]` URL.
pub fn authority(url: &str) -> Result<&str, HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::BadUrl(url.into()))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(HttpError::BadUrl(url.into()));
    }
    Ok(host)
}

/// Sends one request and reads the whole response, within `timeout`.
pub async fn request(
    server: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    request_with(server, method, path, token, &[], body, timeout).await
}

/// [`request`] with extra request headers (names and values must be valid header text: no CR or LF).
pub async fn request_with(
    server: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let host = authority(server)?;
    tokio::time::timeout(timeout, exchange(host, method, path, token, headers, body))
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

async fn exchange(
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, HttpError> {
    let mut stream = TcpStream::connect(host).await.map_err(HttpError::Connect)?;
    stream.set_nodelay(true)?;
    let req = Request {
        host,
        method,
        path,
        token,
        headers,
        body,
    };
    exchange_on(&mut stream, &req, u64::MAX).await
}

/// One request, as [`exchange_on`] writes it.
pub struct Request<'a> {
    /// The `Host` header (`HOST[:PORT]`).
    pub host: &'a str,
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// Starts with `/`.
    pub path: &'a str,
    /// A bearer token, if any.
    pub token: Option<&'a str>,
    /// More headers (no CR or LF; no colon in names).
    pub headers: &'a [(&'a str, &'a str)],
    /// A JSON body, if any.
    pub body: Option<&'a [u8]>,
}

/// Writes `req` on an open connection (plain TCP, or TLS for `jobs::https`) and reads the response to the
/// end, at most `max` bytes (the rest is left unread), then parses it. A connection that ends without a
/// clean close after some bytes (TLS peers often skip `close_notify` after `Connection: close`) still
/// gives what arrived, which must parse as a whole response.
pub async fn exchange_on<S>(
    stream: &mut S,
    req: &Request<'_>,
    max: u64,
) -> Result<HttpResponse, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (host, method, path) = (req.host, req.method, req.path);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(t) = req.token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in req.headers {
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(HttpError::Malformed(
                "request header with CR, LF or a colon in its name",
            ));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = req.body.unwrap_or(b"");
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(4096);
    match (&mut *stream).take(max).read_to_end(&mut buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    parse_response(&buf)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a complete `Connection: close` response.
pub fn parse_response(buf: &[u8]) -> Result<HttpResponse, HttpError> {
    let end = find(buf, b"\r\n\r\n").ok_or(HttpError::Malformed("no end of headers"))?;
    let head =
        std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::Malformed("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::Malformed("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(HttpError::Malformed("bad status line"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        }
    }
    let rest = &buf[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(_) => return Err(HttpError::Malformed("body shorter than Content-Length")),
            None => rest.to_vec(),
        }
    };
    Ok(HttpResponse { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or(HttpError::Malformed("bad chunk"))?;
        let size_text = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| HttpError::Malformed("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Malformed("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(HttpError::Malformed("truncated chunk"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhi").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn authority_of_urls() {
        assert_eq!(
            authority("http://127.0.0.1:7070/").unwrap(),
            "127.0.0.1:7070"
        );
        assert!(authority("https://x").is_err());
        assert!(authority("http://x/y").is_err());
    }
}
