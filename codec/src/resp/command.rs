//! Client requests: `CommandDecoder` turns a pipelined byte stream into `Command`s.

use bytes::{Bytes, BytesMut};

use super::scan::{MAX_NUM_LINE, find_crlf};
use super::write::write_line_len;
use super::{Limits, RespError, parse_i64};

/// Arguments kept without a heap allocation up to this count.
const INLINE_ARGS: usize = 8;

/// Argument positions `(offset, len)` into the command's wire bytes: the first [`INLINE_ARGS`]
/// inline, the rest in a vector that is only allocated for long commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ArgSpans {
    len: u32,
    inline: [(u32, u32); INLINE_ARGS],
    spill: Vec<(u32, u32)>,
}

impl ArgSpans {
    #[inline]
    fn push(&mut self, start: u32, len: u32) {
        let i = self.len as usize;
        if let Some(slot) = self.inline.get_mut(i) {
            *slot = (start, len);
        } else {
            self.spill.push((start, len));
        }
        self.len += 1;
    }

    #[inline]
    fn get(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len as usize {
            return None;
        }
        let &(s, l) = match self.inline.get(i) {
            Some(span) => span,
            None => self.spill.get(i - INLINE_ARGS)?,
        };
        Some((s as usize, s as usize + l as usize))
    }
}

/// One client command: its exact wire bytes (a RESP array of bulk strings; inline commands are
/// converted to that form) and views of its arguments. Cloning is cheap for ≤ 8 arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    raw: Bytes,
    args: ArgSpans,
}

impl Command {
    /// Builds a command from its arguments (encoded as a RESP array of bulk strings).
    pub fn from_args<I, A>(args: I) -> Command
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let args: Vec<A> = args.into_iter().collect();
        let mut buf = BytesMut::new();
        let mut spans = ArgSpans::default();
        write_line_len(&mut buf, b'*', args.len());
        for a in &args {
            let a = a.as_ref();
            write_line_len(&mut buf, b'$', a.len());
            spans.push(buf.len() as u32, a.len() as u32);
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        Command {
            raw: buf.freeze(),
            args: spans,
        }
    }

    /// The exact bytes to forward to a backend.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Consumes the command, returning its wire bytes.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.args.len as usize
    }

    /// True for a command without arguments (the decoder never returns one).
    pub fn is_empty(&self) -> bool {
        self.args.len == 0
    }

    /// Argument `i` (0 is the command name).
    #[inline]
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let (s, e) = self.args.get(i)?;
        self.raw.get(s..e)
    }

    /// Argument `i` as a `Bytes` sharing the command's buffer.
    pub fn arg_bytes(&self, i: usize) -> Option<Bytes> {
        let (s, e) = self.args.get(i)?;
        Some(self.raw.slice(s..e))
    }

    /// The command name as sent (argument 0), empty if there is none.
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }

    /// The command name in ASCII upper case, without allocating for names up to 32 bytes.
    pub fn name_upper(&self) -> UpperName {
        UpperName::new(self.name())
    }

    /// True if the command name equals `name` ignoring ASCII case.
    pub fn is(&self, name: &[u8]) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }

    /// All arguments in order, the name first.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.arg(i).unwrap_or_default())
    }
}

/// A command name in ASCII upper case; inline up to 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpperName {
    /// A short name stored inline.
    Inline {
        /// The bytes, of which the first `len` are the name.
        buf: [u8; 32],
        /// Length of the name.
        len: u8,
    },
    /// A name longer than 32 bytes.
    Heap(Vec<u8>),
}

impl UpperName {
    fn new(name: &[u8]) -> Self {
        if name.len() <= 32 {
            let mut buf = [0u8; 32];
            for (d, s) in buf.iter_mut().zip(name) {
                *d = s.to_ascii_uppercase();
            }
            UpperName::Inline {
                buf,
                len: name.len() as u8,
            }
        } else {
            UpperName::Heap(name.to_ascii_uppercase())
        }
    }

    /// The upper-case name.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            UpperName::Inline { buf, len } => buf.get(..*len as usize).unwrap_or_default(),
            UpperName::Heap(v) => v,
        }
    }
}

