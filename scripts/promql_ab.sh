#!/usr/bin/env bash
# A/B timing of one PromQL instant query: starts BINARY's server on DATA_DIR (loopback, port
# 18080), sends the query at TIME (unix seconds) 10 times untimed and 150 times timed, prints
# the median and p90, and stops the server. Run it for each binary in turn, twice or more.
#   scripts/promql_ab.sh BINARY 'QUERY' TIME [DATA_DIR]
set -euo pipefail
binary=$1 query=$2 time=$3 dir=${4:-/tmp/q10m}
"$binary" serve --data-dir "$dir" --http-addr 127.0.0.1:18080 --otlp-grpc-addr 127.0.0.1:0 \
  --otlp-http-addr 127.0.0.1:0 --zipkin-addr 127.0.0.1:0 --lookout-addr 127.0.0.1:0 \
  > /dev/null 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null; wait $pid 2> /dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -sf localhost:18080/api/v1/status/storage > /dev/null && break
  sleep 0.2
done
ask() {
  curl -s -o /dev/null -w '%{time_total}\n' -G localhost:18080/prometheus/api/v1/query \
    --data-urlencode "query=$query" --data-urlencode "time=$time"
}
for _ in $(seq 1 10); do ask > /dev/null; done
for _ in $(seq 1 150); do ask; done | sort -n |
  awk -v b="$binary" '{ a[NR] = $1 } END { printf "%s  p50 %.1f ms  p90 %.1f ms\n", b, a[int(NR / 2)] * 1000, a[int(NR * 0.9)] * 1000 }'
