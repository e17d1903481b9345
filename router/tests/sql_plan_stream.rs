//! The streaming executor (`router::sql::plan::stream`) over in-memory units: each unit's reply is
//! the packets a server would send, fed one at a time as the executor asks for them. Its output
//! must be byte for byte what the buffered path (`plan::execute` over the same rows, encoded with
//! the same functions) sends, and its ties, limits, errors and drain decisions are checked.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::{capability, charset, column_flag, column_type};
use codec::mysql::{
    ColumnDefinition, EofPacket, ErrPacket, OkPacket, PacketDecoder, TextRow, Value,
};
use router::sql::plan::exec::collect;
use router::sql::plan::stream::{encode_binary_row, encode_text_row};
use router::sql::plan::{
    CollationOf, Drain, ExecLimits, Output, Plan, PlanContext, ShardError, ShardResult,
    ShardRunner, StreamError, StreamExec, StreamOptions, Streamed, Unit, VecRows, Want, execute,
    plan,
};
use router::sql::shard::ShardingRules;

const STATUS: u16 = 2;

fn rules() -> ShardingRules {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sql/sharding.toml");
    let cfg = router::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    ShardingRules::compile(&cfg.sharding()[0]).unwrap_or_else(|e| panic!("{e}"))
}

fn plan_of(rules: &ShardingRules, sql: &str) -> Plan {
    let mut next = || 1;
    let mut cx = PlanContext {
        rules,
        params: &[],
        next_id: &mut next,
    };
    plan(sql, &mut cx).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn int_col(name: &str) -> ColumnDefinition {
    ColumnDefinition::new(
        name,
        column_type::LONGLONG,
        charset::BINARY,
        20,
        column_flag::BINARY,
        0,
    )
}

fn str_col(name: &str, collation: u16) -> ColumnDefinition {
    ColumnDefinition::new(name, column_type::VAR_STRING, collation, 80, 0, 0)
}

fn s(v: &str) -> Value {
    Value::Bytes(Bytes::copy_from_slice(v.as_bytes()))
}

fn collation_name(id: u16) -> &'static str {
    match id {
        45 => "utf8mb4_general_ci",
        46 => "utf8mb4_bin",
        _ => "binary",
    }
}

/// The scatter of a plan's merge or plain scatter.
fn scatter_of(p: &Plan) -> Option<&router::sql::plan::Scatter> {
    match p {
        Plan::Scatter(s) => Some(s),
        Plan::MergeSort(m) => Some(&m.input),
        _ => p.children().iter().find_map(|c| scatter_of(c)),
    }
}

/// Each unit's full result (the given columns and rows plus the `COLLATION(...)` helper columns
/// the plan asks for, answered with each described column's own collation).
struct Data {
    results: Vec<(Vec<ColumnDefinition>, Vec<Vec<Value>>)>,
}

impl Data {
    fn new(p: &Plan, cols: &[ColumnDefinition], rows: Vec<Vec<Vec<Value>>>) -> Self {
        let probes: Vec<CollationOf> = scatter_of(p)
            .map(|s| s.collations.clone())
            .unwrap_or_default();
        let width = cols.len() + probes.len();
        let mut full = cols.to_vec();
        let names: Vec<Value> = probes
            .iter()
            .map(|pr| {
                let id = cols.get(pr.index(width)).map_or(63, |d| d.charset);
                s(collation_name(id))
            })
            .collect();
        for _ in &probes {
            full.push(str_col("COLLATION(x)", 45));
        }
        let results = rows
            .into_iter()
            .map(|unit| {
                let rows = unit
                    .into_iter()
                    .map(|r| r.into_iter().chain(names.iter().cloned()).collect())
                    .collect();
                (full.clone(), rows)
            })
            .collect();
        Data { results }
    }

