//! Golden fixtures recorded from a real MariaDB 10.11 by `fixtures/mysql/record.py`: every server
//! reply is decoded and re-encoded byte-for-byte, and typed values are checked.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use codec::mysql::consts::{capability::CLIENT_DEPRECATE_EOF, column_type as ty, status};
use codec::mysql::reply::{ReplyEnd, ReplyTracker, Step};
use codec::mysql::response::{self, SessionChange, is_end_of_rows};
use codec::mysql::resultset::decode_column_count;
use codec::mysql::{
    BinaryRow, ClientHandshake, ColumnDefinition, Command, EofPacket, ErrPacket, HandshakeV10,
    OkPacket, Packet, PacketDecoder, StmtPrepareOk, TextRow, Value, encode_packet,
};
use codec::mysql::{auth, value};

struct Fixture {
    name: String,
    kind: String,
    caps: u32,
    args: String,
    client: Bytes,
    server: Bytes,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mysql")
}

fn fixtures() -> Vec<Fixture> {
    let manifest = std::fs::read_to_string(dir().join("manifest.txt")).unwrap();
    manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap().to_string();
            let kind = parts.next().unwrap().to_string();
            let caps = u32::from_str_radix(parts.next().unwrap(), 16).unwrap();
            let args = parts.next().unwrap_or("").to_string();
            let read = |suffix: &str| {
                Bytes::from(std::fs::read(dir().join(format!("{name}.{suffix}.bin"))).unwrap())
            };
            Fixture {
                client: read("client"),
                server: read("server"),
                name,
                kind,
                caps,
                args,
            }
        })
        .collect()
}

/// Decodes every packet of a stream and checks that re-framing gives the same bytes.
fn packets(raw: &Bytes) -> Vec<Packet> {
    let mut buf = BytesMut::from(&raw[..]);
    let dec = PacketDecoder::default();
    let mut out = Vec::new();
    while let Some(p) = dec.decode(&mut buf).unwrap() {
        out.push(p);
    }
    assert!(buf.is_empty(), "trailing partial packet");
    let mut again = BytesMut::new();
    for p in &out {
        encode_packet(p.seq, &p.payload, &mut again);
    }
    assert_eq!(&again[..], &raw[..]);
    out
}

fn reencode(payload: &Bytes, f: impl FnOnce(&mut BytesMut)) {
    let mut out = BytesMut::new();
    f(&mut out);
    assert_eq!(&out[..], &payload[..], "re-encoding differs");
}

fn check_command(fx: &Fixture) -> Command {
    let p = packets(&fx.client);
    assert_eq!(p.len(), 1, "{}", fx.name);
    let cmd = Command::decode(p[0].payload.clone()).unwrap();
    reencode(&p[0].payload, |o| cmd.encode(o));
    cmd
}

fn check_end(payload: &Bytes, caps: u32) -> u16 {
    if caps & CLIENT_DEPRECATE_EOF != 0 {
        let ok = OkPacket::decode(payload.clone(), caps).unwrap();
        assert_eq!(ok.header, 0xFE);
        reencode(payload, |o| ok.encode(caps, o));
        ok.status
    } else {
        let eof = EofPacket::decode(payload.clone()).unwrap();
        reencode(payload, |o| eof.encode(o));
        eof.status
    }
}

fn check_columns(
    it: &mut std::slice::Iter<'_, Packet>,
    n: usize,
    caps: u32,
) -> Vec<ColumnDefinition> {
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let p = it.next().unwrap();
        let c = ColumnDefinition::decode(p.payload.clone()).unwrap();
        reencode(&p.payload, |o| c.encode(o));
        assert_eq!(&c.catalog[..], b"def");
        cols.push(c);
    }
    if caps & CLIENT_DEPRECATE_EOF == 0 && n > 0 {
        check_end(&it.next().unwrap().payload, caps);
    }
    cols
}

/// A decoded result set: columns and typed rows.
struct ResultSet {
    columns: Vec<ColumnDefinition>,
    rows: Vec<Vec<Value>>,
}

