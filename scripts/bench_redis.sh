#!/usr/bin/env bash
# Redis client bench (docs/performance.md, "Redis"): taskweave's redis::Client
# (examples/redis_task.rs --bench), redis-rs with one multiplexed tokio connection
# (bench/redis_rs, its own workspace) and redis-benchmark, side by side in one run,
# against a redis-server this script starts on a free port of 127.0.0.1 (no
# persistence), pinned to core 0; every client runs on core 1.
#
# Two modes, each measured in ROUNDS alternating rounds (the order of the clients
# rotates every round), the database flushed before every measurement:
#   plain:     redis-benchmark -c 50 -t set,get -n N -q
#              redis_task --bench N --clients 50
#              redis_rs_bench --bench N --clients 50
#   pipelined: redis-benchmark -c 50 -P 16 -t set,get -n N -q
#              redis_task --bench N --clients 50 --pipeline 16
#              redis_rs_bench --bench N --clients 50 --pipeline 16
# N is the number of SETs and of GETs (2N ops). redis-benchmark runs its SET test
# then its GET test and reports each rate; its combined rate is 2 / (1/set + 1/get)
# ops/s, the rate of doing both. The two Rust clients do N SET/GET pairs with
# unique values, each of the 50 series (tasks) overwriting a key of its own, as
# redis-benchmark overwrites one key, and check every GET (P=16: 8 SET+GET pairs
# per pipeline); OURS_ARGS/RS_ARGS="--keys unique" make every SET a new key.
#
# usage: scripts/bench_redis.sh [SECONDS-or-N] [ROUNDS]
#   3s (default): N is picked per mode so that redis-benchmark takes about 3 s
#   (from a short probe run); a plain number is N itself, for both modes.
#   ROUNDS defaults to 5.
# env: CLIENTS=50 PIPE=16 OURS_ARGS="--conns 8" (extra redis_task args)
#      RS_ARGS="..." (extra redis_rs_bench args) TOOLS="rb ours rs" MODES="plain pipe"
#      TOOLS may add ours2: redis_task again, as OURS2_BIN (default: the same
#      binary) with OURS2_ARGS, named taskweave-2 (to compare settings or builds)
#      TOOLS may add rbr: redis-benchmark with -r 1000000000 (random keys: nearly
#      every SET makes a new key, as the Rust clients' --keys unique does, while
#      plain redis-benchmark SETs and GETs one key; most of its GETs miss)
#      PORT=... (else a free one) REDIS_SERVER=redis-server
#      PRIO="chrt -f 5": runs the server and the clients under this prefix; on a
#      shared machine other work then only gets the time they leave idle (and
#      other_cpu_pct shows how much of it there was, not a disturbance)
#      OURS_BIN=path RS_BIN=path: use these builds (of another checkout, say) instead
#      of building this one's
# Prints CSV rows:
#   mode,client,round,n,ops_per_s,secs,p50_ms,p99_ms,client_cpu_s,client_us_per_op,
#   server_cpu_s,server_us_per_op,other_cpu_pct,steal_pct
# (ops_per_s, p50 and p99 as each client reports them; redis-benchmark -q gives no
# p99, and its p50 is the median of its SET and GET p50s. CPU: the client's user+sys
# from bash's `time`, the server's utime+stime from /proc/PID/stat, both per op.
# other_cpu_pct: busy time of cores 0 and 1 that was neither's, in % of one core:
# high means the machine was shared and the figures are disturbed. steal_pct: time
# the hypervisor took from cores 0 and 1, in % of one core: the VM's cores ran
# slower, CPU per op is inflated, nothing inside the VM can prevent it.)
# then per mode the medians per client and the ratios ours/redis-rs and
# ours/redis-benchmark (of the medians, and the median of the same-round ratios).
# Rows whose other_cpu_pct + steal_pct exceed MAX_OTHER (50 by default; under PRIO
# steal_pct alone) are left out of both, and listed. A client that leaves its core
# idle part of the time gets some steal of its own (each wake-up of an idle vCPU goes
# through the hypervisor): redis-rs shows 10-25% in quiet rounds, hence the margin.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

