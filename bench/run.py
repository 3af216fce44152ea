#!/usr/bin/env python3
"""braid's benchmark driver: every workload against every reactor found.

    python3 bench/run.py [--runs N] [--seconds S] [--only WORKLOAD,...]
                         [--callgrind] [--out DIR]

Workloads: echo1 and echo50 (TCP ping-pong, 1 and 50 connections, 64-byte
messages), stream (one connection, MB/s), idle (memory per idle connection
at 10,000), timers (1,000,000 scheduled, half cancelled or none), deferred
(deferred / promise throughput), http (wrk hello with keep-alive).

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

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def echo_peers():
    """(name, command, env) for every echo server found."""
    peers = []
    braid = exe("bin", "braid")
    cmd = [braid, "echo", "--quiet", "--listen", "tcp:port=PORT:interface=127.0.0.1"]
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


def bench_http(secs):
    """wrk -t1 -c50 on a 13-byte body with keep-alive: braid web and nginx
    (one worker) and Twisted web serve a 13-byte file; evhttp answers the
    same 13 bytes from memory."""
    rows = {}
    if not shutil.which("wrk"):
        print("skipping http: wrk not installed")
        return rows
    braid = exe("bin", "braid")
    if subprocess.run([braid, "web", "--help"], capture_output=True).returncode != 0:
        print("skipping http: this braid has no 'web' command yet")
        return rows
    tmp = os.path.join(ROOT, "bench", "out", "www")
    os.makedirs(tmp, exist_ok=True)
    open(os.path.join(tmp, "hello.txt"), "w").write("Hello, world!")  # 13 bytes
    peers = [("braid", [braid, "web", "--no-log", "--path", tmp, "--listen", "tcp:port=PORT:interface=127.0.0.1"])]
    if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"):
        conf = os.path.join(tmp, "..", "nginx.conf")
        pre = os.path.abspath(os.path.join(tmp, ".."))
        open(conf, "w").write(
            "daemon off; master_process off; worker_processes 1; pid %s/nginx.pid; error_log %s/nginx.err;\n"
            "events { worker_connections 1024; }\n"
            "http { access_log off; client_body_temp_path %s/t1; proxy_temp_path %s/t2;\n"
            " fastcgi_temp_path %s/t3; uwsgi_temp_path %s/t4; scgi_temp_path %s/t5;\n"
            " server { listen 127.0.0.1:PORT; root %s; } }\n" % ((pre,) * 7 + (tmp,)))
        peers.append(("nginx", ["/usr/sbin/nginx", "-c", os.path.abspath(conf), "-e", pre + "/nginx.err"]))
    evhttp = exe("bench", "http_evhttp")
    if evhttp:
        peers.append(("evhttp", [evhttp, "PORT"]))
    else:
        print("skipping evhttp: not built (libevent-dev)")
    if os.path.exists(SYS_PY) and subprocess.run(
            [SYS_PY, "-c", "import twisted"], capture_output=True).returncode == 0:
        peers.append(("twisted-web", [SYS_PY, "-m", "twisted", "web", "--path", tmp,
                                      "--listen", "tcp:PORT:interface=127.0.0.1"]))
    else:
        print("skipping twisted web: python3-twisted not installed")
    for name, cmd in peers:
        port = None
        if name == "nginx":
            port = free_port()
            text = open(cmd[2]).read().replace("PORT", str(port))
            cfg = cmd[2] + ".%d" % port
            open(cfg, "w").write(text)
            cmd = [cmd[0], "-c", cfg, "-e", cmd[4]]
        s = Server(cmd, port=port)
        try:
            c0 = proc_cpu(s.proc.pid)
            out = sh(list(PIN1) + ["wrk", "-t1", "-c50", "-d%ds" % secs, "--latency",
                                   "http://127.0.0.1:%d/hello.txt" % s.port])
            c1 = proc_cpu(s.proc.pid)
        finally:
            s.stop()
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        rows[name] = {"rate": rate, "cpu_us": (c1 - c0) * 1e6 / max(reqs, 1), "busy_us": 0.0,
                      "client_bound": False}
    return rows


def callgrind_echo(peers):
    """Instructions per round trip (1 connection), difference of two counts
    so that start-up cancels out. Repeatable on a noisy machine."""
    res = {}
    for peer in peers:
        name, cmd, env = peer
        if not (name.startswith("braid-epoll") or name == "libuv"):
            continue
        irs = []
        for n in (5000, 15000):
            out = os.path.join(ROOT, "bench", "out", "cg.%s.%d" % (name, n))
            s = Server(cmd, env, wrapper=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out])
            try:
                load(["count", s.port, 1, 64, n])
            finally:
                s.stop()
            summary = [l for l in open(out) if l.startswith("summary:")][0]
            irs.append(int(summary.split()[1]))
            os.unlink(out)
        res[name] = (irs[1] - irs[0]) / 10000.0
    return res


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
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--only", default="echo1,echo50,stream,idle,timers,deferred,http")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    a = ap.parse_args()
    only = set(a.only.split(","))
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
    if "http" in only:
        runs = [bench_http(a.seconds) for _ in range(a.runs)]
        if runs and runs[0]:
            t = ["## http: wrk -t1 -c50, 13-byte file, keep-alive", "", "| peer | req/s | x braid | server CPU us/req | x braid |", "|---|---:|---:|---:|---:|"]
            med = {n: median_row([r[n] for r in runs]) for n in runs[0]}
            b = med["braid"]
            for n, r in med.items():
                t.append("| %s | %.0f | %.2f | %.2f | %.2f |" % (n, r["rate"], r["rate"] / b["rate"], r["cpu_us"], r["cpu_us"] / b["cpu_us"]))
                csvrows.append(["http", n, r["rate"], r["min"], r["max"], r["cpu_us"], "", False])
                if n != "braid":
                    chart.append(("http %s CPU/req" % n, r["cpu_us"] / b["cpu_us"]))
            tables.append("\n".join(t))
    if a.callgrind:
        cg = callgrind_echo(peers)
        t = ["## callgrind: instructions per echo round trip (1 connection)", "", "| peer | Ir/rt | x braid |", "|---|---:|---:|"]
        b = cg.get("braid-epoll")
        for n, v in cg.items():
            t.append("| %s | %.0f | %s |" % (n, v, "%.2f" % (v / b) if b else "-"))
            csvrows.append(["callgrind", n, v, "", "", "", "", False])
        tables.append("\n".join(t))
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
