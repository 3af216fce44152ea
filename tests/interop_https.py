"""`braid web --tls-cert/--tls-key` against real TLS clients: curl and
Python's ssl + urllib, on 127.0.0.1 with a certificate made here with the
openssl CLI. Also what the server promises a TLS client: ALPN http/1.1, no
CBC suites, and a stalled handshake dropped at the header timeout. Exit 77 (skip) when a tool is missing or braid was built
without TLS; never a faked pass.

Usage: interop_https.py BRAID_EXE"""
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

braid = sys.argv[1]
if not shutil.which("openssl"):
    print("SKIP: no openssl CLI")
    sys.exit(77)
tmp = tempfile.mkdtemp(prefix="braid-https-")
cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out",
                cert, "-days", "2", "-subj", "/CN=localhost", "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1"],
               check=True, capture_output=True)
www = os.path.join(tmp, "www")
os.mkdir(www)
blob = os.urandom(2 * 1024 * 1024 + 17)
open(os.path.join(www, "blob.bin"), "wb").write(blob)
open(os.path.join(www, "index.html"), "w").write("<h1>braid over TLS</h1>\n")

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
proc = subprocess.Popen([braid, "web", "--path", www, "--listen",
                         "tcp:port=%d:interface=127.0.0.1" % port,
                         "--tls-cert", cert, "--tls-key", key, "--no-log",
                         "--header-timeout", "1"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
failures = 0


def check(name, cond):
    global failures
    print(("ok   " if cond else "FAIL ") + name)
    if not cond:
        failures += 1


try:
    line = proc.stdout.readline()
    if "https://" not in line:
        err = proc.stderr.read() if proc.poll() is not None else ""
        if "not supported" in err or "without TLS" in err:
            print("SKIP: braid built without TLS:", err.strip())
            sys.exit(77)
        print("braid web did not start:", line, err)
        sys.exit(1)
    base = "https://localhost:%d" % port
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-sS", "--cacert", cert, base + "/"],
                             capture_output=True, text=True, timeout=30)
        check("curl index over TLS", out.returncode == 0 and "braid over TLS" in out.stdout)
        out = subprocess.run(["curl", "-sS", "--cacert", cert, base + "/blob.bin"],
                             capture_output=True, timeout=60)
        check("curl 2 MiB download, bytes identical",
              hashlib.sha256(out.stdout).digest() == hashlib.sha256(blob).digest())
        out = subprocess.run(["curl", "-sS", "--cacert", cert, "-r", "100-199",
                              base + "/blob.bin"], capture_output=True, timeout=30)
        check("curl range over TLS", out.stdout == blob[100:200])
        out = subprocess.run(["curl", "-sS", base + "/"], capture_output=True, timeout=30)
        check("curl without the CA refuses the certificate", out.returncode != 0)
    else:
        print("skip curl: not installed")
    ctx = ssl.create_default_context(cafile=cert)
    with urllib.request.urlopen(base + "/blob.bin", context=ctx, timeout=30) as r:
        check("urllib over TLS", r.status == 200 and r.read() == blob)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as t:
            check("TLS 1.2 or later negotiated", t.version() in ("TLSv1.2", "TLSv1.3"))
            t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
            check("raw TLS request, response then clean close",
                  data.startswith(b"HTTP/1.1 200") and b"braid over TLS" in data)
    # ALPN: braid web speaks HTTP/1.1 and says so.
    actx = ssl.create_default_context(cafile=cert)
    actx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with actx.wrap_socket(raw, server_hostname="localhost") as t:
            check("ALPN selects http/1.1", t.selected_alpn_protocol() == "http/1.1")
    # A TLS 1.2 client offering only CBC suites is refused; one offering an
    # ECDHE AEAD suite is served.
    for suites, ok in (("AES128-SHA:AES256-SHA", False),
                       ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA", False),
                       ("ECDHE-ECDSA-AES128-GCM-SHA256", True)):
        cctx = ssl.create_default_context(cafile=cert)
        cctx.maximum_version = ssl.TLSVersion.TLSv1_2
        cctx.set_ciphers(suites)
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with cctx.wrap_socket(raw, server_hostname="localhost") as t:
                    got = t.cipher()[0]
        except (ssl.SSLError, ConnectionError):
            got = None
        check("TLS 1.2 client offering only %s %s" % (suites, "served" if ok else "refused"),
              (got == suites) if ok else (got is None))
    # Stalled handshakes end at the header timeout (1 s here): nothing
    # sent, half a ClientHello, a whole one and then silence.
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    hs = ssl.create_default_context(cafile=cert).wrap_bio(inc, out, server_hostname="localhost")
    try:
        hs.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    for name, data in (("nothing sent", b""),
                       ("half a ClientHello", hello[:len(hello) // 2]),
                       ("a whole ClientHello", hello)):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            t0 = time.monotonic()
            raw.sendall(data)
            raw.settimeout(10)
            closed = False
            try:
                while raw.recv(65536):
                    pass
                closed = True
            except ConnectionResetError:
                closed = True
            except socket.timeout:
                pass
            took = time.monotonic() - t0
            check("stalled TLS peer (%s) dropped at the 1 s header timeout "
                  "(after %.2f s)" % (name, took), closed and 0.9 <= took < 8)
finally:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(tmp, ignore_errors=True)
print("%d failed" % failures)
sys.exit(1 if failures else 0)