impl std::ops::Deref for UpperName {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Resumable decoder of client commands, as Redis reads them: an input starting with `*` is an
/// array of bulk strings, anything else is an inline command line. Empty arrays (`*0`, `*-1`)
/// and blank inline lines are skipped, as Redis does.
///
/// Between an `Ok(None)` and the next call the caller may only append to the buffer; a decoded
/// command's bytes are split off the front of it. After an error the connection must be closed.
#[derive(Debug, Clone)]
pub struct CommandDecoder {
    limits: Limits,
    /// Bytes of the current array already checked (0: at the start of a command).
    pos: usize,
    /// Bulk strings still to read in the current array.
    remaining: u64,
    /// Length of the bulk string whose header was read and whose payload is awaited.
    pending_len: Option<usize>,
    /// Where to resume searching for the end of a partial line.
    line_from: usize,
    args: ArgSpans,
}

impl Default for CommandDecoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// Outcome of one attempt at the front of the buffer.
enum Next {
    Command(Command),
    Skipped,
    Incomplete,
}

impl CommandDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pos: 0,
            remaining: 0,
            pending_len: None,
            line_from: 0,
            args: ArgSpans::default(),
        }
    }

    /// The caps this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets a command in progress (use when the buffer is discarded).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.remaining = 0;
        self.pending_len = None;
        self.line_from = 0;
        self.args = ArgSpans::default();
    }

    /// Removes and returns the next complete command from the front of `buf`; `Ok(None)` when
    /// the buffer holds no complete command yet.
    #[inline]
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, RespError> {
        loop {
            let step = match buf.first() {
                None => return Ok(None),
                Some(b'*') => self.multibulk(buf),
                Some(_) => self.inline(buf),
            };
            match step {
                Ok(Next::Command(c)) => return Ok(Some(c)),
                Ok(Next::Skipped) => {}
                Ok(Next::Incomplete) => return Ok(None),
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            }
        }
    }

    #[inline]
    fn multibulk(&mut self, buf: &mut BytesMut) -> Result<Next, RespError> {
        let data: &[u8] = buf;
        let max_cmd = self.limits.max_command_len.min(u32::MAX as usize);
        let mut pos = self.pos;
        let mut remaining = self.remaining;
        let mut pending = None;
        let mut args;
        if pos == 0 {
            // Fast path for `*<d>\r\n`, the common case.
            let (n, next) = match data.get(1..4) {
                Some(&[d @ b'1'..=b'9', b'\r', b'\n']) => (i64::from(d - b'0'), 4),
                _ => {
                    let Some(cr) = find_crlf(data, self.line_from.max(1))? else {
                        return self.partial_line(data.len(), 0, RespError::TooBigMultibulkCount);
                    };
                    self.line_from = 0;
                    let n = parse_i64(&data[1..cr]).ok_or(RespError::InvalidMultibulkLength)?;
                    if n <= 0 {
                        let _ = buf.split_to(cr + 2);
                        return Ok(Next::Skipped);
                    }
                    (n, cr + 2)
                }
            };
            if n as u64 > self.limits.max_array_len as u64 {
                return Err(RespError::InvalidMultibulkLength);
            }
            remaining = n as u64;
            pos = next;
            args = ArgSpans::default();
        } else {
            pending = self.pending_len.take();
            args = std::mem::take(&mut self.args);
        }
        while remaining > 0 {
            let len = match pending.take() {
                Some(len) => len,
                None => {
                    let Some(&ty) = data.get(pos) else {
                        self.save(pos, remaining, None, args);
                        return Ok(Next::Incomplete);
                    };
                    if ty != b'$' {
                        return Err(RespError::ExpectedBulk(ty));
                    }
                    // Fast path for short lengths: `$<d>\r\n` and `$<dd>\r\n`.
                    let (len, next) = match data.get(pos + 1..pos + 5) {
                        Some(&[d @ b'0'..=b'9', b'\r', b'\n', _]) => ((d - b'0') as usize, pos + 4),
                        Some(&[d1 @ b'1'..=b'9', d2 @ b'0'..=b'9', b'\r', b'\n']) => {
                            (((d1 - b'0') * 10 + (d2 - b'0')) as usize, pos + 5)
                        }
                        _ => match find_crlf(data, self.line_from.max(pos + 1))? {
                            None => {
                                self.save(pos, remaining, None, args);
                                return self.partial_line(
                                    data.len(),
                                    pos,
                                    RespError::TooBigBulkCount,
                                );
                            }
                            Some(cr) => {
                                self.line_from = 0;
                                let n = parse_i64(&data[pos + 1..cr])
                                    .ok_or(RespError::InvalidBulkLength)?;
                                let len =
                                    usize::try_from(n).map_err(|_| RespError::InvalidBulkLength)?;
                                if len > self.limits.max_bulk_len {
                                    return Err(RespError::InvalidBulkLength);
                                }
                                (len, cr + 2)
                            }
                        },
                    };
                    if next.saturating_add(len).saturating_add(2) > max_cmd {
                        return Err(RespError::TooBigCommand { max: max_cmd });
                    }
                    pos = next;
                    len
                }
            };
            let end = pos + len;
            match data.get(end..end + 2) {
                Some(b"\r\n") => {}
                Some(_) => return Err(RespError::ExpectedCrlf),
                None => {
                    self.save(pos, remaining, Some(len), args);
                    return Ok(Next::Incomplete);
                }
            }
            args.push(pos as u32, len as u32); // ok: pos + len ≤ max_cmd ≤ u32::MAX
            pos = end + 2;
            remaining -= 1;
        }
        let raw = buf.split_to(pos).freeze();
        self.pos = 0;
        self.remaining = 0;
        self.line_from = 0;
        Ok(Next::Command(Command { raw, args }))
    }

    #[inline]
    fn save(&mut self, pos: usize, remaining: u64, pending: Option<usize>, args: ArgSpans) {
        self.pos = pos;
        self.remaining = remaining;
        self.pending_len = pending;
        self.args = args;
        self.line_from = 0;
    }

    /// A line starting at `start` has no CRLF yet: wait, or fail if it is already too long.
    fn partial_line(
        &mut self,
        len: usize,
        start: usize,
        err: RespError,
    ) -> Result<Next, RespError> {
        if len - start > MAX_NUM_LINE {
            return Err(err);
        }
        self.line_from = len.saturating_sub(1).max(start + 1);
        Ok(Next::Incomplete)
    }

    /// An inline command: one line up to `\n` (a `\r` before it is dropped), split like Redis's
    /// `sdssplitargs`, then re-encoded as a RESP array.
    fn inline(&mut self, buf: &mut BytesMut) -> Result<Next, RespError> {
        let from = self.line_from;
        let Some(nl) = buf
            .get(from..)
            .and_then(|t| t.iter().position(|&b| b == b'\n'))
        else {
            if buf.len() > self.limits.max_inline_len {
                return Err(RespError::TooBigInline);
            }
            self.line_from = buf.len();
            return Ok(Next::Incomplete);
        };
        let nl = from + nl;
        self.line_from = 0;
        let content = if nl > 0 && buf.get(nl - 1) == Some(&b'\r') {
            nl - 1
        } else {
            nl
        };
        if content > self.limits.max_inline_len {
            return Err(RespError::TooBigInline);
        }
        let line = buf.split_to(nl + 1);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let args = split_args(line)?;
        if args.is_empty() {
            return Ok(Next::Skipped);
        }
        // The same caps as for the equivalent array, so forwarding it is as safe.
        if args.len() > self.limits.max_array_len {
            return Err(RespError::InvalidMultibulkLength);
        }
        if args.iter().any(|a| a.len() > self.limits.max_bulk_len) {
            return Err(RespError::InvalidBulkLength);
        }
        let cmd = Command::from_args(args);
        let max_cmd = self.limits.max_command_len.min(u32::MAX as usize);
        if cmd.raw.len() > max_cmd {
            return Err(RespError::TooBigCommand { max: max_cmd });
        }
        Ok(Next::Command(cmd))
    }
}

