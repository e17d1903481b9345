//! Row decoding throughput: text and binary protocol, raw cells and typed values.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::{column_flag, column_type as ty};
use codec::mysql::{
    BinaryRow, ColumnDefinition, Date, DateTime, PacketDecoder, TextRow, Value, encode_packet,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ROWS: usize = 1000;

/// An 8-column row shaped like a typical OLTP table.
fn columns() -> Vec<ColumnDefinition> {
    vec![
        ColumnDefinition::new(
            "id",
            ty::LONGLONG,
            63,
            20,
            column_flag::NOT_NULL | column_flag::PRI_KEY,
            0,
        ),
        ColumnDefinition::new("user_id", ty::LONG, 63, 11, column_flag::UNSIGNED, 0),
        ColumnDefinition::new("name", ty::VAR_STRING, 45, 400, 0, 0),
        ColumnDefinition::new("email", ty::VAR_STRING, 45, 400, 0, 0),
        ColumnDefinition::new("price", ty::NEWDECIMAL, 63, 12, 0, 2),
        ColumnDefinition::new("score", ty::DOUBLE, 63, 22, 0, 31),
        ColumnDefinition::new("created", ty::DATETIME, 63, 26, 0, 6),
        ColumnDefinition::new("note", ty::BLOB, 45, 65535, column_flag::BLOB, 0),
    ]
}

fn row(i: usize) -> Vec<Value> {
    vec![
        Value::Int(i as i64 * 7919),
        Value::UInt(i as u64 % 5000),
        Value::Bytes(Bytes::from(format!("user number {i}"))),
        Value::Bytes(Bytes::from(format!("user{i}@example.com"))),
        Value::Decimal(Bytes::from(format!("{}.{:02}", i * 3, i % 100))),
        if i.is_multiple_of(10) {
            Value::Null
        } else {
            Value::Double(i as f64 / 3.0)
        },
        Value::DateTime(DateTime {
            date: Date {
                year: 2024,
                month: (i % 12) as u8 + 1,
                day: (i % 28) as u8 + 1,
            },
            hour: (i % 24) as u8,
            minute: (i % 60) as u8,
            second: (i % 60) as u8,
            micro: (i * 37 % 1_000_000) as u32,
        }),
        Value::Bytes(Bytes::from_static(b"a short note about this row")),
    ]
}

fn payloads(binary: bool) -> Vec<Bytes> {
    let cols = columns();
    (0..ROWS)
        .map(|i| {
            let mut out = BytesMut::new();
            if binary {
                BinaryRow { values: row(i) }
                    .encode(&cols, &mut out)
                    .unwrap();
            } else {
                TextRow::encode_values(&row(i), &cols, &mut out).unwrap();
            }
            out.freeze()
        })
        .collect()
}

fn bench_rows(c: &mut Criterion) {
    let cols = columns();
    let text = payloads(false);
    let binary = payloads(true);
    let mut wire = BytesMut::new();
    for (i, p) in text.iter().enumerate() {
        encode_packet(i as u8, p, &mut wire);
    }
    let wire = wire.freeze();

    let mut g = c.benchmark_group("mysql_rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("text_cells", |b| {
        b.iter(|| {
            for p in &text {
                black_box(TextRow::decode(p.clone(), cols.len()).unwrap());
            }
        })
    });
    g.bench_function("text_typed", |b| {
        b.iter(|| {
            for p in &text {
                let row = TextRow::decode(p.clone(), cols.len()).unwrap();
                black_box(row.values(&cols).unwrap());
            }
        })
    });
    g.bench_function("text_framed_cells", |b| {
        let dec = PacketDecoder::default();
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                black_box(TextRow::decode(p.payload, cols.len()).unwrap());
            }
        })
    });
    g.bench_function("binary_typed", |b| {
        b.iter(|| {
            for p in &binary {
                black_box(BinaryRow::decode(p.clone(), &cols).unwrap());
            }
        })
    });
    g.bench_function("binary_encode", |b| {
        let rows: Vec<BinaryRow> = binary
            .iter()
            .map(|p| BinaryRow::decode(p.clone(), &cols).unwrap())
            .collect();
        let mut out = BytesMut::with_capacity(256 * ROWS);
        b.iter(|| {
            out.clear();
            for r in &rows {
                r.encode(&cols, &mut out).unwrap();
            }
            black_box(out.len());
        })
    });
    g.finish();
}

criterion_group!(benches, bench_rows);
criterion_main!(benches);