    /// Unit `i`'s reply as a server sends it (text protocol, EOF packets).
    fn reply(&self, i: usize) -> VecDeque<Bytes> {
        let (cols, rows) = &self.results[i];
        let mut out = VecDeque::new();
        let mut p = BytesMut::new();
        codec::mysql::resultset::encode_column_count(cols.len() as u64, &mut p);
        out.push_back(p.split().freeze());
        for c in cols {
            c.encode(&mut p);
            out.push_back(p.split().freeze());
        }
        out.push_back(eof(STATUS | 0x20));
        for r in rows {
            encode_text_row(r, cols, &mut p).unwrap();
            out.push_back(p.split().freeze());
        }
        out.push_back(eof(STATUS | 0x20));
        out
    }
}

fn eof(status: u16) -> Bytes {
    let mut p = BytesMut::new();
    EofPacket {
        warnings: 0,
        status,
    }
    .encode(&mut p);
    p.freeze()
}

fn err_packet(code: u16, msg: &str) -> Bytes {
    let mut p = BytesMut::new();
    ErrPacket::new(code, "HY000", msg).encode(&mut p);
    p.freeze()
}

fn opts(binary: bool) -> StreamOptions {
    StreamOptions {
        binary,
        status: STATUS,
        backend_caps: capability::DEFAULT_CLIENT & !capability::CLIENT_DEPRECATE_EOF,
        limits: ExecLimits { max_rows: 100 },
        drain_rows: 1000,
    }
}

/// What a streamed run produced.
struct Run {
    /// The client's packets (sequence ids checked: 1, 2, ...).
    packets: Vec<Bytes>,
    error: Option<StreamError>,
    /// The units in the order their packets were read.
    reads: Vec<usize>,
    drains: Vec<Drain>,
}

/// Splits framed packets, checking the sequence ids count up from 1.
fn unframe(mut out: BytesMut) -> Vec<Bytes> {
    let d = PacketDecoder::new(1 << 24);
    let mut packets = Vec::new();
    let mut seq = 1u8;
    while let Some(p) = d.decode(&mut out).unwrap() {
        assert_eq!(p.seq, seq, "sequence id of packet {}", packets.len());
        seq = seq.wrapping_add(1);
        packets.push(p.payload);
    }
    assert!(out.is_empty());
    packets
}

fn stream(shape: Streamed<'_>, binary: bool, mut replies: Vec<VecDeque<Bytes>>) -> Run {
    let mut exec = StreamExec::new(shape, opts(binary));
    let mut out = BytesMut::new();
    let mut reads = Vec::new();
    loop {
        match exec.step(&mut out) {
            Want::Done => break,
            Want::Read(u) => {
                reads.push(u);
                match replies.get_mut(u).and_then(VecDeque::pop_front) {
                    Some(p) => exec.feed(u, p),
                    None => exec.lost(u, "connection closed"),
                }
            }
        }
        assert!(reads.len() < 100_000, "the executor does not end");
    }
    let drains = (0..exec.unit_count()).map(|u| exec.drain(u)).collect();
    let seq = exec.seq();
    let error = exec.take_error();
    let packets = unframe(out);
    assert_eq!(usize::from(seq) - 1, packets.len());
    Run {
        packets,
        error,
        reads,
        drains,
    }
}

/// Hands each unit its rows (by SQL text).
struct Canned(HashMap<String, (Vec<ColumnDefinition>, Vec<Vec<Value>>)>);

impl ShardRunner for Canned {
    fn run(&mut self, unit: &Unit) -> Result<ShardResult, ShardError> {
        let (c, r) = self.0.get(&unit.sql).cloned().unwrap_or_default();
        Ok(ShardResult::Rows(Box::new(VecRows::new(c, r))))
    }
    fn next_id(&mut self) -> u64 {
        1
    }
}

/// The buffered path's reply for the same plan and rows: what the streamed one must equal.
fn buffered(p: &Plan, units: &[Unit], data: &Data, binary: bool) -> Vec<Bytes> {
    let mut canned = Canned(HashMap::new());
    for (u, r) in units.iter().zip(&data.results) {
        canned.0.insert(u.sql.clone(), r.clone());
    }
    let Output::Rows(src) = execute(p, &mut canned, ExecLimits { max_rows: 100 }).unwrap() else {
        panic!("rows expected");
    };
    let (cols, rows) = collect(src).unwrap();
    let mut out = Vec::new();
    let mut b = BytesMut::new();
    codec::mysql::resultset::encode_column_count(cols.len() as u64, &mut b);
    out.push(b.split().freeze());
    for c in &cols {
        c.encode(&mut b);
        out.push(b.split().freeze());
    }
    out.push(eof(STATUS));
    for r in rows {
        if binary {
            encode_binary_row(r, &cols, &mut b).unwrap();
        } else {
            encode_text_row(&r, &cols, &mut b).unwrap();
        }
        out.push(b.split().freeze());
    }
    out.push(eof(STATUS));
    out
}

