//! Property tests for the MySQL codec: encode then decode is the identity, any split point of a
//! valid stream decodes the same, and arbitrary bytes never panic.

use bytes::{Bytes, BytesMut};
use codec::mysql::command::ParamType;
use codec::mysql::consts::{capability::*, column_flag, column_type as ty, status};
use codec::mysql::{
    AuthSwitchRequest, BinaryRow, ChangeUser, ClientHandshake, ColumnDefinition, Command, Date,
    DateTime, EofPacket, ErrPacket, HandshakeV10, OkPacket, PacketDecoder, StmtExecute,
    StmtPrepareOk, TextRow, Time, Value, encode_packet,
};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn no_nul(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(1u8..=255, 0..max).prop_map(Bytes::from)
}

fn roundtrip_cmd(cmd: &Command) -> Command {
    let mut out = BytesMut::new();
    cmd.encode(&mut out);
    Command::decode(out.freeze()).unwrap()
}

fn command() -> impl Strategy<Value = Command> {
    let known = [
        1u8, 2, 3, 4, 9, 0x0E, 0x11, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1F,
    ];
    let change_user = (
        no_nul(20),
        bytes(40),
        no_nul(20),
        proptest::option::of((
            any::<u16>(),
            proptest::option::of((no_nul(30), proptest::option::of(attrs()))),
        )),
    )
        .prop_map(|(username, auth_response, database, tail)| {
            let mut cu = ChangeUser {
                username,
                auth_response,
                database,
                ..Default::default()
            };
            if let Some((cs, plugin)) = tail {
                cu.charset = Some(cs);
                if let Some((p, a)) = plugin {
                    cu.auth_plugin_name = Some(p);
                    cu.connect_attrs = a;
                }
            }
            Command::ChangeUser(cu)
        });
    prop_oneof![
        Just(Command::Quit),
        Just(Command::Ping),
        Just(Command::Statistics),
        Just(Command::ResetConnection),
        bytes(200).prop_map(Command::Query),
        bytes(50).prop_map(Command::InitDb),
        bytes(200).prop_map(Command::StmtPrepare),
        (no_nul(30), bytes(10))
            .prop_map(|(table, wildcard)| Command::FieldList { table, wildcard }),
        change_user,
        (any::<u32>(), any::<u8>(), any::<u32>(), bytes(50)).prop_map(
            |(statement_id, flags, iteration_count, params_raw)| {
                Command::StmtExecute(StmtExecute {
                    statement_id,
                    flags,
                    iteration_count,
                    params_raw,
                })
            }
        ),
        (any::<u32>(), any::<u16>(), bytes(100)).prop_map(|(statement_id, param_id, data)| {
            Command::StmtSendLongData {
                statement_id,
                param_id,
                data,
            }
        }),
        any::<u32>().prop_map(Command::StmtClose),
        any::<u32>().prop_map(Command::StmtReset),
        (any::<u32>(), any::<u32>()).prop_map(|(statement_id, num_rows)| Command::StmtFetch {
            statement_id,
            num_rows
        }),
        any::<u16>().prop_map(Command::SetOption),
        (
            any::<u8>().prop_filter("unknown code", move |c| !known.contains(c)),
            bytes(30)
        )
            .prop_map(|(code, body)| Command::Other { code, body }),
    ]
}

fn attrs() -> impl Strategy<Value = Vec<(Bytes, Bytes)>> {
    proptest::collection::vec((bytes(20), bytes(300)), 0..4)
}

