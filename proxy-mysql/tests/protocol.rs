//! Protocol-level behaviour with a raw client: commands the drivers rarely send (COM_FIELD_LIST,
//! COM_STATISTICS, COM_PING, unknown commands), bad sequence ids, and prepared-statement errors.

mod common;

use common::*;

#[test]
fn rare_commands_and_bad_input() {
    let rs = replica_set(1);
    let proxy = proxy_for(&rs, "");

    let mut c = RawClient::login(proxy.addr, "app", Some("app"));
    // COM_PING → OK.
    c.send(0, &[0x0e]);
    assert_eq!(c.read().payload.first(), Some(&0x00));
    // COM_FIELD_LIST app.t → column definitions, then EOF.
    c.send(0, b"\x04t\x00");
    let mut names = Vec::new();
    loop {
        let p = c.read();
        if p.payload.first() == Some(&0xFE) && p.payload.len() < 9 {
            break;
        }
        assert_ne!(
            p.payload.first(),
            Some(&0xFF),
            "field list failed: {:?}",
            p.payload
        );
        let def = codec::mysql::ColumnDefinition::decode(p.payload).expect("column definition");
        names.push(String::from_utf8_lossy(&def.name).into_owned());
    }
    assert_eq!(names, ["id", "v"]);
    // COM_STATISTICS → a text packet.
    c.send(0, &[0x09]);
    let p = c.read();
    assert!(
        String::from_utf8_lossy(&p.payload).contains("Uptime"),
        "{:?}",
        p.payload
    );
    // Unknown command → ERR 1047, connection stays usable.
    c.send(0, &[0x55]);
    let p = c.read();
    let e = codec::mysql::ErrPacket::decode(p.payload).expect("err");
    assert_eq!(e.code, 1047);
    // Executing an unknown statement id → ERR 1243.
    let mut exec = vec![0x17];
    exec.extend_from_slice(&999u32.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0]);
    c.send(0, &exec);
    let e = codec::mysql::ErrPacket::decode(c.read().payload).expect("err");
    assert_eq!(e.code, 1243);
    // COM_INIT_DB to a missing schema → the server's 1049; the session keeps its schema.
    c.send(0, b"\x02nosuchdb");
    let e = codec::mysql::ErrPacket::decode(c.read().payload).expect("err");
    assert_eq!(e.code, 1049);
    c.send(0, b"\x03SELECT DATABASE()");
    let mut rows = Vec::new();
    loop {
        let p = c.read();
        // Column count, definition, EOF, row, EOF: the second EOF ends the result.
        if p.payload.first() == Some(&0xFE) && p.payload.len() < 9 && rows.len() > 2 {
            break;
        }
        rows.push(p.payload);
    }
    assert!(rows.iter().any(|r| r.as_ref() == b"\x03app"), "{rows:?}");

    // A command with a non-zero sequence id: ERR, then the connection is closed.
    let mut bad = RawClient::login(proxy.addr, "app", None);
    bad.send(3, b"\x03SELECT 1");
    let p = bad.read();
    assert_eq!(p.payload.first(), Some(&0xFF));
    assert!(bad.closed());
    // Others are unaffected.
    assert_eq!(proxy.value("SELECT 1"), "1");
}
