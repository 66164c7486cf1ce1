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
  NGINX_RPS=$ng_rps  # for open_loop_compare: the offered rate is a fraction of what nginx can do
  awk -v a="$cl_rps" -v b="$ng_rps" 'BEGIN {printf "ratio cloudletd/nginx (req/s): %.2f\n", a/b}'
  awk -v a="$cl_p99" -v b="$ng_p99" 'BEGIN {printf "p99 cloudletd/nginx: %.2f (<= 1.00 means no worse)\n", a/b}'
}

# One open-loop run (h2load at a fixed request rate, whatever the server's answers take): every request's
# latency goes to a log, and the percentiles come from it. Prints "p50_ms p99_ms p999_ms". Closed-loop wrk
# measures at saturation, where the tail is mostly queueing noise on 2 cores; a fixed rate compares servers fairly.
h2load_once() {
  local url=$1 rate=$2 clients=${OPEN_CLIENTS:-10} seconds=${OPEN_SECONDS:-10}
  local per_client
  per_client=$(awk -v r="$rate" -v c="$clients" 'BEGIN {v=int(r/c); print (v<1)?1:v}')
  rm -f "$work/h2load.log"
  $pin_client h2load --h1 -c "$clients" --rps="$per_client" -D "$seconds" --log-file="$work/h2load.log" "$url" \
    > "$work/h2load.out" 2>&1 || { cat "$work/h2load.out" >&2; return 1; }
  # Columns: start (us since the epoch), status, duration (us). Any non-2xx answer fails the bench.
  awk -F'\t' '$2 < 200 || $2 > 299 {bad++} END {exit bad > 0}' "$work/h2load.log" ||
    { echo "non-2xx replies from $url" >&2; return 1; }
  cut -f3 "$work/h2load.log" | sort -n | awk '{a[NR]=$1} END {
    if (NR == 0) {print "0 0 0"; exit 1}
    i50=int(NR*0.5); i99=int(NR*0.99); i999=int(NR*0.999); if (i50<1) i50=1; if (i99<1) i99=1; if (i999<1) i999=1
    printf "%.3f %.3f %.3f\n", a[i50]/1000, a[i99]/1000, a[i999]/1000}'
}

# open_loop_compare URL_CLOUDLETD URL_NGINX RATE: ROUNDS alternating h2load runs at RATE requests/s on each;
# prints every round, the medians of p50/p99/p99.9, and the p99 ratio cloudletd/nginx.
open_loop_compare() {
  local rounds=${ROUNDS:-5} rate=$3 r a b
  : > "$work/ol_cl.txt"; : > "$work/ol_ng.txt"
  echo "open loop: $rate req/s (50% of nginx's median maximum), h2load --h1 -c ${OPEN_CLIENTS:-10} -D ${OPEN_SECONDS:-10}"
  for r in $(seq 1 "$rounds"); do
    a=$(h2load_once "$1" "$rate"); b=$(h2load_once "$2" "$rate")
    echo "$a" >> "$work/ol_cl.txt"; echo "$b" >> "$work/ol_ng.txt"
    printf '  round %d: cloudletd p50/p99/p99.9 %s %s %s ms | nginx %s %s %s ms\n' "$r" $a $b
  done
  local col name c n
  for col in 1 2 3; do
    name=$(echo "p50 p99 p99.9" | cut -d' ' -f$col)
    c=$(awk -v k=$col '{print $k}' "$work/ol_cl.txt" | median); n=$(awk -v k=$col '{print $k}' "$work/ol_ng.txt" | median)
    printf 'median %-5s cloudletd %.3f ms | nginx %.3f ms | ratio %.2f\n' "$name" "$c" "$n" \
      "$(awk -v a="$c" -v b="$n" 'BEGIN {print (b > 0) ? a/b : 0}')"
  done
}
