#!/usr/bin/env bash
# Like scripts/cpu_per_req.sh, but splits the server's CPU per request into
# user and kernel time (fields 14 and 15 of /proc/PID/stat): the floor and
# taskweave pay the same kernel cost, so the user-space part is what a change to
# our code moves.
#
# usage: scripts/cpu_split.sh LABEL PID PORT [CONNS=50] [SECONDS=4] [PATH=/]
# prints: label,conns,requests,user_us_per_req,sys_us_per_req,total_us_per_req
set -euo pipefail
label=$1 pid=$2 port=$3 conns=${4:-50} secs=${5:-4} path=${6:-/}
tck=$(getconf CLK_TCK)
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$port$path" 2>&1)
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
n=$(awk '/requests in/{print $1}' <<<"$out")
python3 - "$label" "$conns" "$n" "$((u1 - u0))" "$((s1 - s0))" "$tck" <<'PY'
import sys
label, conns, n, du, ds, tck = sys.argv[1:]
n, u, s = int(n), int(du) / int(tck), int(ds) / int(tck)
print(f"{label},{conns},{n},{u * 1e6 / n:.3f},{s * 1e6 / n:.3f},{(u + s) * 1e6 / n:.3f}")
PY
