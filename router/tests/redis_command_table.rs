//! The generated command table (flags, ACL categories, key positions) agrees with a real
//! redis-server's `COMMAND` and `ACL CAT` (a real server started by the testkit on a free loopback port
//! in a temp dir). Needs `redis-server` in PATH: fails, never skips, when it is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use router::redis::command::{CommandInfo, category, lookup, subcommand};
use router::redis::command_table::COMMANDS;

/// A reply, enough of RESP2 for `COMMAND`.
#[derive(Debug)]
enum Reply {
    Str(String),
    Int(i64),
    Arr(Vec<Reply>),
    Nil,
}

impl Reply {
    fn arr(&self) -> &[Reply] {
        match self {
            Reply::Arr(v) => v,
            other => panic!("expected array, got {other:?}"),
        }
    }
    fn str(&self) -> &str {
        match self {
            Reply::Str(s) => s,
            other => panic!("expected string, got {other:?}"),
        }
    }
    fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected integer, got {other:?}"),
        }
    }
}

fn read_reply(r: &mut BufReader<TcpStream>) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).expect("read");
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" => Reply::Str(rest.to_owned()),
        "-" => panic!("server error: {rest}"),
        ":" => Reply::Int(rest.parse().unwrap()),
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                return Reply::Nil;
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).unwrap();
            buf.truncate(n as usize);
            Reply::Str(String::from_utf8(buf).unwrap())
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            Reply::Arr((0..n.max(0)).map(|_| read_reply(r)).collect())
        }
        other => panic!("unexpected RESP type {other}"),
    }
}

fn start_redis() -> testkit::RedisServer {
    testkit::RedisServer::start()
        .expect("redis-server must be installed (apt-get install -y redis-server)")
}

fn check(info: &CommandInfo, reply: &[Reply]) {
    let name = reply[0].str();
    assert_eq!(info.name, name);
    assert_eq!(i64::from(info.arity), reply[1].int(), "{name}: arity");
    let mut want: Vec<&str> = reply[2].arr().iter().map(Reply::str).collect();
    let mut got: Vec<&str> = info.flags.names().collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "{name}: flags");
    let mut want: Vec<String> = reply[6]
        .arr()
        .iter()
        .map(|c| c.str().trim_start_matches('@').to_owned())
        .collect();
    let mut got: Vec<String> = info.acl.names().map(str::to_owned).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "{name}: ACL categories");
    assert_eq!(
        i64::from(info.first_key),
        reply[3].int(),
        "{name}: first key"
    );
    assert_eq!(i64::from(info.last_key), reply[4].int(), "{name}: last key");
    assert_eq!(i64::from(info.step), reply[5].int(), "{name}: step");
}

#[test]
fn generated_table_matches_a_real_server() {
    let server = start_redis();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream.write_all(b"*1\r\n$7\r\nCOMMAND\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let reply = read_reply(&mut reader);
    let commands = reply.arr();
    assert_eq!(commands.len(), COMMANDS.len(), "number of commands");
    let mut subs = 0;
    for c in commands {
        let c = c.arr();
        let name = c[0].str();
        let info = lookup(name.to_uppercase().as_bytes())
            .unwrap_or_else(|| panic!("{name} missing from the table"));
        check(info, c);
        let server_subs = c[9].arr();
        assert_eq!(
            info.subcommands.len(),
            server_subs.len(),
            "{name}: subcommands"
        );
        for s in server_subs {
            let s = s.arr();
            let full = s[0].str();
            let short = full.split_once('|').unwrap().1;
            let sub = subcommand(info, short.as_bytes())
                .unwrap_or_else(|| panic!("{full} missing from the table"));
            check(sub, s);
            subs += 1;
        }
    }
    assert!(subs > 100, "only {subs} subcommands checked");

    // Every category the server knows is one the table (and the config check) knows, and back.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream
        .write_all(b"*2\r\n$3\r\nACL\r\n$3\r\nCAT\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let reply = read_reply(&mut reader);
    let mut server_cats: Vec<&str> = reply.arr().iter().map(Reply::str).collect();
    let mut ours: Vec<&str> = category::NAMES.iter().map(|(n, _)| *n).collect();
    server_cats.sort_unstable();
    ours.sort_unstable();
    assert_eq!(ours, server_cats, "ACL CAT");
}
