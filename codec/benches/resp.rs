//! RESP decoding benches: pipelined client commands, large bulk strings, reply scanning; each
//! against the `redis-protocol` crate on the same input.

use std::hint::black_box;

use bytes::BytesMut;
use codec::resp::{Command, CommandDecoder, Frame, FrameDecoder, ReplyScanner};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// `n` small pipelined commands, as a benchmark tool sends them (GET/SET/INCR/HGET mix).
fn pipelined_commands(n: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..n {
        let key = format!("key:{:012}", i);
        let cmd = match i % 4 {
            0 => Command::from_args(["GET", key.as_str()]),
            1 => Command::from_args(["SET", key.as_str(), "value-0123456789"]),
            2 => Command::from_args(["INCR", key.as_str()]),
            _ => Command::from_args(["HGET", key.as_str(), "field"]),
        };
        wire.extend_from_slice(cmd.raw());
    }
    wire
}

/// `n` typical replies: status, integers, bulk strings, nulls, small arrays.
fn replies(n: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for i in 0..n {
        let f = match i % 5 {
            0 => Frame::Simple("OK".into()),
            1 => Frame::Integer(i as i64),
            2 => Frame::bulk(format!("value-{i:016}")),
            3 => Frame::NullBulk,
            _ => Frame::Array(vec![Frame::bulk("a"), Frame::bulk("bb"), Frame::Integer(3)]),
        };
        f.encode(&mut buf);
    }
    buf.to_vec()
}

fn bench_commands(c: &mut Criterion) {
    const N: usize = 10_000;
    let wire = pipelined_commands(N);
    let mut g = c.benchmark_group("pipelined_commands");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("furrow", |b| {
        b.iter_batched_ref(
            || BytesMut::from(wire.as_slice()),
            |buf| {
                let mut d = CommandDecoder::default();
                let mut n = 0;
                while let Ok(Some(cmd)) = d.decode(buf) {
                    n += cmd.len();
                    black_box(&cmd);
                }
                n
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("redis-protocol", |b| {
        b.iter_batched_ref(
            || BytesMut::from(wire.as_slice()),
            |buf| {
                let mut n = 0;
                while let Ok(Some((frame, _, _))) =
                    redis_protocol::resp2::decode::decode_bytes_mut(buf)
                {
                    n += 1;
                    black_box(&frame);
                }
                n
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("boundary_scan_only", |b| {
        // The floor: find each command's end with the reply scanner, no argument views.
        b.iter(|| {
            let mut s = ReplyScanner::default();
            let mut pos = 0;
            while let Ok(Some(len)) = s.scan(&wire[pos..]) {
                pos += len;
            }
            black_box(pos)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("pipelined_commands_bytes");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("furrow", |b| {
        b.iter_batched_ref(
            || BytesMut::from(wire.as_slice()),
            |buf| {
                let mut d = CommandDecoder::default();
                while let Ok(Some(cmd)) = d.decode(buf) {
                    black_box(&cmd);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// An empty buffer of `cap` bytes whose pages are already mapped, so that page faults of a
/// fresh allocation are not timed.
fn prefaulted(cap: usize) -> BytesMut {
    let mut b = BytesMut::zeroed(cap);
    b.clear();
    b
}

fn bench_large_bulk(c: &mut Criterion) {
    const SIZE: usize = 4 * 1024 * 1024;
    let value = vec![b'x'; SIZE];
    let cmd = Command::from_args([&b"SET"[..], b"big", &value]);
    let wire = cmd.raw().to_vec();
    let mut g = c.benchmark_group("large_bulk_4MiB");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("furrow_one_read", |b| {
        b.iter_batched_ref(
            || BytesMut::from(wire.as_slice()),
            |buf| {
                CommandDecoder::default()
                    .decode(buf)
                    .ok()
                    .flatten()
                    .map(|c| c.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("furrow_16KiB_reads", |b| {
        // Bytes arrive 16 KiB at a time; the decoder is called after each read.
        b.iter_batched_ref(
            || prefaulted(wire.len()),
            |buf| {
                let mut d = CommandDecoder::default();
                let mut got = None;
                for chunk in wire.chunks(16 * 1024) {
                    buf.extend_from_slice(chunk);
                    if let Ok(Some(c)) = d.decode(buf) {
                        got = Some(c.len());
                    }
                }
                got
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("redis-protocol_16KiB_reads", |b| {
        b.iter_batched_ref(
            || prefaulted(wire.len()),
            |buf| {
                let mut got = None;
                for chunk in wire.chunks(16 * 1024) {
                    buf.extend_from_slice(chunk);
                    if let Ok(Some((f, _, _))) =
                        redis_protocol::resp2::decode::decode_bytes_mut(buf)
                    {
                        got = Some(f);
                    }
                }
                got
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_replies(c: &mut Criterion) {
    const N: usize = 10_000;
    let wire = replies(N);
    let mut g = c.benchmark_group("replies");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("furrow_scan", |b| {
        b.iter(|| {
            let mut s = ReplyScanner::default();
            let mut pos = 0;
            while let Ok(Some(len)) = s.scan(&wire[pos..]) {
                pos += len;
            }
            black_box(pos)
        })
    });
    g.bench_function("furrow_frames", |b| {
        b.iter_batched_ref(
            || BytesMut::from(wire.as_slice()),
            |buf| {
                let mut d = FrameDecoder::default();
                while let Ok(Some(f)) = d.decode(buf) {
                    black_box(&f);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("redis-protocol_frames", |b| {
        b.iter_batched_ref(
            || BytesMut::from(wire.as_slice()),
            |buf| {
                while let Ok(Some((f, _, _))) = redis_protocol::resp2::decode::decode_bytes_mut(buf)
                {
                    black_box(&f);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_commands, bench_large_bulk, bench_replies);
criterion_main!(benches);