/// A column type together with a value of the matching kind (in range for the type width).
fn typed_value() -> impl Strategy<Value = (u8, u16, Value)> {
    let date =
        (0u16..=9999, 0u8..=12, 0u8..=31).prop_map(|(year, month, day)| Date { year, month, day });
    let datetime = (date.clone(), 0u8..24, 0u8..60, 0u8..60, 0u32..1_000_000).prop_map(
        |(date, hour, minute, second, micro)| DateTime {
            date,
            hour,
            minute,
            second,
            micro,
        },
    );
    let time = (
        any::<bool>(),
        0u32..34,
        0u8..24,
        0u8..60,
        0u8..60,
        0u32..1_000_000,
    )
        .prop_map(|(negative, days, hours, minutes, seconds, micro)| {
            let t = Time {
                negative,
                days,
                hours,
                minutes,
                seconds,
                micro,
            };
            // A zero duration has no sign on the wire.
            if t.as_micros() == 0 {
                Time::default()
            } else {
                t
            }
        });
    let decimal = (
        any::<bool>(),
        0u64..u64::MAX,
        proptest::option::of(0u32..1_000_000),
    )
        .prop_map(|(neg, i, f)| {
            let s = match f {
                Some(f) => format!("{}{i}.{f:06}", if neg { "-" } else { "" }),
                None => format!("{}{i}", if neg { "-" } else { "" }),
            };
            Value::Decimal(Bytes::from(s))
        });
    let u = column_flag::UNSIGNED;
    prop_oneof![
        any::<i8>().prop_map(|v| (ty::TINY, 0, Value::Int(v.into()))),
        any::<u8>().prop_map(move |v| (ty::TINY, u, Value::UInt(v.into()))),
        any::<i16>().prop_map(|v| (ty::SHORT, 0, Value::Int(v.into()))),
        any::<u16>().prop_map(move |v| (ty::SHORT, u, Value::UInt(v.into()))),
        (-8_388_608i64..8_388_608).prop_map(|v| (ty::INT24, 0, Value::Int(v))),
        any::<i32>().prop_map(|v| (ty::LONG, 0, Value::Int(v.into()))),
        any::<u32>().prop_map(move |v| (ty::LONG, u, Value::UInt(v.into()))),
        any::<i64>().prop_map(|v| (ty::LONGLONG, 0, Value::Int(v))),
        any::<u64>().prop_map(move |v| (ty::LONGLONG, u, Value::UInt(v))),
        (1901u16..=2155).prop_map(move |v| (
            ty::YEAR,
            u | column_flag::ZEROFILL,
            Value::UInt(v.into())
        )),
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|v| (ty::FLOAT, 0, Value::Float(v))),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|v| (ty::DOUBLE, 0, Value::Double(v))),
        decimal.prop_map(|v| (ty::NEWDECIMAL, 0, v)),
        bytes(300).prop_map(|v| (ty::VAR_STRING, 0, Value::Bytes(v))),
        bytes(20).prop_map(|v| (
            ty::BLOB,
            column_flag::BLOB | column_flag::BINARY,
            Value::Bytes(v)
        )),
        date.prop_map(|v| (ty::DATE, 0, Value::Date(v))),
        datetime
            .clone()
            .prop_map(|v| (ty::DATETIME, 0, Value::DateTime(v))),
        datetime.prop_map(|v| (ty::TIMESTAMP, 0, Value::DateTime(v))),
        time.prop_map(|v| (ty::TIME, 0, Value::Time(v))),
        Just((ty::VAR_STRING, 0, Value::Null)),
    ]
}