arg=${1:-3s}
rounds=${2:-5}
clients=${CLIENTS:-50}
pipe=${PIPE:-16}
tools=${TOOLS:-rb ours rs}
modes=${MODES:-plain pipe}
redis_server=${REDIS_SERVER:-redis-server}
prio=${PRIO:-}
# Rows in which other work and steal took more than this % of a core are left
# out of the medians (under PRIO, other work only fills idle time: only steal counts).
max_other=${MAX_OTHER:-50}
tck=$(getconf CLK_TCK)

for tool in cargo taskset python3 "$redis_server" redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "bench_redis: $tool not found" >&2; exit 1; }
done
if [ "$(nproc --all)" -lt 2 ]; then
  echo "bench_redis: needs 2 cores (server on core 0, clients on core 1)" >&2
  exit 1
fi

if [[ -n "${OURS_BIN:-}" ]]; then
  ours=$OURS_BIN
else
  cargo build --release -q --example redis_task
  ours=${CARGO_TARGET_DIR:-target}/release/examples/redis_task
fi
if [[ -n "${RS_BIN:-}" ]]; then
  rs=$RS_BIN
else
  (cd bench/redis_rs && cargo build --release -q)
  rs=${CARGO_TARGET_DIR:-bench/redis_rs/target}/release/redis_rs_bench
  [[ "$rs" = /* ]] || [[ -z "${CARGO_TARGET_DIR:-}" ]] || rs=bench/redis_rs/$rs
fi

port=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
tmp=$(mktemp -d /tmp/tw-bench-redis-XXXX)
spid=""
cleanup() {
  if [[ -n "$spid" ]]; then
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck disable=SC2086
taskset -c 0 $prio "$redis_server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --logfile "$tmp/redis.log" --dir "$tmp" &
spid=$!
for ((i = 0; i < 500; i++)); do
  redis-cli -p "$port" PING >/dev/null 2>&1 && break
  kill -0 "$spid" 2>/dev/null || { echo "bench_redis: redis-server exited:" >&2; cat "$tmp/redis.log" >&2; exit 1; }
  sleep 0.01
done
redis-cli -p "$port" PING >/dev/null || { echo "bench_redis: redis-server did not answer on $port" >&2; exit 1; }

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Busy ticks of cores 0 and 1 (user nice system irq softirq), and their steal
# ticks (time the hypervisor gave the VM's cores to others).
cores_busy() { awk '$1 == "cpu0" || $1 == "cpu1" {b += $2+$3+$4+$7+$8; s += $9} END {print b "," s}' /proc/stat; }

# Runs one client, its output into $tmp/out.
run_client() { # tool mode n
  local tool=$1 mode=$2 n=$3 p=1
  [[ $mode == pipe ]] && p=$pipe
  case $tool in
    rb | rbr)
      local args=(-p "$port" -c "$clients" -t set,get -n "$n" -q)
      ((p > 1)) && args+=(-P "$p")
      [[ $tool == rbr ]] && args+=(-r 1000000000)
      # shellcheck disable=SC2086
      taskset -c 1 $prio redis-benchmark "${args[@]}" >"$tmp/out"
      ;;
    ours)
      # shellcheck disable=SC2086
      taskset -c 1 $prio "$ours" "redis://127.0.0.1:$port" --bench "$n" --clients "$clients" \
        --pipeline "$p" ${OURS_ARGS:-} >"$tmp/out"
      ;;
    ours2)
      # shellcheck disable=SC2086
      taskset -c 1 $prio "${OURS2_BIN:-$ours}" "redis://127.0.0.1:$port" --bench "$n" \
        --clients "$clients" --pipeline "$p" ${OURS2_ARGS:-} >"$tmp/out"
      ;;
    rs)
      # shellcheck disable=SC2086
      taskset -c 1 $prio "$rs" --url "redis://127.0.0.1:$port" --bench "$n" --clients "$clients" \
        --pipeline "$p" ${RS_ARGS:-} >"$tmp/out"
      ;;
  esac
}

# "ops_per_s p50_ms p99_ms" from $tmp/out.
parse_out() { # tool
  if [[ $1 == rb* ]]; then
    python3 - "$(tr '\r' '\n' <"$tmp/out" | grep 'requests per second')" <<'PY'
import re, sys
rates = [float(x) for x in re.findall(r"([0-9.]+) requests per second", sys.argv[1])]
p50 = [float(x) for x in re.findall(r"p50=([0-9.]+) msec", sys.argv[1])]
if len(rates) != 2:
    sys.exit(f"bench_redis: redis-benchmark printed {sys.argv[1]!r}")
print(f"{2 / (1 / rates[0] + 1 / rates[1]):.0f} {sum(p50) / len(p50) if p50 else 0:.3f} nan")
PY
  else
    cat "$tmp/out" >>"$tmp/lines.txt"
    sed -n 's/.* \([0-9]*\) ops\/s;.*p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms.*mismatches 0, errors 0.*/\1 \2 \3/p' \
      "$tmp/out" | grep . || { echo "bench_redis: $1: $(cat "$tmp/out")" >&2; return 1; }
  fi
}

measure() { # tool mode round n
  local tool=$1 mode=$2 round=$3 n=$4 s0 s1 c0 c1 t0 t1 res cpu
  redis-cli -p "$port" FLUSHALL >/dev/null
  s0=$(ticks "$spid") c0=$(cores_busy) t0=$EPOCHREALTIME
  local TIMEFORMAT='%U %S'
  cpu=$( { time run_client "$tool" "$mode" "$n" 2>"$tmp/err"; } 2>&1) || {
    echo "bench_redis: $tool ($mode) failed:" >&2
    cat "$tmp/out" "$tmp/err" >&2
    return 1
  }
  t1=$EPOCHREALTIME s1=$(ticks "$spid") c1=$(cores_busy)
  [[ -s "$tmp/err" ]] && cat "$tmp/err" >&2
  res=$(parse_out "$tool") || return 1
  python3 - "$mode" "$tool" "$round" "$n" "$res" "$cpu" "$s0" "$s1" "$c0" "$c1" "$t0" "$t1" "$tck" <<'PY' | tee -a "$tmp/rows.csv"
import sys
mode, tool, rnd, n, res, cpu, s0, s1, c0, c1, t0, t1, tck = sys.argv[1:]
rate, p50, p99 = res.split()
user, sys_ = map(float, cpu.split())
n, tck = int(n), int(tck)
ops = 2 * n
client = user + sys_
server = (int(s1) - int(s0)) / tck
wall = float(t1) - float(t0)
(b0, st0), (b1, st1) = map(int, c0.split(",")), map(int, c1.split(","))
other = max(0.0, (b1 - b0) / tck - client - server)
steal = (st1 - st0) / tck
name = {"rb": "redis-benchmark", "rbr": "redis-benchmark-r", "ours": "taskweave",
        "ours2": "taskweave-2", "rs": "redis-rs"}[tool]
print(f"{mode},{name},{rnd},{n},{rate},{ops / float(rate):.3f},{p50},{p99},{client:.2f},"
      f"{client * 1e6 / ops:.2f},{server:.2f},{server * 1e6 / ops:.2f},{100 * other / wall:.0f},"
      f"{100 * steal / wall:.0f}")
PY
}

# N for a mode: given, or from a probe so that redis-benchmark takes about S seconds.
pick_n() { # mode
  if [[ $arg != *s ]]; then echo "$arg"; return; fi
  local secs=${arg%s} probe=20000 rate
  [[ $1 == pipe ]] && probe=200000
  redis-cli -p "$port" FLUSHALL >/dev/null
  run_client rb "$1" "$probe"
  rate=$(parse_out rb | cut -d' ' -f1)
  python3 -c "print(max(1000, round($rate * $secs / 2 / 1000) * 1000))"
}

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc --all) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# redis-server $($redis_server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$port (core 0), clients on core 1, $clients clients, pipeline $pipe, $rounds rounds${prio:+, under $prio}"
echo "mode,client,round,n,ops_per_s,secs,p50_ms,p99_ms,client_cpu_s,client_us_per_op,server_cpu_s,server_us_per_op,other_cpu_pct,steal_pct"
: >"$tmp/rows.csv"
for mode in $modes; do
  n=$(pick_n "$mode")
  order=($tools)
  for r in $(seq "$rounds"); do
    for t in "${order[@]}"; do
      measure "$t" "$mode" "$r" "$n" || true
    done
    # The next round starts with the next client.
    order=("${order[@]:1}" "${order[0]}")
  done
