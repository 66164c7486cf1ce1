#!/bin/bash
# bench/api: GET /api/services from cloudletd's offload_api plugin vs single-worker nginx serving the very same
# bytes (same Content-Type), in one run, with bench/http's method: both servers pinned to CPU 1 and wrk to CPU 0
# (on 2-core machines), alternating rounds, medians compared. Prints req/s, p99 latency and the ratio
# cloudletd/nginx.
#   usage: bench/api/run.sh [BUILD_DIR]
#   env: ROUNDS (5), DURATION (10s), CONNECTIONS (50), THREADS (1),
#        DEMO (0; 1 = run cloudletd --demo so the list holds the real demo service; its first run makes the saved
#        memory state, which takes a while)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
demo=${DEMO:-0}
path=/api/services

work=$(mktemp -d /tmp/bench-api.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/webroot/api" "$work/nginx" "$work/data"
chmod 755 "$work" "$work/webroot" "$work/webroot/api"  # nginx workers run as nobody

cl_port=$(port_of)
ng_port=$(port_of)
mgr_port=$(port_of)


cat > "$work/cloudletd.json" <<JSON
{
  "data_dir": "$work/data",
  "log": { "level": "warn" },
  "listeners": {
    "api": { "host": "127.0.0.1", "port": $cl_port },
    "manager": { "host": "127.0.0.1", "port": $mgr_port, "webroot": "$root/webroot" }
  },
  "api": { "mode": "open" },
  "discovery": { "enabled": false },
  "plugin_dir": "$build/plugins",
  "plugins": [ { "name": "offload_api", "prefixes": ["/api/"], "grants": ["device.auth"] } ]
}
JSON
demo_flag=()
[ "$demo" = 1 ] && demo_flag=(--demo)
$pin_server "$build/cloudletd" --config "$work/cloudletd.json" "${demo_flag[@]}" > "$work/cloudletd.log" 2>&1 &
pids+=($!)

# The list cloudletd serves: wait until it answers 200 (and, with DEMO=1, lists the demo service).
ok=0
for _ in $(seq 1 $([ "$demo" = 1 ] && echo 6000 || echo 200)); do
  if curl -sf -o "$work/webroot/api/services" "http://127.0.0.1:$cl_port$path"; then
    if [ "$demo" != 1 ] || grep -q '"demo.httpd"' "$work/webroot/api/services"; then ok=1; break; fi
  fi
  sleep 0.1
done
if [ "$ok" != 1 ]; then
  echo "bench/api: cloudletd does not serve $path:" >&2
  curl -s "http://127.0.0.1:$cl_port$path" >&2 || true
  tail -20 "$work/cloudletd.log" >&2
  exit 1
fi
chmod 644 "$work/webroot/api/services"
ctype=$(curl -sf -D - -o /dev/null "http://127.0.0.1:$cl_port$path" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-type" {print $2}')

cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$ng_port;
    root $work/webroot;
    location = $path { types { } default_type "$ctype"; }
  }
}
NGINX
$pin_server nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" > "$work/nginx.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$ng_port$path" && break
  sleep 0.05
done
# Both must serve the very same bytes with the same Content-Type.
cmp <(curl -sf "http://127.0.0.1:$cl_port$path") <(curl -sf "http://127.0.0.1:$ng_port$path")
ng_ctype=$(curl -sf -D - -o /dev/null "http://127.0.0.1:$ng_port$path" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-type" {print $2}')
[ "$ctype" = "$ng_ctype" ] || { echo "Content-Type differs: '$ctype' vs '$ng_ctype'" >&2; exit 1; }
size=$(stat -c %s "$work/webroot/api/services")


echo "bench/api: GET $path ($size bytes, $ctype), wrk -t${THREADS:-1} -c${CONNECTIONS:-50} -d${DURATION:-10s}, ${ROUNDS:-5} alternating rounds"
wrk_compare "http://127.0.0.1:$cl_port$path" "http://127.0.0.1:$ng_port$path"
open_loop_compare "http://127.0.0.1:$cl_port$path" "http://127.0.0.1:$ng_port$path" "$(awk -v r="$NGINX_RPS" 'BEGIN {printf "%d", r / 2}')"
