# Shared by the bench scripts (source it): free ports, medians, and the wrk comparison of two servers.
# Expects $work (a scratch directory) to be set by the caller.

# A free TCP port on loopback.
port_of() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# CPU pinning on machines with 2+ cores: servers on CPU 1, the load generator on CPU 0.
if [ "$(nproc)" -ge 2 ]; then pin_server="taskset -c 1"; pin_client="taskset -c 0"; else pin_server=""; pin_client=""; fi

# One wrk run against URL; prints "req_per_s p99_ms". Fails on any non-2xx reply.
wrk_once() {
  $pin_client wrk -t"${THREADS:-1}" -c"${CONNECTIONS:-50}" -d"${DURATION:-10s}" --latency "$1" > "$work/wrk.out"
  if grep -q 'Non-2xx' "$work/wrk.out"; then echo "non-2xx replies from $1" >&2; cat "$work/wrk.out" >&2; return 1; fi
  local rps p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
  # wrk prints "99%   1.23ms"; normalise to milliseconds.
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$work/wrk.out")
  echo "$rps $p99"
}

# wrk_compare URL_CLOUDLETD URL_NGINX: a warm-up each, then ROUNDS alternating rounds; prints every round, the
# medians and the ratios cloudletd/nginx.
wrk_compare() {
  local rounds=${ROUNDS:-5} r a b
  : > "$work/cl.txt"; : > "$work/ng.txt"
  wrk_once "$1" > /dev/null  # warm-up (caches, TCP)
  wrk_once "$2" > /dev/null
  for r in $(seq 1 "$rounds"); do
    a=$(wrk_once "$1"); b=$(wrk_once "$2")
    echo "$a" >> "$work/cl.txt"; echo "$b" >> "$work/ng.txt"
    printf '  round %d: cloudletd %s req/s p99 %s ms | nginx %s req/s p99 %s ms\n' "$r" $a $b
  done
  local cl_rps cl_p99 ng_rps ng_p99
  cl_rps=$(awk '{print $1}' "$work/cl.txt" | median); cl_p99=$(awk '{print $2}' "$work/cl.txt" | median)
  ng_rps=$(awk '{print $1}' "$work/ng.txt" | median); ng_p99=$(awk '{print $2}' "$work/ng.txt" | median)
  printf 'median  cloudletd: %.0f req/s, p99 %.2f ms\n' "$cl_rps" "$cl_p99"
  printf 'median  nginx:     %.0f req/s, p99 %.2f ms\n' "$ng_rps" "$ng_p99"
  awk -v a="$cl_rps" -v b="$ng_rps" 'BEGIN {printf "ratio cloudletd/nginx (req/s): %.2f\n", a/b}'
  awk -v a="$cl_p99" -v b="$ng_p99" 'BEGIN {printf "p99 cloudletd/nginx: %.2f (<= 1.00 means no worse)\n", a/b}'
}
