//! The generated command table agrees with a real redis-server's `COMMAND` (started here on a free
//! loopback port in a temp dir). Needs `redis-server` in PATH: fails, never skips, when it is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use router::redis::command::{CommandInfo, lookup, subcommand};
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

/// A redis-server owned by the test, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install -y redis-server)");
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
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
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
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
}