fn check_result_sets(packets: &[Packet], caps: u32, binary: bool) -> Vec<ResultSet> {
    let mut it = packets.iter();
    let mut sets = Vec::new();
    loop {
        let first = it.next().unwrap();
        let n = decode_column_count(first.payload.clone()).unwrap() as usize;
        let columns = check_columns(&mut it, n, caps);
        let mut rows = Vec::new();
        let status = loop {
            let p = it.next().unwrap();
            if is_end_of_rows(&p.payload, caps & CLIENT_DEPRECATE_EOF != 0) {
                break check_end(&p.payload, caps);
            }
            if binary {
                let row = BinaryRow::decode(p.payload.clone(), &columns).unwrap();
                let mut out = BytesMut::new();
                row.encode(&columns, &mut out).unwrap();
                assert_eq!(&out[..], &p.payload[..]);
                rows.push(row.values);
            } else {
                let row = TextRow::decode(p.payload.clone(), n).unwrap();
                reencode(&p.payload, |o| row.encode(o));
                let values = row.values(&columns).unwrap();
                // Typed values encode back to the very same text bytes.
                let mut out = BytesMut::new();
                TextRow::encode_values(&values, &columns, &mut out).unwrap();
                assert_eq!(
                    &out[..],
                    &p.payload[..],
                    "typed text round trip: {values:?}"
                );
                rows.push(values);
            }
        };
        sets.push(ResultSet { columns, rows });
        if status & status::SERVER_MORE_RESULTS_EXISTS == 0 {
            break;
        }
    }
    assert!(it.next().is_none());
    sets
}

fn handshake_for<'a>(all: &'a [Fixture], auth_name: &str) -> &'a Fixture {
    let hs_name = auth_name.replace("_auth", "_handshake");
    all.iter().find(|f| f.name == hs_name).unwrap()
}

#[test]
fn every_fixture_round_trips() {
    let all = fixtures();
    assert!(all.len() >= 25);
    let mut text_all_types = None;
    let mut binary_all_types = None;
    let mut last_num_params = 0usize;
    for fx in &all {
        let server = packets(&fx.server);
        match fx.kind.as_str() {
            "handshake" => {
                let hs = HandshakeV10::decode(server[0].payload.clone()).unwrap();
                reencode(&server[0].payload, |o| hs.encode(o));
                assert!(
                    std::str::from_utf8(&hs.server_version)
                        .unwrap()
                        .contains("MariaDB")
                );
                assert_eq!(hs.scramble().len(), 20);
                assert_eq!(&hs.auth_plugin_name[..], b"mysql_native_password");
                assert_ne!(hs.mariadb_capabilities(), 0);
            }
            "auth" => {
                let client = packets(&fx.client);
                let ClientHandshake::Response(resp) =
                    ClientHandshake::decode(client[0].payload.clone()).unwrap()
                else {
                    panic!("SSLRequest in {}", fx.name)
                };
                reencode(&client[0].payload, |o| resp.encode(o));
                assert_eq!(&resp.username[..], b"rec");
                if fx.name.starts_with("cli_") {
                    // The real `mariadb` CLI: its own attributes and MariaDB extended capabilities.
                    assert!(
                        resp.connect_attrs
                            .iter()
                            .any(|(k, _)| &k[..] == b"_client_name")
                    );
                    assert_ne!(resp.mariadb_capabilities, 0);
                    assert_eq!(resp.database.as_deref(), Some(&b"fx"[..]));
                } else {
                    assert_eq!(resp.connect_attrs.len(), 2);
                }
                let hs = HandshakeV10::decode(
                    packets(&handshake_for(&all, &fx.name).server)[0]
                        .payload
                        .clone(),
                )
                .unwrap();
                // Our scramble of the password the script used is exactly what the server judged.
                let ours = auth::native_password_scramble(fx.args.as_bytes(), hs.scramble());
                assert_eq!(&ours[..], &resp.auth_response[..]);
                let stored = auth::native_password_hash(b"recpw");
                let accepted = response::is_ok(&server[0].payload);
                assert_eq!(
                    auth::verify_native_password(&resp.auth_response, hs.scramble(), &stored),
                    accepted
                );
                if accepted {
                    let ok = OkPacket::decode(server[0].payload.clone(), fx.caps).unwrap();
                    reencode(&server[0].payload, |o| ok.encode(fx.caps, o));
                } else {
                    let err = ErrPacket::decode(server[0].payload.clone()).unwrap();
                    assert_eq!((err.code, err.sql_state_str()), (1045, "28000"));
                }
            }
            "ok" => {
                check_command(fx);
                let ok = OkPacket::decode(server[0].payload.clone(), fx.caps).unwrap();
                reencode(&server[0].payload, |o| ok.encode(fx.caps, o));
                if fx.name == "ok_insert" {
                    assert_eq!((ok.affected_rows, ok.last_insert_id), (2, 1));
                    assert!(ok.info.starts_with(b"Records: 2"));
                }
                if fx.name == "ok_use_schema" {
                    assert!(ok.status & status::SERVER_SESSION_STATE_CHANGED != 0);
                    assert!(ok.session_state.as_ref().unwrap().ends_with(b"mysql"));
                    assert!(
                        ok.session_changes()
                            .unwrap()
                            .contains(&SessionChange::Schema(Bytes::from("mysql")))
                    );
                }
                if fx.name == "ok_autocommit" {
                    let expected = SessionChange::SystemVariable {
                        name: Bytes::from("autocommit"),
                        value: Bytes::from("OFF"),
                    };
                    assert!(
                        ok.session_changes().unwrap().contains(&expected),
                        "{:?}",
                        ok.session_changes()
                    );
                }
                if fx.name == "ok_begin" {
                    assert!(ok.status & status::SERVER_STATUS_IN_TRANS != 0);
                }
            }
            "err" => {
                check_command(fx);
                let err = ErrPacket::decode(server[0].payload.clone()).unwrap();
                reencode(&server[0].payload, |o| err.encode(o));
                let expected = if fx.name == "err_no_table" {
                    (1146, "42S02")
                } else {
                    (1064, "42000")
                };
                assert_eq!((err.code, err.sql_state_str()), expected);
            }
            "raw" => assert_eq!(check_command(fx), Command::Statistics),
            "field_list" => {
                assert!(matches!(check_command(fx), Command::FieldList { .. }));
                let mut it = server.iter();
                let cols: Vec<_> = (0..2)
                    .map(|_| ColumnDefinition::decode(it.next().unwrap().payload.clone()).unwrap())
                    .collect();
                for (c, p) in cols.iter().zip(&server) {
                    reencode(&p.payload, |o| c.encode(o));
                }
                assert!(cols[1].default_values.as_ref().unwrap().ends_with(b"dflt"));
                check_end(&it.next().unwrap().payload, fx.caps);
            }
            "text_rs" | "text_multi" => {
                assert!(matches!(check_command(fx), Command::Query(_)));
                let sets = check_result_sets(&server, fx.caps, false);
                assert_eq!(sets.len(), if fx.kind == "text_multi" { 2 } else { 1 });
                if fx.name == "text_all_types" {
                    text_all_types = Some(sets.into_iter().next().unwrap());
                }
            }
            "prepare" => {
                assert!(matches!(check_command(fx), Command::StmtPrepare(_)));
                let mut it = server.iter();
                let p = it.next().unwrap();
                let ok = StmtPrepareOk::decode(p.payload.clone()).unwrap();
                reencode(&p.payload, |o| ok.encode(o));
                check_columns(&mut it, ok.num_params.into(), fx.caps);
                check_columns(&mut it, ok.num_columns.into(), fx.caps);
                assert!(it.next().is_none());
                last_num_params = ok.num_params.into();
            }
            "binary_rs" => {
                let Command::StmtExecute(exec) = check_command(fx) else {
                    panic!("not an execute")
                };
                let params = exec.params(last_num_params, None).unwrap();
                assert!(params.new_params_bound);
                let sets = check_result_sets(&server, fx.caps, true);
                if fx.name == "binary_params" {
                    assert_eq!(params.values[2], Value::Null);
                    let row = &sets[0].rows[0];
                    assert_eq!(row[0], Value::Int(-5));
                    assert_eq!(row[1], Value::Bytes(Bytes::from("héllo")));
                    assert_eq!(row[2], Value::Null);
                    assert_eq!(row[3], Value::Double(2.5));
                    assert_eq!(row[4], Value::UInt(u64::MAX));
                }
                if fx.name == "binary_all_types" {
                    binary_all_types = Some(sets.into_iter().next().unwrap());
                }
            }
            "session" => check_session(fx, &server),
            other => panic!("unknown fixture kind {other}"),
        }
    }
    check_all_types(&text_all_types.unwrap(), &binary_all_types.unwrap());
}

