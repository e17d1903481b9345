//! Decoder entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/mysql_*.rs`) and the
//! corpus replay test. Each takes arbitrary bytes, must never panic, and returns `Err` with a
//! description when a round-trip invariant is violated (the fuzz target turns that into a crash).

use bytes::{Bytes, BytesMut};

use super::command::ParamType;
use super::consts::capability::{CLIENT_DEPRECATE_EOF, DEFAULT_CLIENT};
use super::login::{ClientLogin, LoginConfig, LoginStep};
use super::reply::{ReplyTracker, Step};
use super::response::OkRef;
use super::{
    AuthMoreData, AuthSwitchRequest, BinaryRow, ClientHandshake, ColumnDefinition, Command,
    EofPacket, ErrPacket, HandshakeV10, OkPacket, PacketDecoder, StmtExecute, StmtPrepareOk,
    TextRow, encode_packet,
};

/// A violated invariant.
pub type Violation = String;

fn check<T: PartialEq + std::fmt::Debug>(what: &str, a: &T, b: &T) -> Result<(), Violation> {
    if a == b {
        Ok(())
    } else {
        Err(format!("{what}: {a:?} != {b:?}"))
    }
}

/// Frames: decode every packet (cap 64 KiB); decoded payloads re-frame to the consumed bytes.
pub fn packets(data: &[u8]) -> Result<(), Violation> {
    let dec = PacketDecoder::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while let Ok(Some(p)) = dec.decode(&mut buf) {
        let mut again = BytesMut::new();
        encode_packet(p.seq, &p.payload, &mut again);
        let end = consumed + again.len();
        check("reframed packet", &&again[..], &&data[consumed..end])?;
        consumed = end;
    }
    Ok(())
}

/// Commands: whatever decodes must encode back to the same bytes.
pub fn command(data: &[u8]) -> Result<(), Violation> {
    let payload = Bytes::copy_from_slice(data);
    if let Ok(cmd) = Command::decode(payload.clone()) {
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        let back = Command::decode(out.freeze()).map_err(|e| format!("re-decode failed: {e}"))?;
        check("command round trip", &back, &cmd)?;
        if let Command::StmtExecute(e) = &cmd {
            let n = data.first().map_or(0, |b| usize::from(b % 16));
            if let Ok(params) = e.params(n, None) {
                let pairs: Vec<(ParamType, _)> = params
                    .types
                    .iter()
                    .copied()
                    .zip(params.values.clone())
                    .collect();
                // Compare encodings, not values: NaN floats are not equal to themselves.
                if let Ok(rebuilt) = StmtExecute::new(e.statement_id, &pairs) {
                    let again = rebuilt
                        .params(n, None)
                        .map_err(|e| format!("params re-decode: {e}"))?;
                    let pairs2: Vec<(ParamType, _)> =
                        again.types.iter().copied().zip(again.values).collect();
                    let twice = StmtExecute::new(e.statement_id, &pairs2)
                        .map_err(|e| format!("params re-encode: {e}"))?;
                    check("execute params", &twice.params_raw, &rebuilt.params_raw)?;
                }
            }
        }
    }
    Ok(())
}

