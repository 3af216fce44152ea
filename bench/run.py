#!/usr/bin/env python3
"""braid's benchmark driver: every workload against every reactor found.

    python3 bench/run.py [--runs N] [--seconds S] [--only WORKLOAD,...]
                         [--callgrind] [--out DIR]

Workloads: echo1 and echo50 (TCP ping-pong, 1 and 50 connections, 64-byte
messages), stream (one connection, MB/s), idle (memory per idle connection
at 10,000), timers (1,000,000 scheduled, half cancelled or none), deferred
(deferred / promise throughput), hello (wrk, 13 bytes from memory with
keep-alive), static (wrk, a 13-byte file), https (wrk, the same file over
TLS); "http" means hello,static,https. callgrind (also --callgrind, and
bench/callgrind.sh): user-space instructions and syscalls per operation,
the repeatable figures (see callgrind_all).

Peers are written as fast as their own APIs allow (see the comment at the
top of each bench/echo_*.c). braid's echo rows run `braid echo`, which
sets TCP_NODELAY as every peer does. nginx runs as one process (master_process off) with
sendfile, open_file_cache and access_log off, and with TLS for https on the
same certificate as braid.

Method: servers pinned to CPU 0, load generators (bench/echo_load, plain
epoll C; wrk for HTTP) to CPU 1; a warm-up run; RUNS runs interleaved
across peers so a slow minute hits all alike; medians with the spread
(min-max). On 2 CPUs the load generator often saturates before the server:
server CPU time per operation (utime+stime of the server process, and CPU
0's busy time from /proc/stat) is reported beside the rate, and a row whose
load generator used > 90% of its CPU is marked "client-bound".

Writes DIR/results.md, DIR/results.csv and DIR/ratios.svg (default
bench/out). A benchmark, never a test.
"""
import argparse
import csv
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
HZ = os.sysconf("SC_CLK_TCK")
SYS_PY = "/usr/bin/python3"
PIN0 = ["taskset", "-c", "0"] if shutil.which("taskset") else []
PIN1 = ["taskset", "-c", "1"] if shutil.which("taskset") else []
OUT = os.path.join(ROOT, "bench", "out")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def build():
    if not os.path.exists(os.path.join(BUILD, "build.ninja")):
        sh(["meson", "setup", BUILD], cwd=ROOT)
    sh(["ninja", "-C", BUILD])


def exe(*parts):
    p = os.path.join(BUILD, *parts)
    return p if os.access(p, os.X_OK) else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited: %s" % proc.args)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("server did not listen: %s" % proc.args)


def proc_cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / HZ


def cpu0_busy():
    for line in open("/proc/stat"):
        if line.startswith("cpu0 "):
            v = [int(x) for x in line.split()[1:]]
            return (v[0] + v[1] + v[2] + v[5] + v[6]) / HZ
    return 0.0


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


class Server:
    """A server process pinned to CPU 0, stopped by PID."""

    def __init__(self, cmd, env=None, wrapper=(), port=None):
        self.port = port or free_port()
        full = list(PIN0) + list(wrapper) + [a.replace("PORT", str(self.port)) for a in cmd]
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(full, env=e, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, 30 if wrapper else 10)

    def stop(self, timeout=10):
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def echo_peers():
    """(name, command, env) for every echo server found."""
    peers = []
    cmd = [exe("bin", "braid"), "echo", "--quiet", "--listen", "tcp:port=PORT:interface=127.0.0.1"]
    built = open(os.path.join(BUILD, "core", "config.h")).read()
    m = re.search(r'BRAID_POLLERS_BUILT "([^"]*)"', built)
    for poller in (m.group(1).split() if m else ["epoll"]):
        peers.append(("braid-" + poller, cmd, {"BRAID_POLLER": poller}))
    for lib in ("libuv", "libevent", "libev"):
        p = exe("bench", "echo_" + lib)
        if p:
            peers.append((lib, [p, "PORT"], {}))
        else:
            print("skipping %s: not built (install its -dev package)" % lib)
    if os.path.exists(SYS_PY) and subprocess.run(
            [SYS_PY, "-c", "import twisted"], capture_output=True).returncode == 0:
        peers.append(("twisted", [SYS_PY, os.path.join(ROOT, "bench", "echo_twisted.py"), "PORT"], {}))
    else:
        print("skipping twisted: /usr/bin/python3 cannot import twisted (apt-get install python3-twisted)")
    if os.path.exists(SYS_PY):
        peers.append(("asyncio", [SYS_PY, os.path.join(ROOT, "bench", "echo_asyncio.py"), "PORT"], {}))
    return peers


