#!/bin/sh
# Runs every fuzz target of a fuzz build for a while, each from a copy of its seed corpus (the tree's corpus is
# never written), and fails on the first crash, leak, sanitizer report or hang. Crash inputs are kept in
# <build>/fuzz-artifacts/ (reproduce: <build>/fuzz/fuzz_<name> <file>).
#   usage: tests/fuzz/run.sh BUILD_DIR [SECONDS_EACH] [TARGET...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
seconds=${2:-45}
shift $(( $# >= 2 ? 2 : 1 ))
targets=${*:-"json config tunnel adb http websocket"}
mkdir -p "$build/fuzz-corpus" "$build/fuzz-artifacts"
total_start=$(date +%s)
for t in $targets; do
  corpus="$build/fuzz-corpus/$t"
  mkdir -p "$corpus"
  cp -n "$here/corpus/$t"/* "$corpus/" 2>/dev/null || true
  dict=""
  case $t in config) d=json ;; *) d=$t ;; esac  # a config file is JSON
  [ -f "$here/$d.dict" ] && dict="-dict=$here/$d.dict"
  echo "fuzz: $t for ${seconds}s ($(ls "$corpus" | wc -l) inputs in its corpus)"
  start=$(date +%s)
  # -timeout: one input taking longer is a hang; -rss_limit_mb bounds what one input may make us hold.
  if ! "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t-" $dict "$corpus" \
       > "$build/fuzz-artifacts/$t.log" 2>&1; then
    tail -60 "$build/fuzz-artifacts/$t.log"
    echo "fuzz: $t FAILED (log: $build/fuzz-artifacts/$t.log)"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$build/fuzz-artifacts/$t.log" | tr '\n' ' '
  echo "($(( $(date +%s) - start ))s)"
done
echo "fuzz: all targets passed in $(( $(date +%s) - total_start ))s"