/// Connection phase: server handshake, client response, auth switch, more data.
pub fn handshake(data: &[u8]) -> Result<(), Violation> {
    let payload = Bytes::copy_from_slice(data);
    if let Ok(hs) = HandshakeV10::decode(payload.clone()) {
        let mut out = BytesMut::new();
        hs.encode(&mut out);
        let back =
            HandshakeV10::decode(out.freeze()).map_err(|e| format!("handshake re-decode: {e}"))?;
        check("handshake scramble", &back.scramble(), &hs.scramble())?;
    }
    if let Ok(ClientHandshake::Response(r)) = ClientHandshake::decode(payload.clone()) {
        let mut out = BytesMut::new();
        r.encode(&mut out);
        if let Ok(ClientHandshake::Response(back)) = ClientHandshake::decode(out.freeze()) {
            check("handshake response user", &back.username, &r.username)?;
        }
    }
    let _ = AuthSwitchRequest::decode(payload.clone());
    let _ = AuthMoreData::decode(payload);
    // The client login fed the input as a series of server packets (7-byte chunks after the
    // first, which is offered whole as the greeting): never a panic, and never "done" without
    // an OK having been fed.
    let tls = data.first().is_some_and(|b| b & 1 == 1);
    let mut login = ClientLogin::new(LoginConfig {
        user: "u".into(),
        password: b"pw".to_vec(),
        database: None,
        capabilities: DEFAULT_CLIENT,
        charset: 45,
        max_packet_size: 1 << 24,
        tls,
        mariadb_capabilities: 0,
    });
    let mut seq = 0u8;
    for p in std::iter::once(data).chain(data.chunks(7)) {
        match login.on_packet(seq, Bytes::copy_from_slice(p)) {
            Ok(LoginStep::StartTls(_)) => {
                if login.tls_started().is_err() {
                    return Err("tls_started refused right after StartTls".into());
                }
            }
            Ok(LoginStep::Done) => {
                if p.first() != Some(&0) {
                    return Err("login done without an OK".into());
                }
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
        seq = seq.wrapping_add(2);
    }
    Ok(())
}

/// Responses and rows: the first byte picks the column types, the rest is a payload decoded as
/// every response shape; rows that decode must re-encode identically.
pub fn resultset(data: &[u8]) -> Result<(), Violation> {
    let Some((&selector, rest)) = data.split_first() else {
        return Ok(());
    };
    let payload = Bytes::copy_from_slice(rest);
    let caps = if selector & 1 == 0 {
        DEFAULT_CLIENT
    } else {
        DEFAULT_CLIENT | CLIENT_DEPRECATE_EOF
    };
    // The borrowed and the owned OK parsers accept the same packets with the same fields.
    match (
        OkRef::parse(rest, caps),
        OkPacket::decode(payload.clone(), caps),
    ) {
        (Ok(r), Ok(o)) => {
            let same = (
                r.affected_rows,
                r.last_insert_id,
                r.status,
                r.warnings,
                r.info,
            ) == (
                o.affected_rows,
                o.last_insert_id,
                o.status,
                o.warnings,
                &o.info[..],
            );
            if !same || r.session_state != o.session_state.as_deref() {
                return Err(format!("OkRef {r:?} != OkPacket {o:?}"));
            }
            for e in r.session_entries() {
                if e.is_err() {
                    break;
                }
            }
        }
        (Err(_), Err(_)) => {}
        (a, b) => return Err(format!("OK parsers disagree: {a:?} vs {b:?}")),
    }
    if let Ok(ok) = OkPacket::decode(payload.clone(), caps) {
        let mut out = BytesMut::new();
        ok.encode(caps, &mut out);
        let back =
            OkPacket::decode(out.freeze(), caps).map_err(|e| format!("OK re-decode: {e}"))?;
        check("OK round trip", &back, &ok)?;
    }
    if let Ok(err) = ErrPacket::decode(payload.clone()) {
        let mut out = BytesMut::new();
        err.encode(&mut out);
        check("ERR round trip", &&out[..], &rest)?;
    }
    let _ = EofPacket::decode(payload.clone());
    let _ = StmtPrepareOk::decode(payload.clone());
    if let Ok(c) = ColumnDefinition::decode(payload.clone()) {
        // The two filler bytes are not kept (servers send zeros), so compare decoded fields.
        let mut out = BytesMut::new();
        c.encode(&mut out);
        let back =
            ColumnDefinition::decode(out.freeze()).map_err(|e| format!("column re-decode: {e}"))?;
        check("column definition round trip", &back, &c)?;
    }
    const TYPES: [u8; 16] = [
        1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 0xF6, 0xFC, 0xFD, 0x10,
    ];
    let columns: Vec<ColumnDefinition> = (0..usize::from(selector >> 4))
        .map(|i| {
            let t = TYPES[(usize::from(selector) + i * 7) % TYPES.len()];
            let flags = if i % 2 == 0 {
                0
            } else {
                super::consts::column_flag::UNSIGNED
            };
            ColumnDefinition::new("c", t, 63, 20, flags, 6)
        })
        .collect();
    if let Ok(row) = TextRow::decode(payload.clone(), columns.len()) {
        // Compare cells, not bytes: a peer may send non-minimal length encodings, which are
        // accepted and re-encoded minimally.
        let mut out = BytesMut::new();
        row.encode(&mut out);
        let back = TextRow::decode(out.freeze(), columns.len())
            .map_err(|e| format!("text row re-decode: {e}"))?;
        check("text row round trip", &back, &row)?;
        let _ = row.values(&columns);
    }
    if let Ok(row) = BinaryRow::decode(payload.clone(), &columns) {
        let mut out = BytesMut::new();
        row.encode(&columns, &mut out)
            .map_err(|e| format!("binary row re-encode: {e}"))?;
        let back = BinaryRow::decode(out.clone().freeze(), &columns)
            .map_err(|e| format!("binary row re-decode: {e}"))?;
        let mut twice = BytesMut::new();
        back.encode(&columns, &mut twice)
            .map_err(|e| format!("binary row re-encode: {e}"))?;
        check("binary row round trip", &twice, &out)?;
    }
    let mut tracker = ReplyTracker::new(selector & 0x1F, caps);
    for chunk in rest.chunks(7) {
        if tracker.is_finished() {
            break;
        }
        match tracker.advance(chunk) {
            Ok(fed) if matches!(fed.step, Step::Done(_)) != tracker.is_finished() => {
                return Err("step and is_finished disagree".into());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // `rest` as wire bytes in the rows of a result.
    let limit = if selector & 2 == 0 {
        usize::MAX
    } else {
        usize::from(selector) * 3
    };
    row_run_matches_advance(
        &ReplyTracker::for_kind(super::reply::ReplyKind::Fetch, caps),
        rest,
        limit,
    )?;
    Ok(())
}

/// The run of rows [`ReplyTracker::row_run`] finds in `wire` (at most `limit` bytes) is exactly the
/// packets that feeding `tracker` one by one calls rows, from the front, with the last one's
/// sequence id. Shared by the fuzz target and the codec's property test.
pub fn row_run_matches_advance(
    tracker: &ReplyTracker,
    wire: &[u8],
    limit: usize,
) -> Result<(), Violation> {
    let run = tracker.row_run(wire, limit);
    let mut reference = tracker.clone();
    let end_of_input = wire.len().min(limit);
    let (mut at, mut n, mut last) = (0usize, 0u64, 0u8);
    while at + 4 <= end_of_input {
        let len = super::packet::payload_len(&wire[at..]);
        let end = at + 4 + len;
        // A 16 MiB fragment is framed by the caller, not part of a run.
        if len == 0 || len >= 0xFF_FFFF || end > end_of_input {
            break;
        }
        match reference.advance(&wire[at + 4..end]) {
            Ok(fed) if fed.seen == super::reply::Seen::Row && fed.step == Step::More => {}
            _ => break,
        }
        last = wire[at + 3];
        n += 1;
        at = end;
    }
    if (run.len, run.rows) != (at, n) || (n > 0 && run.last_seq != last) {
        return Err(format!(
            "row run {run:?} != {n} rows in {at} bytes, last sequence id {last}"
        ));
    }
    Ok(())
}