def load(args):
    """Run echo_load pinned to CPU 1; return (kv dict, client CPU share)."""
    t0 = time.time()
    r0 = os.times()
    out = sh(list(PIN1) + [exe("bench", "echo_load")] + [str(a) for a in args])
    r1 = os.times()
    wall = time.time() - t0
    kv = dict(x.split("=", 1) for x in out.split())
    client = ((r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)) / wall
    return kv, client


def bench_echo(peer, conns, secs):
    name, cmd, env = peer
    s = Server(cmd, env)
    try:
        c0, b0 = proc_cpu(s.proc.pid), cpu0_busy()
        kv, client = load(["pingpong", s.port, conns, 64, secs])
        c1, b1 = proc_cpu(s.proc.pid), cpu0_busy()
    finally:
        s.stop()
    rt = int(kv["roundtrips"])
    return {"rate": float(kv["rt_per_s"]), "cpu_us": (c1 - c0) * 1e6 / rt,
            "busy_us": (b1 - b0) * 1e6 / rt, "client_bound": client > 0.9}


def bench_stream(peer, secs):
    name, cmd, env = peer
    s = Server(cmd, env)
    try:
        c0 = proc_cpu(s.proc.pid)
        kv, client = load(["stream", s.port, 65536, secs])
        c1 = proc_cpu(s.proc.pid)
    finally:
        s.stop()
    mb = float(kv["bytes"]) / 1e6
    return {"rate": float(kv["mb_per_s"]), "cpu_us": (c1 - c0) * 1e6 / mb,
            "busy_us": 0.0, "client_bound": client > 0.9}


