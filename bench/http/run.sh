#!/bin/bash
# bench/http: cloudletd's manager listener vs single-worker nginx serving the same small file, in one run.
# Both servers are pinned to CPU 1 and wrk to CPU 0 (on 2-core machines); rounds alternate between them and the
# medians are compared. Prints req/s, p99 latency and the ratio cloudletd/nginx.
#   usage: bench/http/run.sh [BUILD_DIR]   env: ROUNDS (5), DURATION (10s), CONNECTIONS (50), THREADS (1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
conns=${CONNECTIONS:-50}
threads=${THREADS:-1}
file=index.html

work=$(mktemp -d /tmp/bench-http.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/webroot" "$work/nginx" "$work/data"
chmod 755 "$work" "$work/webroot"  # nginx workers run as nobody
cp "$root/webroot/$file" "$work/webroot/$file"
size=$(stat -c %s "$work/webroot/$file")

port_of() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cl_port=$(port_of)
ng_port=$(port_of)
api_port=$(port_of)

pin_server="taskset -c 1"
pin_client="taskset -c 0"
[ "$(nproc)" -ge 2 ] || { pin_server=""; pin_client=""; }

cat > "$work/cloudletd.json" <<JSON
{
  "data_dir": "$work/data",
  "log": { "level": "warn" },
  "listeners": {
    "api": { "host": "127.0.0.1", "port": $api_port },
    "manager": { "host": "127.0.0.1", "port": $cl_port, "webroot": "$work/webroot" }
  },
  "discovery": { "enabled": false },
  "plugins": []
}
JSON
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  include /etc/nginx/mime.types;
  server { listen 127.0.0.1:$ng_port; root $work/webroot; }
}
NGINX

$pin_server "$build/cloudletd" --config "$work/cloudletd.json" > "$work/cloudletd.log" 2>&1 &
pids+=($!)
$pin_server nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" > "$work/nginx.log" 2>&1 &
pids+=($!)
for port in $cl_port $ng_port; do
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/$file" && break
    sleep 0.05
  done
done
# Both must serve the very same bytes.
cmp <(curl -sf "http://127.0.0.1:$cl_port/$file") <(curl -sf "http://127.0.0.1:$ng_port/$file")

# wrk prints "99%   1.23ms"; normalise to milliseconds.
run_wrk() {
  $pin_client wrk -t"$threads" -c"$conns" -d"$duration" --latency "http://127.0.0.1:$1/$file" > "$work/wrk.out"
  local rps p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$work/wrk.out")
  echo "$rps $p99"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "bench/http: $file ($size bytes), wrk -t$threads -c$conns -d$duration, $rounds alternating rounds"
: > "$work/cl.txt"; : > "$work/ng.txt"
run_wrk "$cl_port" > /dev/null  # warm-up (caches, TCP)
run_wrk "$ng_port" > /dev/null
for r in $(seq 1 "$rounds"); do
  a=$(run_wrk "$cl_port"); b=$(run_wrk "$ng_port")
  echo "$a" >> "$work/cl.txt"; echo "$b" >> "$work/ng.txt"
  printf '  round %d: cloudletd %s req/s p99 %s ms | nginx %s req/s p99 %s ms\n' "$r" $a $b
done
cl_rps=$(awk '{print $1}' "$work/cl.txt" | median); cl_p99=$(awk '{print $2}' "$work/cl.txt" | median)
ng_rps=$(awk '{print $1}' "$work/ng.txt" | median); ng_p99=$(awk '{print $2}' "$work/ng.txt" | median)
ratio=$(awk -v a="$cl_rps" -v b="$ng_rps" 'BEGIN {printf "%.2f", a/b}')
printf 'median  cloudletd: %.0f req/s, p99 %.2f ms\n' "$cl_rps" "$cl_p99"
printf 'median  nginx:     %.0f req/s, p99 %.2f ms\n' "$ng_rps" "$ng_p99"
echo "ratio cloudletd/nginx (req/s): $ratio"
awk -v a="$cl_p99" -v b="$ng_p99" 'BEGIN {printf "p99 cloudletd/nginx: %.2f (<= 1.00 means no worse)\n", a/b}'
