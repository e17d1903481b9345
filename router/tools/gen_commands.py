#!/usr/bin/env python3
"""Generate router/src/redis/command_table.rs from a real redis-server's `COMMAND` and `COMMAND DOCS`.

Usage: python3 router/tools/gen_commands.py [--redis-server PATH] [--out FILE]

Starts a throwaway redis-server on a free loopback port in a temp dir (never the system instance), reads
every command and subcommand (name, arity, flags, ACL categories, legacy first/last/step key positions,
request/response tips) plus its documentation (group, summary, since), and writes a Rust table with an
open-addressing hash index for allocation-free, case-insensitive lookup. The execution policy is NOT
generated: it lives in router/src/redis/policy.rs, keyed by name, so regeneration keeps it. Standard
library only.
"""

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redis_resp  # noqa: E402

# Redis flag name -> Rust constant in router/src/redis/command.rs (`flags::*`).
FLAGS = {
    "write": "WRITE", "readonly": "READONLY", "denyoom": "DENYOOM", "admin": "ADMIN",
    "pubsub": "PUBSUB", "noscript": "NOSCRIPT", "blocking": "BLOCKING", "loading": "LOADING",
    "stale": "STALE", "skip_monitor": "SKIP_MONITOR", "skip_slowlog": "SKIP_SLOWLOG",
    "asking": "ASKING", "fast": "FAST", "no_auth": "NO_AUTH", "may_replicate": "MAY_REPLICATE",
    "no_mandatory_keys": "NO_MANDATORY_KEYS", "no_async_loading": "NO_ASYNC_LOADING",
    "no_multi": "NO_MULTI", "movablekeys": "MOVABLEKEYS", "allow_busy": "ALLOW_BUSY",
    "module": "MODULE", "sentinel": "SENTINEL", "only_sentinel": "ONLY_SENTINEL",
}

# Redis ACL category (`ACL CAT`, without the `@`) -> Rust constant in router/src/redis/command.rs
# (`category::*`). The generator checks this against the server's own `ACL CAT`.
CATEGORIES = {
    "keyspace": "KEYSPACE", "read": "READ", "write": "WRITE", "set": "SET", "sortedset": "SORTEDSET",
    "list": "LIST", "hash": "HASH", "string": "STRING", "bitmap": "BITMAP",
    "hyperloglog": "HYPERLOGLOG", "geo": "GEO", "stream": "STREAM", "pubsub": "PUBSUB",
    "admin": "ADMIN", "fast": "FAST", "slow": "SLOW", "blocking": "BLOCKING",
    "dangerous": "DANGEROUS", "connection": "CONNECTION", "transaction": "TRANSACTION",
    "scripting": "SCRIPTING",
}

# Must match `index_hash` in router/src/redis/command.rs.
INDEX_SIZE = 512


def index_hash(name):
    """FNV-1a (32 bit) over the ASCII-uppercased name, folded; the slot is `h & (INDEX_SIZE - 1)`."""
    h = 0x811C9DC5
    for b in name.upper().encode():
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return (h ^ (h >> 16)) & 0xFFFFFFFF


def text(x):
    if isinstance(x, bytes):
        return x.decode()
    if isinstance(x, list):
        return [text(i) for i in x]
    return x