def bench_idle(peer, n=10000):
    name, cmd, env = peer
    s = Server(cmd, env)
    try:
        r0 = rss_kb(s.proc.pid)
        p = subprocess.Popen(list(PIN1) + [exe("bench", "echo_load"), "idle", str(s.port), str(n), "3"],
                             stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        time.sleep(0.3)
        r1 = rss_kb(s.proc.pid)
        p.wait()
    finally:
        s.stop()
    return {"rate": (r1 - r0) * 1024.0 / n, "cpu_us": 0.0, "busy_us": 0.0, "client_bound": False}


def bench_timers(variant):
    rows = {}
    for name in ("braid", "libuv", "libevent", "libev"):
        p = exe("bench", "bench_timers" + ("" if name == "braid" else "_" + name))
        if not p:
            continue
        out = sh(list(PIN0) + [p, variant])
        kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
        rows[name] = {"rate": float(kv["total_s"]), "cpu_us": float(kv["insert_s"]),
                      "busy_us": float(kv.get("bytes_per_timer", 0)), "client_bound": False}
    return rows


def bench_deferred():
    p = exe("bench", "bench_deferred")
    if not p:
        return {}
    out = sh(list(PIN0) + [p], cwd=ROOT)
    rows, who = {}, "braid"
    for line in out.splitlines():
        if "Twisted" in line:
            who = "twisted"
        elif "Node" in line:
            who = "node"
        m = re.match(r"create\+2 callbacks\+fire\+free:\s+([\d.]+) ns", line)
        if m:
            rows[who] = {"rate": float(m.group(1)), "cpu_us": 0.0, "busy_us": 0.0, "client_bound": False}
    return rows


WWW = os.path.join(OUT, "www")
BODY = "Hello, world!"  # the 13-byte static file


def web_setup():
    """The served folder (one 13-byte file) and a throw-away certificate,
    shared by braid and nginx. Returns (www, cert, key)."""
    os.makedirs(WWW, exist_ok=True)
    open(os.path.join(WWW, "hello.txt"), "w").write(BODY)
    tls = os.path.join(OUT, "tls")
    os.makedirs(tls, exist_ok=True)
    cert, key = os.path.join(tls, "cert.pem"), os.path.join(tls, "key.pem")
    if not os.path.exists(cert) and shutil.which("openssl"):
        sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    return WWW, cert, key


def nginx_bin():
    for p in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if p and os.access(p, os.X_OK):
            return p
    return None


def nginx_conf(port, tls):
    """nginx as fast as it is configured for small static files: one process
    (master_process off, so the process measured is the one serving),
    sendfile on, open_file_cache (no open/fstat per request), access_log
    off (braid runs with --no-log), keep-alive never closed by a request
    count. /hello answers the same 13 bytes as `braid web --hello` from
    memory. With tls, the same certificate as braid."""
    www, cert, key = web_setup()
    pre = os.path.join(OUT, "nginx")
    os.makedirs(pre, exist_ok=True)
    ssl = " ssl" if tls else ""
    # The same protocol and suite as braid negotiates with wrk: TLS 1.3
    # (nginx 1.22 leaves it off by default) with the server's order of
    # suites, AES-128-GCM first, as braid's defaults (protocols/tls/tls.c).
    certs = ("ssl_certificate %s; ssl_certificate_key %s;\n"
             "    ssl_protocols TLSv1.2 TLSv1.3; ssl_prefer_server_ciphers on;\n"
             "    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384;\n"
             "    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;"
             % (cert, key)) if tls else ""
    path = os.path.join(pre, "nginx-%d.conf" % port)
    open(path, "w").write("""daemon off; master_process off; worker_processes 1;
pid %(pre)s/nginx-%(port)d.pid; error_log %(pre)s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  keepalive_requests 100000000;
  types { text/plain txt; }
  default_type application/octet-stream;
  client_body_temp_path %(pre)s/t1; proxy_temp_path %(pre)s/t2;
  fastcgi_temp_path %(pre)s/t3; uwsgi_temp_path %(pre)s/t4; scgi_temp_path %(pre)s/t5;
  server {
    listen 127.0.0.1:%(port)d%(ssl)s;
    %(certs)s
    root %(www)s;
    location = /hello { default_type text/plain; return 200 "hello, world\\n"; }
  }
}
""" % {"pre": pre, "port": port, "ssl": ssl, "certs": certs, "www": www})
    return [nginx_bin(), "-c", path, "-e", os.path.join(pre, "error.log")]


def web_peers(kind):
    """(name, command, url path) of the HTTP servers for one workload:
    hello (13 bytes from memory), static (a 13-byte file) or https (the
    same file over TLS). PORT in a command is replaced by the port."""
    braid = exe("bin", "braid")
    if not braid or subprocess.run([braid, "web", "--help"], capture_output=True).returncode != 0:
        print("skipping %s: this braid has no 'web' command" % kind)
        return []
    www, cert, key = web_setup()
    listen = ["--listen", "tcp:port=PORT:interface=127.0.0.1"]
    base = [braid, "web", "--no-log", "--quiet", "--path", www] + listen
    peers = []
    if kind == "hello":
        peers.append(("braid", base + ["--hello"], "/hello"))
    elif kind == "static":
        peers.append(("braid", base, "/hello.txt"))
    elif kind == "https":
        peers.append(("braid", base + ["--tls-cert", cert, "--tls-key", key], "/hello.txt"))
    if nginx_bin():
        peers.append(("nginx", ["NGINX", "https" if kind == "https" else "http"],
                      "/hello" if kind == "hello" else "/hello.txt"))
    else:
        print("skipping nginx: not installed (apt-get install nginx-light)")
    if kind == "hello":
        evhttp = exe("bench", "http_evhttp")
        if evhttp:
            peers.append(("evhttp", [evhttp, "PORT"], "/hello"))
        else:
            print("skipping evhttp: not built (libevent-dev)")
    if kind == "static":
        if os.path.exists(SYS_PY) and subprocess.run(
                [SYS_PY, "-c", "import twisted"], capture_output=True).returncode == 0:
            peers.append(("twisted-web", [SYS_PY, "-m", "twisted", "web", "--path", www,
                                          "--listen", "tcp:PORT:interface=127.0.0.1"], "/hello.txt"))
        else:
            print("skipping twisted web: python3-twisted not installed")
    return peers


def start_web(cmd, wrapper=()):
    if cmd[0] == "NGINX":
        port = free_port()
        return Server(nginx_conf(port, cmd[1] == "https"), port=port, wrapper=wrapper)
    return Server(cmd, wrapper=wrapper)


def bench_web(kind, secs):
    """wrk -t1 -c50 with keep-alive against each server of web_peers(kind):
    a 1 s warm-up, then SECS measured; server CPU from /proc."""
    rows = {}
    if not shutil.which("wrk"):
        print("skipping %s: wrk not installed" % kind)
        return rows
    scheme = "https" if kind == "https" else "http"
    for name, cmd, path in web_peers(kind):
        s = start_web(cmd)
        url = "%s://127.0.0.1:%d%s" % (scheme, s.port, path)
        try:
            sh(list(PIN1) + ["wrk", "-t1", "-c50", "-d1s", url])
            c0 = proc_cpu(s.proc.pid)
            out = sh(list(PIN1) + ["wrk", "-t1", "-c50", "-d%ds" % secs, "--latency", url])
            c1 = proc_cpu(s.proc.pid)
            rss = rss_kb(s.proc.pid)
        finally:
            s.stop()
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
        if bad:
            print("%s %s: %s" % (kind, name, bad.group(0)))
        rows[name] = {"rate": rate, "cpu_us": (c1 - c0) * 1e6 / max(reqs, 1), "busy_us": float(rss),
                      "client_bound": False}
    return rows


# --- callgrind: the repeatable figures ------------------------------------

def cg_count(name, cmd, env, load_args, start=None):
    """Run one server under callgrind through a fixed load; return (total
    user-space instructions, callgrind output file)."""
    os.makedirs(os.path.join(OUT, "cg"), exist_ok=True)
    out = os.path.join(OUT, "cg", "%s.%s" % (name, ".".join(str(x).strip("/") for x in load_args)))
    wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
    for attempt in range(3):
        s = start(cmd, wrapper) if start else Server(cmd, env, wrapper=wrapper)
        try:
            load([load_args[0], s.port] + list(load_args[1:]))
        finally:
            # callgrind writes its counts as the server exits: give it time.
            s.stop(60)
        for line in open(out):
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]), out
        print("callgrind: no totals in %s (exit status %s), again" % (out, s.proc.returncode), flush=True)
    raise RuntimeError("no totals in " + out)


