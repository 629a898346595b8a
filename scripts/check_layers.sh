#!/usr/bin/env bash
# Layering check: module dependencies in src/ point down only
# (sys -> poller -> comm -> task -> http / redis; protocol and metrics are plain
# traits and data; see scripts/check_layers.py for the whole policy).
#
# usage: scripts/check_layers.sh               check this repository's src/
#        scripts/check_layers.sh --self-test   run the checker's own tests
#        scripts/check_layers.sh --root DIR    check DIR/src/
# prints one line per violation, src/file.rs:LINE: <module> uses <other> (not
# allowed: ...), and exits 1; or one OK line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "check_layers: python3 is required" >&2; exit 2; }
exec python3 scripts/check_layers.py "$@"
