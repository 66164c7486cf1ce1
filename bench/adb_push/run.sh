#!/bin/bash
# bench/adb_push: pushing a 50 MB file to the device-side ADB test peer with cloudletd's ADB library versus the
# real `adb push`, same run, same peer, inside a network namespace that has only loopback. Rounds alternate
# between the two; prints both medians and the ratio ours/adb (acceptance: <= 1.0; exit status 1 above).
#   usage: bench/adb_push/run.sh [BUILD_DIR] [--runs N (7)] [--size-mb M (50)] [--peer-max-payload BYTES]
# Needs root (ip netns) and the adb package; builds the adb_push_bench target in BUILD_DIR (tests enabled).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  build=$1
  shift
fi
build=$(cd "$build" && pwd)
make -C "$build" -j2 adb_push_bench >/dev/null
exec "$build/bench/adb_push_bench" "$@"