def strace_count(name, cmd, env, load_args, start=None):
    """Syscalls made by the server (strace -c -f) through a fixed load."""
    os.makedirs(os.path.join(OUT, "cg"), exist_ok=True)
    out = os.path.join(OUT, "cg", "%s.%s.strace" % (name, ".".join(str(x).strip("/") for x in load_args)))
    wrapper = ["strace", "-f", "-c", "-o", out]
    s = start(cmd, wrapper) if start else Server(cmd, env, wrapper=wrapper)
    try:
        load([load_args[0], s.port] + list(load_args[1:]))
    finally:
        # Stop the traced server, not strace, so that strace sees it exit
        # and writes its summary.
        kids = open("/proc/%d/task/%d/children" % (s.proc.pid, s.proc.pid)).read().split()
        for k in kids:
            os.kill(int(k), 15)
        try:
            s.proc.wait(10)
        except subprocess.TimeoutExpired:
            s.stop()
    calls = {}
    for line in open(out):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    return calls


def cg_functions(path):
    """Self instructions per function from a callgrind output file."""
    out = sh(["callgrind_annotate", "--threshold=100", "--inclusive=no", "--auto=no", path])
    fns = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$", line)
        if m and ":" in m.group(2) and not m.group(2).startswith("PROGRAM"):
            fn = m.group(2).split(" [")[0]
            fns[fn] = fns.get(fn, 0) + int(m.group(1).replace(",", ""))
    return fns


def per_op(name, cmd, env, short, long_, start=None, repeat=2, top=None):
    """Instructions per operation: the difference of a long and a short run
    of the same load, divided by the difference in operations, so that
    start-up and shut-down cancel out. Repeated `repeat` times."""
    vals = []
    for _ in range(repeat):
        i0, f0 = cg_count(name, cmd, env, short, start)
        i1, f1 = cg_count(name, cmd, env, long_, start)
        vals.append((i1 - i0) / float(long_[-1] - short[-1]))
    if top:
        a, b = cg_functions(f0), cg_functions(f1)
        d = sorted(((b.get(k, 0) - a.get(k, 0)) / float(long_[-1] - short[-1]), k) for k in b)
        with open(os.path.join(OUT, "cg", top), "w") as fh:
            fh.write("# %s: self instructions per operation, by function (callgrind, long - short run)\n" % name)
            for v, k in reversed(d[-25:]):
                fh.write("%8.1f  %s\n" % (v, k))
    sc = None
    if shutil.which("strace"):
        c0 = strace_count(name, cmd, env, short, start)
        c1 = strace_count(name, cmd, env, long_, start)
        n = float(long_[-1] - short[-1])
        sc = {k: (c1.get(k, 0) - c0.get(k, 0)) / n for k in c1}
    return vals, sc


