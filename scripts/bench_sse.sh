#!/usr/bin/env bash
# SSE fan-out bench, side by side in one run: taskweave's sse_server example and an
# idiomatic axum SSE server (bench/axum_sse). Each server is pinned to core 0; the
# subscribers and the publisher (bench/sse_fanout/fanout.c) share core 1. Three
# scenarios, each with a freshly started server and one topic:
#   a: 10,000 subscribers, 1 event/s published (10,000 deliveries/s)
#   b:  1,000 subscribers, 100 events/s published (100,000 deliveries/s)
#      (a fixed schedule over up to RATE_CONNS connections)
#   c:  1,000 subscribers, published back to back (B2B_CONNS connections, one
#       request in flight on each): how many deliveries/s the server manages
# RSS (VmRSS) is read before subscribing and once all subscribers are open (and
# idle); then publishing starts, and after WARMUP s the window of WINDOW s begins.
# Server CPU is utime+stime from /proc/PID/stat over the window, per event the
# subscribers received in it. The window starts half a publish interval after a
# publish, so at 1 event/s it holds whole bursts. Rounds alternate the servers.
#
# usage: scripts/bench_sse.sh [WINDOW=15] [ROUNDS=3]
#   SERVERS=axum SCENARIOS="a c" scripts/bench_sse.sh 10 1   (a quicker subset)
#   OURS_CMD=... AXUM_CMD=...   server commands; each exec's the server (its PID
#                               is the one measured) and has its own --port P
#   WARMUP=3 SIZE=64 (event data bytes) B2B_CONNS=1 BATCH_US=1000 (fanout sub)
#   RATE_CONNS=4   connections the fixed-rate publisher may use (one request in
#                  flight on each): with one, a server that takes up a publish only
#                  once the fan-out under way is done (axum) falls short of 100/s
#   PRIO="chrt -f 5"   runs the server and the subscribers under this prefix: on a
#                      shared machine, other work then gets only the time they
#                      leave idle (a nice level is not enough: a woken server
#                      still waits for another task's time slice to end)
# prints CSV: server,round,scenario,subscribers,events_per_s,deliveries,
#   deliveries_per_s,server_cpu_s,us_cpu_per_delivery,rss_before_kib,rss_after_kib,
#   kib_per_sub,client_cpu_s,pub_cpu_s,gaps,dups,rss_end_kib,window_s,
#   core0_busy_s,core1_busy_s   (all the non-idle time of the two cores: a check
#   that nothing else ran there, and whether core 1 had room to spare)
# then summary lines: summary,server,scenario,subscribers,median_us_per_delivery,
#   median_deliveries_per_s,median_kib_per_sub,median_client_cpu_share
#   (client_cpu_share: the subscribers' CPU over the server's, in the window)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
window=${1:-15}
rounds=${2:-3}
warmup=${WARMUP:-3}
servers=${SERVERS:-ours axum}
scenarios=${SCENARIOS:-a b c}
size=${SIZE:-64}
b2b_conns=${B2B_CONNS:-1}
rate_conns=${RATE_CONNS:-4}
batch_us=${BATCH_US:-1000}
ours_default="target/release/examples/sse_server --port 8091 --pollers 1 --handler-threads 0 --access-log off --queue 1024 --max-connections 20000"
ours_cmd=${OURS_CMD:-$ours_default}
axum_cmd=${AXUM_CMD:-bench/axum_sse/target/release/axum_sse --port 8092}
fanout=/tmp/tw_sse_fanout
tck=$(getconf CLK_TCK)
# The publisher runs at a real-time priority so that, sharing core 1 with the
# subscribers, it answers at once (it sleeps between requests).
rt="chrt -f 10"
$rt true 2>/dev/null || { rt=""; echo "bench_sse: chrt -f not permitted; the publisher runs at normal priority" >&2; }
prio=${PRIO:-}

ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < 10100 )); then
  echo "bench_sse: RLIMIT_NOFILE hard limit $(ulimit -Hn) is below the 10,100 needed" >&2
  exit 1
fi

gcc -O2 -o "$fanout" bench/sse_fanout/fanout.c
if [[ " $servers " == *" axum "* ]]; then
  (cd bench/axum_sse && cargo build --release -q)
fi
if [[ " $servers " == *" ours "* ]]; then
  if [[ "$ours_cmd" == "$ours_default" ]] && [[ -e examples/sse_server.rs || -d examples/sse_server ]]; then
    cargo build --release -q --example sse_server
  fi
  if ! command -v "${ours_cmd%% *}" >/dev/null; then
    echo "bench_sse: skipping ours: ${ours_cmd%% *} does not exist (cargo build --release --example sse_server)" >&2
    servers=$(echo " $servers " | sed 's/ ours / /g')
  fi
