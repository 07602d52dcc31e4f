#!/usr/bin/env bash
# Live check of every PromQL expression in the dashboard, the alert rules and the
# prometheus-adapter rules: starts streamkv-server (CPU, built-in tiny model) and a real
# Prometheus scraping it every second with the alert rules loaded, streams a few sessions through
# the server (every policy, one left open so per-layer gauges stay non-zero, one refused open),
# then runs check-promql.js, which retries until every expression has returned data or 30 s pass.
#   check-promql.sh REPO BUILD_DIR NODE_DIR
set -euo pipefail
repo=$(cd "${1:?usage: check-promql.sh REPO BUILD_DIR NODE_DIR}" && pwd)
build=$(cd "${2:?}" && pwd)
node_dir=$(cd "${3:?}" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export NODE_PATH="$node_dir/node_modules"

# The labels the ServiceMonitor's scrape gives a pod's series on Kubernetes.
job=streamkv
namespace=streamkv
pod=streamkv-ci-0
model=stream3r-tiny

for tool in prometheus node curl; do
  command -v "$tool" >/dev/null || { echo "check-promql: $tool is missing (bash deploy/install-deps.sh)" >&2; exit 1; }
done
server="$build/server/streamkv-server"
client="$build/client/streamkv-client"
for binary in "$server" "$client"; do
  [ -x "$binary" ] || { echo "check-promql: $binary is missing; build it first" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "check-promql: $*" >&2
  for log in "$work"/*.log; do
    [ -f "$log" ] && { echo "--- $(basename "$log")" >&2; tail -20 "$log" >&2; }
  done
  exit 1
}
# poll TENTHS COMMAND...: runs COMMAND every 0.1 s until it succeeds (0) or TENTHS tries pass (1).
poll() {
  local tries=$1
  shift
  for _ in $(seq "$tries"); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# Server on free ports; a detached session stays for the whole check (--resume_grace).
"$server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --port_file="$work/ports" \
    --workers=2 --kv_budget=1GiB --session_budget=128MiB --resume_grace=10m \
    2>"$work/server.log" &
pids+=($!)
poll 300 test -f "$work/ports" || fail "the server did not start"
grpc_port=$(sed -n 's/^grpc_port=//p' "$work/ports")
metrics_port=$(sed -n 's/^metrics_port=//p' "$work/ports")

# Prometheus on a free port, scraping the server every second, with the alert rules.
prometheus_port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
  console.log(s.address().port); s.close(); })')
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $repo/deploy/prometheus/streamkv-alerts.yaml
scrape_configs:
  - job_name: $job
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
        labels:
          namespace: $namespace
          pod: $pod
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
prometheus_url="http://127.0.0.1:$prometheus_port"
# Rates need a sample from before the traffic: wait for the first scrape.
scraped() {
  curl -sf "$prometheus_url/api/v1/query" --data-urlencode "query=up{job=\"$job\"} == 1" |
    grep -q '"value"'
}
poll 300 scraped || fail "Prometheus did not scrape the server"

# Traffic: every policy, with evictions; one session left open; one refused open.
run_client() {
  "$client" --server="127.0.0.1:$grpc_port" --out= --quiet "$@" >>"$work/client.log" 2>&1
}
run_client --policy=sliding_window --policy_params=unit=frames,start_size=1,recent_size=2 --frames=8 ||
  fail "client (sliding_window) failed"
run_client --policy=h2o --policy_params=heavy_size=32,recent_size=32 --frames=6 || fail "client (h2o) failed"
run_client --policy=global_ratio --frames=6 || fail "client (global_ratio) failed"
run_client --policy=none --frames=4 || fail "client (none) failed"
run_client --policy=layerwise --policy_params=budget_frames=2 --frames=6 --keep_session ||
  fail "client (layerwise, kept open) failed"
if run_client --policy=nope --frames=1; then fail "an open with an unknown policy was admitted"; fi

node "$here/check-promql.js" "$repo" "$prometheus_url" "$namespace" "$pod" "$model" 30 ||
  fail "PromQL check failed"
