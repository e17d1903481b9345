//! Merging the replies of commands split over shards (MGET, DEL, ...) and of fan-out commands
//! (DBSIZE, KEYS, INFO, ...) into the one reply the client expects.
//!
//! Pure: the parts are RESP bytes as the backends sent them, the result is the RESP bytes the
//! client gets, or a [`MergeError`] when the parts cannot be merged (the proxy encodes it). A part
//! that is an error reply answers the whole command, except where a [`MergeKind`] says otherwise.

pub mod info;

use bytes::{Bytes, BytesMut};
use codec::resp::{Frame, FrameDecoder, Limits, RespVersion};
use thiserror::Error;

/// Why the parts of a command could not be merged (the shards answered something else than the
/// command's reply type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MergeError {
    /// No part to merge (a fan-out over no shard).
    #[error("no shard")]
    NoShard,
    /// A part that should be an integer is not.
    #[error("proxy expected integer replies from the shards")]
    ExpectedIntegers,
    /// A part that should be an array is not.
    #[error("proxy expected array replies from the shards")]
    ExpectedArrays,
    /// The reply to SCAN is not an array.
    #[error("proxy expected an array reply to SCAN")]
    ScanNotArray,
    /// The reply to SCAN is an array, but not of the cursor and the keys.
    #[error("proxy expected a two-element reply to SCAN")]
    ScanNotPair,
}

/// How the parts of one command become its reply.
#[derive(Debug, Clone)]
pub enum MergeKind {
    /// MGET: part `p` answers the keys at `positions[p]` of the original command.
    Gather {
        /// Original key positions (0-based among the keys) per part.
        positions: Vec<Vec<u32>>,
        /// Number of keys in the original command.
        total: usize,
    },
    /// DEL, EXISTS, DBSIZE, ...: the sum of integer replies.
    Sum,
    /// MSET, FLUSHALL, ...: the first error, else the first part's reply.
    AllOk,
    /// KEYS: the concatenation of array replies.
    Concat,
    /// SCRIPT EXISTS: element-wise AND of integer arrays.
    And,
    /// WAIT: the smallest integer.
    Min,
    /// RANDOMKEY: a non-null reply picked at random (a random shard that has keys): the one at
    /// `pick` modulo their number, `pick` drawn at random by the caller.
    FirstNonNull {
        /// A random number choosing among the shards that answered a non-null reply.
        pick: u64,
    },
    /// SCRIPT KILL: the first success; an error only when every part failed.
    AnySuccess,
    /// INFO: one INFO merged from every shard's (counters summed), with a `# Shards` section of
    /// per-shard detail when the default sections were asked for.
    Info {
        /// Shard (name, address), by part.
        names: Vec<(String, String)>,
        /// Text the proxy puts first (empty when only named sections were asked for).
        head: String,
    },
    /// SCAN on one shard: the returned cursor is re-encoded with the shard index.
    Scan {
        /// Index of the shard scanned.
        shard: u64,
        /// Number of shards.
        shards: u64,
    },
}

/// An in-progress merge.
#[derive(Debug)]
pub struct Merge {
    kind: MergeKind,
    parts: Vec<Option<Bytes>>,
    left: usize,
}

impl Merge {
    /// Awaits `parts` parts.
    pub fn new(kind: MergeKind, parts: usize) -> Self {
        Self {
            kind,
            parts: vec![None; parts],
            left: parts,
        }
    }

    /// Records a part; returns the merged reply once every part arrived.
    pub fn add(
        &mut self,
        part: u32,
        data: &[u8],
        version: RespVersion,
    ) -> Option<Result<Bytes, MergeError>> {
        let slot = self.parts.get_mut(part as usize)?;
        if slot.is_none() {
            *slot = Some(Bytes::copy_from_slice(data));
            self.left -= 1;
        }
        if self.left > 0 {
            return None;
        }
        let parts: Vec<Bytes> = self.parts.iter_mut().filter_map(Option::take).collect();
        Some(finish(&self.kind, parts, version))
    }
}

