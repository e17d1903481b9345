//! Against a real MariaDB started by the testkit: Furrow's client-side handshake (native-password
//! scramble) is accepted, a wrong password is rejected, and text/binary results decode.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use codec::mysql::command::ParamType;
use codec::mysql::consts::{capability, column_type as ty};
use codec::mysql::reply::{ReplyEnd, ReplyTracker, Step};
use codec::mysql::resultset::decode_column_count;
use codec::mysql::{
    BinaryRow, ColumnDefinition, Command, ErrPacket, HandshakeResponse41, HandshakeV10, OkPacket,
    Packet, PacketDecoder, StmtExecute, StmtPrepareOk, TextRow, Value, encode_packet, response,
};
use testkit::{APP_PASSWORD, APP_USER, MariaDb};

struct Conn {
    sock: TcpStream,
    buf: BytesMut,
    caps: u32,
}

impl Conn {
    fn read_packet(&mut self) -> Packet {
        loop {
            if let Some(p) = PacketDecoder::default().decode(&mut self.buf).unwrap() {
                return p;
            }
            let mut chunk = [0u8; 65536];
            let n = self.sock.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, seq: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_packet(seq, payload, &mut out);
        self.sock.write_all(&out).unwrap();
    }

    /// Sends a command and collects its whole reply (checked by the reply tracker).
    fn command(&mut self, cmd: &Command) -> Vec<Bytes> {
        let mut payload = BytesMut::new();
        cmd.encode(&mut payload);
        self.send(0, &payload);
        let mut tracker = ReplyTracker::new(cmd.code(), self.caps);
        let mut reply = Vec::new();
        while !tracker.is_finished() {
            let p = self.read_packet();
            tracker.feed(&p.payload).unwrap();
            reply.push(p.payload);
        }
        reply
    }
}

fn login(db: &MariaDb, user: &str, password: &str) -> (Conn, Bytes) {
    let sock = TcpStream::connect(db.addr()).unwrap();
    let mut conn = Conn {
        sock,
        buf: BytesMut::new(),
        caps: 0,
    };
    let hs = HandshakeV10::decode(conn.read_packet().payload).unwrap();
    let wanted = capability::DEFAULT_CLIENT | capability::CLIENT_DEPRECATE_EOF;
    let resp =
        HandshakeResponse41::for_server(&hs, user, password.as_bytes(), Some("mysql"), wanted, 45);
    conn.caps = resp.capabilities;
    let mut payload = BytesMut::new();
    resp.encode(&mut payload);
    conn.send(1, &payload);
    let reply = conn.read_packet();
    assert_eq!(reply.seq, 2);
    (conn, reply.payload)
}

#[test]
fn furrow_client_logs_into_mariadb() {
    let db = MariaDb::start().unwrap();

    let (_, reply) = login(&db, APP_USER, "wrong");
    let err = ErrPacket::decode(reply).unwrap();
    assert_eq!((err.code, err.sql_state_str()), (1045, "28000"));

    let (mut conn, reply) = login(&db, APP_USER, APP_PASSWORD);
    assert!(
        response::is_ok(&reply),
        "login rejected: {:?}",
        ErrPacket::decode(reply.clone())
    );
    OkPacket::decode(reply, conn.caps).unwrap();

    // Text protocol, ended by an OK with a 0xFE header (CLIENT_DEPRECATE_EOF).
    let reply = conn.command(&Command::Query(Bytes::from_static(
        b"SELECT CAST(-7 AS SIGNED) AS i, 'h\xc3\xa9' AS s, NULL AS n, CAST('2024-02-29 01:02:03.5' AS DATETIME(6)) AS t",
    )));
    let n = decode_column_count(reply[0].clone()).unwrap() as usize;
    let cols: Vec<ColumnDefinition> = reply[1..=n]
        .iter()
        .map(|p| ColumnDefinition::decode(p.clone()).unwrap())
        .collect();
    let row = TextRow::decode(reply[n + 1].clone(), n)
        .unwrap()
        .values(&cols)
        .unwrap();
    assert_eq!(row[0], Value::Int(-7));
    assert_eq!(row[1], Value::Bytes(Bytes::from("hé")));
    assert_eq!(row[2], Value::Null);
    let Value::DateTime(t) = row[3] else {
        panic!("not a datetime: {:?}", row[3])
    };
    assert_eq!((t.date.day, t.second, t.micro), (29, 3, 500_000));
    assert!(response::is_end_of_rows(&reply[n + 2], true));

    // Binary protocol through COM_STMT_PREPARE / EXECUTE / CLOSE.
    let reply = conn.command(&Command::StmtPrepare(Bytes::from_static(
        b"SELECT ? + 1 AS x, CONCAT(?, '!') AS y",
    )));
    let ok = StmtPrepareOk::decode(reply[0].clone()).unwrap();
    assert_eq!((ok.num_params, ok.num_columns), (2, 2));
    let exec = StmtExecute::new(
        ok.statement_id,
        &[
            (
                ParamType {
                    column_type: ty::LONGLONG,
                    unsigned: false,
                },
                Value::Int(41),
            ),
            (
                ParamType {
                    column_type: ty::VAR_STRING,
                    unsigned: false,
                },
                Value::Bytes(Bytes::from("hi")),
            ),
        ],
    )
    .unwrap();
    let reply = conn.command(&Command::StmtExecute(exec));
    let cols: Vec<ColumnDefinition> = reply[1..=2]
        .iter()
        .map(|p| ColumnDefinition::decode(p.clone()).unwrap())
        .collect();
    let row = BinaryRow::decode(reply[3].clone(), &cols).unwrap();
    assert_eq!(row.values[0], Value::Int(42));
    assert_eq!(row.values[1], Value::Bytes(Bytes::from("hi!")));
    let mut close = BytesMut::new();
    Command::StmtClose(ok.statement_id).encode(&mut close);
    conn.send(0, &close);

    // An error reply ends the reply too.
    let reply = conn.command(&Command::Query(Bytes::from_static(
        b"SELECT * FROM no_such_table",
    )));
    let mut t = ReplyTracker::new(3, conn.caps);
    assert_eq!(t.feed(&reply[0]).unwrap(), Step::Done(ReplyEnd::Err));
    let reply = conn.command(&Command::Ping);
    assert!(response::is_ok(&reply[0]));
}

/// Runs a text query and returns its columns and typed rows.
fn query(conn: &mut Conn, sql: &str) -> (Vec<ColumnDefinition>, Vec<Vec<Value>>) {
    let reply = conn.command(&Command::Query(Bytes::copy_from_slice(sql.as_bytes())));
    if response::is_err(&reply[0]) {
        panic!("{sql}: {:?}", ErrPacket::decode(reply[0].clone()).unwrap());
    }
    if response::is_ok(&reply[0]) {
        return (Vec::new(), Vec::new());
    }
    let n = decode_column_count(reply[0].clone()).unwrap() as usize;
    let cols: Vec<ColumnDefinition> = reply[1..=n]
        .iter()
        .map(|p| ColumnDefinition::decode(p.clone()).unwrap())
        .collect();
    let rows = reply[n + 1..reply.len() - 1]
        .iter()
        .map(|p| {
            TextRow::decode(p.clone(), n)
                .unwrap()
                .values(&cols)
                .unwrap()
        })
        .collect();
    (cols, rows)
}

/// `compare_values` agrees with MariaDB's own ORDER BY on every pair of values: the server ranks
/// them with DENSE_RANK() (equal values share a rank) and our order must match rank order.
#[test]
fn compare_values_matches_mariadb_order_by() {
    let db = MariaDb::start().unwrap();
    let (mut conn, reply) = login(&db, APP_USER, APP_PASSWORD);
    assert!(response::is_ok(&reply));
    query(&mut conn, "CREATE DATABASE cmp");
    let strings = [
        "a", "A", "á", "Ä", "b", "B ", "ß", "ss", "s", "S", "Z", "z", "ÿ", "y", "Y", "é", "e", "E",
        "æ", "Æ", "ø", "Ø", "o", "ñ", "N", "ð", "Þ", "þ", "ł", "Ł", "œ", "Œ", "😀", "😁", "中",
        "文", "", " ", "a ", "ab", "aB", "Ab", "a b", "_", "-", "0", "9", "10", "~", "ǆ", "Ǆ", "ё",
        "Ё", "е", "Σ", "σ", "ς", "ı", "I", "i", "İ",
    ];
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
            strings.iter().map(|s| format!("'{s}'")).collect(),
        ),
        (
            "VARBINARY(20)",
            strings.iter().map(|s| format!("'{s}'")).collect(),
        ),
        (
            "DECIMAL(30,6)",
            [
                "-1",
                "-1.000001",
                "0",
                "-0",
                "0.000001",
                "123456789012345678901234.5",
                "-99",
                "99.9",
                "100",
                "1e3",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        (
            "BIGINT UNSIGNED",
            [
                "0",
                "1",
                "18446744073709551615",
                "9223372036854775808",
                "42",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        (
            "BIGINT",
            [
                "0",
                "-1",
                "-9223372036854775808",
                "9223372036854775807",
                "42",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        (
            "DOUBLE",
            ["0", "-0.5", "1e300", "-1e-300", "3.25", "2", "-2"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        (
            "DATETIME(6)",
            [
                "'2024-01-01 00:00:00'",
                "'2024-01-01 00:00:00.000001'",
                "'1999-12-31 23:59:59.999999'",
                "'0000-00-00 00:00:00'",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        (
            "TIME(6)",
            [
                "'-838:59:59'",
                "'-00:00:00.5'",
                "'0:0:0'",
                "'00:00:00.000001'",
                "'838:59:59'",
                "'-1:00:00'",
                "'25:00:00'",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        (
            "DATE",
            [
                "'2024-02-29'",
                "'1000-01-01'",
                "'9999-12-31'",
                "'2024-03-01'",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
    ];
    for (i, (column_type, values)) in cases.iter().enumerate() {
        query(
            &mut conn,
            &format!("CREATE TABLE cmp.t{i} (id INT AUTO_INCREMENT PRIMARY KEY, v {column_type})"),
        );
        let tuples: Vec<String> = values.iter().map(|v| format!("({v})")).collect();
        query(
            &mut conn,
            &format!(
                "INSERT INTO cmp.t{i} (v) VALUES {}, (NULL)",
                tuples.join(", ")
            ),
        );
        let (cols, rows) = query(
            &mut conn,
            &format!("SELECT v, DENSE_RANK() OVER (ORDER BY v) FROM cmp.t{i} ORDER BY id"),
        );
        let col = &cols[0];
        for a in &rows {
            for b in &rows {
                let ours = codec::mysql::compare_values(&a[0], &b[0], col);
                let rank = |r: &Value| match r {
                    Value::Int(x) => *x as i128,
                    Value::UInt(x) => *x as i128,
                    _ => panic!("rank {r:?}"),
                };
                let theirs = rank(&a[1]).cmp(&rank(&b[1]));
                assert_eq!(ours, theirs, "{column_type}: {:?} vs {:?}", a[0], b[0]);
            }
        }
    }
}
