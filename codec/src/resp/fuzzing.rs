//! Decoder entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/resp_*.rs`) and the
//! corpus replay test. Each takes arbitrary bytes, must never panic, and returns `Err` with a
//! description when an invariant is violated (the fuzz target turns that into a crash).

use bytes::BytesMut;

use super::{CommandDecoder, FrameDecoder, Limits, ReplyScanner};

/// A violated invariant.
pub type Violation = String;

/// Small caps, so that fuzzing reaches the limit checks.
fn small_limits() -> Limits {
    Limits {
        max_bulk_len: 256,
        max_array_len: 32,
        max_depth: 8,
        max_inline_len: 256,
        max_command_len: 1024,
    }
}

/// Feeds `data` in two reads split at `cut`, collecting what `step` yields until it stops.
fn two_reads<T, E>(
    data: &[u8],
    cut: usize,
    mut step: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
) -> (Vec<T>, bool) {
    let cut = cut.min(data.len());
    let mut buf = BytesMut::from(data.get(..cut).unwrap_or_default());
    let mut out = Vec::new();
    for tail in [data.get(cut..).unwrap_or_default(), &[]] {
        loop {
            match step(&mut buf) {
                Ok(Some(t)) => out.push(t),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        buf.extend_from_slice(tail);
    }
    (out, false)
}

/// Client commands: each decoded command re-decodes from its own bytes to itself, and feeding the
/// input in two reads gives the same commands as one read.
pub fn command(data: &[u8]) -> Result<(), Violation> {
    let cut = data.first().map_or(0, |&b| usize::from(b));
    for limits in [Limits::default(), small_limits()] {
        let mut d = CommandDecoder::new(limits);
        let (whole, whole_err) = two_reads(data, data.len(), |b| d.decode(b));
        let mut d = CommandDecoder::new(limits);
        let (split, split_err) = two_reads(data, cut, |b| d.decode(b));
        if whole != split || whole_err != split_err {
            return Err(format!("split at {cut} differs: {whole:?} vs {split:?}"));
        }
        for cmd in &whole {
            if cmd.is_empty() {
                return Err("empty command".into());
            }
            let mut again = BytesMut::from(cmd.raw().as_ref());
            match CommandDecoder::new(limits).decode(&mut again) {
                Ok(Some(c)) if c == *cmd && again.is_empty() => {}
                other => return Err(format!("{cmd:?} re-decodes to {other:?}")),
            }
        }
    }
    Ok(())
}

/// Reply scanner: frame lengths are the same whether the input arrives in one read or two, and
/// agree with the frame decoder.
pub fn reply_scanner(data: &[u8]) -> Result<(), Violation> {
    let cut = data.first().map_or(0, |&b| usize::from(b));
    for limits in [Limits::default(), small_limits()] {
        let mut s = ReplyScanner::new(limits);
        let scan = |s: &mut ReplyScanner, b: &mut BytesMut| {
            s.scan(b).map(|n| n.map(|n| b.split_to(n).len()))
        };
        let (whole, whole_err) = two_reads(data, data.len(), |b| scan(&mut s, b));
        let mut s = ReplyScanner::new(limits);
        let (split, split_err) = two_reads(data, cut, |b| scan(&mut s, b));
        if whole != split || whole_err != split_err {
            return Err(format!("split at {cut} differs: {whole:?} vs {split:?}"));
        }
        let mut d = FrameDecoder::new(limits);
        let (frames, _) = two_reads(data, data.len(), |b| d.decode(b));
        let lens: Vec<usize> = frames.iter().map(|f| f.to_bytes().len()).collect();
        if lens != whole {
            return Err(format!(
                "scanner lengths {whole:?} vs frame lengths {lens:?}"
            ));
        }
    }
    Ok(())
}

/// Frames: every decoded frame encodes back to exactly the bytes it was decoded from.
pub fn frame(data: &[u8]) -> Result<(), Violation> {
    for limits in [Limits::default(), small_limits()] {
        let mut d = FrameDecoder::new(limits);
        let (frames, _) = two_reads(data, data.len(), |b| d.decode(b));
        let mut out = BytesMut::new();
        for f in &frames {
            f.encode(&mut out);
        }
        if data.get(..out.len()) != Some(&out[..]) {
            return Err(format!("re-encoding {frames:?} gives {out:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_accept_valid_and_invalid_input() {
        for input in [
            &b""[..],
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n",
            b"%1\r\n+a\r\n|1\r\n+b\r\n:1\r\n,1.5\r\n",
            b"\x05*1\r\n$x",
        ] {
            assert_eq!(command(input), Ok(()));
            assert_eq!(reply_scanner(input), Ok(()));
            assert_eq!(frame(input), Ok(()));
        }
    }
}
