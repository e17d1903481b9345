#!/usr/bin/env python3
"""Record golden key -> server mappings from a real nutcracker (twemproxy) into router/tests/fixtures/redis/.

Usage: python3 router/tools/gen_ketama_fixtures.py [--out DIR]

Starts four redis-servers on fixed loopback ports (27101-27104; the ports are part of the ketama point
names, so they must not change between runs), three more on 127.0.0.{2,3,4}:11211 when that port is free
there (nutcracker leaves port 11211 out of a server's name), and one nutcracker with one pool per case
below. It SETs keys through each pool (keys are prefixed with the pool name, some contain bytes >= 0x80
to pin down nutcracker's signed-char hashing), asks every backend which keys it holds (KEYS), and writes
one fixture per pool: a header with the pool's config, then `key server_index` lines (`hex:...` for keys
that are not plain ASCII). router/tests/redis_ketama_golden.rs replays them. Standard library only;
needs `nutcracker` and `redis-server` in PATH.
"""

import argparse
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redis_resp  # noqa: E402

BASE = [("127.0.0.1", p) for p in (27101, 27102, 27103, 27104)]
MEMCACHED_PORT = [("127.0.0.2", 11211), ("127.0.0.3", 11211), ("127.0.0.4", 11211)]

# (pool name, distribution, hash, hash_tag, backends, weights, names, keys)
CASES = [
    ("ketama_fnv1a_64", "ketama", "fnv1a_64", None, BASE, [1, 1, 1, 1], None, 1500),
    ("ketama_md5", "ketama", "md5", None, BASE, [1, 1, 1, 1], None, 1500),
    ("ketama_fnv1a_64_weighted", "ketama", "fnv1a_64", None, BASE, [1, 2, 3, 4], None, 1500),
    ("ketama_md5_weighted", "ketama", "md5", None, BASE, [5, 1, 1, 2], None, 1500),
    ("ketama_fnv1a_64_named", "ketama", "fnv1a_64", None, BASE, [1, 1, 2, 1],
     ["alpha", "beta", "gamma", "delta"], 1500),
    ("ketama_md5_named", "ketama", "md5", None, BASE, [1, 1, 1, 1],
     ["server1", "server2", "server3", "server4"], 1500),
    ("ketama_fnv1a_64_hash_tag", "ketama", "fnv1a_64", "{}", BASE, [1, 1, 1, 1], None, 1000),
    ("ketama_md5_port_11211", "ketama", "md5", None, MEMCACHED_PORT, [1, 1, 1], None, 1000),
] + [
    ("ketama_" + h, "ketama", h, None, BASE, [1, 1, 1, 1], None, 500)
    for h in ("one_at_a_time", "crc16", "crc32a", "fnv1_64", "fnv1_32", "fnv1a_32",
              "hsieh", "murmur", "jenkins")
] + [
    ("modula_fnv1a_64_weighted", "modula", "fnv1a_64", None, BASE, [1, 2, 1, 3], None, 500),
    ("modula_murmur", "modula", "murmur", None, BASE, [1, 1, 1, 1], None, 500),
    # crc32 yields 15-bit values, which all fall before the first ketama point: modula tells more.
    ("modula_crc32", "modula", "crc32", None, BASE, [1, 1, 1, 1], None, 500),
]

PLAIN = re.compile(rb"^[A-Za-z0-9:{}_.\-]+$")


def port_free(host, port):
    s = socket.socket()
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def make_keys(pool, n, tagged):
    rng = random.Random(pool)
    keys = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            body = b"key:%d" % i
        elif kind == 1:
            body = b"user:%d:profile" % rng.randrange(10 ** 9)
        elif kind == 2:
            body = bytes(rng.randrange(33, 127) for _ in range(rng.randrange(1, 40)))
        elif kind == 3:
            # Bytes >= 0x80 exercise nutcracker's sign extension of `char`.
            body = bytes(rng.randrange(0, 256) for _ in range(rng.randrange(1, 24)))
        else:
            body = b"%d" % rng.randrange(10 ** 6)
        if tagged and i % 3 == 0:
            body = b"obj{%d}" % rng.randrange(50) + body
        keys.append(pool.encode() + b":" + body)
    return list(dict.fromkeys(keys))