/// The same table read through the text and the binary protocol gives the same typed values.
fn check_all_types(text: &ResultSet, binary: &ResultSet) {
    assert_eq!(text.rows.len(), 6);
    assert_eq!(binary.rows.len(), 6);
    for (trow, brow) in text.rows.iter().zip(&binary.rows) {
        for ((t, b), c) in trow.iter().zip(brow).zip(&text.columns) {
            if c.column_type == ty::FLOAT {
                // The text protocol rounds FLOAT to 6 significant digits; compare as text.
                let (mut x, mut y) = (BytesMut::new(), BytesMut::new());
                value::encode_text(t, c, &mut x).unwrap();
                value::encode_text(b, c, &mut y).unwrap();
                assert_eq!(x, y);
            } else {
                assert_eq!(t, b, "column {:?}", c.name);
            }
        }
    }
    let col = |name: &str| {
        text.columns
            .iter()
            .position(|c| &c.name[..] == name.as_bytes())
            .unwrap()
    };
    let types: Vec<u8> = text.columns.iter().map(|c| c.column_type).collect();
    for t in [
        ty::TINY,
        ty::SHORT,
        ty::INT24,
        ty::LONG,
        ty::LONGLONG,
        ty::NEWDECIMAL,
        ty::FLOAT,
        ty::DOUBLE,
    ] {
        assert!(types.contains(&t), "missing column type {t}");
    }
    for t in [
        ty::STRING,
        ty::VAR_STRING,
        ty::BLOB,
        ty::DATE,
        ty::TIME,
        ty::DATETIME,
        ty::TIMESTAMP,
        ty::YEAR,
        ty::BIT,
    ] {
        assert!(types.contains(&t), "missing column type {t}");
    }
    let (r1, r2, r3) = (&text.rows[0], &text.rows[1], &text.rows[2]);
    assert_eq!(r2[col("bi")], Value::Int(i64::MIN));
    assert_eq!(r3[col("biu")], Value::UInt(u64::MAX));
    assert_eq!(r2[col("ti")], Value::Int(-128));
    assert_eq!(r3[col("tiu")], Value::UInt(255));
    assert_eq!(
        r1[col("dec0")],
        Value::Decimal(Bytes::from("12345678901234567890123456789"))
    );
    assert_eq!(
        r2[col("dec1")],
        Value::Decimal(Bytes::from("-99999999999999.999999"))
    );
    assert_eq!(r1[col("f")], Value::Float(1.5));
    assert_eq!(r1[col("d")], Value::Double(0.1));
    assert_eq!(
        r1[col("vc")],
        Value::Bytes(Bytes::from("varchär ünïcode ✓"))
    );
    assert_eq!(r1[col("tx")], Value::Bytes(Bytes::from("text 😀")));
    let Value::DateTime(dt) = r1[col("dtm")] else {
        panic!("dtm")
    };
    assert_eq!(
        (dt.date.year, dt.date.month, dt.date.day, dt.micro),
        (2024, 2, 29, 123_456)
    );
    let Value::Time(t) = r2[col("tm")] else {
        panic!("tm")
    };
    assert!(t.negative && t.days * 24 + u32::from(t.hours) == 838);
    assert_eq!(r3[col("yr")], Value::UInt(2155));
    assert_eq!(
        r3[col("bt")],
        Value::Bytes(Bytes::from_static(&[0x0F, 0xFF]))
    );
    assert!(text.rows[3][1..].iter().all(|v| *v == Value::Null));
}