/// Splits an inline line into arguments the way Redis's `sdssplitargs` does: whitespace
/// separated, `"..."` with C escapes (`\n`, `\xHH`, ...), `'...'` with only `\'`; a closing
/// quote must be followed by whitespace or the end of the line.
/// Like Redis (which splits a C string), a NUL byte ends the line.
fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, RespError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => line.get(..nul).unwrap_or_default(),
        None => line,
    };
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while line.get(p).is_some_and(|&c| is_space(c)) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = line.get(p).copied();
            if in_dq {
                match c {
                    None => return Err(RespError::UnbalancedQuotes),
                    Some(b'\\') => match (line.get(p + 1), line.get(p + 2), line.get(p + 3)) {
                        (Some(b'x'), Some(&h), Some(&l))
                            if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() =>
                        {
                            cur.push((hex(h) << 4) | hex(l));
                            p += 3;
                        }
                        (Some(&e), _, _) => {
                            cur.push(match e {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            p += 1;
                        }
                        (None, _, _) => cur.push(b'\\'),
                    },
                    Some(b'"') => {
                        if line.get(p + 1).is_some_and(|&c| !is_space(c)) {
                            return Err(RespError::UnbalancedQuotes);
                        }
                        p += 1;
                        break;
                    }
                    Some(other) => cur.push(other),
                }
            } else if in_sq {
                match c {
                    None => return Err(RespError::UnbalancedQuotes),
                    Some(b'\\') if line.get(p + 1) == Some(&b'\'') => {
                        cur.push(b'\'');
                        p += 1;
                    }
                    Some(b'\'') => {
                        if line.get(p + 1).is_some_and(|&c| !is_space(c)) {
                            return Err(RespError::UnbalancedQuotes);
                        }
                        p += 1;
                        break;
                    }
                    Some(other) => cur.push(other),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(other) => cur.push(other),
                }
            }
            p += 1;
        }
        args.push(cur);
    }
}

