#!/bin/bash
# https hello (keep-alive): braid web --tls-cert vs nginx (one process, TLS),
# same certificate, same run, interleaved; wrk -t1 -c50. Server on CPU 0,
# wrk on CPU 1. nginx as bench/run.py configures it (its https workload):
# sendfile, open_file_cache, access_log off, and TLS 1.3 with AES-128-GCM
# first, as braid negotiates (nginx 1.22 leaves TLS 1.3 off by default).
# A benchmark, never a test.
#   bash bench/https_hello.sh [SECONDS] [ROUNDS]       (defaults: 5, 3)
set -eu
cd "$(dirname "$0")/.."
SECS=${1:-5}; ROUNDS=${2:-3}
[ -x build/bin/braid ] || { meson setup build >/dev/null; ninja -C build >/dev/null; }
T=$(mktemp -d /tmp/braid-https-bench-XXXXXX)
trap 'rm -rf "$T"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$T/key.pem" -out "$T/cert.pem" -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1
mkdir -p "$T/www"; printf 'Hello, world!' > "$T/www/hello.txt"
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.02; done; return 1; }
run() { # name port pid
  c0=$(cpu $3)
  out=$(taskset -c 1 wrk -t1 -c50 -d${SECS}s --latency "https://127.0.0.1:$2/hello.txt")
  c1=$(cpu $3)
  reqs=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p')
  p99=$(echo "$out" | awk '/ 99%/{print $2}')
  rss=$(awk '/^VmRSS/{print $2}' /proc/$3/status)
  awk -v n=$1 -v r=$rps -v p=$p99 -v a=$c0 -v b=$c1 -v q=$reqs -v hz=$hz -v rss=$rss \
    'BEGIN{printf "| %s | %.0f | %s | %.2f | %d |\n", n, r, p, (b-a)/hz*1e6/q, rss}'
}
echo "| server | req/s | p99 | CPU us/req | RSS KiB |"
echo "|---|---:|---:|---:|---:|"
for round in $(seq 1 $ROUNDS); do
  port=$((20000 + RANDOM % 20000))
  taskset -c 0 build/bin/braid web --path "$T/www" --no-log --quiet \
    --listen tcp:port=$port:interface=127.0.0.1 --tls-cert "$T/cert.pem" --tls-key "$T/key.pem" &
  pid=$!; wait_port $port; run braid $port $pid; kill $pid; wait $pid 2>/dev/null || true
  port=$((20000 + RANDOM % 20000))
  cat > "$T/nginx.conf" <<NGX
daemon off; master_process off; worker_processes 1; pid $T/nginx.pid; error_log $T/nginx.err;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $T/t1; proxy_temp_path $T/t2;
  fastcgi_temp_path $T/t3; uwsgi_temp_path $T/t4; scgi_temp_path $T/t5;
  sendfile on; open_file_cache max=1000 inactive=60s; keepalive_requests 100000000;
  types { text/plain txt; }
  server { listen 127.0.0.1:$port ssl; ssl_certificate $T/cert.pem;
           ssl_certificate_key $T/key.pem; root $T/www;
           ssl_protocols TLSv1.2 TLSv1.3; ssl_prefer_server_ciphers on;
           ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384; } }
NGX
  taskset -c 0 /usr/sbin/nginx -c "$T/nginx.conf" -e "$T/nginx.err" &
  pid=$!; wait_port $port; run nginx $port $pid; kill $pid; wait $pid 2>/dev/null || true
done
