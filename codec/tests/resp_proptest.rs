//! Property tests: encode∘decode is the identity for every frame type, splitting a stream
//! anywhere decodes the same frames, and arbitrary bytes never panic a decoder.

use bytes::{Bytes, BytesMut};
use codec::resp::{Command, CommandDecoder, Frame, FrameDecoder, Limits, ReplyScanner};
use proptest::collection::vec;
use proptest::prelude::*;

fn line_text() -> impl Strategy<Value = Bytes> {
    vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..12,
    )
    .prop_map(Bytes::from)
}

fn blob() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        blob().prop_map(Frame::Bulk),
        Just(Frame::NullBulk),
        Just(Frame::NullArray),
        Just(Frame::Null),
        any::<f64>().prop_map(Frame::double),
        (any::<bool>(), vec(b'0'..=b'9', 1..40)).prop_map(|(neg, mut d)| {
            if neg {
                d.insert(0, b'-');
            }
            Frame::BigNumber(Bytes::from(d))
        }),
        any::<bool>().prop_map(Frame::Boolean),
        (any::<[u8; 3]>(), blob()).prop_map(|(format, text)| Frame::Verbatim { format, text }),
        blob().prop_map(Frame::BlobError),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        let pairs = vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Frame::Array),
            vec(inner.clone(), 0..6).prop_map(Frame::Set),
            vec(inner.clone(), 0..6).prop_map(Frame::Push),
            pairs.clone().prop_map(Frame::Map),
            (pairs, inner).prop_map(|(attributes, v)| Frame::Attribute {
                attributes,
                value: Box::new(v)
            }),
        ]
    })
}

fn decode_chunks(chunks: &[&[u8]]) -> Vec<Frame> {
    let mut d = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Some(f) = d.decode(&mut buf).unwrap() {
            out.push(f);
        }
    }
    assert!(buf.is_empty());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_identity(f in frame()) {
        let bytes = f.to_bytes();
        prop_assert_eq!(decode_chunks(&[&bytes]), vec![f]);
        prop_assert_eq!(ReplyScanner::default().scan(&bytes), Ok(Some(bytes.len())));
    }

    #[test]
    fn split_stream_decodes_the_same(frames in vec(frame(), 1..5), cuts in vec(any::<prop::sample::Index>(), 0..4)) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&wire[last..p]);
            last = p;
        }
        chunks.push(&wire[last..]);
        prop_assert_eq!(decode_chunks(&chunks), frames);
    }

    #[test]
    fn commands_round_trip(args in vec(vec(any::<u8>(), 0..20), 1..12), cut in any::<prop::sample::Index>()) {
        let cmd = Command::from_args(&args);
        let mut wire = BytesMut::new();
        wire.extend_from_slice(cmd.raw());
        wire.extend_from_slice(cmd.raw());
        let cut = cut.index(wire.len() + 1);
        let mut d = CommandDecoder::default();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(c) = d.decode(&mut buf).unwrap() {
            got.push(c);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(c) = d.decode(&mut buf).unwrap() {
            got.push(c);
        }
        prop_assert_eq!(got.len(), 2);
        for c in &got {
            prop_assert_eq!(c, &cmd);
            let decoded: Vec<&[u8]> = c.args().collect();
            let expected: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(prefix in prop::sample::select(vec![&b""[..], b"*", b"$", b"*2\r\n", b"%", b"|1\r\n"]), data in vec(any::<u8>(), 0..256)) {
        let mut input = prefix.to_vec();
        input.extend_from_slice(&data);
        let small = Limits { max_bulk_len: 64, max_array_len: 16, max_depth: 4, max_inline_len: 64, max_command_len: 200 };
        for limits in [Limits::default(), small] {
            let mut buf = BytesMut::from(input.as_slice());
            let mut d = CommandDecoder::new(limits);
            while let Ok(Some(c)) = d.decode(&mut buf) {
                prop_assert!(!c.is_empty());
            }
            let mut buf = BytesMut::from(input.as_slice());
            let mut d = FrameDecoder::new(limits);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
            let mut s = ReplyScanner::new(limits);
            let mut pos = 0;
            while let Ok(Some(n)) = s.scan(&input[pos..]) {
                prop_assert!(n > 0);
                pos += n;
            }
        }
    }
}