#[test]
fn fixtures_survive_every_split_point() {
    let dec = PacketDecoder::default();
    for fx in fixtures().iter().filter(|f| f.server.len() < 4096) {
        let whole = packets(&fx.server);
        for cut in 0..fx.server.len() {
            let mut buf = BytesMut::from(&fx.server[..cut]);
            let mut got = Vec::new();
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                got.push(p);
            }
            buf.extend_from_slice(&fx.server[cut..]);
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                got.push(p);
            }
            assert_eq!(got, whole, "{} split at {cut}", fx.name);
        }
    }
}

#[test]
fn reply_tracker_finds_every_reply_end() {
    let mut checked = 0;
    for fx in fixtures()
        .iter()
        .filter(|f| !matches!(f.kind.as_str(), "handshake" | "auth" | "session"))
    {
        let code = packets(&fx.client)[0].payload[0];
        let server = packets(&fx.server);
        let mut t = ReplyTracker::new(code, fx.caps);
        for (i, p) in server.iter().enumerate() {
            let step = t.feed(&p.payload).unwrap();
            if i + 1 < server.len() {
                assert_eq!(step, Step::More, "{} packet {i}", fx.name);
            } else {
                let expected = if fx.kind == "err" {
                    ReplyEnd::Err
                } else {
                    step_end(&step)
                };
                assert_eq!(step, Step::Done(expected), "{}", fx.name);
                assert!(!matches!(step, Step::Done(ReplyEnd::Err)) || fx.kind == "err");
            }
        }
        checked += 1;
    }
    assert!(checked >= 20);
}

fn step_end(step: &Step) -> ReplyEnd {
    match step {
        Step::Done(end) => *end,
        Step::More => panic!("reply not finished at its last packet"),
    }
}

/// A real CLI session after login: every command round-trips and the tracker splits the server
/// stream into exactly one reply per command.
fn check_session(fx: &Fixture, server: &[Packet]) {
    let commands = packets(&fx.client);
    let mut replies = server.iter();
    let mut queries = 0;
    for p in &commands {
        let cmd = Command::decode(p.payload.clone()).unwrap();
        reencode(&p.payload, |o| cmd.encode(o));
        queries += usize::from(matches!(cmd, Command::Query(_)));
        let mut t = ReplyTracker::new(cmd.code(), fx.caps);
        while !t.is_finished() {
            let step = t.feed(&replies.next().unwrap().payload).unwrap();
            assert!(!matches!(step, Step::Done(ReplyEnd::Err)));
        }
    }
    assert!(replies.next().is_none());
    assert_eq!(queries, 2);
    assert_eq!(commands.last().map(|p| p.payload[0]), Some(0x01));
}
