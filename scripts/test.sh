#!/usr/bin/env bash
# Installs what the tests need (when missing) and runs the whole test suite.
# The tests talk to real peers on 127.0.0.1: curl for HTTP, headless Chromium
# for the SSE page's EventSource (tests/sse.rs); the DNS tests run in a
# loopback-only network namespace (unshare from util-linux, ip from iproute2)
# with a resolver that never answers (tests/dns.rs also with a hosts file of
# its own, giving names two loopback addresses); the Redis tests
# (tests/redis*.rs, tests/sse_redis.rs) start their own redis-server (package
# redis-server) on free ports. The TLS tests (tests/tls.rs) make their
# certificates with the openssl CLI and run `openssl s_server` (package
# openssl).
#
# What cannot be installed (offline, no root) is reported, and every test still
# runs: those that need the missing program fail with a clear message under
# CI=true (and warn elsewhere; tests/dns.rs fails everywhere). A failing test binary does not stop the others;
# the last line sums every binary's results. The exit status is cargo's.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else sudo=""; fi
  if ! { $sudo apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"; }; then
    echo "WARNING: could not install ${need[*]}; the tests that need them will fail under CI=true" >&2
  fi
fi

# Connection-scale tests open thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Unit, integration and doc tests; examples are built. With the two optional
# features: `http` (the conversions to the http crate's types, http::interop)
# and `proptest` (the parsers' property tests: proptest is an optional
# dependency, not a dev-dependency, so that examples do not build it). Benches
# are measured by their own scripts (scripts/bench_*.sh), never run as tests.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --no-fail-fast --features http,proptest "$@" 2>&1 | tee "$log" || status=$?
# "test result: ok. 12 passed; 0 failed; ..." per binary, summed.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all test binaries: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