def pairs(flat):
    """A RESP2 flat [k, v, k, v, ...] list as a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def rust_str(s):
    out = []
    for ch in s:
        if ch in "\\\"":
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.append("\\u{%x}" % ord(ch))
    return '"' + "".join(out) + '"'


def rust_ident(name):
    return name.upper().replace("|", "_").replace("-", "_")


def flag_expr(flags):
    names = []
    for f in flags:
        if f not in FLAGS:
            raise SystemExit("unknown command flag %r: add it to FLAGS and to command.rs" % f)
        names.append("flags::" + FLAGS[f])
    if not names:
        return "CommandFlags(0)"
    return "CommandFlags(" + " | ".join(names) + ")"


def category_expr(categories):
    names = []
    for c in categories:
        c = c.removeprefix("@")
        if c not in CATEGORIES:
            raise SystemExit("unknown ACL category %r: add it to CATEGORIES and to command.rs" % c)
        names.append("category::" + CATEGORIES[c])
    if not names:
        return "AclCategories(0)"
    return "AclCategories(" + " | ".join(names) + ")"


def row(cmd, doc, subs_ident):
    name, arity, flags, first, last, step = cmd[0], cmd[1], cmd[2], cmd[3], cmd[4], cmd[5]
    categories = cmd[6]
    tips = cmd[7]
    d = pairs(doc) if doc else {}
    group = d.get("group", "")
    summary = d.get("summary", "")
    since = d.get("since", "")
    tips_expr = "&[" + ", ".join(rust_str(t) for t in tips) + "]"
    return ("    CommandInfo::new(%s, %d, %s, %s, %d, %d, %d, %s, %s, %s, %s, %s),"
            % (rust_str(name), arity, flag_expr(flags), category_expr(categories), first, last,
               step, rust_str(group),
               rust_str(summary), rust_str(since), tips_expr, subs_ident))


def build_index(names):
    slots = [0] * INDEX_SIZE
    mask = INDEX_SIZE - 1
    for i, n in enumerate(names):
        s = index_hash(n) & mask
        while slots[s] != 0:
            s = (s + 1) & mask
        slots[s] = i + 1
    return slots


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-server", default="redis-server")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "src", "redis", "command_table.rs"))
    args = ap.parse_args()

    version = subprocess.run([shutil.which(args.redis_server) or args.redis_server, "--version"],
                             capture_output=True, text=True, check=True).stdout.split()[2].removeprefix("v=")
    workdir = redis_resp.tempdir("furrow-gen-commands-")
    port = redis_resp.free_port()
    proc = redis_resp.start_redis(workdir, port, binary=args.redis_server)
    try:
        conn = redis_resp.Conn("127.0.0.1", port)
        commands = text(conn.call("COMMAND"))
        docs = pairs(text(conn.call("COMMAND", "DOCS")))
        server_categories = set(text(conn.call("ACL", "CAT")))
        conn.close()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    if server_categories != set(CATEGORIES):
        raise SystemExit("ACL categories differ from the server's ACL CAT: %s"
                         % sorted(server_categories ^ set(CATEGORIES)))
    commands.sort(key=lambda c: c[0])
    out = []
    out.append("// @generated by router/tools/gen_commands.py from redis-server %s (`COMMAND`, `COMMAND DOCS`)." % version)
    out.append("// Do not edit by hand: rerun the generator. The execution policy is hand-written in policy.rs.")
    out.append("")
    out.append("//! The Redis %s command table (%d commands), generated from a real server." % (version, len(commands)))
    out.append("")
    out.append("use super::command::{AclCategories, CommandFlags, CommandInfo, category, flags};")
    out.append("")
    out.append("/// The Redis version the table was generated from.")
    out.append("pub const REDIS_VERSION: &str = %s;" % rust_str(version))
    out.append("")
    for c in commands:
        subs = sorted(c[9] or [], key=lambda s: s[0])
        if not subs:
            continue
        sub_docs = pairs(docs.get(c[0], [])).get("subcommands") or []
        sub_docs = pairs(sub_docs) if sub_docs else {}
        out.append("/// Subcommands of `%s`, sorted by name." % c[0].upper())
        out.append("static %s_SUBCOMMANDS: [CommandInfo; %d] = [" % (rust_ident(c[0]), len(subs)))
        for s in subs:
            if s[9]:
                raise SystemExit("nested subcommands are not supported: %s" % s[0])
            out.append(row(s, sub_docs.get(s[0]), "&[]"))
        out.append("];")
        out.append("")
    out.append("/// Every top-level command, sorted by name.")
    out.append("pub static COMMANDS: [CommandInfo; %d] = [" % len(commands))
    for c in commands:
        subs_ident = "&%s_SUBCOMMANDS" % rust_ident(c[0]) if c[9] else "&[]"
        out.append(row(c, docs.get(c[0]), subs_ident))
    out.append("];")
    out.append("")
    index = build_index([c[0] for c in commands])
    out.append("/// Size of [`INDEX`]; a power of two.")
    out.append("pub const INDEX_SIZE: usize = %d;" % INDEX_SIZE)
    out.append("")
    out.append("/// Open-addressing (linear probing) index: slot `index_hash(name) & (INDEX_SIZE - 1)` holds")
    out.append("/// the position in [`COMMANDS`] plus one, 0 for an empty slot.")
    out.append("#[rustfmt::skip]")
    out.append("pub static INDEX: [u16; INDEX_SIZE] = [")
    for i in range(0, INDEX_SIZE, 16):
        out.append("    " + ", ".join(str(v) for v in index[i:i + 16]) + ",")
    out.append("];")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote %s: %d commands from redis-server %s" % (args.out, len(commands), version))


if __name__ == "__main__":
    main()