/// C `isspace`.
fn is_space(c: u8) -> bool {
    c.is_ascii_whitespace() || c == 0x0b
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c.wrapping_sub(b'A').wrapping_add(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn decode_all(input: &[u8]) -> Result<Vec<Command>, RespError> {
        let mut d = CommandDecoder::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(c) = d.decode(&mut buf)? {
            out.push(c);
        }
        Ok(out)
    }

    fn args(c: &Command) -> Vec<Vec<u8>> {
        c.args().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn multibulk_commands() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPING\r\n";
        let cmds = decode_all(input).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(
            args(&cmds[0]),
            vec![b"SET".to_vec(), b"key".to_vec(), b"value".to_vec()]
        );
        assert_eq!(cmds[0].raw().as_ref(), &input[..33]);
        assert_eq!(cmds[1].raw().as_ref(), &input[33..]);
        assert_eq!(cmds[0].arg_bytes(2).unwrap().as_ref(), b"value");
        assert_eq!(cmds[0].arg(3), None);
        assert!(cmds[1].is(b"ping"));
        assert_eq!(cmds[1].name_upper().as_bytes(), b"PING");
    }

    #[test]
    fn every_split_point() {
        let input: &[u8] =
            b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\nPING\r\n*0\r\n*1\r\n$0\r\n\r\n";
        let whole = decode_all(input).unwrap();
        assert_eq!(whole.len(), 3);
        for cut in 0..=input.len() {
            let mut d = CommandDecoder::default();
            let mut buf = BytesMut::from(&input[..cut]);
            let mut got = Vec::new();
            while let Some(c) = d.decode(&mut buf).unwrap() {
                got.push(c);
            }
            buf.extend_from_slice(&input[cut..]);
            while let Some(c) = d
                .decode(&mut buf)
                .map_err(|e| format!("{e} at cut {cut}"))
                .unwrap()
            {
                got.push(c);
            }
            assert_eq!(got, whole, "cut at {cut}");
            assert!(buf.is_empty());
        }
        // byte by byte
        let mut d = CommandDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in input {
            buf.put_u8(b);
            while let Some(c) = d.decode(&mut buf).unwrap() {
                got.push(c);
            }
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn many_args_spill() {
        let names: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let cmd = Command::from_args(std::iter::once("MGET".to_owned()).chain(names.clone()));
        let got = decode_all(cmd.raw()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 21);
        assert_eq!(got[0].arg(20), Some(b"k19".as_ref()));
        assert_eq!(got[0], cmd);
    }

    #[test]
    fn inline_commands() {
        let cmds = decode_all(b"set k \"a b\\x41\\n\" 'it\\'s'\r\n\r\n  \nPING\n").unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(
            args(&cmds[0]),
            vec![
                b"set".to_vec(),
                b"k".to_vec(),
                b"a bA\n".to_vec(),
                b"it's".to_vec()
            ]
        );
        assert_eq!(
            cmds[0].raw().as_ref(),
            b"*4\r\n$3\r\nset\r\n$1\r\nk\r\n$5\r\na bA\n\r\n$4\r\nit's\r\n"
        );
        assert_eq!(cmds[1].raw().as_ref(), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            decode_all(b"get \"abc\r\n"),
            Err(RespError::UnbalancedQuotes)
        );
        assert_eq!(
            decode_all(b"get \"a\"b\r\n"),
            Err(RespError::UnbalancedQuotes)
        );
        assert_eq!(decode_all(b"get 'a\r\n"), Err(RespError::UnbalancedQuotes));
        assert_eq!(
            decode_all(b"get \"a\0\"\r\n"),
            Err(RespError::UnbalancedQuotes)
        );
        let cmds = decode_all(b"get a\0b c\r\n").unwrap();
        assert_eq!(args(&cmds[0]), vec![b"get".to_vec(), b"a".to_vec()]);
    }

    #[test]
    fn errors_like_redis() {
        let cases: &[(&[u8], RespError)] = &[
            (b"*x\r\n", RespError::InvalidMultibulkLength),
            (b"*1\r\n+OK\r\n", RespError::ExpectedBulk(b'+')),
            (b"*1\r\n$-1\r\n", RespError::InvalidBulkLength),
            (b"*1\r\n$abc\r\n", RespError::InvalidBulkLength),
            (b"*1\r\n$3\r\nabcd\r\n", RespError::ExpectedCrlf),
            (b"*1\r\n$3\r\nabc\n\r", RespError::ExpectedCrlf),
            (b"*1\r\n$00\r\n\r\n", RespError::InvalidBulkLength),
            (
                b"*99999999999999999999999999999999999999",
                RespError::TooBigMultibulkCount,
            ),
            (
                b"*1\r\n$99999999999999999999999999999999999999",
                RespError::TooBigBulkCount,
            ),
        ];
        for (input, err) in cases {
            assert_eq!(
                decode_all(input).as_ref().map(Vec::len),
                Err(err),
                "{input:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_bulk_len: 4,
            max_array_len: 2,
            max_inline_len: 8,
            max_command_len: 30,
            ..Limits::default()
        };
        let run = |input: &[u8]| {
            let mut d = CommandDecoder::new(limits);
            d.decode(&mut BytesMut::from(input))
                .map(|c| c.map(|c| c.len()))
        };
        assert_eq!(run(b"*1\r\n$3\r\nabc\r\n"), Ok(Some(1)));
        assert_eq!(run(b"*1\r\n$5\r\n"), Err(RespError::InvalidBulkLength));
        assert_eq!(run(b"*3\r\n"), Err(RespError::InvalidMultibulkLength));
        assert_eq!(run(b"get abcd\r\n"), Ok(Some(2)));
        assert_eq!(run(b"get abcde\r\n"), Err(RespError::TooBigInline));
        assert_eq!(run(b"get abcde"), Err(RespError::TooBigInline));
        assert_eq!(run(b"get abc"), Ok(None));
        assert_eq!(run(b"a b c\r\n"), Err(RespError::InvalidMultibulkLength));
        assert_eq!(run(b"a bcdef\r\n"), Err(RespError::InvalidBulkLength));
        assert_eq!(run(b"*2\r\n$3\r\nabc\r\n$3\r\nabc\r\n$3"), Ok(Some(2)));
        let big = Limits {
            max_command_len: 20,
            ..limits
        };
        let mut d = CommandDecoder::new(big);
        assert_eq!(
            d.decode(&mut BytesMut::from(
                &b"*2\r\n$3\r\nabc\r\n$3\r\nabc\r\n"[..]
            )),
            Err(RespError::TooBigCommand { max: 20 })
        );
    }

    #[test]
    fn name_upper_long() {
        let long = vec![b'a'; 40];
        let c = Command::from_args([long.as_slice()]);
        assert_eq!(c.name_upper().as_bytes(), vec![b'A'; 40].as_slice());
        let c = Command::from_args(["get", "k"]);
        assert_eq!(&*c.name_upper(), b"GET");
    }
}
