#!/usr/bin/env bash
# Where a mode's CPU goes, per request: server CPU (user and kernel), context
# switches (voluntary and involuntary, all threads), and the syscalls a
# hand-off between threads costs (futex, epoll_wait, and the poller's own
# wake-up writes), counted with perf tracepoints while wrk runs. For the
# handler-thread investigation (issue 14); runs each mode in turn, server on
# core 0, wrk on core 1.
#
# usage: scripts/handoff_stats.sh [SECONDS=5] [CONNS=50]
#   MODES="inline:0 handlers1:1 default: handover::--no-poller-handoff" scripts/handoff_stats.sh
#     (label:handler-threads[:one more flag]; empty = the default settings)
#   BIN=/path/to/http_server scripts/handoff_stats.sh   (another build)
#   POLLERS=2 CORES=0,1 scripts/handoff_stats.sh   (more pollers, on more cores)
# prints: label,conns,requests,us_cpu,us_user,us_sys,cs_vol,cs_invol,futex,sched_yield,epoll_wait,write,sendto,recvfrom
# (every figure after `requests` per request)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-5}
conns=${2:-50}
modes=${MODES:-inline:0 handlers1:1 default: handover::--no-poller-handoff}
command -v wrk >/dev/null || { echo "wrk is needed" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is needed" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
bin=${BIN:-target/release/examples/http_server}
[[ -n "${BIN:-}" ]] || cargo build --release --example http_server >/dev/null 2>&1
port=${PORT:-8197}

switches() { # pid -> "voluntary involuntary", summed over threads
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^voluntary_ctxt_switches/{v+=$2} /^nonvoluntary_ctxt_switches/{n+=$2} END{print v+0, n+0}'
}

echo "label,conns,requests,us_cpu,us_user,us_sys,cs_vol,cs_invol,futex,sched_yield,epoll_wait,write,sendto,recvfrom"
for m in $modes; do
  IFS=: read -r label threads flag <<<"$m"
  args=(--port "$port" --pollers "${POLLERS:-1}" --access-log none --max-connections 20000)
  [[ -n "$threads" ]] && args+=(--handler-threads "$threads")
  [[ -n "${flag:-}" ]] && args+=("$flag")
  taskset -c "${CORES:-0}" "$bin" "${args[@]}" >/dev/null 2>&1 &
  pid=$!
  sleep 1
  taskset -c 1 wrk -t1 -c"$conns" -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1 # warm-up
  tck=$(getconf CLK_TCK)
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
  read -r v0 n0 < <(switches $pid)
  perf stat -x, -o /tmp/tw-handoff-perf.txt -p "$pid" \
    -e 'syscalls:sys_enter_futex,syscalls:sys_enter_sched_yield,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom' \
    -- sleep "$((dur + 1))" &
  ppid=$!
  sleep 0.5
  out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${dur}s" "http://127.0.0.1:$port/" 2>&1)
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
  read -r v1 n1 < <(switches $pid)
  wait $ppid || true
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  python3 - "$label" "$conns" "$out" "$tck" "$u0" "$u1" "$s0" "$s1" "$v0" "$v1" "$n0" "$n1" <<'PY'
import re, sys
label, conns, out, tck, u0, u1, s0, s1, v0, v1, n0, n1 = sys.argv[1:]
reqs = int(re.search(r"(\d+) requests in", out).group(1))
tck = int(tck)
user = (int(u1) - int(u0)) / tck * 1e6 / reqs
sys_ = (int(s1) - int(s0)) / tck * 1e6 / reqs
counts = {}
for line in open("/tmp/tw-handoff-perf.txt"):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_"):
        counts[parts[2].split("sys_enter_")[1]] = int(parts[0]) if parts[0].isdigit() else 0
# perf counts for a second longer than wrk runs; an idle server makes next to no calls.
per = lambda k: counts.get(k, 0) / reqs
print(f"{label},{conns},{reqs},{user + sys_:.2f},{user:.2f},{sys_:.2f},"
      f"{(int(v1) - int(v0)) / reqs:.3f},{(int(n1) - int(n0)) / reqs:.3f},"
      f"{per('futex'):.3f},{per('sched_yield'):.3f},{per('epoll_wait'):.3f},{per('write'):.3f},{per('sendto'):.3f},{per('recvfrom'):.3f}")
PY
  port=$((port + 1))
done