done

python3 - "$tmp/rows.csv" "$max_other" "$prio" <<'PY'
import collections, statistics as st, sys
rows = [l.strip().split(",") for l in open(sys.argv[1]) if l.strip()]
max_other, prio = float(sys.argv[2]), sys.argv[3]
lost = lambda r: float(r[13]) + (0 if prio else float(r[12]))
out = [r for r in rows if lost(r) > max_other]
if out:
    what = "steal" if prio else "other work and steal"
    print(f"# left out of the medians: {len(out)} of {len(rows)} rows in which {what} took "
          f"more than {max_other:.0f}% of a core (" + ", ".join(f"{r[0]} {r[1]} round {r[2]}" for r in out) + ")")
rows = [r for r in rows if lost(r) <= max_other]
if not rows:
    print("# no rows left: the machine was too busy; run again later, or raise MAX_OTHER")
by = collections.defaultdict(list)
for r in rows:
    by[(r[0], r[1])].append(r)
def med(rs, i):
    v = [float(r[i]) for r in rs if r[i] != "nan"]
    return st.median(v) if v else float("nan")
for mode in dict.fromkeys(r[0] for r in rows):
    print(f"# {mode}: medians over rounds")
    print("summary,mode,client,rounds,ops_per_s,p50_ms,p99_ms,client_us_per_op,server_us_per_op,other_cpu_pct,steal_pct")
    for name in ("taskweave", "taskweave-2", "redis-rs", "redis-benchmark", "redis-benchmark-r"):
        rs = by.get((mode, name))
        if rs:
            print(f"summary,{mode},{name},{len(rs)},{med(rs, 4):.0f},{med(rs, 6):.3f},{med(rs, 7):.3f},"
                  f"{med(rs, 9):.2f},{med(rs, 11):.2f},{med(rs, 12):.0f},{med(rs, 13):.0f}")
    pairs = [("taskweave", o) for o in ("redis-rs", "redis-benchmark", "redis-benchmark-r")]
    pairs += [("taskweave-2", o) for o in ("taskweave", "redis-rs", "redis-benchmark")]
    for one, other in pairs:
        ours, theirs = by.get((mode, one), []), by.get((mode, other), [])
        if not ours or not theirs:
            continue
        a = {r[2]: float(r[4]) for r in ours}
        b = {r[2]: float(r[4]) for r in theirs}
        same = [a[k] / b[k] for k in a if k in b]
        if not same:
            print(f"ratio,{mode},{one}/{other},{med(ours, 4) / med(theirs, 4):.2f} (of medians)")
            continue
        print(f"ratio,{mode},{one}/{other},{med(ours, 4) / med(theirs, 4):.2f} (of medians),"
              f"{st.median(same):.2f} (median of {len(same)} same-round ratios, "
              f"{min(same):.2f}-{max(same):.2f})")
PY
