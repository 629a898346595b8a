#!/usr/bin/env bash
# HTTP load bench, side by side in one run: the C floor server, taskweave's
# http_server (inline callbacks; "handlers": one handler thread; "default":
# the default settings, one handler thread per CPU, as a user gets them,
# pollers running their turns' jobs (the handoff); "handover": the same with
# --no-poller-handoff, every job handed to a handler thread; with
# the access log to a file: "connlog" writes connection records only,
# "logged" request records too), and hyper 1.x. Every server is pinned to
# core 0, wrk to core 1; servers are measured in alternation so drift hits all
# alike. Server CPU per request comes from /proc/PID/stat
# (scripts/cpu_per_req.sh; the yardsticks are described in bench/README.md).
#
# This VM's speed drifts by up to ~25% from one minute to the next, so rounds are
# short and many, and each server's ratio is taken against the floor sample of the
# same round; the summary reports medians.
#
# usage: scripts/bench_http.sh [SECONDS=2] [ROUNDS=10]
#   SERVERS="floor inline" CONNS=50 scripts/bench_http.sh   (a quicker subset)
#   BASELINE=/path/to/old/http_server SERVERS="floor baseline inline" ...
#                                     (an earlier build, side by side; inline, or
#                                      BASELINE_ARGS="" for the default mode)
# prints CSV: label,conns,req_per_s,server_cpu_s,us_cpu_per_req,p99
# then summary lines: summary,label,conns,median_us_per_req,median_ratio_to_floor,
#                     median_req_per_s,median_p99
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-2}
rounds=${2:-10}
servers=${SERVERS:-floor inline default hyper logged}
conns_list=${CONNS:-50 1000}
out=$(mktemp /tmp/tw-bench-XXXX.csv)
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
ulimit -n "$(ulimit -Hn)"

gcc -O2 -o /tmp/tw_floor_server bench/floor/floor_server.c
cargo build --release --example http_server >/dev/null 2>&1
(cd bench/hyper_hello && cargo build --release >/dev/null 2>&1)
ours=target/release/examples/http_server
log=$(mktemp "${LOGDIR:-/tmp}/tw-access-XXXX.log")
connlog=$(mktemp "${LOGDIR:-/tmp}/tw-connlog-XXXX.log")

pids=()
start() { # label port cmd...
  local label=$1 port=$2; shift 2
  taskset -c 0 "$@" >/dev/null 2>&1 &
  pids+=($!)
  eval "pid_$label=$!"
  eval "port_$label=$port"
}
trap 'kill ${pids[@]} 2>/dev/null; rm -f "$log" "$connlog" "$out"' EXIT
start floor 8183 /tmp/tw_floor_server 8183
start inline 8184 $ours --port 8184 --pollers 1 --handler-threads 0 --access-log none --max-connections 20000
start handlers 8186 $ours --port 8186 --pollers 1 --handler-threads 1 --access-log none --max-connections 20000
start default 8190 $ours --port 8190 --pollers 1 --access-log none --max-connections 20000
start handover 8191 $ours --port 8191 --pollers 1 --no-poller-handoff --access-log none --max-connections 20000
start hyper 8185 bench/hyper_hello/target/release/hyper_hello 8185
start logged 8187 $ours --port 8187 --pollers 1 --handler-threads 0 --access-log "$log" --max-connections 20000
start connlog 8189 $ours --port 8189 --pollers 1 --handler-threads 0 --access-log "$connlog" --conn-log-only --max-connections 20000
# An earlier build, inline, to measure a change side by side (SERVERS="floor baseline inline").
if [[ -n "${BASELINE:-}" ]]; then
  # shellcheck disable=SC2086 # BASELINE_ARGS is a list of flags
  start baseline 8188 "$BASELINE" --port 8188 --pollers 1 ${BASELINE_ARGS---handler-threads 0} --access-log none --max-connections 20000
fi
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
{
for conns in $conns_list; do
  for r in $(seq "$rounds"); do
    for s in $servers; do
      pid=pid_$s port=port_$s
      bash scripts/cpu_per_req.sh "$s" "${!pid}" "${!port}" "$conns" "$dur"
    done
  done
done
# One request per connection: every request opens, logs and closes a connection.
# (The floor server ignores Connection: close, so it has no place here.)
close_servers=""
for s in inline connlog logged; do
  [[ " $servers " == *" $s "* ]] && close_servers+=" $s"
done
if [[ " $servers " == *" logged "* || " $servers " == *" connlog "* ]]; then
for r in $(seq "$rounds"); do
  for s in $close_servers; do
    pid=pid_$s port=port_$s
    measure_close "$s-close" "${!pid}" "${!port}" 50
  done
done
fi
} | tee "$out"
echo "access-log lines written: logged $(wc -l <"$log"), connlog $(wc -l <"$connlog")" >&2

python3 - "$out" <<'PY'
import statistics as st, sys, collections
rows = [l.strip().split(",") for l in open(sys.argv[1]) if l.count(",") == 5]
def ms(v):  # wrk prints 812.00us, 1.53ms or 1.02s
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * scale
    return float("nan")
by = collections.defaultdict(list)
for label, conns, rps, cpu, us, p99 in rows:
    by[(label, conns)].append((float(us), float(rps), ms(p99)))
# Pair each sample with the floor (or, for close mode, the no-log) sample of its round.
for (label, conns), samples in sorted(by.items(), key=lambda kv: (int(kv[0][1]), kv[0][0])):
    ref = by.get(("inline-close" if label.endswith("-close") else "floor", conns), [])
    ratios = [s[0] / r[0] for s, r in zip(samples, ref)] if ref else []
    print("summary,%s,%s,%.2f,%s,%.0f,%.2fms" % (
        label, conns, st.median(s[0] for s in samples),
        "%.3f" % st.median(ratios) if ratios else "-",
        st.median(s[1] for s in samples), st.median(s[2] for s in samples)))
# The cost of request records: "logged" over "connlog" in the same round.
for (label, conns), samples in sorted(by.items(), key=lambda kv: (int(kv[0][1]), kv[0][0])):
    if not label.startswith("logged"):
        continue
    ref = by.get((label.replace("logged", "connlog"), conns), [])
    if ref:
        ratios = [s[0] / r[0] for s, r in zip(samples, ref)]
        print("requests_on_vs_off,%s,%s,%.3f" % (label, conns, st.median(ratios)))
PY
