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
    BinaryRow, ClientLogin, ColumnDefinition, Command, ErrPacket, HandshakeResponse41,
    HandshakeV10, LoginConfig, LoginError, LoginStep, OkPacket, Packet, PacketDecoder, ReplyKind,
    Seen, StmtExecute, StmtPrepareOk, TextRow, Value, encode_packet, response,
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

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Strings that stress a collation: case and accent variants, ß/ss, expansions, ignorables,
/// trailing spaces and tabs, emoji, CJK, and random BMP characters from a fixed seed.
fn collation_strings(seed: u64, random: usize) -> Vec<String> {
    let fixed = [
        "",
        " ",
        "  ",
        "\t",
        "a",
        "A",
        "a ",
        "a  ",
        "a\t",
        "a\u{0}",
        "ab",
        "aB",
        "Ab",
        "a b",
        "b",
        "café",
        "cafe",
        "CAFE",
        "Café ",
        "cafè",
        "über",
        "uber",
        "Über",
        "UBER",
        "ångström",
        "angstrom",
        "Ångström",
        "ß",
        "ss",
        "SS",
        "s",
        "ẞ",
        "æ",
        "ae",
        "Æ",
        "ø",
        "o",
        "ö",
        "ä",
        "å",
        "z",
        "Z",
        "ÿ",
        "y",
        "ñ",
        "n",
        "ð",
        "þ",
        "ł",
        "œ",
        "oe",
        "ǆ",
        "Ǆ",
        "dž",
        "ё",
        "е",
        "Σ",
        "σ",
        "ς",
        "ı",
        "i",
        "I",
        "İ",
        "😀",
        "😁",
        "a😀",
        "中",
        "文",
        "\u{AD}",
        "a\u{AD}b",
        "ab",
        "a\u{301}",
        "á",
        "\u{A0}",
        "a\u{A0}",
        "a\u{200B}",
        "\u{FFFD}",
        "\u{FFFF}",
        "_",
        "-",
        "0",
        "9",
        "10",
        "~",
        "ﬁ",
        "fi",
        "Ⅻ",
        "xii",
        "①",
        "1",
        "ｶ",
        "カ",
        "か",
    ];
    let pool: Vec<char> =
        "aAbBeEsSzZ éèêÉÈáàâÁÅåäÄöÖøØüÜßẞæÆœ\t\u{0}\u{AD}\u{A0}\u{301}\u{200B}ıİiIσςΣёЁ中文😀😁ﬁⅫ①"
            .chars()
            .collect();
    let mut rng = Rng(seed);
    let mut out: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    for _ in 0..random {
        let len = rng.below(6);
        let mut s = String::new();
        for _ in 0..len {
            let c = if rng.below(4) == 0 {
                // Any BMP character but the surrogates.
                loop {
                    if let Some(c) = char::from_u32(rng.below(0x1_0000) as u32) {
                        break c;
                    }
                }
            } else {
                pool[rng.below(pool.len())]
            };
            s.push(c);
        }
        if rng.below(5) == 0 {
            s.push_str(&" ".repeat(1 + rng.below(2)));
        }
        out.push(s);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02X}")).collect()
}

