#!/usr/bin/env bash
# User-space instructions per request of an http_server build (inline mode, one
# poller), from callgrind: deterministic, so a change can be judged on its own.
# A warm-up run first, then the counters are zeroed, wrk runs, and the counts
# are dumped while the server still runs.
#
# usage: scripts/callgrind_http.sh [BINARY=target/release/examples/http_server] [PORT=8190] [CONNS=50]
#   SERVER_ARGS="--access-log /tmp/a.log --conn-log-only" scripts/callgrind_http.sh
#     (other server flags; the default drops every record: --access-log none)
#   WRK_ARGS="-H 'Connection: close'"   (one request per connection)
# prints: BINARY requests=N instructions=I per_request=I/N
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/examples/http_server}
port=${2:-8190}
conns=${3:-50}
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed" >&2; exit 1; }
out=$(mktemp -d /tmp/tw-callgrind-XXXX)
server_args=${SERVER_ARGS:---access-log none}
# shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$bin" --port "$port" \
  --pollers 1 --handler-threads 0 $server_args >/dev/null 2>&1 &
vpid=$!
trap 'kill -9 $vpid 2>/dev/null; rm -rf "$out"' EXIT
sleep 4
wrk_args=()
[[ -n "${WRK_ARGS:-}" ]] && eval "wrk_args=($WRK_ARGS)"
wrk -t1 -c"$conns" -d2s "${wrk_args[@]}" "http://127.0.0.1:$port/" >/dev/null 2>&1 # warm-up
callgrind_control -z "$vpid" >/dev/null
reqs=$(wrk -t1 -c"$conns" -d4s "${wrk_args[@]}" "http://127.0.0.1:$port/" 2>&1 | awk '/requests in/{print $1}')
callgrind_control -d "$vpid" >/dev/null
sleep 1
dump=$(ls -t "$out"/cg.out* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
echo "$bin ${server_args} ${WRK_ARGS:-} requests=$reqs instructions=$total per_request=$((total / reqs))"
