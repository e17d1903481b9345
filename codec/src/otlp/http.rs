//! The head of the HTTP/1.x answer to an OTLP/HTTP export request, as Furrow's two exporters read it
//! (the proxies' span exporter in `runtime::trace`, the collector's onward export in `control`): the
//! status, the `Retry-After` advice, the body's length and whether the connection may carry the
//! next request.

use std::time::Duration;

/// What an exporter needs of an answer's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerHead {
    /// The status code.
    pub status: u16,
    /// `Retry-After` in delay-seconds (an HTTP date is taken as no advice).
    pub retry_after: Option<Duration>,
    /// `Content-Length` (None when absent or when the body is chunked).
    pub content_length: Option<usize>,
    /// Whether the connection may carry another request once the body is read: HTTP/1.1 (or
    /// `Connection: keep-alive`), no `Connection: close`, a body of known length.
    pub reusable: bool,
}

/// Parses an answer head: the status line and the headers up to the blank line that ends them
/// (bytes after it, the body's, are not read). Bytes that are not UTF-8 are taken as replaced.
pub fn parse_answer_head(head: &[u8]) -> Result<AnswerHead, &'static str> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or("").splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or("no HTTP status in the answer")?;
    let mut a = AnswerHead {
        status,
        retry_after: None,
        content_length: None,
        reusable: version == "HTTP/1.1",
    };
    let mut chunked = false;
    for l in lines.take_while(|l| !l.is_empty()) {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            a.content_length = Some(v.parse::<usize>().map_err(|_| "invalid Content-Length")?);
        } else if k.eq_ignore_ascii_case("retry-after") {
            a.retry_after = v.parse::<u64>().ok().map(Duration::from_secs);
        } else if k.eq_ignore_ascii_case("connection") {
            if v.eq_ignore_ascii_case("close") {
                a.reusable = false;
            } else if v.eq_ignore_ascii_case("keep-alive") {
                a.reusable = true;
            }
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    if chunked {
        // A chunked body is not read: the connection is not reused.
        a.content_length = None;
    }
    if a.content_length.is_none() {
        a.reusable = false;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_advice_length_and_reuse() {
        let p = |h: &str| parse_answer_head(h.as_bytes());
        let a = p("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(
            (a.status, a.reusable, a.retry_after, a.content_length),
            (200, true, None, Some(12))
        );
        let a = p("HTTP/1.1 503 Busy\r\nretry-after:  7 \r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!(
            (a.status, a.reusable, a.retry_after),
            (503, true, Some(Duration::from_secs(7)))
        );
        let date = p(
            "HTTP/1.1 429 Slow\r\nRetry-After: Wed, 21 Oct 2026 07:28:00 GMT\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(date.unwrap().retry_after, None, "a date is no advice");
        for closing in [
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        ] {
            assert!(!p(closing).unwrap().reusable, "{closing}");
        }
        assert!(
            p("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .reusable
        );
        // A header after the blank line is the body's, not the head's.
        let body = p("HTTP/1.1 503 x\r\n\r\nRetry-After: 9\r\n").unwrap();
        assert_eq!((body.status, body.retry_after), (503, None));
        for bad in [
            "",
            "SSH-2.0-x\r\n",
            "HTTP/1.1 abc\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