/// For each collation Furrow knows, generated strings stored in a column of that collation: our
/// ordering agrees with the server's `ORDER BY` (DENSE_RANK over every pair) and our equality key
/// with its `GROUP BY` (the same groups). `character_set_results = NULL` makes the server send
/// each column's own collation id (and its bytes unconverted), which is what we classify.
#[test]
fn collations_match_mariadb_order_by_and_group_by() {
    use codec::mysql::Collation;
    let db = MariaDb::start().unwrap();
    let (mut conn, reply) = login(&db, APP_USER, APP_PASSWORD);
    assert!(response::is_ok(&reply));
    query(&mut conn, "CREATE DATABASE coll");
    query(&mut conn, "SET character_set_results = NULL");
    let cases: [(&str, u16, Collation); 9] = [
        (
            "utf8mb4 COLLATE utf8mb4_general_ci",
            45,
            Collation::GeneralCi,
        ),
        (
            "utf8mb3 COLLATE utf8mb3_general_ci",
            33,
            Collation::GeneralCi,
        ),
        (
            "utf8mb4 COLLATE utf8mb4_unicode_ci",
            224,
            Collation::UnicodeCi,
        ),
        (
            "utf8mb3 COLLATE utf8mb3_unicode_ci",
            192,
            Collation::UnicodeCi,
        ),
        ("utf8mb4 COLLATE utf8mb4_bin", 46, Collation::BinPadSpace),
        ("utf8mb3 COLLATE utf8mb3_bin", 83, Collation::BinPadSpace),
        (
            "latin1 COLLATE latin1_swedish_ci",
            8,
            Collation::Latin1SwedishCi,
        ),
        ("latin1 COLLATE latin1_bin", 47, Collation::BinPadSpace),
        ("binary", 63, Collation::Binary),
    ];
    for (i, (charset, id, want)) in cases.iter().enumerate() {
        let strings = collation_strings(0x5EED + i as u64, 250);
        // The column's bytes: UTF-8, or latin1 for latin1 columns (characters it cannot hold
        // dropped); utf8mb3 holds no character outside the BMP.
        let mut values: Vec<Vec<u8>> = Vec::new();
        for s in &strings {
            let bytes: Vec<u8> = if charset.starts_with("latin1") {
                s.chars()
                    .filter(|&c| (c as u32) < 0x100 && !(0x80..0xA0).contains(&(c as u32)))
                    .map(|c| c as u8)
                    .collect()
            } else if charset.starts_with("utf8mb3") {
                s.chars()
                    .filter(|&c| (c as u32) <= 0xFFFF)
                    .collect::<String>()
                    .into_bytes()
            } else {
                s.clone().into_bytes()
            };
            values.push(bytes);
        }
        let column = if *charset == "binary" {
            "VARBINARY(64)".to_string()
        } else {
            format!("VARCHAR(64) CHARACTER SET {charset}")
        };
        query(
            &mut conn,
            &format!("CREATE TABLE coll.t{i} (id INT AUTO_INCREMENT PRIMARY KEY, v {column})"),
        );
        let tuples: Vec<String> = values.iter().map(|v| format!("(X'{}')", hex(v))).collect();
        query(
            &mut conn,
            &format!("INSERT INTO coll.t{i} (v) VALUES {}", tuples.join(", ")),
        );
        let (cols, rows) = query(
            &mut conn,
            &format!("SELECT v, DENSE_RANK() OVER (ORDER BY v) FROM coll.t{i} ORDER BY id"),
        );
        assert_eq!(cols[0].charset, *id, "{charset}: column definition's id");
        assert_eq!(Collation::from_id(cols[0].charset), Some(*want));
        let coll = Collation::of_column(&cols[0]).unwrap();
        let bytes = |v: &Value| match v {
            Value::Bytes(b) => b.clone(),
            other => panic!("{charset}: not a string: {other:?}"),
        };
        let rank = |r: &Value| match r {
            Value::Int(x) => i128::from(*x),
            Value::UInt(x) => i128::from(*x),
            _ => panic!("rank {r:?}"),
        };
        let mut wrong = Vec::new();
        for a in &rows {
            for b in &rows {
                let (x, y) = (bytes(&a[0]), bytes(&b[0]));
                let ours = coll.compare(&x, &y);
                let theirs = rank(&a[1]).cmp(&rank(&b[1]));
                if ours != theirs && wrong.len() < 10 {
                    wrong.push(format!(
                        "{:?} vs {:?}: ours {ours:?}, server {theirs:?}",
                        String::from_utf8_lossy(&x),
                        String::from_utf8_lossy(&y)
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{charset} ORDER BY:\n{}",
            wrong.join("\n")
        );

        // GROUP BY: the server's groups (as sets of ids) equal the groups of our keys.
        let (_, rows) = query(
            &mut conn,
            &format!(
                "SELECT GROUP_CONCAT(id ORDER BY id) FROM coll.t{i} GROUP BY v ORDER BY MIN(id)"
            ),
        );
        let theirs: Vec<String> = rows
            .iter()
            .map(|r| String::from_utf8_lossy(&bytes(&r[0])).into_owned())
            .collect();
        let (_, rows) = query(
            &mut conn,
            &format!("SELECT id, v FROM coll.t{i} ORDER BY id"),
        );
        let mut groups: Vec<(Vec<u8>, Vec<String>)> = Vec::new();
        for r in &rows {
            let id = match &r[0] {
                Value::Int(x) => x.to_string(),
                other => panic!("id {other:?}"),
            };
            let mut key = Vec::new();
            coll.key(&bytes(&r[1]), &mut key);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ids)) => ids.push(id),
                None => groups.push((key, vec![id])),
            }
        }
        let ours: Vec<String> = groups.into_iter().map(|(_, ids)| ids.join(",")).collect();
        assert_eq!(ours, theirs, "{charset} GROUP BY groups");
    }
}

/// What the collation id of a column definition means: under a result character set (a normal
/// login) the server reports *the result charset's collation* for every text column, whatever
/// the column's own collation; only with `character_set_results = NULL` does it report (and send
/// the bytes in) the column's own. A merge that classifies by the definition's id alone therefore
/// sees utf8mb4_general_ci (the login collation) for a utf8mb4_unicode_ci or latin1 column; the
/// `BINARY` flag still tells a `_bin` column.
#[test]
fn column_definitions_carry_the_result_collation() {
    let db = MariaDb::start().unwrap();
    let (mut conn, reply) = login(&db, APP_USER, APP_PASSWORD);
    assert!(response::is_ok(&reply));
    query(&mut conn, "CREATE DATABASE meta");
    query(
        &mut conn,
        "CREATE TABLE meta.t (u VARCHAR(9) COLLATE utf8mb4_unicode_ci, \
         l VARCHAR(9) CHARACTER SET latin1, b VARCHAR(9) COLLATE utf8mb4_bin, v VARBINARY(9))",
    );
    let ids = |conn: &mut Conn| {
        let (cols, _) = query(conn, "SELECT * FROM meta.t");
        cols.iter()
            .map(|c| {
                (
                    c.charset,
                    c.flags & codec::mysql::consts::column_flag::BINARY != 0,
                )
            })
            .collect::<Vec<_>>()
    };
    // Logged in with utf8mb4_general_ci (45).
    assert_eq!(
        ids(&mut conn),
        [(45, false), (45, false), (45, true), (63, true)]
    );
    query(&mut conn, "SET character_set_results = NULL");
    assert_eq!(
        ids(&mut conn),
        [(224, false), (8, false), (46, true), (63, true)]
    );
}

/// Our equality keys are the server's `WEIGHT_STRING()` (less trailing space weights; weight
/// 0xFFFF escaped) for every
/// BMP character under general_ci and unicode_ci, and every byte under latin1_swedish_ci.
#[test]
fn collation_keys_match_weight_string() {
    use codec::mysql::Collation;
    let db = MariaDb::start().unwrap();
    let (mut conn, reply) = login(&db, APP_USER, APP_PASSWORD);
    assert!(response::is_ok(&reply));
    for (name, coll, space) in [
        ("utf8mb4_general_ci", Collation::GeneralCi, "0020"),
        ("utf8mb4_unicode_ci", Collation::UnicodeCi, "0209"),
    ] {
        let (_, rows) = query(
            &mut conn,
            &format!(
                "SELECT seq, HEX(WEIGHT_STRING(CONVERT(CHAR(seq USING utf16) USING utf8mb4) \
                 COLLATE {name})) FROM mysql.seq_0_to_65535 WHERE seq < 55296 OR seq > 57343"
            ),
        );
        assert_eq!(rows.len(), 0x1_0000 - 0x800);
        let mut wrong = Vec::new();
        for r in &rows {
            let cp = match &r[0] {
                Value::UInt(x) => *x as u32,
                Value::Int(x) => *x as u32,
                other => panic!("{other:?}"),
            };
            let Value::Bytes(h) = &r[1] else {
                panic!("{:?}", r[1])
            };
            let mut theirs = String::from_utf8_lossy(h).into_owned();
            while theirs.len() >= 4 && theirs.ends_with(space) {
                theirs.truncate(theirs.len() - 4);
            }
            let c = char::from_u32(cp).unwrap();
            let mut key = Vec::new();
            coll.key(c.to_string().as_bytes(), &mut key);
            // Our keys escape the weight 0xFFFF as FFFF0000 (to stay apart from invalid bytes).
            let ours = hex(&key).replace("FFFF0000", "FFFF");
            if ours != theirs && wrong.len() < 10 {
                wrong.push(format!("U+{cp:04X}: ours {}, server {theirs}", hex(&key)));
            }
        }
        assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));
    }
    let (_, rows) = query(
        &mut conn,
        "SELECT seq, HEX(WEIGHT_STRING(CONVERT(CHAR(seq) USING latin1) COLLATE latin1_swedish_ci)) \
         FROM mysql.seq_0_to_255",
    );
    for r in &rows {
        let b = match &r[0] {
            Value::UInt(x) => *x as u8,
            Value::Int(x) => *x as u8,
            other => panic!("{other:?}"),
        };
        let Value::Bytes(h) = &r[1] else {
            panic!("{:?}", r[1])
        };
        let mut key = Vec::new();
        Collation::Latin1SwedishCi.key(&[b], &mut key);
        let theirs = String::from_utf8_lossy(h);
        let theirs = if b == b' ' { "" } else { theirs.as_ref() };
        assert_eq!(hex(&key), theirs, "latin1 byte {b:#04x}");
    }
}

