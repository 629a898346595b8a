#!/usr/bin/env bash
# TLS bench, side by side in one run: taskweave's http_server (inline, one
# poller), hyper 1.x + tokio-rustls (bench/hyper_tls_hello, the same rustls and
# ring provider) and nginx (one worker), all serving `Hello, World!` over TLS
# with the same ECDSA P-256 certificate. Every server is pinned to core 0, the
# client to core 1; rounds alternate the servers so drift hits all alike, and
# the summary reports medians.
#
# - keep-alive: server CPU per request over TLS keep-alive connections (wrk
#   over https, CONNS connections, handshakes amortised away);
# - handshakes: server CPU per full handshake (`openssl s_time -new`: a new
#   connection and a full TLS 1.3 handshake each, no session reuse, no request),
#   reported as handshakes per second per core = 1 / CPU per handshake;
# - idle: RSS per idle TLS connection (scripts/mem_idle_conns.py --tls,
#   IDLE connections, one request each), measured once per server.
#
# usage: scripts/bench_tls.sh [SECONDS=2] [ROUNDS=5]
#   SERVERS="taskweave hyper" CONNS=50 IDLE=2000 scripts/bench_tls.sh
# prints CSV lines: kind,label,value,unit
# then summary lines: summary,kind,label,median,unit
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-2}
rounds=${2:-5}
servers=${SERVERS:-taskweave hyper nginx}
conns=${CONNS:-50}
idle=${IDLE:-2000}
for tool in wrk openssl nginx; do
  command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool; }
done
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /tmp/tw-bench-tls-XXXX)
out=$work/results.csv

# One CA and one server certificate (ECDSA P-256) for localhost/127.0.0.1.
(cd "$work" &&
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout ca.key -out ca.pem -subj "/CN=bench CA" 2>/dev/null &&
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout key.pem -out srv.csr -subj "/CN=localhost" 2>/dev/null &&
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out cert.pem 2>/dev/null)

cargo build --release --example http_server >/dev/null 2>&1
(cd bench/hyper_tls_hello && cargo build --release >/dev/null 2>&1)
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  ssl_session_tickets on;
  server {
    listen 127.0.0.1:8543 ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
NGINX

pids=()
start() { # label port cmd...
  local label=$1 port=$2; shift 2
  taskset -c 0 "$@" >/dev/null 2>&1 &
  pids+=($!)
  eval "pid_$label=$!"
  eval "port_$label=$port"
}
trap 'kill ${pids[@]} 2>/dev/null; sleep 0.2; rm -rf "$work"' EXIT
start taskweave 8541 target/release/examples/http_server --port 8541 --pollers 1 \
  --handler-threads 0 --access-log none --max-connections 20000 \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
start hyper 8542 bench/hyper_tls_hello/target/release/hyper_tls_hello 8542 "$work/cert.pem" "$work/key.pem"
start nginx 8543 nginx -c "$work/nginx.conf" -e "$work/nginx.err"
sleep 1
# nginx's requests are served by its worker, a child of the master started above.
pid_nginx=$(pgrep -P "$pid_nginx" nginx | head -1)

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }

keepalive() { # label pid port
  local tck a b o
  tck=$(getconf CLK_TCK)
  a=$(cpu "$2")
  o=$(taskset -c 1 wrk -t1 -c"$conns" -d"${dur}s" "https://127.0.0.1:$3/" 2>&1)
  b=$(cpu "$2")
  python3 - "$1" "$a" "$b" "$tck" "$o" <<'PY'
import re, sys
label, a, b, tck, out = sys.argv[1:]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
cpu = (int(b) - int(a)) / int(tck)
print(f"keepalive,{label},{cpu / reqs * 1e6:.2f},us_cpu_per_req")
PY
}

handshakes() { # label pid port
  local tck a b o
  tck=$(getconf CLK_TCK)
  a=$(cpu "$2")
  o=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$3" -new -time "$dur" 2>&1 || true)
  b=$(cpu "$2")
  python3 - "$1" "$a" "$b" "$tck" "$o" <<'PY'
import re, sys
label, a, b, tck, out = sys.argv[1:]
m = re.search(r"(\d+) connections in [\d.]+s", out)
n = int(m.group(1)) if m else 0
cpu = (int(b) - int(a)) / int(tck)
per_core = n / cpu if cpu > 0 else float("nan")
print(f"handshakes,{label},{per_core:.0f},per_s_per_core")
PY
}

echo "kind,label,value,unit"
{
  for r in $(seq "$rounds"); do
    for s in $servers; do
      eval "pid=\$pid_$s port=\$port_$s"
      keepalive "$s" "$pid" "$port"
      handshakes "$s" "$pid" "$port"
    done
  done
  for s in $servers; do
    eval "pid=\$pid_$s port=\$port_$s"
    kib=$(python3 scripts/mem_idle_conns.py --pid "$pid" --port "$port" -n "$idle" --tls --json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["kib_per_alive_conn"])')
    echo "idle,$s,$kib,kib_per_conn"
  done
} | tee "$out"
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
groups = {}
for kind, label, value, unit in rows:
    groups.setdefault((kind, label, unit), []).append(float(value))
for (kind, label, unit), vals in groups.items():
    print(f"summary,{kind},{label},{statistics.median(vals):.2f},{unit}")
PY
