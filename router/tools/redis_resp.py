"""Minimal RESP2 client over a raw socket, Python standard library only (used by the router/tools generators)."""

import os
import shutil
import socket
import subprocess
import tempfile
import time


class RespError(Exception):
    """An error reply (-ERR ...) from the server."""


class Conn:
    """A blocking RESP2 connection to one server."""

    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("connection closed by server")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        """Read one reply; error replies are returned as RespError instances (not raised)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("unexpected RESP type byte %r" % kind)

    def send(self, *args):
        """Write one command without reading its reply (for pipelining)."""
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def call(self, *args):
        """Send one command and return its reply; raise RespError on an error reply."""
        self.send(*args)
        reply = self.read()
        if isinstance(reply, RespError):
            raise reply
        return reply


def free_port(host="127.0.0.1"):
    """A loopback TCP port that is free right now."""
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(host, port, proc, timeout=10.0):
    """Wait until host:port accepts connections; fail if proc exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited early with status %s" % proc.returncode)
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s:%d did not start listening" % (host, port))


def start_redis(workdir, port, host="127.0.0.1", binary="redis-server"):
    """Start a throwaway redis-server (no persistence) in workdir on host:port; return the Popen."""
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError("%s not found in PATH" % binary)
    os.makedirs(workdir, exist_ok=True)
    proc = subprocess.Popen(
        [path, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir, "--daemonize", "no", "--logfile", os.path.join(workdir, "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(host, port, proc)
    return proc


def tempdir(prefix):
    """A fresh temporary directory."""
    return tempfile.mkdtemp(prefix=prefix)
