//! `ReplyScanner`: finds where the next complete RESP2/RESP3 frame ends, without building it.

use super::{Limits, RespError, parse_i64};

/// Longest `$`/`*`-style length line accepted before CRLF (`-9223372036854775808` is 20 bytes).
pub(crate) const MAX_NUM_LINE: usize = 32;

/// Finds the CR of the first CRLF at or after `from`. `Ok(None)` when the buffer ends first; an
/// error when a CR is followed by something else.
#[inline]
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Result<Option<usize>, RespError> {
    let Some(tail) = buf.get(from..) else {
        return Ok(None);
    };
    match tail.iter().position(|&b| b == b'\r') {
        None => Ok(None),
        Some(i) => {
            let cr = from + i;
            match buf.get(cr + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some(cr)),
                Some(_) => Err(RespError::ExpectedCrlf),
            }
        }
    }
}

/// Checks the text of a RESP3 double: a decimal or `inf`, `-inf`, `nan`.
pub(crate) fn valid_double(line: &[u8]) -> bool {
    match line {
        b"inf" | b"-inf" | b"nan" => true,
        _ => {
            !line.is_empty()
                && line
                    .iter()
                    .all(|&b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
                && std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .is_some()
        }
    }
}

/// Checks the text of a RESP3 big number: an optional `-` then at least one digit.
pub(crate) fn valid_big_number(line: &[u8]) -> bool {
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// Resumable scanner of backend replies: [`ReplyScanner::scan`] returns the byte length of the
/// first complete frame of a buffer. Between an `Ok(None)` and the next call the caller may only
/// append to the buffer; after `Ok(Some(n))` it removes the first `n` bytes and the scanner starts
/// afresh. A RESP3 attribute is scanned together with the value it describes.
#[derive(Debug, Clone)]
pub struct ReplyScanner {
    limits: Limits,
    /// Bytes of the current frame already checked.
    pos: usize,
    /// Where to resume searching for the CRLF of a partial line (0: from the line start).
    line_from: usize,
    /// End of a bulk payload whose header was read but whose bytes have not all arrived.
    payload_end: Option<usize>,
    /// Where a verbatim string's payload must have its `:` (after the 3-byte format).
    verbatim_colon: Option<usize>,
    /// Elements still missing in each open aggregate, innermost last.
    stack: Vec<u64>,
}

impl Default for ReplyScanner {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// What one line did to the frame in progress.
enum Step {
    /// An element is complete.
    Element,
    /// An aggregate header was read; its elements follow.
    Open,
    /// A bulk header was read; its payload follows.
    Payload,
}

impl ReplyScanner {
    /// A scanner enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pos: 0,
            line_from: 0,
            payload_end: None,
            verbatim_colon: None,
            stack: Vec::new(),
        }
    }

    /// The caps this scanner enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets a frame in progress (use when the buffer is discarded).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.line_from = 0;
        self.payload_end = None;
        self.verbatim_colon = None;
        self.stack.clear();
    }

    /// The byte length of the first complete frame of `buf`, `Ok(None)` if it is not complete yet.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        match self.scan_inner(buf) {
            Err(e) => {
                self.reset();
                Err(e)
            }
            ok => ok,
        }
    }

    fn scan_inner(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        loop {
            if let Some(end) = self.payload_end {
                match buf.get(end..end + 2) {
                    None => return Ok(None),
                    Some(b"\r\n") => {}
                    Some(_) => return Err(RespError::ExpectedCrlf),
                }
                if let Some(colon) = self.verbatim_colon.take()
                    && buf.get(colon) != Some(&b':')
                {
                    return Err(RespError::InvalidVerbatim);
                }
                self.payload_end = None;
                self.pos = end + 2;
                if self.element_done() {
                    return Ok(Some(self.finish()));
                }
                continue;
            }
            let start = self.pos;
            let Some(&ty) = buf.get(start) else {
                return Ok(None);
            };
            let from = self.line_from.max(start + 1);
            let Some(cr) = find_crlf(buf, from)? else {
                let cap = match ty {
                    b'+' | b'-' | b'(' | b',' => self.limits.max_bulk_len,
                    _ => MAX_NUM_LINE,
                };
                if buf.len() - start > cap + 3 {
                    return Err(match ty {
                        b'$' | b'!' | b'=' => RespError::TooBigBulkCount,
                        b'*' | b'%' | b'~' | b'>' | b'|' => RespError::TooBigMultibulkCount,
                        b'+' | b'-' | b'(' | b',' => RespError::TooBigLine,
                        b':' => RespError::InvalidInteger,
                        b'#' => RespError::InvalidBoolean,
                        b'_' => RespError::InvalidNull,
                        other => RespError::InvalidType(other),
                    });
                }
                self.line_from = buf.len().saturating_sub(1).max(start + 1);
                return Ok(None);
            };
            self.line_from = 0;
            let line = &buf[start + 1..cr];
            let next = cr + 2;
            match self.line(ty, line, next)? {
                Step::Element => {
                    self.pos = next;
                    if self.element_done() {
                        return Ok(Some(self.finish()));
                    }
                }
                Step::Open | Step::Payload => self.pos = next,
            }
        }
    }

    /// Checks one line; for a bulk header, records where its payload ends.
    #[inline]
    fn line(&mut self, ty: u8, line: &[u8], next: usize) -> Result<Step, RespError> {
        match ty {
            b'+' | b'-' => {
                if line.len() > self.limits.max_bulk_len {
                    return Err(RespError::TooBigLine);
                }
                Ok(Step::Element)
            }
            b':' => parse_i64(line)
                .map(|_| Step::Element)
                .ok_or(RespError::InvalidInteger),
            b'$' | b'!' | b'=' => {
                if line == b"?" {
                    return Err(RespError::StreamedUnsupported);
                }
                let n = parse_i64(line).ok_or(RespError::InvalidBulkLength)?;
                if n == -1 && ty == b'$' {
                    return Ok(Step::Element);
                }
                let len = usize::try_from(n).map_err(|_| RespError::InvalidBulkLength)?;
                if len > self.limits.max_bulk_len {
                    return Err(RespError::InvalidBulkLength);
                }
                if ty == b'=' {
                    if len < 4 {
                        return Err(RespError::InvalidVerbatim);
                    }
                    self.verbatim_colon = Some(next + 3);
                }
                self.payload_end = Some(next + len);
                Ok(Step::Payload)
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if line == b"?" {
                    return Err(RespError::StreamedUnsupported);
                }
                let n = parse_i64(line).ok_or(RespError::InvalidMultibulkLength)?;
                if n == -1 && ty == b'*' {
                    return Ok(Step::Element);
                }
                let n = u64::try_from(n).map_err(|_| RespError::InvalidMultibulkLength)?;
                if n > self.limits.max_array_len as u64 {
                    return Err(RespError::InvalidMultibulkLength);
                }
                let count = match ty {
                    b'%' => n * 2,
                    b'|' => n * 2 + 1,
                    _ => n,
                };
                if count == 0 {
                    return Ok(Step::Element);
                }
                if self.stack.len() >= self.limits.max_depth {
                    return Err(RespError::TooDeep {
                        max: self.limits.max_depth,
                    });
                }
                self.stack.push(count);
                Ok(Step::Open)
            }
            b'_' if line.is_empty() => Ok(Step::Element),
            b'_' => Err(RespError::InvalidNull),
            b'#' => match line {
                b"t" | b"f" => Ok(Step::Element),
                _ => Err(RespError::InvalidBoolean),
            },
            b',' if valid_double(line) => Ok(Step::Element),
            b',' => Err(RespError::InvalidDouble),
            b'(' if valid_big_number(line) => Ok(Step::Element),
            b'(' => Err(RespError::InvalidBigNumber),
            other => Err(RespError::InvalidType(other)),
        }
    }

    /// Counts a finished element against the open aggregates; true when the frame is complete.
    #[inline]
    fn element_done(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            *top -= 1;
            if *top > 0 {
                return false;
            }
            self.stack.pop();
        }
        true
    }

    fn finish(&mut self) -> usize {
        let n = self.pos;
        self.pos = 0;
        self.line_from = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<Option<usize>, RespError> {
        ReplyScanner::default().scan(input)
    }

    #[test]
    fn finds_frame_ends() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":-12\r\n",
            b"$3\r\nabc\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"%1\r\n+k\r\n~2\r\n#t\r\n,1.5\r\n",
            b">2\r\n+message\r\n(123\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$2\r\nhi\r\n",
            b"=8\r\ntxt:abcd\r\n",
            b"!3\r\nERR\r\n",
            b"_\r\n",
        ];
        for c in cases {
            let mut with_tail = c.to_vec();
            with_tail.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(scan_all(&with_tail), Ok(Some(c.len())), "{c:?}");
            // every strict prefix is incomplete, fed at once or byte by byte
            for cut in 0..c.len() {
                assert_eq!(scan_all(&c[..cut]), Ok(None), "{c:?} cut {cut}");
            }
            let mut s = ReplyScanner::default();
            for end in 0..c.len() {
                assert_eq!(s.scan(&c[..end]), Ok(None));
            }
            assert_eq!(s.scan(c), Ok(Some(c.len())));
        }
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[(&[u8], RespError)] = &[
            (b"?x\r\n", RespError::InvalidType(b'?')),
            (b":1x\r\n", RespError::InvalidInteger),
            (b"$-2\r\n", RespError::InvalidBulkLength),
            (b"$x\r\n", RespError::InvalidBulkLength),
            (b"$1\r\nab\r\n", RespError::ExpectedCrlf),
            (b"*-2\r\n", RespError::InvalidMultibulkLength),
            (b"%-1\r\n", RespError::InvalidMultibulkLength),
            (b"#x\r\n", RespError::InvalidBoolean),
            (b",abc\r\n", RespError::InvalidDouble),
            (b"(12a\r\n", RespError::InvalidBigNumber),
            (b"_x\r\n", RespError::InvalidNull),
            (b"=2\r\nab\r\n", RespError::InvalidVerbatim),
            (b"=9\r\ntx\r\n,-inf\r\n", RespError::InvalidVerbatim),
            (b"+a\rb\r\n", RespError::ExpectedCrlf),
            (b"$?\r\n", RespError::StreamedUnsupported),
            (
                b"$11111111111111111111111111111111111",
                RespError::TooBigBulkCount,
            ),
        ];
        for (input, err) in cases {
            assert_eq!(scan_all(input).as_ref(), Err(err), "{input:?}");
        }
    }

    #[test]
    fn enforces_limits() {
        let limits = Limits {
            max_bulk_len: 4,
            max_array_len: 2,
            max_depth: 2,
            ..Limits::default()
        };
        let mut s = ReplyScanner::new(limits);
        assert_eq!(s.scan(b"$5\r\n"), Err(RespError::InvalidBulkLength));
        assert_eq!(s.scan(b"*3\r\n"), Err(RespError::InvalidMultibulkLength));
        assert_eq!(s.scan(b"%3\r\n"), Err(RespError::InvalidMultibulkLength));
        assert_eq!(
            s.scan(b"*1\r\n*1\r\n*1\r\n"),
            Err(RespError::TooDeep { max: 2 })
        );
        assert_eq!(s.scan(b"*1\r\n*1\r\n:1\r\n"), Ok(Some(12)));
        assert_eq!(s.scan(b"+abcdefgh"), Err(RespError::TooBigLine));
    }
}
