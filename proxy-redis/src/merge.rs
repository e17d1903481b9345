//! Merging the replies of commands split over shards (MGET, DEL, ...) and of fan-out commands
//! (DBSIZE, KEYS, INFO, ...) into the one reply the client expects.

use bytes::{Bytes, BytesMut};
use codec::resp::{Frame, FrameDecoder, Limits, RespVersion};

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
    /// RANDOMKEY: a non-null reply picked at random (a random shard that has keys).
    FirstNonNull,
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
    pub fn add(&mut self, part: u32, data: &[u8], version: RespVersion) -> Option<Bytes> {
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

fn err(msg: &str) -> Bytes {
    let mut b = BytesMut::new();
    codec::resp::write_error(&mut b, msg.as_bytes());
    b.freeze()
}

fn elements(f: Frame) -> Option<Vec<Frame>> {
    match f {
        Frame::Array(v) | Frame::Set(v) => Some(v),
        Frame::NullArray | Frame::Null => Some(Vec::new()),
        _ => None,
    }
}

/// Builds the merged reply from every part (in part order).
pub fn finish(kind: &MergeKind, parts: Vec<Bytes>, version: RespVersion) -> Bytes {
    // A part that is an error (e.g. its shard is down) answers the whole command, except for
    // kinds that document another rule.
    if let MergeKind::AnySuccess = kind {
        return parts
            .iter()
            .find(|p| !matches!(p.first(), Some(b'-' | b'!')))
            .or(parts.first())
            .cloned()
            .unwrap_or_else(|| err("ERR no shard"));
    }
    if !matches!(kind, MergeKind::Info { .. })
        && let Some(e) = parts
            .iter()
            .find(|p| matches!(p.first(), Some(b'-' | b'!')))
    {
        return e.clone();
    }
    let mut out = BytesMut::new();
    match kind {
        MergeKind::AnySuccess | MergeKind::AllOk => {
            return parts
                .into_iter()
                .next()
                .unwrap_or_else(|| err("ERR no shard"));
        }
        MergeKind::Sum => {
            let mut sum = 0i64;
            for p in &parts {
                match parse(p) {
                    Frame::Integer(n) => sum = sum.saturating_add(n),
                    _ => return err("ERR proxy expected integer replies from the shards"),
                }
            }
            codec::resp::write_integer(&mut out, sum);
        }
        MergeKind::Min => {
            let mut min: Option<i64> = None;
            for p in &parts {
                match parse(p) {
                    Frame::Integer(n) => min = Some(min.map_or(n, |m| m.min(n))),
                    _ => return err("ERR proxy expected integer replies from the shards"),
                }
            }
            codec::resp::write_integer(&mut out, min.unwrap_or(0));
        }
        MergeKind::Gather { positions, total } => {
            let mut all: Vec<Frame> = vec![Frame::NullBulk; *total];
            for (p, data) in parts.iter().enumerate() {
                let Some(items) = elements(parse(data)) else {
                    return err("ERR proxy expected array replies from the shards");
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
                    None => return err("ERR proxy expected array replies from the shards"),
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
                    return err("ERR proxy expected array replies from the shards");
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
        MergeKind::FirstNonNull => {
            let with_keys: Vec<&Bytes> = parts.iter().filter(|p| !parse(p).is_null()).collect();
            if with_keys.is_empty() {
                return parts
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| err("ERR no shard"));
            }
            let pick = random_below(with_keys.len());
            return with_keys
                .get(pick)
                .map(|b| (*b).clone())
                .unwrap_or_else(|| err("ERR no shard"));
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
            let text = crate::info::merge(head, names, &texts);
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
                return err("ERR no shard");
            };
            let Some(mut items) = elements(parse(p)) else {
                return err("ERR proxy expected an array reply to SCAN");
            };
            if items.len() != 2 {
                return err("ERR proxy expected a two-element reply to SCAN");
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
    out.freeze()
}

/// A number in `0..n` (not for cryptography: spreads RANDOMKEY over the shards).
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    if n <= 1 {
        return 0;
    }
    // RandomState is seeded per instance from the OS and a per-thread counter.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() % n as u64) as usize
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
        );
        assert_eq!(&got[..], b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n");
    }

    #[test]
    fn sum_and_errors() {
        let got = finish(
            &MergeKind::Sum,
            vec![b(b":2\r\n"), b(b":3\r\n")],
            RespVersion::Resp2,
        );
        assert_eq!(&got[..], b":5\r\n");
        let got = finish(
            &MergeKind::Sum,
            vec![b(b":2\r\n"), b(b"-ERR down\r\n")],
            RespVersion::Resp2,
        );
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
        );
        assert_eq!(&got[..], b"*2\r\n$1\r\n1\r\n*0\r\n");
        let kind = MergeKind::Scan {
            shard: 1,
            shards: 3,
        };
        let got = finish(
            &kind,
            vec![b(b"*2\r\n$2\r\n10\r\n*0\r\n")],
            RespVersion::Resp2,
        );
        assert_eq!(&got[..], b"*2\r\n$2\r\n31\r\n*0\r\n");
    }
}
