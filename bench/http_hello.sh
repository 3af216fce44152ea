#!/bin/sh
# HTTP figures: a 13-byte "hello, world\n" answered with keep-alive, braid
# (`braid web --hello`) against nginx with one process, in the same run.
#
#   sh bench/http_hello.sh [SECONDS] [CONNECTIONS] [ROUNDS]   (10 s, 50, 1)
#
# With several rounds the servers alternate (braid, nginx, braid, ...), so
# that a burst of other load on the machine does not favour one of them.
#
# The server is pinned to CPU 0 and wrk to CPU 1 (taskset). Per server:
# requests/s and p99 latency (wrk --latency), RSS after the run (VmRSS)
# and its peak (VmHWM), and CPU time per request from /proc/PID/stat
# (utime + stime delta over the run / requests). Both servers log nothing
# per request (braid --no-log, nginx access_log off) and never close a
# keep-alive connection (nginx keepalive_requests raised from its default
# of 1000). nginx runs with master_process off so that the one process
# measured is the one serving. Servers listen on 127.0.0.1 high ports and
# are stopped by PID. Needs wrk, nginx (nginx-light) and taskset.
#
# Not a test: the figures depend on the machine and on what else runs.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
rounds=${3:-1}
for t in wrk nginx taskset; do
  command -v $t >/dev/null 2>&1 || { echo "need $t (apt-get install wrk nginx-light util-linux)" >&2; exit 2; }
done
[ -x build/bin/braid ] || { [ -f build/build.ninja ] || meson setup build >/dev/null; ninja -C build >/dev/null; }

tmp=$(mktemp -d /tmp/braid-bench-http.XXXXXX)
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port
  i=0
  while ! python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "server on $1 did not start" >&2; exit 1; }
    sleep 0.02
  done
}

cpu_ticks() { # pid -> utime+stime in clock ticks
  # Field 2 (comm) may hold spaces: cut after the last ')'.
  sed 's/.*) //' /proc/$1/stat | awk '{print $12 + $13}'
}

hz=$(getconf CLK_TCK)

measure() { # name pid url
  name=$1; pid=$2; url=$3
  # Warm up (connections, caches), then measure.
  taskset -c 1 wrk -t1 -c"$conns" -d1s "$url" >/dev/null
  c0=$(cpu_ticks "$pid")
  taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency "$url" >"$tmp/$name.wrk"
  c1=$(cpu_ticks "$pid")
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  reqs=$(awk '/requests in/ {print $1}' "$tmp/$name.wrk")
  rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$tmp/$name.wrk")
  errs=$(grep -E "Socket errors|Non-2xx" "$tmp/$name.wrk" | tr '\n' ' ' || true)
  cpu_us=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
  printf "%-7s %12s %10s %9s KiB %9s KiB %12s %s\n" "$name" "$rps" "$p99" "$rss" "$hwm" "$cpu_us" "$errs"
}

# --- braid -------------------------------------------------------------------
mkdir -p "$tmp/www"
bport=$(free_port)
taskset -c 0 ./build/bin/braid web --path "$tmp/www" --hello --no-log --quiet \
  --listen "tcp:port=$bport:interface=127.0.0.1" &
bpid=$!
pids="$pids $bpid"

# --- nginx, one process --------------------------------------------------------
nport=$(free_port)
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$nport;
    location = /hello { default_type text/plain; return 200 "hello, world\n"; }
  }
}
EOF
taskset -c 0 nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/logs/error.log" &
npid=$!
pids="$pids $npid"

wait_port "$bport"
wait_port "$nport"
# The same 13 bytes from both.
for port in $bport $nport; do
  body=$(python3 -c "import urllib.request; print(len(urllib.request.urlopen('http://127.0.0.1:$port/hello').read()))")
  [ "$body" = 13 ] || { echo "port $port answered $body bytes" >&2; exit 1; }
done

echo "wrk -t1 -c$conns -d${secs}s --latency, 13-byte body, keep-alive; server on CPU 0, wrk on CPU 1"
echo "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) before the run"
printf "%-7s %12s %10s %13s %13s %12s\n" server "requests/s" "p99" "RSS" "peak RSS" "CPU us/req"
i=0
while [ $i -lt "$rounds" ]; do
  measure braid "$bpid" "http://127.0.0.1:$bport/hello"
  measure nginx "$npid" "http://127.0.0.1:$nport/hello"
  i=$((i + 1))
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) after the run"
