#!/bin/bash
# bench/json: core/json's parse (iterative, with the depth limit) versus RapidJSON's recursive Document::Parse,
# same documents, rounds alternating; prints medians and the ratio (acceptance: <= 1.3; exit status 1 above).
#   usage: bench/json/run.sh [BUILD_DIR] [ACCEPTANCE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
make -C "$build" -j2 json_bench >/dev/null
exec "$build/bench/json_bench" "${2:-1.3}"