/// The rows of a text result (values decoded by the result's own definitions).
fn text_rows(packets: &[Bytes]) -> Vec<Vec<Value>> {
    let n = codec::mysql::resultset::decode_column_count(packets[0].clone()).unwrap() as usize;
    let cols: Vec<ColumnDefinition> = packets[1..=n]
        .iter()
        .map(|d| ColumnDefinition::decode(d.clone()).unwrap())
        .collect();
    assert_eq!(packets[n + 1], eof(STATUS));
    assert_eq!(packets.last(), Some(&eof(STATUS)));
    packets[n + 2..packets.len() - 1]
        .iter()
        .map(|r| {
            TextRow::decode(r.clone(), n)
                .unwrap()
                .values(&cols)
                .unwrap()
        })
        .collect()
}

fn replies(data: &Data) -> Vec<VecDeque<Bytes>> {
    (0..data.results.len()).map(|i| data.reply(i)).collect()
}

fn ints(rows: &[Vec<Value>], col: usize) -> Vec<i64> {
    rows.iter()
        .map(|r| match &r[col] {
            Value::Int(i) => *i,
            Value::UInt(u) => *u as i64,
            v => panic!("not an integer: {v:?}"),
        })
        .collect()
}

/// Sorted rows spread over the 8 units of `orders` (id, amount), with ties across units.
fn sorted_data(p: &Plan) -> Data {
    let mut per_unit = vec![Vec::new(); 8];
    per_unit[0] = vec![
        vec![Value::Int(1), Value::Int(50)],
        vec![Value::Int(2), Value::Int(30)],
    ];
    per_unit[1] = vec![
        vec![Value::Int(3), Value::Int(50)],
        vec![Value::Int(4), Value::Int(40)],
    ];
    per_unit[2] = vec![vec![Value::Int(5), Value::Int(30)]];
    per_unit[5] = vec![
        vec![Value::Int(6), Value::Int(60)],
        vec![Value::Int(7), Value::Int(10)],
    ];
    Data::new(p, &[int_col("id"), int_col("amount")], per_unit)
}

#[test]
fn sorted_read_merges_with_ties_to_the_lower_unit_and_applies_offset_and_limit() {
    let r = rules();
    let sql = "SELECT id, amount FROM orders ORDER BY amount DESC LIMIT 1, 4";
    let p = plan_of(&r, sql);
    let shape = Streamed::of(&p).unwrap();
    let Streamed::Sorted(sr) = &shape else {
        panic!("{}", p.render(&r))
    };
    let units = sr.merge.input.units.clone();
    assert_eq!(units.len(), 8);
    let data = sorted_data(&p);
    let run = stream(shape, false, replies(&data));
    assert_eq!(run.error, None);
    let rows = text_rows(&run.packets);
    // 60, then the 50s (unit 0 before unit 1), 40, the 30s (unit 0 before unit 2); skip 1, take 4.
    assert_eq!(ints(&rows, 0), [1, 3, 4, 2]);
    // Helper column trimmed from the definitions and the rows.
    assert_eq!(rows[0].len(), 2);
    assert_eq!(run.packets, buffered(&p, &units, &data, false));
    // Stopped at the LIMIT: units left inside their rows are drained (bounded by the LIMIT).
    assert!(run.drains.contains(&Drain::All), "{:?}", run.drains);
    assert!(
        run.drains
            .iter()
            .all(|d| matches!(d, Drain::All | Drain::Clean))
    );
    // Every header first, in unit order (count, id, amount, COLLATION(amount), EOF), then every
    // unit's first row.
    let headers: Vec<usize> = (0..8).flat_map(|u| [u; 5]).collect();
    assert_eq!(&run.reads[..40], &headers[..]);
    assert_eq!(&run.reads[40..48], &(0..8).collect::<Vec<_>>()[..]);
}

