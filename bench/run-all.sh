#!/bin/bash
# Every benchmark, one after the other (each compares against its own baseline measured in the same run).
#   usage: bench/run-all.sh [BUILD_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
for b in json http api adb_push svm_start; do
  if [ -x "$here/$b/run.sh" ]; then
    echo "=== bench/$b"
    "$here/$b/run.sh" "$build"
  fi
done