fn parse(b: &Bytes) -> Frame {
    let mut buf = BytesMut::from(&b[..]);
    match FrameDecoder::new(Limits::default()).decode(&mut buf) {
        Ok(Some(f)) => f,
        _ => Frame::Error(Bytes::from_static(
            b"ERR proxy could not parse a backend reply",
        )),
    }
}

fn elements(f: Frame) -> Option<Vec<Frame>> {
    match f {
        Frame::Array(v) | Frame::Set(v) => Some(v),
        Frame::NullArray | Frame::Null => Some(Vec::new()),
        _ => None,
    }
}

/// Builds the merged reply from every part (in part order).
pub fn finish(
    kind: &MergeKind,
    parts: Vec<Bytes>,
    version: RespVersion,
) -> Result<Bytes, MergeError> {
    // A part that is an error (e.g. its shard is down) answers the whole command, except for
    // kinds that document another rule.
    if let MergeKind::AnySuccess = kind {
        return parts
            .iter()
            .find(|p| !matches!(p.first(), Some(b'-' | b'!')))
            .or(parts.first())
            .cloned()
            .ok_or(MergeError::NoShard);
    }
    if !matches!(kind, MergeKind::Info { .. })
        && let Some(e) = parts
            .iter()
            .find(|p| matches!(p.first(), Some(b'-' | b'!')))
    {
        return Ok(e.clone());
    }
    let mut out = BytesMut::new();
    match kind {
        MergeKind::AnySuccess | MergeKind::AllOk => {
            return parts.into_iter().next().ok_or(MergeError::NoShard);
        }
        MergeKind::Sum => {
            let mut sum = 0i64;
            for p in &parts {
                match parse(p) {
                    Frame::Integer(n) => sum = sum.saturating_add(n),
                    _ => return Err(MergeError::ExpectedIntegers),
                }
            }
            codec::resp::write_integer(&mut out, sum);
        }
        MergeKind::Min => {
            let mut min: Option<i64> = None;
            for p in &parts {
                match parse(p) {
                    Frame::Integer(n) => min = Some(min.map_or(n, |m| m.min(n))),
                    _ => return Err(MergeError::ExpectedIntegers),
                }
            }
            codec::resp::write_integer(&mut out, min.unwrap_or(0));
        }
        MergeKind::Gather { positions, total } => {
            let mut all: Vec<Frame> = vec![Frame::NullBulk; *total];
            for (p, data) in parts.iter().enumerate() {
                let Some(items) = elements(parse(data)) else {
                    return Err(MergeError::ExpectedArrays);
                };
                let Some(pos) = positions.get(p) else {
                    continue;
                };
                for (item, &at) in items.into_iter().zip(pos) {
                    if let Some(slot) = all.get_mut(at as usize) {
                        *slot = item;
                    }
                }
            }
            Frame::Array(all).encode(&mut out);
        }
        MergeKind::Concat => {
            let mut all = Vec::new();
            let mut set = false;
            for p in &parts {
                let f = parse(p);
                set |= matches!(f, Frame::Set(_));
                match elements(f) {
                    Some(items) => all.extend(items),
                    None => return Err(MergeError::ExpectedArrays),
                }
            }
            if set {
                Frame::Set(all)
            } else {
                Frame::Array(all)
            }
            .encode(&mut out);
        }
        MergeKind::And => {
            let mut acc: Option<Vec<i64>> = None;
            for p in &parts {
                let Some(items) = elements(parse(p)) else {
                    return Err(MergeError::ExpectedArrays);
                };
                let v: Vec<i64> = items
                    .iter()
                    .map(|f| match f {
                        Frame::Integer(n) => *n,
                        _ => 0,
                    })
                    .collect();
                acc = Some(match acc {
                    None => v,
                    Some(a) => a
                        .iter()
                        .zip(&v)
                        .map(|(x, y)| i64::from(*x != 0 && *y != 0))
                        .collect(),
                });
            }
            Frame::Array(
                acc.unwrap_or_default()
                    .into_iter()
                    .map(Frame::Integer)
                    .collect(),
            )
            .encode(&mut out);
        }
        MergeKind::FirstNonNull { pick } => {
            let with_keys: Vec<&Bytes> = parts.iter().filter(|p| !parse(p).is_null()).collect();
            if with_keys.is_empty() {
                return parts.into_iter().next().ok_or(MergeError::NoShard);
            }
            let at = (*pick % with_keys.len() as u64) as usize;
            return with_keys
                .get(at)
                .map(|b| (*b).clone())
                .ok_or(MergeError::NoShard);
        }
        MergeKind::Info { names, head } => {
            let texts: Vec<Result<String, String>> = parts
                .iter()
                .map(|p| match parse(p) {
                    Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
                    f => Ok(f
                        .as_bytes()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()),
                })
                .collect();
            let text = info::merge_info(head, names, &texts);
            match version {
                RespVersion::Resp2 => codec::resp::write_bulk(&mut out, text.as_bytes()),
                RespVersion::Resp3 => Frame::Verbatim {
                    format: *b"txt",
                    text: Bytes::from(text),
                }
                .encode(&mut out),
            }
        }
        MergeKind::Scan { shard, shards } => {
            let Some(p) = parts.first() else {
                return Err(MergeError::NoShard);
            };
            let Some(mut items) = elements(parse(p)) else {
                return Err(MergeError::ScanNotArray);
            };
            if items.len() != 2 {
                return Err(MergeError::ScanNotPair);
            }
            let cursor = items
                .first()
                .and_then(Frame::as_bytes)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            let next = if cursor == 0 {
                if shard + 1 < *shards { shard + 1 } else { 0 }
            } else {
                cursor.saturating_mul(*shards).saturating_add(*shard)
            };
            items[0] = Frame::bulk(next.to_string()); // ok: length checked above
            Frame::Array(items).encode(&mut out);
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn gather_restores_key_order() {
        let kind = MergeKind::Gather {
            positions: vec![vec![0, 2], vec![1]],
            total: 3,
        };
        let got = finish(
            &kind,
            vec![b(b"*2\r\n$1\r\na\r\n$-1\r\n"), b(b"*1\r\n$1\r\nb\r\n")],
            RespVersion::Resp2,
        )
        .expect("merged");
        assert_eq!(&got[..], b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n");
    }

    #[test]
    fn sum_and_errors() {
        let got = finish(
            &MergeKind::Sum,
            vec![b(b":2\r\n"), b(b":3\r\n")],
            RespVersion::Resp2,
        )
        .expect("merged");
        assert_eq!(&got[..], b":5\r\n");
        let got = finish(
            &MergeKind::Sum,
            vec![b(b":2\r\n"), b(b"-ERR down\r\n")],
            RespVersion::Resp2,
        )
        .expect("merged");
        assert_eq!(&got[..], b"-ERR down\r\n");
    }

    #[test]
    fn scan_cursor_moves_to_next_shard() {
        let kind = MergeKind::Scan {
            shard: 0,
            shards: 3,
        };
        let got = finish(
            &kind,
            vec![b(b"*2\r\n$1\r\n0\r\n*0\r\n")],
            RespVersion::Resp2,
        )
        .expect("merged");
        assert_eq!(&got[..], b"*2\r\n$1\r\n1\r\n*0\r\n");
        let kind = MergeKind::Scan {
            shard: 1,
            shards: 3,
        };
        let got = finish(
            &kind,
            vec![b(b"*2\r\n$2\r\n10\r\n*0\r\n")],
            RespVersion::Resp2,
        )
        .expect("merged");
        assert_eq!(&got[..], b"*2\r\n$2\r\n31\r\n*0\r\n");
    }

    #[test]
    fn min_and_elementwise_and() {
        let got = finish(
            &MergeKind::Min,
            vec![b(b":2\r\n"), b(b":1\r\n"), b(b":3\r\n")],
            RespVersion::Resp2,
        );
        assert_eq!(got.as_deref(), Ok(&b":1\r\n"[..]));
        let got = finish(
            &MergeKind::And,
            vec![b(b"*2\r\n:1\r\n:1\r\n"), b(b"*2\r\n:0\r\n:1\r\n")],
            RespVersion::Resp2,
        );
        assert_eq!(got.as_deref(), Ok(&b"*2\r\n:0\r\n:1\r\n"[..]));
    }

    #[test]
    fn concat_keeps_a_resp3_set() {
        let got = finish(
            &MergeKind::Concat,
            vec![b(b"~1\r\n$1\r\na\r\n"), b(b"*1\r\n$1\r\nb\r\n")],
            RespVersion::Resp3,
        );
        assert_eq!(got.as_deref(), Ok(&b"~2\r\n$1\r\na\r\n$1\r\nb\r\n"[..]));
    }

    #[test]
    fn wrong_reply_types_are_merge_errors() {
        let got = finish(
            &MergeKind::Sum,
            vec![b(b":2\r\n"), b(b"+OK\r\n")],
            RespVersion::Resp2,
        );
        assert_eq!(got, Err(MergeError::ExpectedIntegers));
        let got = finish(&MergeKind::Concat, vec![b(b":1\r\n")], RespVersion::Resp2);
        assert_eq!(got, Err(MergeError::ExpectedArrays));
        let scan = MergeKind::Scan {
            shard: 0,
            shards: 2,
        };
        let got = finish(&scan, vec![b(b"*1\r\n:1\r\n")], RespVersion::Resp2);
        assert_eq!(got, Err(MergeError::ScanNotPair));
        let got = finish(&scan, vec![b(b":1\r\n")], RespVersion::Resp2);
        assert_eq!(got, Err(MergeError::ScanNotArray));
        assert_eq!(
            finish(&MergeKind::AllOk, Vec::new(), RespVersion::Resp2),
            Err(MergeError::NoShard)
        );
    }

    #[test]
    fn any_success_answers_an_error_only_when_every_part_failed() {
        let got = finish(
            &MergeKind::AnySuccess,
            vec![b(b"-ERR a\r\n"), b(b"+OK\r\n")],
            RespVersion::Resp2,
        );
        assert_eq!(got.as_deref(), Ok(&b"+OK\r\n"[..]));
        let got = finish(
            &MergeKind::AnySuccess,
            vec![b(b"-ERR a\r\n"), b(b"-ERR b\r\n")],
            RespVersion::Resp2,
        );
        assert_eq!(got.as_deref(), Ok(&b"-ERR a\r\n"[..]));
    }

    #[test]
    fn first_non_null_picks_among_the_shards_with_keys() {
        let parts = || vec![b(b"$-1\r\n"), b(b"$1\r\na\r\n"), b(b"$1\r\nb\r\n")];
        for (pick, want) in [
            (0, &b"$1\r\na\r\n"[..]),
            (1, b"$1\r\nb\r\n"),
            (2, b"$1\r\na\r\n"),
        ] {
            let got = finish(
                &MergeKind::FirstNonNull { pick },
                parts(),
                RespVersion::Resp2,
            );
            assert_eq!(got.as_deref(), Ok(want), "pick {pick}");
        }
        let got = finish(
            &MergeKind::FirstNonNull { pick: 7 },
            vec![b(b"$-1\r\n"), b(b"$-1\r\n")],
            RespVersion::Resp2,
        );
        assert_eq!(got.as_deref(), Ok(&b"$-1\r\n"[..]));
    }

    #[test]
    fn merge_waits_for_every_part_once() {
        let mut m = Merge::new(MergeKind::Sum, 2);
        assert_eq!(m.add(1, b":2\r\n", RespVersion::Resp2), None);
        assert_eq!(m.add(1, b":9\r\n", RespVersion::Resp2), None);
        assert_eq!(m.add(5, b":9\r\n", RespVersion::Resp2), None);
        let got = m.add(0, b":3\r\n", RespVersion::Resp2);
        assert_eq!(got, Some(Ok(Bytes::from_static(b":5\r\n"))));
    }
}