#[test]
fn sorted_read_without_limit_reads_everything_and_matches_the_buffered_path() {
    let r = rules();
    for binary in [false, true] {
        for sql in [
            "SELECT id, amount FROM orders ORDER BY amount DESC",
            "SELECT id, amount FROM orders ORDER BY amount, id",
            "SELECT id FROM orders ORDER BY amount DESC, id LIMIT 2, 100",
        ] {
            let p = plan_of(&r, sql);
            let shape = Streamed::of(&p).unwrap();
            let units = shape.units().to_vec();
            let mut data = sorted_data(&p);
            if sql.contains("amount, id") {
                // Ascending order per unit.
                for (_, rows) in &mut data.results {
                    rows.reverse();
                }
            }
            let run = stream(shape, binary, replies(&data));
            assert_eq!(run.error, None, "{sql}");
            assert_eq!(
                run.packets,
                buffered(&p, &units, &data, binary),
                "{sql} binary={binary}"
            );
            if !binary {
                let rows = text_rows(&run.packets);
                let want: &[i64] = match sql {
                    s if s.contains("LIMIT") => &[3, 4, 2, 5, 7],
                    s if s.contains("DESC") => &[6, 1, 3, 4, 2, 5, 7],
                    _ => &[7, 2, 5, 4, 1, 3, 6],
                };
                assert_eq!(ints(&rows, 0), want, "{sql}");
            }
            assert!(run.drains.iter().all(|d| *d == Drain::Clean), "{sql}");
        }
    }
}

#[test]
fn sorted_read_without_limit_closes_units_left_behind_on_an_error() {
    let r = rules();
    let p = plan_of(&r, "SELECT id, amount FROM orders ORDER BY amount DESC");
    let data = sorted_data(&p);
    let mut rs = replies(&data);
    // Unit 1 fails after its header and first row: ERR instead of its second row.
    let second = rs[1].len() - 2;
    rs[1][second] = err_packet(1054, "Unknown column");
    let run = stream(Streamed::of(&p).unwrap(), false, rs);
    match &run.error {
        Some(StreamError::Refused { unit: 1, err }) => assert_eq!(err.code, 1054),
        e => panic!("{e:?}"),
    }
    assert_eq!(run.drains[1], Drain::Clean);
    // Units still inside unbounded rows are closed, finished ones are clean.
    assert!(run.drains.contains(&Drain::Close), "{:?}", run.drains);
    assert_eq!(run.drains[3], Drain::Clean); // empty unit: read to its end
}

#[test]
fn an_error_in_a_header_still_reads_every_header_and_reports_the_first() {
    let r = rules();
    let p = plan_of(
        &r,
        "SELECT id, amount FROM orders ORDER BY amount DESC LIMIT 5",
    );
    let data = sorted_data(&p);
    let mut rs = replies(&data);
    rs[2] = VecDeque::from([err_packet(1146, "Table 'orders_2' doesn't exist")]);
    rs[6] = VecDeque::from([err_packet(1146, "Table 'orders_6' doesn't exist")]);
    let run = stream(Streamed::of(&p).unwrap(), false, rs);
    match &run.error {
        Some(StreamError::Refused { unit: 2, err }) => assert_eq!(err.code, 1146),
        e => panic!("{e:?}"),
    }
    assert!(
        run.packets.is_empty(),
        "nothing written before the headers are in"
    );
    // Every unit's header was read; the others are at their rows and bounded (LIMIT): drained.
    for u in 0..8 {
        assert!(run.reads.contains(&u));
        let want = if u == 2 || u == 6 {
            Drain::Clean
        } else {
            Drain::All
        };
        assert_eq!(run.drains[u], want, "unit {u}");
    }
}

