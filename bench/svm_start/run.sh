#!/bin/bash
# bench/svm_start: a Service VM start from saved memory state, cloudletd vs raw `virsh restore`, in one run.
# cloudletd (--demo, its own data directory) makes demo.httpd's saved state once; then the same state file is
# restored RUNS times by `virsh -c qemu:///embed?root=<separate root> restore` (own overlay and port, prepared
# before the clock starts) and RUNS times by cloudletd instance starts, alternating, each timed until the guest's
# first HTTP reply. Prints medians and the ratio cloudletd/virsh (acceptance <= 1.05), then the p99 latency of
# GET /healthz on the api listener while two starts are in flight (acceptance <= 5 ms).
# Last, SOAK (200) start/stop cycles and cloudletd's RSS after the first and the last (acceptance: within 2 MiB).
#   usage: bench/svm_start/run.sh [BUILD_DIR]   env: RUNS (11), P99_ROUNDS (8), SOAK (200; 0 skips it)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
runs=${RUNS:-11}
p99_rounds=${P99_ROUNDS:-8}
[ "$runs" -ge 5 ] || { echo "RUNS must be at least 5" >&2; exit 2; }
for tool in virsh qemu-img qemu-system-x86_64 python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench/svm_start: missing $tool" >&2; exit 1; }
done
[ -s "$build/demo-guest/vmlinuz" ] || cmake --build "$build" --target demo-guest

work=$(mktemp -d /tmp/bench-svm.XXXXXX)
pid=""
auth=""
cleanup() {
  if [ -n "$pid" ]; then
    # Instances still running (an interrupted run) go first, then the server.
    for id in $(curl -sf -H "$auth" "http://127.0.0.1:$mgr_port/manager/api/instances" |
                python3 -c 'import json,sys; [print(i["id"]) for i in json.load(sys.stdin)["instances"]]' 2>/dev/null); do
      curl -sf -H "$auth" -X DELETE "http://127.0.0.1:$mgr_port/manager/api/instances/$id" >/dev/null || true
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  virsh -q -c "qemu:///embed?root=$work/virsh-root" list --name 2>/dev/null | while read -r d; do
    [ -n "$d" ] && virsh -q -c "qemu:///embed?root=$work/virsh-root" destroy "$d" >/dev/null 2>&1 || true
  done
  # Any QEMU still using files of this run is ours.
  for p in $(pgrep -f "qemu-system-x86_64.*$work" || true); do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port_of() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(port_of)
mgr_port=$(port_of)
# The instances' forwarded ports: a free block outside the kernel's ephemeral range (tests/integration/harness.py).
read -r vport_min vport_max < <(python3 -c "import sys; sys.path.insert(0, '$root/tests/integration'); import harness
print(*harness.port_block(200))")
mkdir -p "$work/data"
cat > "$work/cloudletd.json" <<JSON
{
  "data_dir": "$work/data",
  "log": { "level": "info" },
  "listeners": {
    "api": { "host": "127.0.0.1", "port": $api_port },
    "manager": { "host": "127.0.0.1", "port": $mgr_port }
  },
  "discovery": { "enabled": false },
  "virt": { "domain_type": "qemu", "forward_address": "127.0.0.1", "port_min": $vport_min, "port_max": $vport_max,
            "ready_timeout_ms": 60000, "demo_dir": "$build/demo-guest" },
  "plugin_dir": "$build/plugins",
  "plugins": [ { "name": "manager", "prefixes": ["/manager/"], "guards": ["manager"], "grants": ["instance.stop.force"] } ]
}
JSON
# The manager refuses anonymous callers: an API token for this run (made before the server holds the store).
token=$("$build/cloudletd" --config "$work/cloudletd.json" --new-token bench) || exit 1
export CLOUDLET_TOKEN="$token"
auth="Authorization: Bearer $token"
"$build/cloudletd" --config "$work/cloudletd.json" --demo > "$work/cloudletd.log" 2>&1 &
pid=$!
echo "bench/svm_start: cloudletd making demo.httpd's saved state (a cold boot under TCG and a save)"
for _ in $(seq 1 600); do
  if curl -sf -H "$auth" "http://127.0.0.1:$mgr_port/manager/api/services/demo.httpd" >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$work/cloudletd.log"; exit 1; }
  sleep 0.5
done
curl -sf -H "$auth" "http://127.0.0.1:$mgr_port/manager/api/services/demo.httpd" >/dev/null ||
  { echo "demo.httpd never became ready" >&2; tail -30 "$work/cloudletd.log"; exit 1; }
state="$work/data/services/demo.httpd/image-1/state.sav"
echo "bench/svm_start: state $(stat -c %s "$state") bytes; $runs alternating rounds, each timed until the guest's first HTTP reply"
python3 "$here/bench.py" --work "$work" --data "$work/data" --manager-port "$mgr_port" --api-port "$api_port" \
  --runs "$runs" --p99-rounds "$p99_rounds" --soak "${SOAK:-200}" --server-pid "$pid"