fn column(column_type: u8, flags: u16) -> ColumnDefinition {
    // DECIMAL texts carry their own scale; temporals keep all 6 fractional digits; FLOAT/DOUBLE
    // are plain columns (31 = NOT_FIXED_DEC: every digit; fixed decimals would round the text).
    let length = if column_type == ty::YEAR { 4 } else { 20 };
    let decimals = if matches!(column_type, ty::FLOAT | ty::DOUBLE) {
        31
    } else {
        6
    };
    ColumnDefinition::new("c", column_type, 45, length, flags, decimals)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn packet_stream_any_split(payloads in proptest::collection::vec(bytes(600), 1..6), seq in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut wire = BytesMut::new();
        let mut s = seq;
        for p in &payloads {
            s = encode_packet(s, p, &mut wire);
        }
        let cut = cut.index(wire.len() + 1);
        let dec = PacketDecoder::default();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(p) = dec.decode(&mut buf).unwrap() {
            got.push(p);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(p) = dec.decode(&mut buf).unwrap() {
            got.push(p);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.len(), payloads.len());
        for (i, (g, p)) in got.iter().zip(&payloads).enumerate() {
            prop_assert_eq!(&g.payload, p);
            prop_assert_eq!(g.seq, seq.wrapping_add(i as u8));
        }
    }

    #[test]
    fn commands_round_trip(cmd in command()) {
        prop_assert_eq!(roundtrip_cmd(&cmd), cmd);
    }

    #[test]
    fn ok_round_trip(header in prop_oneof![Just(0u8), Just(0xFEu8)], affected_rows in any::<u64>(), last_insert_id in any::<u64>(),
                     st in any::<u16>(), warnings in any::<u16>(), info in bytes(60), state in bytes(60), track in any::<bool>()) {
        let caps = DEFAULT_CLIENT & !(if track { 0 } else { CLIENT_SESSION_TRACK });
        let changed = track && st & status::SERVER_SESSION_STATE_CHANGED != 0;
        let status = if track { st } else { st & !status::SERVER_SESSION_STATE_CHANGED };
        let ok = OkPacket { header, affected_rows, last_insert_id, status, warnings, info, session_state: changed.then_some(state) };
        let mut out = BytesMut::new();
        ok.encode(caps, &mut out);
        prop_assert_eq!(OkPacket::decode(out.freeze(), caps).unwrap(), ok);
    }

    #[test]
    fn err_and_eof_round_trip(code in any::<u16>(), state in "[0-9A-Z]{5}", message in bytes(100), warnings in any::<u16>(), st in any::<u16>()) {
        let err = ErrPacket { code, sql_state: Some(state.as_bytes().try_into().unwrap()), message };
        let mut out = BytesMut::new();
        err.encode(&mut out);
        prop_assert_eq!(ErrPacket::decode(out.freeze()).unwrap(), err);
        let eof = EofPacket { warnings, status: st };
        let mut out = BytesMut::new();
        eof.encode(&mut out);
        prop_assert_eq!(EofPacket::decode(out.freeze()).unwrap(), eof);
    }

    #[test]
    fn column_definition_round_trip(names in proptest::collection::vec(bytes(300), 6), charset in any::<u16>(), column_length in any::<u32>(),
                                    column_type in any::<u8>(), flags in any::<u16>(), decimals in any::<u8>(), defaults in proptest::option::of(bytes(20).prop_filter("non-empty", |b| !b.is_empty()))) {
        let c = ColumnDefinition {
            catalog: names[0].clone(), schema: names[1].clone(), table: names[2].clone(), org_table: names[3].clone(),
            name: names[4].clone(), org_name: names[5].clone(), charset, column_length, column_type, flags, decimals, default_values: defaults, compare_collation: None,
        };
        let mut out = BytesMut::new();
        c.encode(&mut out);
        prop_assert_eq!(ColumnDefinition::decode(out.freeze()).unwrap(), c);
    }

    #[test]
    fn handshake_round_trip(version in no_nul(40), id in any::<u32>(), scramble in any::<[u8; 20]>(), caps in any::<u32>(), cs in any::<u8>(), st in any::<u16>(), plugin in no_nul(30)) {
        let caps = caps | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_PROTOCOL_41;
        let scramble = scramble.map(|b| b.max(1));
        let hs = HandshakeV10::new(std::str::from_utf8(&version).unwrap_or("v"), id, scramble, caps, cs, st, std::str::from_utf8(&plugin).unwrap_or("p"));
        let mut out = BytesMut::new();
        hs.encode(&mut out);
        let back = HandshakeV10::decode(out.freeze()).unwrap();
        prop_assert_eq!(back.scramble(), &scramble[..]);
        prop_assert_eq!(back, hs);
    }

    #[test]
    fn rows_round_trip(cells in proptest::collection::vec(typed_value(), 1..12)) {
        let columns: Vec<ColumnDefinition> = cells.iter().map(|(t, f, _)| column(*t, *f)).collect();
        let values: Vec<Value> = cells.iter().map(|(_, _, v)| v.clone()).collect();
        // Binary protocol: exact identity.
        let row = BinaryRow { values: values.clone() };
        let mut out = BytesMut::new();
        row.encode(&columns, &mut out).unwrap();
        prop_assert_eq!(BinaryRow::decode(out.freeze(), &columns).unwrap(), row);
        // Text protocol: identity except FLOAT (rounded to 6 digits), whose text is stable.
        let mut out = BytesMut::new();
        TextRow::encode_values(&values, &columns, &mut out).unwrap();
        let text = TextRow::decode(out.clone().freeze(), columns.len()).unwrap();
        let back = text.values(&columns).unwrap();
        let mut again = BytesMut::new();
        TextRow::encode_values(&back, &columns, &mut again).unwrap();
        prop_assert_eq!(&again, &out);
        for ((v, b), c) in values.iter().zip(&back).zip(&columns) {
            if c.column_type != ty::FLOAT {
                prop_assert_eq!(v, b);
            }
        }
    }

    #[test]
    fn execute_params_round_trip(cells in proptest::collection::vec(typed_value(), 0..10)) {
        let params: Vec<(ParamType, Value)> = cells.iter().map(|(t, f, v)| (ParamType { column_type: *t, unsigned: f & column_flag::UNSIGNED != 0 }, v.clone())).collect();
        let exec = StmtExecute::new(9, &params).unwrap();
        let Command::StmtExecute(back) = roundtrip_cmd(&Command::StmtExecute(exec.clone())) else { panic!("not execute") };
        let decoded = back.params(params.len(), None).unwrap();
        prop_assert_eq!(decoded.values, params.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
        // Re-executing without types uses the bound ones.
        let types: Vec<ParamType> = params.iter().map(|(t, _)| *t).collect();
        prop_assert_eq!(back.params(params.len(), Some(&types)).unwrap().types, types);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(300), n in 0usize..20, types in proptest::collection::vec(any::<u8>(), 0..20)) {
        let b = data.clone();
        let _ = PacketDecoder::new(1024).decode(&mut BytesMut::from(&data[..]));
        let _ = Command::decode(b.clone());
        let _ = OkPacket::decode(b.clone(), DEFAULT_CLIENT);
        let _ = OkPacket::decode(b.clone(), 0);
        let _ = ErrPacket::decode(b.clone());
        let _ = EofPacket::decode(b.clone());
        let _ = ColumnDefinition::decode(b.clone());
        let _ = HandshakeV10::decode(b.clone());
        let _ = ClientHandshake::decode(b.clone());
        let _ = AuthSwitchRequest::decode(b.clone());
        let _ = StmtPrepareOk::decode(b.clone());
        let _ = TextRow::decode(b.clone(), n);
        let columns: Vec<ColumnDefinition> = types.iter().map(|t| column(*t, 0)).collect();
        if let Ok(row) = BinaryRow::decode(b.clone(), &columns) {
            let mut out = BytesMut::new();
            let _ = row.encode(&columns, &mut out);
        }
        if let Ok(text) = TextRow::decode(b.clone(), columns.len()) {
            let _ = text.values(&columns);
        }
        let exec = StmtExecute { statement_id: 1, flags: 0, iteration_count: 1, params_raw: b };
        let prev: Vec<ParamType> = types.iter().map(|t| ParamType { column_type: *t, unsigned: false }).collect();
        let _ = exec.params(n, Some(&prev));
    }
}