#[test]
fn shard_replies_that_are_not_one_result_set_are_refused() {
    let r = rules();
    let p = plan_of(
        &r,
        "SELECT id, amount FROM orders ORDER BY amount DESC LIMIT 5",
    );
    let data = sorted_data(&p);
    // An OK where rows were expected.
    let mut rs = replies(&data);
    let mut ok = BytesMut::new();
    OkPacket::default().encode(capability::DEFAULT_CLIENT, &mut ok);
    rs[0] = VecDeque::from([ok.freeze()]);
    let run = stream(Streamed::of(&p).unwrap(), false, rs);
    assert!(
        matches!(&run.error, Some(StreamError::Lost { unit: 0, reason }) if reason.contains("OK packet")),
        "{:?}",
        run.error
    );
    assert_eq!(run.drains[0], Drain::Close);
    // An OK that announces more results.
    let mut rs = replies(&data);
    let mut ok = BytesMut::new();
    OkPacket {
        status: 0x08,
        ..Default::default()
    }
    .encode(capability::DEFAULT_CLIENT, &mut ok);
    rs[4] = VecDeque::from([ok.freeze()]);
    let run = stream(Streamed::of(&p).unwrap(), false, rs);
    assert!(
        matches!(&run.error, Some(StreamError::Lost { unit: 4, reason }) if reason.contains("OK packet")),
        "{:?}",
        run.error
    );
    // A second result set after the rows.
    let mut rs = replies(&data);
    let last = rs[1].len() - 1;
    rs[1][last] = eof(STATUS | 0x08); // SERVER_MORE_RESULTS_EXISTS
    let p2 = plan_of(&r, "SELECT id, amount FROM orders ORDER BY amount DESC");
    let run = stream(Streamed::of(&p2).unwrap(), false, rs);
    assert!(
        matches!(&run.error, Some(StreamError::Lost { unit: 1, reason }) if reason.contains("multi-result")),
        "{:?}",
        run.error
    );
    // A lost connection mid-reply.
    let mut rs = replies(&data);
    rs[5].truncate(6);
    let run = stream(Streamed::of(&p2).unwrap(), false, rs);
    assert!(
        matches!(&run.error, Some(StreamError::Lost { unit: 5, .. })),
        "{:?}",
        run.error
    );
    assert_eq!(run.drains[5], Drain::Close);
}

#[test]
fn grouped_read_folds_groups_across_units_by_collation() {
    let r = rules();
    for binary in [false, true] {
        for sql in [
            "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status",
            "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status LIMIT 1, 1",
            "SELECT status, COUNT(*) AS n FROM orders GROUP BY status HAVING n > 2",
        ] {
            let p = plan_of(&r, sql);
            let shape = Streamed::of(&p).unwrap();
            assert!(matches!(shape, Streamed::Grouped(_)), "{}", p.render(&r));
            let units = shape.units().to_vec();
            let ci = charset::UTF8MB4_GENERAL_CI;
            let mut per_unit = vec![Vec::new(); 8];
            per_unit[0] = vec![vec![s("a"), Value::Int(2)], vec![s("b"), Value::Int(1)]];
            per_unit[1] = vec![vec![s("A "), Value::Int(3)], vec![s("c"), Value::Int(1)]];
            per_unit[4] = vec![vec![s("B"), Value::Int(4)]];
            let data = Data::new(&p, &[str_col("status", ci), int_col("COUNT(*)")], per_unit);
            let run = stream(shape, binary, replies(&data));
            assert_eq!(run.error, None, "{sql}");
            assert_eq!(
                run.packets,
                buffered(&p, &units, &data, binary),
                "{sql} binary={binary}"
            );
            if !binary {
                let rows = text_rows(&run.packets);
                let want: &[i64] = match sql {
                    s if s.contains("LIMIT") => &[5],
                    s if s.contains("HAVING") => &[5, 5],
                    _ => &[5, 5, 1],
                };
                assert_eq!(ints(&rows, 1), want, "{sql}");
            }
        }
    }
}