def callgrind_all(peers, repeat=2):
    """User-space instructions per operation under callgrind, with the
    syscalls per operation from strace beside them: echo round trips (8
    connections, one 64-byte message in flight each; and 1 connection)
    for braid-epoll and the C peers; HTTP hello and a 13-byte static file
    (8 keep-alive connections) for braid web and nginx (one process)."""
    if not shutil.which("valgrind"):
        print("skipping callgrind: valgrind not installed")
        return []
    rows = []
    for name, cmd, env in peers:
        if name not in ("braid-epoll", "libuv", "libevent", "libev"):
            continue
        for conns in (8, 1):
            v, sc = per_op(name, cmd, env, ["count", conns, 64, 10000], ["count", conns, 64, 50000],
                           repeat=repeat, top="top.echo%d.%s.txt" % (conns, name) if name.startswith("braid") else None)
            rows.append(("echo, %d conn%s x 64 B" % (conns, "s" if conns > 1 else ""), name, v, sc))
            print("callgrind echo%d %-12s %s Ir/rt, %s syscalls/rt" % (
                conns, name, " ".join("%.0f" % x for x in v), "%.2f" % sum(sc.values()) if sc else "-"), flush=True)
    for kind in ("hello", "static"):
        for name, cmd, path in web_peers(kind):
            if name not in ("braid", "nginx"):
                continue
            v, sc = per_op(name, cmd, None, ["http", 8, path, 4000], ["http", 8, path, 20000],
                           start=start_web, repeat=repeat,
                           top="top.%s.%s.txt" % (kind, name))
            rows.append(("http %s, 8 conns" % kind, name, v, sc))
            print("callgrind %-6s %-12s %s Ir/req, %s syscalls/req" % (
                kind, name, " ".join("%.0f" % x for x in v), "%.2f" % sum(sc.values()) if sc else "-"), flush=True)
    return rows


def callgrind_table(rows):
    t = ["## callgrind: user-space instructions per operation (the repeatable figure)", "",
         "Each figure: (instructions of a long run - those of a short run) / (operations of the long - the short),",
         "server under `valgrind --tool=callgrind`, load from bench/echo_load (echo: 10,000 and 50,000 round trips;",
         "http: 4,000 and 20,000 keep-alive GETs). Syscalls per operation from `strace -f -c` the same way.", "",
         "| workload | server | Ir/op (runs) | x braid | syscalls/op | syscalls |", "|---|---|---:|---:|---:|---|"]
    base = {}
    for w, n, v, sc in rows:
        if n.startswith("braid"):
            base[w] = statistics.mean(v)
    for w, n, v, sc in rows:
        m = statistics.mean(v)
        b = base.get(w)
        top = ", ".join("%s %.2f" % (k, c) for c, k in sorted(((c, k) for k, c in (sc or {}).items() if c >= 0.05), reverse=True))
        t.append("| %s | %s | %.0f (%s) | %s | %s | %s |" % (
            w, n, m, " / ".join("%.0f" % x for x in v), "%.2f" % (m / b) if b else "-",
            "%.2f" % sum(sc.values()) if sc else "-", top))
    return "\n".join(t)


def median_row(samples):
    keys = ("rate", "cpu_us", "busy_us")
    row = {k: statistics.median(s[k] for s in samples) for k in keys}
    row["min"] = min(s["rate"] for s in samples)
    row["max"] = max(s["rate"] for s in samples)
    row["client_bound"] = any(s["client_bound"] for s in samples)
    return row


