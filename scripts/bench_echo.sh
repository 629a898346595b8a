#!/usr/bin/env bash
# Core-runtime echo benchmark (docs/performance.md, "Core runtime: echo").
#
# Runs benches/echo_load.rs with --all: the floor (bench/floor/floor_server.c, built
# with gcc -O2) and our echo server (inline, and with 2 handler threads) at 50 and
# 1,000 connections, driven in turn in 2-second slices (10 s each per round, two
# rounds), then the idle-memory test at 10,000 connections. Servers are pinned to
# core 0, the load generator to core 1.
# Needs: cargo, gcc, taskset, getconf, 2 cores, an open-file hard limit >= ~10,300.
# Installs nothing. About 3 minutes (plus the first build).
#
# usage: scripts/bench_echo.sh [extra echo_load args, e.g. --duration 5 --rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo gcc taskset getconf; do
    command -v "$tool" >/dev/null || { echo "bench_echo: $tool not found" >&2; exit 1; }
done
if [ "$(nproc --all)" -lt 2 ]; then
    echo "bench_echo: needs 2 cores (server on core 0, load generator on core 1)" >&2
    exit 1
fi
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 10300 ]; then
    echo "bench_echo: open-file hard limit $(ulimit -Hn) is below 10,300" >&2
    exit 1
fi

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc --all) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
exec cargo bench --bench echo_load -- --all "$@"
