#!/usr/bin/env python3
"""The `braid` program as a host for services (bin/runner.h).

    test_runner.py BRAID_BINARY PROJECT_VERSION

Runs the built binary: --version, --help, per-command help, usage errors
that name the bad value (exit 2), runtime failures (exit 1); then the
graceful stop on 127.0.0.1 and Unix sockets in a scratch folder: on
SIGTERM an idle keep-alive connection is closed, new connections are
refused, a request in flight (a POST /echo whose body the test sends
slowly) completes and the process exits 0 well before the deadline; a
request still running at the deadline is cut and the process exits; a
second signal exits at once; Unix socket files are removed at a clean
exit and the same path can be listened on again. Every process is
started here and stopped by PID, also when a check fails. Standard
library only. Exit 0 pass, 1 fail.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BRAID = sys.argv[1]
VERSION = sys.argv[2] if len(sys.argv) > 2 else None
FAILS = []
PROCS = []


def check(name, cond, detail=""):
    if cond:
        print(f"ok   {name}")
    else:
        print(f"FAIL {name} {detail!r}")
        FAILS.append(name)


def run(args, timeout=10):
    return subprocess.run([BRAID] + args, capture_output=True, text=True,
                          timeout=timeout)


class Server:
    """A `braid CMD ...` process whose stdout and stderr go to files (a
    full pipe would stall it), with the addresses it printed."""

    def __init__(self, tmp, args, expect):
        self.out_path = os.path.join(tmp, "out-%d.txt" % len(PROCS))
        self.err_path = self.out_path + ".err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([BRAID] + args, stdout=out,
                                         stderr=err)
        PROCS.append(self.proc)
        self.addrs = []
        deadline = time.time() + 10
        while time.time() < deadline and self.proc.poll() is None:
            self.addrs = re.findall(r" on (?:https://)?(\S+) \(poller ",
                                    self.out())
            if len(self.addrs) >= expect:
                return
            time.sleep(0.01)
        raise SystemExit(f"braid did not start: {self.out()!r} {self.err()!r}")

    def out(self):
        with open(self.out_path) as f:
            return f.read()

    def err(self):
        with open(self.err_path) as f:
            return f.read()

    def tcp_port(self):
        for a in self.addrs:
            m = re.fullmatch(r"127\.0\.0\.1:(\d+)", a)
            if m:
                return int(m.group(1))
        raise SystemExit(f"no TCP address in {self.addrs}")

    def signal(self, signo):
        self.proc.send_signal(signo)

    def wait(self, timeout):
        """The exit status, or None if still running after `timeout`."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def connect_tcp(port, timeout=5):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_head(s):
    """Read one response head; returns (head bytes, rest already read)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise ConnectionError("closed before a response head: %r" % buf)
        buf += d
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def read_response(s):
    """One Content-Length response: (head, body)."""
    head, rest = read_head(s)
    m = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return head, rest[:n]


def read_chunked(s, rest):
    """A chunked body after its head (`rest` already read): the body, and
    whether the last chunk came."""
    body = b""
    buf = rest
    while True:
        while b"\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return body, False
            buf += d
        line, buf = buf.split(b"\r\n", 1)
        size = int(line.split(b";")[0], 16)
        while len(buf) < size + 2:
            d = s.recv(65536)
            if not d:
                return body + buf[:size], False
            buf += d
        body += buf[:size]
        buf = buf[size + 2:]
        if size == 0:
            return body, True


def at_eof(s, timeout):
    """True if the peer closes (EOF or reset) within `timeout`."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def refused(port, within):
    """True once a connect to the port is refused (within `within` s)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=1)
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        else:
            c.close()
        time.sleep(0.02)
    return False


def start_echo_post(port, length):
    """A POST /echo with `length` body bytes announced, the first 1000
    sent; returns the socket once the streamed response has begun, and
    what was read past its head."""
    s = connect_tcp(port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
              % length)
    s.sendall(b"a" * 1000)
    head, rest = read_head(s)
    return s, head, rest


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

def test_cli(tmp):
    r = run(["--version"])
    check("--version exits 0", r.returncode == 0, r.stderr)
    check("--version prints the project version",
          VERSION is not None and r.stdout.strip() == "braid " + VERSION,
          r.stdout)

    r = run(["--help"])
    check("--help exits 0", r.returncode == 0)
    check("--help lists the commands with summaries",
          re.search(r"(?m)^  echo +\S", r.stdout) is not None and
          re.search(r"(?m)^  web +\S", r.stdout) is not None, r.stdout)
    r = run([])
    check("no command: usage on stderr, exit 2",
          r.returncode == 2 and "usage: braid COMMAND" in r.stderr, r)

    for args in (["help", "web"], ["web", "--help"], ["web", "-h"]):
        r = run(args)
        check(f"{' '.join(args)}: usage and common options, exit 0",
              r.returncode == 0 and r.stdout.startswith("usage: braid web") and
              "--path DIR" in r.stdout and "--listen ENDPOINT" in r.stdout and
              "--drain-timeout SEC" in r.stdout and
              "--log-level LEVEL" in r.stdout, r.stdout)
    r = run(["help", "echo"])
    check("help echo", r.returncode == 0 and
          r.stdout.startswith("usage: braid echo") and
          "default tcp:7000" in r.stdout, r.stdout)

    def usage_error(args, message):
        r = run(args)
        lines = r.stderr.splitlines()
        check(f"{' '.join(args)}: exit 2, {message!r}",
              r.returncode == 2 and len(lines) >= 2 and lines[0] == message and
              lines[1].startswith("usage: braid"), (r.returncode, r.stderr))
        check(f"{' '.join(args)}: nothing on stdout", r.stdout == "", r.stdout)

    usage_error(["web", "--idle-timeout", "abc"],
                'braid web: --idle-timeout: "abc" is not a number of seconds')
    usage_error(["web", "--idle-timeout=0"],
                'braid web: --idle-timeout: "0" is not a number of seconds '
                'above 0')
    usage_error(["web", "--write-timeout", "1e99"],
                'braid web: --write-timeout: "1e99" is not a number of '
                'seconds')
    usage_error(["web", "--header-timeout", "2000000"],
                'braid web: --header-timeout: "2000000" is more than 1000000 '
                'seconds')
    usage_error(["echo", "--drain-timeout", "-1"],
                'braid echo: --drain-timeout: "-1" is not a number of seconds')
    usage_error(["echo", "--log-level", "loud"],
                'braid echo: --log-level: "loud" is not one of debug, info, '
                'warn, error')
    usage_error(["web", "--frobnicate"],
                'braid web: unknown option "--frobnicate"')
    usage_error(["web", "--path"], "braid web: --path needs a value")
    usage_error(["web", "--hello=yes"], "braid web: --hello takes no value")
    usage_error(["web", "stray"], 'braid web: unexpected argument "stray"')
    usage_error(["web", "--tls-key", "k.pem"],
                "braid web: --tls-key needs --tls-cert")
    usage_error(["echo", "--listen", "tcp:port=http"],
                "braid echo: --listen: bad port 'http' in 'tcp:port=http'")
    usage_error(["frob"], 'braid: unknown command "frob"')
    usage_error(["help", "frob"], 'braid: unknown command "frob"')
    usage_error(["--frob"], 'braid: unknown option "--frob"')

    # Runtime failures: exit 1, one prefix, the bad value named.
    missing = os.path.join(tmp, "missing")
    r = run(["web", "--path", missing, "--listen",
             "tcp:port=0:interface=127.0.0.1"])
    check("web --path MISSING: exit 1, named",
          r.returncode == 1 and
          r.stderr.startswith(f'braid web: cannot serve "{missing}"'),
          (r.returncode, r.stderr))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        ep = f"tcp:port={port}:interface=127.0.0.1"
        r = run(["echo", "--listen", ep])
        check("echo on a port in use: exit 1, the endpoint named",
              r.returncode == 1 and r.stderr.startswith("braid echo: ") and
              ep in r.stderr and "in use" in r.stderr,
              (r.returncode, r.stderr))


# ----------------------------------------------------------------------------
# The graceful stop
# ----------------------------------------------------------------------------

def test_drain_completes(tmp):
    """SIGTERM with an idle keep-alive connection and a request in flight:
    the idle one is closed, new connections are refused, the Unix socket
    file goes, the request completes, then exit 0 long before the
    deadline."""
    sock = os.path.join(tmp, "web.sock")
    srv = Server(tmp, ["web", "--path", tmp, "--echo", "--listen",
                       "tcp:port=0:interface=127.0.0.1", "--listen",
                       "unix:" + sock, "--drain-timeout", "20"], 2)
    try:
        port = srv.tcp_port()
        check("unix socket file exists while serving", os.path.exists(sock))
        idle = connect_tcp(port)
        idle.sendall(b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _ = read_response(idle)
        check("keep-alive response before the stop",
              head.startswith(b"HTTP/1.1 404") and
              b"connection: close" not in head.lower(), head)
        length = 200000
        busy, head, rest = start_echo_post(port, length)
        check("echo response started", head.startswith(b"HTTP/1.1 200") and
              b"chunked" in head.lower(), head)

        t0 = time.time()
        srv.signal(signal.SIGTERM)
        check("idle keep-alive connection closed on SIGTERM",
              at_eof(idle, 3))
        check("new TCP connections refused while draining",
              refused(port, 3))
        check("unix socket file removed while draining",
              not os.path.exists(sock))
        check("still running while a request is in flight",
              srv.wait(0.3) is None)

        # The rest of the body, slowly: the drain waits for it.
        busy.settimeout(10)
        left = length - 1000
        for i in range(5):
            n = left // 5 if i < 4 else left - 4 * (left // 5)
            busy.sendall(b"b" * n)
            time.sleep(0.1)
        body, complete = read_chunked(busy, rest)
        check("in-flight request completed after SIGTERM",
              complete and body == b"a" * 1000 + b"b" * left,
              (complete, len(body)))
        check("its connection then closed", at_eof(busy, 3))
        rc = srv.wait(5)
        took = time.time() - t0
        check("exit 0 after the drain", rc == 0, (rc, srv.err()))
        check("exited long before the 20 s deadline", took < 8, took)
        check("unix socket file gone after exit", not os.path.exists(sock))
        check("the stop was logged", "SIGTERM: stopping" in srv.err(),
              srv.err())
        check("access log line for the drained request",
              '"POST /echo HTTP/1.1" 200' in srv.out(), srv.out())
        idle.close()
        busy.close()
    finally:
        srv.kill()

    # A restart on the same Unix path works.
    srv = Server(tmp, ["web", "--path", tmp, "--listen", "unix:" + sock], 1)
    try:
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(5)
        c.connect(sock)
        c.sendall(b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _ = read_response(c)
        check("restart on the same unix path serves", head.startswith(
            b"HTTP/1.1 404"), head)
        c.close()
        srv.signal(signal.SIGINT)
        check("SIGINT: exit 0", srv.wait(5) == 0, srv.err())
        check("unix socket file gone after the restart's exit",
              not os.path.exists(sock))
    finally:
        srv.kill()


def test_drain_deadline(tmp):
    """A request still running at the drain deadline is cut and the
    process exits."""
    srv = Server(tmp, ["web", "--path", tmp, "--echo", "--listen",
                       "tcp:port=0:interface=127.0.0.1", "--drain-timeout",
                       "1"], 1)
    try:
        busy, _, _ = start_echo_post(srv.tcp_port(), 100000)
        t0 = time.time()
        srv.signal(signal.SIGTERM)
        check("not cut before the deadline", srv.wait(0.5) is None)
        rc = srv.wait(5)
        took = time.time() - t0
        check("exit 0 at the deadline", rc == 0, (rc, srv.err()))
        check("exited at the 1 s deadline", 0.9 <= took < 4, took)
        check("the stalled request was cut", at_eof(busy, 2))
        check("the cut was logged", "1 connection cut" in srv.err(),
              srv.err())
        busy.close()
    finally:
        srv.kill()


def test_second_signal(tmp):
    """A second signal exits at once, with a request in flight and a long
    deadline."""
    srv = Server(tmp, ["web", "--path", tmp, "--echo", "--listen",
                       "tcp:port=0:interface=127.0.0.1", "--drain-timeout",
                       "60"], 1)
    try:
        busy, _, _ = start_echo_post(srv.tcp_port(), 100000)
        srv.signal(signal.SIGTERM)
        check("draining after the first signal", srv.wait(0.5) is None)
        t0 = time.time()
        srv.signal(signal.SIGINT)
        rc = srv.wait(5)
        took = time.time() - t0
        check("second signal: exit 0", rc == 0, (rc, srv.err()))
        check("second signal: exit at once", took < 1.5, took)
        check("second signal: the request was cut", at_eof(busy, 2))
        busy.close()
    finally:
        srv.kill()


def test_echo_drain(tmp):
    """braid echo: on SIGINT each connection gets what it sent echoed, then
    EOF, and the process exits 0; over a Unix socket whose file goes; with
    --log-level warn the info line about the stop is not printed."""
    sock = os.path.join(tmp, "echo.sock")
    srv = Server(tmp, ["echo", "--listen", "unix:" + sock, "--log-level",
                       "warn"], 1)
    try:
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(5)
        c.connect(sock)
        c.sendall(b"ping")
        got = b""
        while len(got) < 4:
            got += c.recv(100)
        check("echo over unix", got == b"ping", got)
        srv.signal(signal.SIGINT)
        check("echo connection closed on SIGINT", at_eof(c, 3))
        check("echo: exit 0", srv.wait(5) == 0, srv.err())
        check("echo: unix socket file gone", not os.path.exists(sock))
        check("--log-level warn: no info line about the stop",
              "stopping" not in srv.err(), srv.err())
        c.close()
    finally:
        srv.kill()


def main():
    tmp = tempfile.mkdtemp(prefix="braid-runner-")
    try:
        test_cli(tmp)
        test_drain_completes(tmp)
        test_drain_deadline(tmp)
        test_second_signal(tmp)
        test_echo_drain(tmp)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print(f"{len(FAILS)} failed: {', '.join(FAILS)}")
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