def svg_chart(path, series):
    """A horizontal bar chart of ratios to braid (peer / braid of the cost
    per operation: > 1 means braid is cheaper)."""
    bars = [(label, v) for label, v in series if v and v > 0]
    h = 24 * len(bars) + 50
    top = max([v for _, v in bars] + [1.0])
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="760" height="%d" font-family="sans-serif" font-size="12">' % h,
           '<text x="10" y="18" font-size="14">cost per operation relative to braid (longer = braid cheaper)</text>']
    for i, (label, v) in enumerate(bars):
        y = 30 + 24 * i
        w = 440 * v / top
        color = "#4a7" if label.startswith("braid") else "#69c"
        out.append('<text x="10" y="%d">%s</text>' % (y + 14, label))
        out.append('<rect x="280" y="%d" width="%.1f" height="18" fill="%s"/>' % (y, w, color))
        out.append('<text x="%.1f" y="%d">%.2fx</text>' % (285 + w, y + 14, v))
    x1 = 280 + 440 / top
    out.append('<line x1="%.1f" y1="28" x2="%.1f" y2="%d" stroke="#c33" stroke-dasharray="4"/>' % (x1, x1, h - 10))
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


def main():
    global OUT, WWW
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--only", default="echo1,echo50,stream,idle,timers,deferred,hello,static,https")
    ap.add_argument("--callgrind", action="store_true", help="also the callgrind figures (--only callgrind: just them)")
    ap.add_argument("--cg-repeat", type=int, default=2, help="callgrind measurements per figure")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    OUT = os.path.abspath(a.out)
    WWW = os.path.join(OUT, "www")
    only = set(a.only.split(","))
    if "http" in only:
        only |= {"hello", "static", "https"}
    os.makedirs(a.out, exist_ok=True)
    build()
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    except Exception:
        pass
    cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
    header = ["# braid benchmarks", "",
              "- date: %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "- command: `python3 bench/run.py %s`" % " ".join(sys.argv[1:]),
              "- machine: %d CPUs (%s), kernel %s" % (os.cpu_count(), cpu[0] if cpu else "?", os.uname().release),
              "- method: server on CPU 0, load on CPU 1, %d interleaved runs of %.0f s after a warm-up; medians, spread = min-max" % (a.runs, a.seconds),
              ""]
    peers = echo_peers()
    tables, csvrows, chart = [], [], []
    workloads = [w for w in ("echo1", "echo50", "stream", "idle") if w in only]
    samples = {(w, p[0]): [] for w in workloads for p in peers}
    if workloads:
        for p in peers:  # warm-up
            bench_echo(p, 1, 1)
    for run in range(a.runs):
        for w in workloads:
            for p in peers:
                if w == "echo1":
                    r = bench_echo(p, 1, a.seconds)
                elif w == "echo50":
                    r = bench_echo(p, 50, a.seconds)
                elif w == "stream":
                    r = bench_stream(p, min(a.seconds, 3))
                else:
                    if run > 0:
                        continue
                    r = bench_idle(p)
                samples[(w, p[0])].append(r)
                print("run %d %-7s %-12s %s" % (run + 1, w, p[0], {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    units = {"echo1": ("round trips/s", "server CPU us/rt", "CPU0 busy us/rt"),
             "echo50": ("round trips/s", "server CPU us/rt", "CPU0 busy us/rt"),
             "stream": ("MB/s", "server CPU us/MB", "-"),
             "idle": ("bytes per idle connection", "-", "-")}
    for w in workloads:
        rows = {p[0]: median_row(samples[(w, p[0])]) for p in peers}
        base = rows.get("braid-epoll") or next(iter(rows.values()))
        u = units[w]
        t = ["## %s" % w, "", "| peer | %s (min-max) | x braid | %s | x braid | %s | note |" % u, "|---|---:|---:|---:|---:|---:|---|"]
        for name, r in rows.items():
            ratio = r["rate"] / base["rate"] if base["rate"] else 0
            cratio = r["cpu_us"] / base["cpu_us"] if base["cpu_us"] else 0
            t.append("| %s | %.1f (%.1f-%.1f) | %.2f | %.2f | %.2f | %.2f | %s |" % (
                name, r["rate"], r["min"], r["max"], ratio, r["cpu_us"], cratio, r["busy_us"],
                "client-bound" if r["client_bound"] else ""))
            csvrows.append([w, name, r["rate"], r["min"], r["max"], r["cpu_us"], r["busy_us"], r["client_bound"]])
            if w in ("echo50",) and not name.startswith("braid"):
                chart.append(("%s %s CPU/rt" % (w, name), cratio))
            if w == "idle" and not name.startswith("braid"):
                chart.append(("idle %s bytes/conn" % name, ratio))
        tables.append("\n".join(t))
    for variant in ("nocancel", "cancel"):
        if "timers" not in only:
            break
        runs = [bench_timers(variant) for _ in range(a.runs)]
        names = list(runs[0].keys())
        t = ["## timers (%s): 1,000,000 timers 0-100 ms" % variant, "",
             "| peer | total s | x braid | insert s | bytes/timer |", "|---|---:|---:|---:|---:|"]
        med = {n: median_row([r[n] for r in runs]) for n in names}
        for n in names:
            t.append("| %s | %.3f | %.2f | %.3f | %.1f |" % (n, med[n]["rate"], med[n]["rate"] / med["braid"]["rate"], med[n]["cpu_us"], med[n]["busy_us"]))
            csvrows.append(["timers-" + variant, n, med[n]["rate"], med[n]["min"], med[n]["max"], med[n]["cpu_us"], med[n]["busy_us"], False])
            if n != "braid":
                chart.append(("timers %s %s" % (variant, n), med[n]["rate"] / med["braid"]["rate"]))
        tables.append("\n".join(t))
    if "deferred" in only:
        runs = [bench_deferred() for _ in range(a.runs)]
        if runs and runs[0]:
            t = ["## deferred: create + 2 callbacks + fire + free", "", "| peer | ns per deferred | x braid |", "|---|---:|---:|"]
            med = {n: statistics.median(r[n]["rate"] for r in runs) for n in runs[0]}
            for n, v in med.items():
                t.append("| %s | %.1f | %.2f |" % (n, v, v / med["braid"]))
                csvrows.append(["deferred", n, v, "", "", "", "", False])
                if n != "braid":
                    chart.append(("deferred %s" % n, v / med["braid"]))
            tables.append("\n".join(t))
    titles = {"hello": "hello: wrk -t1 -c50, 13 bytes from memory, keep-alive",
              "static": "static: wrk -t1 -c50, a 13-byte file, keep-alive",
              "https": "https: wrk -t1 -c50, the 13-byte file over TLS, keep-alive"}
    for kind in ("hello", "static", "https"):
        if kind not in only:
            continue
        runs = [bench_web(kind, a.seconds) for _ in range(a.runs)]
        if not runs or not runs[0]:
            continue
        t = ["## %s" % titles[kind], "",
             "| peer | req/s (min-max) | x braid | server CPU us/req | x braid | RSS KiB |", "|---|---:|---:|---:|---:|---:|"]
        med = {n: median_row([r[n] for r in runs if n in r]) for n in runs[0]}
        b = med["braid"]
        for n, r in med.items():
            t.append("| %s | %.0f (%.0f-%.0f) | %.2f | %.2f | %.2f | %.0f |" % (
                n, r["rate"], r["min"], r["max"], r["rate"] / b["rate"], r["cpu_us"], r["cpu_us"] / b["cpu_us"], r["busy_us"]))
            csvrows.append([kind, n, r["rate"], r["min"], r["max"], r["cpu_us"], r["busy_us"], False])
            if n != "braid":
                chart.append(("%s %s CPU/req" % (kind, n), r["cpu_us"] / b["cpu_us"]))
        tables.append("\n".join(t))
    if a.callgrind or "callgrind" in only:
        cg = callgrind_all(peers, a.cg_repeat)
        if cg:
            tables.append(callgrind_table(cg))
            for w, n, v, sc in cg:
                csvrows.append(["callgrind " + w, n, statistics.mean(v), min(v), max(v), "",
                                sum(sc.values()) if sc else "", False])
            base = {w: statistics.mean(v) for w, n, v, sc in cg if n.startswith("braid")}
            for w, n, v, sc in cg:
                if not n.startswith("braid") and base.get(w) and "1 conn " not in w:
                    chart.append(("Ir %s %s" % (w.split(",")[0], n), statistics.mean(v) / base[w]))
    md = "\n".join(header) + "\n" + "\n\n".join(tables) + "\n\n![ratios](ratios.svg)\n"
    open(os.path.join(a.out, "results.md"), "w").write(md)
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "peer", "median", "min", "max", "cpu_per_op", "busy_per_op", "client_bound"])
        w.writerows(csvrows)
    svg_chart(os.path.join(a.out, "ratios.svg"), chart)
    print(md)


if __name__ == "__main__":
    main()
