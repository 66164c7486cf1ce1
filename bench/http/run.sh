#!/bin/bash
# bench/http: cloudletd's manager listener vs single-worker nginx serving the same small file, in one run.
# Both servers are pinned to CPU 1 and wrk to CPU 0 (on 2-core machines); rounds alternate between them and the
# medians are compared. Prints req/s, p99 latency and the ratio cloudletd/nginx.
#   usage: bench/http/run.sh [BUILD_DIR]   env: ROUNDS (5), DURATION (10s), CONNECTIONS (50), THREADS (1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
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

cl_port=$(port_of)
ng_port=$(port_of)
api_port=$(port_of)


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


echo "bench/http: $file ($size bytes), wrk -t${THREADS:-1} -c${CONNECTIONS:-50} -d${DURATION:-10s}, ${ROUNDS:-5} alternating rounds"
wrk_compare "http://127.0.0.1:$cl_port/$file" "http://127.0.0.1:$ng_port/$file"
open_loop_compare "http://127.0.0.1:$cl_port/$file" "http://127.0.0.1:$ng_port/$file" "$(awk -v r="$NGINX_RPS" 'BEGIN {printf "%d", r / 2}')"