#[test]
fn grouped_read_refuses_groups_out_of_order() {
    let r = rules();
    let p = plan_of(&r, "SELECT status, COUNT(*) FROM orders GROUP BY status");
    let ci = charset::UTF8MB4_GENERAL_CI;
    let mut per_unit = vec![Vec::new(); 8];
    per_unit[0] = vec![vec![s("b"), Value::Int(2)], vec![s("a"), Value::Int(1)]];
    let data = Data::new(&p, &[str_col("status", ci), int_col("COUNT(*)")], per_unit);
    let run = stream(Streamed::of(&p).unwrap(), false, replies(&data));
    match &run.error {
        Some(StreamError::Merge(e)) => assert!(e.to_string().contains("out of order"), "{e}"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn plain_scatter_copies_units_in_order_and_matches_the_buffered_path() {
    let r = rules();
    let p = plan_of(&r, "SELECT id, amount FROM orders");
    let Plan::Scatter(sc) = &p else {
        panic!("{}", p.render(&r))
    };
    let data = sorted_data(&p);
    for binary in [false, true] {
        let run = stream(Streamed::Concat(&sc.units), binary, replies(&data));
        assert_eq!(run.error, None);
        assert_eq!(
            run.packets,
            buffered(&p, &sc.units, &data, binary),
            "binary={binary}"
        );
        if !binary {
            assert_eq!(ints(&text_rows(&run.packets), 0), [1, 2, 3, 4, 5, 6, 7]);
        }
        // Unit after unit, never ahead.
        let mut seen = run.reads.clone();
        seen.dedup();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    }
    // An ERR in unit 3 ends the reply: units after it are drained, the ones before are clean.
    let mut rs = replies(&data);
    rs[3] = VecDeque::from([err_packet(1146, "no table")]);
    let run = stream(Streamed::Concat(&sc.units), false, rs);
    assert!(matches!(
        &run.error,
        Some(StreamError::Refused { unit: 3, .. })
    ));
    assert_eq!(&run.drains[..4], &[Drain::Clean; 4]);
    assert_eq!(&run.drains[4..], &[Drain::All; 4]);
}

#[test]
fn draining_tracks_each_reply_to_its_end() {
    let r = rules();
    let p = plan_of(
        &r,
        "SELECT id, amount FROM orders ORDER BY amount DESC LIMIT 1",
    );
    let data = sorted_data(&p);
    let mut rs = replies(&data);
    let mut exec = StreamExec::new(Streamed::of(&p).unwrap(), opts(false));
    let mut out = BytesMut::new();
    while let Want::Read(u) = exec.step(&mut out) {
        let pkt = rs[u].pop_front().unwrap();
        exec.feed(u, pkt);
    }
    assert_eq!(exec.error(), None);
    assert_eq!(ints(&text_rows(&unframe(out)), 0), [6]);
    for (u, reply) in rs.iter_mut().enumerate() {
        if exec.drain(u) == Drain::All {
            let mut n = 0;
            while !exec.discard(u, &reply.pop_front().unwrap()) {
                n += 1;
            }
            assert!(
                reply.is_empty(),
                "unit {u}: read to the end of its reply ({n} rows)"
            );
        }
        assert_eq!(exec.drain(u), Drain::Clean, "unit {u}");
    }
}

mod random {
    //! Random data over every unit, random OFFSET/LIMIT: the streamed reply equals the buffered
    //! one byte for byte, in both protocols.
    use proptest::prelude::*;

    use super::*;

    /// Each unit's rows of (id, amount), sorted as the shard would for `ORDER BY amount DESC, id`.
    fn sorted_units(raw: Vec<Vec<(i64, i64)>>) -> Vec<Vec<Vec<Value>>> {
        raw.into_iter()
            .map(|mut rows| {
                rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                rows.into_iter()
                    .map(|(id, amount)| vec![Value::Int(id), Value::Int(amount)])
                    .collect()
            })
            .collect()
    }

    /// Each unit's partial groups (status, COUNT(*)), one row per status, sorted by status.
    fn grouped_units(raw: Vec<Vec<(u8, i64)>>) -> Vec<Vec<Vec<Value>>> {
        const NAMES: [&str; 6] = ["a", "B", "c", "A ", "b", "C"];
        raw.into_iter()
            .map(|rows| {
                // One partial per group (case- and trailing-space-insensitive, as general_ci).
                let mut groups: Vec<(u8, i64, &str)> = Vec::new();
                for (k, n) in rows {
                    let key = k % 3;
                    match groups.iter_mut().find(|g| g.0 == key) {
                        Some(g) => g.1 += n,
                        None => groups.push((key, n, NAMES[usize::from(k % 6)])),
                    }
                }
                groups.sort_by_key(|g| g.0);
                groups
                    .into_iter()
                    .map(|(_, n, name)| vec![s(name), Value::Int(n)])
                    .collect()
            })
            .collect()
    }

    fn check(sql: &str, binary: bool, make: impl Fn(&Plan) -> Data) -> Result<(), TestCaseError> {
        let r = rules();
        let p = plan_of(&r, sql);
        let shape = Streamed::of(&p).unwrap_or_else(|| panic!("{}", p.render(&r)));
        let units = shape.units().to_vec();
        let data = make(&p);
        let run = stream(shape, binary, replies(&data));
        prop_assert_eq!(run.error, None);
        prop_assert_eq!(run.packets, buffered(&p, &units, &data, binary), "{}", sql);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn sorted_reads(
            raw in prop::collection::vec(prop::collection::vec((0i64..50, 0i64..8), 0..6), 8),
            offset in 0u64..6,
            count in 0u64..12,
            binary in any::<bool>(),
            trimmed in any::<bool>(),
        ) {
            let list = if trimmed { "id" } else { "id, amount" };
            let sql = format!("SELECT {list} FROM orders ORDER BY amount DESC, id LIMIT {offset}, {count}");
            check(&sql, binary, |p| Data::new(p, &[int_col("id"), int_col("amount")], sorted_units(raw.clone())))?;
        }

        #[test]
        fn grouped_reads(
            raw in prop::collection::vec(prop::collection::vec((0u8..6, 1i64..5), 0..5), 8),
            limit in prop::option::of((0u64..3, 0u64..4)),
            having in any::<bool>(),
            binary in any::<bool>(),
        ) {
            let mut sql = "SELECT status, COUNT(*) AS n FROM orders GROUP BY status".to_string();
            if having {
                sql.push_str(" HAVING n > 3");
            }
            sql.push_str(" ORDER BY status");
            if let Some((o, c)) = limit {
                sql.push_str(&format!(" LIMIT {o}, {c}"));
            }
            let ci = charset::UTF8MB4_GENERAL_CI;
            check(&sql, binary, |p| {
                Data::new(p, &[str_col("status", ci), int_col("COUNT(*)")], grouped_units(raw.clone()))
            })?;
        }
    }
}

#[test]
fn a_unit_failing_inside_its_column_definitions_fails_the_statement() {
    let r = rules();
    let p = plan_of(
        &r,
        "SELECT id, amount FROM orders ORDER BY amount DESC LIMIT 5",
    );
    let data = sorted_data(&p);
    // An ERR after the column count and one definition.
    let mut rs = replies(&data);
    rs[3].truncate(2);
    rs[3].push_back(err_packet(1317, "Query execution was interrupted"));
    // A connection lost after two definitions.
    rs[6].truncate(3);
    let run = stream(Streamed::of(&p).unwrap(), false, rs);
    match &run.error {
        Some(StreamError::Refused { unit: 3, err }) => assert_eq!(err.code, 1317),
        e => panic!("{e:?}"),
    }
    assert!(run.packets.is_empty());
    assert_eq!(run.drains[3], Drain::Clean);
    assert_eq!(run.drains[6], Drain::Close);
    // Every unit's header was read to its end or its failure.
    for u in [0, 1, 2, 4, 5, 7] {
        assert_eq!(run.drains[u], Drain::All, "unit {u}");
    }
    // A plain scatter stops at the first failing unit.
    let Plan::Scatter(sc) = plan_of(&r, "SELECT id, amount FROM orders") else {
        panic!("a scatter")
    };
    let mut rs = replies(&data);
    rs[1].truncate(2);
    let run = stream(Streamed::Concat(&sc.units), true, rs);
    assert!(
        matches!(&run.error, Some(StreamError::Lost { unit: 1, .. })),
        "{:?}",
        run.error
    );
    assert_eq!(run.drains[1], Drain::Close);
    assert_eq!(&run.drains[2..], &[Drain::All; 6]);
}