def key_text(k):
    if PLAIN.fullmatch(k):
        return k.decode()
    return "hex:" + k.hex()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "redis"))
    args = ap.parse_args()
    nutcracker = shutil.which("nutcracker")
    if nutcracker is None:
        raise SystemExit("nutcracker not found: apt-get install -y nutcracker")
    version = subprocess.run([nutcracker, "--version"], capture_output=True, text=True)
    version = (version.stdout + version.stderr).split("\n")[0].strip().removeprefix("This is ")

    cases = list(CASES)
    if not all(port_free(h, p) for h, p in MEMCACHED_PORT):
        print("port 11211 busy on 127.0.0.2-4: skipping the port-11211 case")
        cases = [c for c in cases if c[4] is not MEMCACHED_PORT]
    backends = sorted({b for c in cases for b in c[4]})
    for h, p in backends:
        if not port_free(h, p):
            raise SystemExit("%s:%d is busy; the golden ports must be free" % (h, p))

    work = redis_resp.tempdir("furrow-ketama-golden-")
    procs = []
    try:
        for i, (h, p) in enumerate(backends):
            procs.append(redis_resp.start_redis(os.path.join(work, "r%d" % i), p, host=h))
        conf = []
        listen = {}
        for name, dist, hsh, tag, servers, weights, names, _ in cases:
            port = redis_resp.free_port()
            listen[name] = port
            conf.append("%s:" % name)
            conf.append("  listen: 127.0.0.1:%d" % port)
            conf.append("  hash: %s" % hsh)
            conf.append("  distribution: %s" % dist)
            if tag:
                conf.append('  hash_tag: "%s"' % tag)
            conf.append("  redis: true")
            conf.append("  auto_eject_hosts: false")
            conf.append("  servers:")
            for j, (h, p) in enumerate(servers):
                suffix = (" " + names[j]) if names else ""
                conf.append("   - %s:%d:%d%s" % (h, p, weights[j], suffix))
        conf_path = os.path.join(work, "nutcracker.yml")
        with open(conf_path, "w") as f:
            f.write("\n".join(conf) + "\n")
        stats_port = redis_resp.free_port()
        nc = subprocess.Popen([nutcracker, "-c", conf_path, "-o", os.path.join(work, "nc.log"),
                               "-a", "127.0.0.1", "-s", str(stats_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nc)
        for port in listen.values():
            redis_resp.wait_port("127.0.0.1", port, nc)

        os.makedirs(args.out, exist_ok=True)
        for name, dist, hsh, tag, servers, weights, names, nkeys in cases:
            keys = make_keys(name, nkeys, tag is not None)
            c = redis_resp.Conn("127.0.0.1", listen[name])
            for k in keys:
                c.send(b"SET", k, b"1")
            for k in keys:
                r = c.read()
                if r != "OK":
                    raise SystemExit("SET %r through nutcracker: %r" % (k, r))
            c.close()
            where = {}
            for idx, (h, p) in enumerate(servers):
                b = redis_resp.Conn(h, p)
                for k in b.call("KEYS", name + ":*"):
                    if k in where:
                        raise SystemExit("key %r on two servers" % k)
                    where[k] = idx
                b.close()
            missing = [k for k in keys if k not in where]
            if missing:
                raise SystemExit("%d keys of %s not found on any backend" % (len(missing), name))
            path = os.path.join(args.out, name + ".txt")
            with open(path, "w") as f:
                f.write("# @generated by router/tools/gen_ketama_fixtures.py from %s; do not edit.\n" % version)
                f.write("# distribution: %s\n" % dist)
                f.write("# hash: %s\n" % hsh)
                if tag:
                    f.write("# hash_tag: %s\n" % tag)
                for j, (h, p) in enumerate(servers):
                    suffix = (" " + names[j]) if names else ""
                    f.write("# server: %s:%d:%d%s\n" % (h, p, weights[j], suffix))
                for k in keys:
                    f.write("%s %d\n" % (key_text(k), where[k]))
            counts = [sum(1 for k in keys if where[k] == i) for i in range(len(servers))]
            print("%s: %d keys, per server %s" % (name, len(keys), counts))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
