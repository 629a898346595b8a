#!/usr/bin/env bash
# HTTP load bench, side by side in one run: the C floor server, taskweave's
# http_server (inline callbacks, handler threads, and with the access log to a
# file), and hyper 1.x. Every server is pinned to core 0, wrk to core 1; servers
# are measured in alternation so drift hits all alike. Server CPU per request
# comes from /proc/PID/stat (../shared/bench/cpu_per_req.sh).
#
# usage: scripts/bench_http.sh [SECONDS=10] [ROUNDS=2]
# prints CSV: label,conns,req_per_s,server_cpu_s,us_cpu_per_req,p99
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
rounds=${2:-2}
shared=../shared/bench
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
ulimit -n "$(ulimit -Hn)"

gcc -O2 -o /tmp/tw_floor_server "$shared/floor_server.c"
cargo build --release --example http_server >/dev/null 2>&1
(cd bench/hyper_hello && cargo build --release >/dev/null 2>&1)
ours=target/release/examples/http_server
log=$(mktemp /tmp/tw-access-XXXX.log)

pids=()
start() { # label port cmd...
  local label=$1 port=$2; shift 2
  taskset -c 0 "$@" >/dev/null 2>&1 &
  pids+=($!)
  eval "pid_$label=$!"
  eval "port_$label=$port"
}
trap 'kill ${pids[@]} 2>/dev/null; rm -f "$log"' EXIT
start floor 8183 /tmp/tw_floor_server 8183
start inline 8184 $ours --port 8184 --pollers 1 --handler-threads 0 --access-log none --max-connections 20000
start handlers 8186 $ours --port 8186 --pollers 1 --handler-threads 1 --access-log none --max-connections 20000
start hyper 8185 bench/hyper_hello/target/release/hyper_hello 8185
start logged 8187 $ours --port 8187 --pollers 1 --handler-threads 0 --access-log "$log" --max-connections 20000
sleep 1

# Like cpu_per_req.sh, with extra wrk arguments (for Connection: close).
measure_close() { # label pid port conns
  local label=$1 pid=$2 port=$3 conns=$4 tck a b out
  tck=$(getconf CLK_TCK)
  a=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(taskset -c 1 wrk --latency -t1 -c"$conns" -d"${dur}s" -H 'Connection: close' "http://127.0.0.1:$port/" 2>&1)
  b=$(awk '{print $14+$15}' "/proc/$pid/stat")
  python3 - "$label" "$conns" "$a" "$b" "$tck" "$out" <<'PY'
import re, sys
label, conns, a, b, tck, out = sys.argv[1:]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p99 = re.search(r"\s99%\s+(\S+)", out).group(1)
cpu = (int(b) - int(a)) / int(tck)
print(f"{label},{conns},{rps:.0f},{cpu:.2f},{cpu / reqs * 1e6:.2f},{p99}")
PY
}

echo "label,conns,req_per_s,server_cpu_s,us_cpu_per_req,p99"
for conns in 50 1000; do
  for r in $(seq "$rounds"); do
    for s in floor inline handlers hyper logged; do
      pid=pid_$s port=port_$s
      bash "$shared/cpu_per_req.sh" "$s" "${!pid}" "${!port}" "$conns" "$dur"
    done
  done
done
# One request per connection: every request opens, logs and closes a connection.
# (The floor server ignores Connection: close, so it has no place here.)
for r in $(seq "$rounds"); do
  for s in inline logged; do
    pid=pid_$s port=port_$s
    measure_close "$s-close" "${!pid}" "${!port}" 50
  done
done
echo "access-log lines written: $(wc -l <"$log")" >&2