/// Drives codec's sans-IO `ClientLogin` over a socket: every step it asks for, until done.
fn drive_login(conn: &mut Conn, login: &mut ClientLogin) -> Result<(), LoginError> {
    loop {
        let p = conn.read_packet();
        match login.on_packet(p.seq, p.payload)? {
            LoginStep::Done => return Ok(()),
            LoginStep::Read => {}
            LoginStep::Send(o) => conn.send(o.seq, &o.payload),
            LoginStep::StartTls(_) => panic!("TLS was not asked for"),
        }
    }
}

fn login_config(user: &str, password: &str, database: Option<&str>) -> LoginConfig {
    LoginConfig {
        user: user.into(),
        password: password.as_bytes().to_vec(),
        database: database.map(String::from),
        capabilities: capability::DEFAULT_CLIENT,
        charset: 45,
        max_packet_size: 1 << 24,
        tls: false,
        mariadb_capabilities: 0,
    }
}

#[test]
fn client_login_and_reply_tracker_against_mariadb() {
    let db = MariaDb::start().unwrap();
    let connect = || Conn {
        sock: TcpStream::connect(db.addr()).unwrap(),
        buf: BytesMut::new(),
        caps: 0,
    };

    // A wrong password: the server's own refusal comes back.
    let mut conn = connect();
    let mut login = ClientLogin::new(login_config(APP_USER, "wrong", None));
    match drive_login(&mut conn, &mut login) {
        Err(LoginError::Refused(e)) => assert_eq!(e.code, 1045),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The right one, with a schema selected at login.
    let mut conn = connect();
    let mut login = ClientLogin::new(login_config(APP_USER, APP_PASSWORD, Some("mysql")));
    drive_login(&mut conn, &mut login).unwrap();
    assert!(login.is_done());
    conn.caps = login.capabilities();
    let reply = conn.command(&Command::Query(Bytes::from_static(b"SELECT DATABASE()")));
    assert_eq!(
        TextRow::decode(reply[3].clone(), 1).unwrap().cells[0].as_deref(),
        Some(&b"mysql"[..])
    );

    // What the tracker reports on real replies: OK numbers, rows, end status.
    conn.command(&Command::Query(Bytes::from_static(
        b"CREATE TEMPORARY TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    )));
    let mut payload = BytesMut::new();
    Command::Query(Bytes::from_static(
        b"INSERT INTO t (v) VALUES (1), (2), (3)",
    ))
    .encode(&mut payload);
    conn.send(0, &payload);
    let mut t = ReplyTracker::for_kind(ReplyKind::ResultSet, conn.caps);
    let fed = t.advance(&conn.read_packet().payload).unwrap();
    match fed.seen {
        Seen::Ok(ok) => assert_eq!((ok.affected_rows, ok.last_insert_id), (3, 1)),
        other => panic!("expected an OK, got {other:?}"),
    }
    assert!(matches!(fed.step, Step::Done(ReplyEnd::Ok { .. })));
    let mut payload = BytesMut::new();
    Command::Query(Bytes::from_static(b"SELECT v FROM t ORDER BY id")).encode(&mut payload);
    conn.send(0, &payload);
    let mut t = ReplyTracker::for_kind(ReplyKind::ResultSet, conn.caps);
    let mut seen = Vec::new();
    while !t.is_finished() {
        seen.push(t.advance(&conn.read_packet().payload).unwrap().seen);
    }
    let rows = seen.iter().filter(|s| **s == Seen::Row).count();
    assert_eq!(rows, 3);
    assert_eq!(seen[0], Seen::ColumnCount(1));

    // COM_CHANGE_USER through the same machine: a fresh session without the schema.
    let (mut again, payload) = ClientLogin::change_user(
        login_config(APP_USER, APP_PASSWORD, None),
        conn.caps,
        login.nonce(),
        false,
    );
    conn.send(0, &payload);
    drive_login(&mut conn, &mut again).unwrap();
    let reply = conn.command(&Command::Query(Bytes::from_static(b"SELECT DATABASE()")));
    assert_eq!(TextRow::decode(reply[3].clone(), 1).unwrap().cells[0], None);
    let (mut bad, payload) = ClientLogin::change_user(
        login_config(APP_USER, "wrong", None),
        conn.caps,
        again.nonce(),
        false,
    );
    conn.send(0, &payload);
    assert!(matches!(
        drive_login(&mut conn, &mut bad),
        Err(LoginError::Refused(_))
    ));
}
