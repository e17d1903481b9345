//! Golden replies recorded from a real redis-server 7.0 (see `fixtures/resp/record.py`): each
//! fixture decodes to frames that re-encode to the exact recorded bytes, in one read or split.

use std::path::PathBuf;

use bytes::BytesMut;
use codec::resp::{Frame, FrameDecoder, ReplyScanner};

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resp");
    let mut out = Vec::new();
    for proto in ["resp2", "resp3"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(proto))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        entries.sort();
        for p in entries {
            let name = format!("{proto}/{}", p.file_name().unwrap().to_string_lossy());
            out.push((name, std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::default();
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(f) = d.decode(&mut buf).unwrap() {
        frames.push(f);
    }
    assert!(buf.is_empty(), "trailing bytes");
    frames
}

#[test]
fn fixtures_round_trip_byte_for_byte() {
    let all = fixtures();
    assert!(all.len() >= 70, "only {} fixtures", all.len());
    for (name, bytes) in &all {
        let frames = decode_all(bytes);
        assert!(!frames.is_empty(), "{name}");
        let mut out = BytesMut::new();
        for f in &frames {
            f.encode(&mut out);
        }
        assert_eq!(out.as_ref(), bytes.as_slice(), "{name}");

        // The scanner finds the same frame boundaries.
        let mut s = ReplyScanner::default();
        let mut pos = 0;
        let mut n = 0;
        while pos < bytes.len() {
            let len = s.scan(&bytes[pos..]).unwrap().unwrap();
            pos += len;
            n += 1;
        }
        assert_eq!(n, frames.len(), "{name}");
    }
}

#[test]
fn fixtures_decode_when_split_anywhere() {
    for (name, bytes) in fixtures() {
        let whole = decode_all(&bytes);
        for cut in 1..bytes.len() {
            let mut d = FrameDecoder::default();
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut frames = Vec::new();
            while let Some(f) = d.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            assert_eq!(frames, whole, "{name} cut at {cut}");
        }
    }
}

#[test]
fn fixtures_have_the_expected_types() {
    let get = |name: &str| {
        let (_, bytes) = fixtures().into_iter().find(|(n, _)| n == name).unwrap();
        decode_all(&bytes)
    };
    assert!(matches!(&get("resp3/hello.bin")[0], Frame::Map(_)));
    assert!(matches!(&get("resp3/smembers.bin")[0], Frame::Set(s) if s.len() == 3));
    assert_eq!(get("resp3/zscore.bin")[0].as_f64(), Some(3.25));
    assert_eq!(get("resp3/debug_true.bin")[0], Frame::Boolean(true));
    assert_eq!(get("resp3/get_missing.bin")[0], Frame::Null);
    assert_eq!(get("resp2/get_missing.bin")[0], Frame::NullBulk);
    assert_eq!(get("resp2/blpop_timeout.bin")[0], Frame::NullArray);
    assert!(matches!(
        &get("resp3/debug_bignum.bin")[0],
        Frame::BigNumber(_)
    ));
    assert!(
        matches!(&get("resp3/client_info.bin")[0], Frame::Verbatim { format, .. } if format == b"txt")
    );
    assert!(matches!(
        &get("resp3/debug_attrib.bin")[0],
        Frame::Attribute { .. }
    ));
    assert!(matches!(&get("resp3/message.bin")[0], Frame::Push(p) if p.len() == 3));
    assert!(matches!(&get("resp3/invalidate.bin")[0], Frame::Push(_)));
    assert_eq!(get("resp3/subscribe.bin").len(), 2);
    assert!(get("resp2/wrongtype.bin")[0].is_error());
    assert_eq!(get("resp2/get_binary.bin")[0], Frame::bulk(b"\x00\r\n\xff"));
}