fi
[[ -n "${servers// /}" ]] || { echo "bench_sse: no server to run" >&2; exit 1; }

tmp=$(mktemp -d /tmp/tw-bench-sse-XXXX)
out=$tmp/rows.csv
: >"$out"
pids=()  # the processes of the run under way
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

now_us() { local t=$EPOCHREALTIME; echo $(( ${t%.*} * 1000000 + 10#${t#*.} )); }
sleep_until() { # microseconds since the epoch
  local d=$(( $1 - $(now_us) ))
  (( d > 0 )) && sleep "$(printf '%d.%06d' $((d / 1000000)) $((d % 1000000)))"
  return 0
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || true; }
# Busy ticks of one core (user nice system irq softirq).
core_ticks() { awk -v c="cpu$1" '$1 == c {print $2+$3+$4+$7+$8}' /proc/stat; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || true; }
port_of() { sed -n 's/.*--port[ =]\([0-9][0-9]*\).*/\1/p' <<<"$1"; }
lines() { if [[ -f "$1" ]]; then grep -c "\"event\":\"$2\"" "$1" || true; else echo 0; fi; }
# Waits (up to SECS) for FILE to have more than N lines of the given event.
wait_line() { # file event n secs
  local i
  for ((i = 0; i < $4 * 100; i++)); do
    (( $(lines "$1" "$2") > $3 )) && return 0
    sleep 0.01
  done
  return 1
}
stop() { # pid: SIGTERM, then SIGKILL after 5 s
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 500; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

run_one() { # server round scenario
  local label=$1 round=$2 sc=$3 cmd port subs rate conns=1
  case $label in ours) cmd=$ours_cmd ;; axum) cmd=$axum_cmd ;; esac
  case $sc in
    a) subs=10000 rate=1 conns=$rate_conns ;;
    b) subs=1000 rate=100 conns=$rate_conns ;;
    c) subs=1000 rate=0 conns=$b2b_conns ;;
  esac
  port=$(port_of "$cmd")
  [[ -n "$port" ]] || { echo "bench_sse: no --port in: $cmd" >&2; exit 1; }
  local sub_out=$tmp/sub-$label-$round-$sc.out pub_out=$tmp/pub-$label-$round-$sc.out
  local spid cpid ppid i rss0 rss1 rss2 t0 ta tb sa sb ca cb pa pb ka kb la lb

  # shellcheck disable=SC2086
  taskset -c 0 $prio $cmd >"$tmp/server-$label.log" 2>&1 &
  spid=$!
  pids+=("$spid")
  for ((i = 0; i < 1000; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.01
  done
  if ! kill -0 "$spid" 2>/dev/null || ((i == 1000)); then
    echo "bench_sse: $label ($cmd) did not start listening on $port:" >&2
    tail -5 "$tmp/server-$label.log" >&2
    stop "$spid"
    pids=()
    return 1
  fi
  sleep 1
  rss0=$(rss_kib "$spid")

  taskset -c 1 $prio "$fanout" sub --port "$port" --topic bench -n "$subs" --batch-us "$batch_us" \
    >"$sub_out" 2>"$sub_out.err" &
  cpid=$!
  pids+=("$cpid")
  if ! wait_line "$sub_out" all_open 0 120; then
    echo "bench_sse: $label $sc: not all $subs subscribers open after 120 s; measuring those that are" >&2
    cat "$sub_out.err" >&2
  fi
  sleep 1
  rss1=$(rss_kib "$spid")

  $rt taskset -c 1 "$fanout" pub --port "$port" --topic bench --rate "$rate" --conns "$conns" \
    --size "$size" >"$pub_out" 2>"$pub_out.err" &
  ppid=$!
  pids+=("$ppid")
  t0=$(now_us)
  # Half a publish interval after a publish (at 1/s), so a burst is not cut in two.
  sleep_until $((t0 + warmup * 1000000 + 500000))
  ta=$(now_us) sa=$(ticks "$spid") ca=$(ticks "$cpid") pa=$(ticks "$ppid") ka=$(core_ticks 0) la=$(core_ticks 1)
  kill -USR1 "$cpid" "$ppid"
  sleep_until $((ta + window * 1000000))
  tb=$(now_us) sb=$(ticks "$spid") cb=$(ticks "$cpid") pb=$(ticks "$ppid") kb=$(core_ticks 0) lb=$(core_ticks 1)
  kill -USR1 "$cpid" "$ppid" 2>/dev/null
  rss2=$(rss_kib "$spid")
  local ok=1
  if [[ -z "$sa" || -z "$sb" || -z "$rss2" ]]; then
    ok=0
    echo "bench_sse: $label $sc: the server exited during the run:" >&2
    tail -5 "$tmp/server-$label.log" >&2
  elif [[ -z "$ca" || -z "$cb" || -z "$pa" || -z "$pb" ]]; then
    ok=0
    echo "bench_sse: $label $sc: the subscribers or the publisher exited during the run" >&2
  fi
  wait_line "$sub_out" signal 1 10 || echo "bench_sse: $label $sc: no second report from the subscribers" >&2
  wait_line "$pub_out" signal 1 10 || echo "bench_sse: $label $sc: no second report from the publisher" >&2
  stop "$cpid"
  stop "$ppid"
  stop "$spid"
  pids=()
  [[ -s "$pub_out.err" ]] && cat "$pub_out.err" >&2
  [[ -s "$sub_out.err" ]] && cat "$sub_out.err" >&2
  ((ok)) || return 1

  python3 - "$out" "$label" "$round" "$sc" "$sub_out" "$pub_out" "$tck" "$ta" "$tb" "$sa" "$sb" \
    "$ca" "$cb" "$pa" "$pb" "$rss0" "$rss1" "$rss2" "$ka" "$kb" "$la" "$lb" <<'PY'
import json, sys
out, label, rnd, sc, sub_out, pub_out = sys.argv[1:7]
tck, ta, tb, sa, sb, ca, cb, pa, pb, rss0, rss1, rss2, ka, kb, la, lb = map(int, sys.argv[7:])
def signals(path):
    return [json.loads(l) for l in open(path) if '"event":"signal"' in l][:2]
s0, s1 = signals(sub_out)
p0, p1 = signals(pub_out)
win = (tb - ta) / 1e6
deliv = s1["events"] - s0["events"]
cpu = (sb - sa) / tck
subs = s0["open"]
kib = (rss1 - rss0) / subs if subs else float("nan")
us = cpu / deliv * 1e6 if deliv else float("nan")
client = (cb - ca) / tck
core0, core1, pub = (kb - ka) / tck, (lb - la) / tck, (pb - pa) / tck
if client + pub > 0.8 * win:
    print(f"bench_sse: {label} {sc}: the subscribers and the publisher used {client + pub:.1f} s "
          f"of CPU in {win:.1f} s: core 1 is nearly saturated, deliveries/s may be the "
          f"client's limit", file=sys.stderr)
if core0 - cpu > 0.1 * win or core1 - client - pub > 0.1 * win:
    print(f"bench_sse: {label} {sc}: other work ran on the bench cores (core 0 {core0 - cpu:.1f} s "
          f"besides the server, core 1 {core1 - client - pub:.1f} s besides the clients, "
          f"in {win:.1f} s): the figures are disturbed", file=sys.stderr)
if s1["open"] != subs or s1["closed"] or s1["errors"]:
    print(f"bench_sse: {label} {sc}: open {subs} -> {s1['open']}, closed {s1['closed']}, "
          f"errors {s1['errors']}", file=sys.stderr)
row = (f"{label},{rnd},{sc},{subs},{(p1['published'] - p0['published']) / win:.1f},{deliv},"
       f"{deliv / win:.0f},{cpu:.2f},{us:.2f},{rss0},{rss1},{kib:.2f},{client:.2f},"
       f"{pub:.2f},{s1['gaps'] - s0['gaps']},{s1['dups'] - s0['dups']},{rss2},{win:.2f},"
       f"{core0:.2f},{core1:.2f}")
print(row, flush=True)
open(out, "a").write(row + "\n")
PY
}

echo "server,round,scenario,subscribers,events_per_s,deliveries,deliveries_per_s,server_cpu_s,us_cpu_per_delivery,rss_before_kib,rss_after_kib,kib_per_sub,client_cpu_s,pub_cpu_s,gaps,dups,rss_end_kib,window_s,core0_busy_s,core1_busy_s"
order=($servers)
for r in $(seq "$rounds"); do
  for sc in $scenarios; do
    for s in "${order[@]}"; do
      run_one "$s" "$r" "$sc" || true
    done
  done
  # The other server goes first in the next round.
  order=($(printf '%s\n' "${order[@]}" | tac))
done

python3 - "$out" <<'PY'
import statistics as st, sys, collections
by = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) != 20 or f[0] == "server":
        continue
    by[(f[0], f[2])].append(f)
for (label, sc), rows in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    med = lambda i: st.median(float(r[i]) for r in rows)
    share = st.median(float(r[12]) / float(r[7]) if float(r[7]) else float("nan") for r in rows)
    print("summary,%s,%s,%s,%.2f,%.0f,%.2f,%.2f" % (label, sc, rows[0][3], med(8), med(6), med(11), share))
PY
