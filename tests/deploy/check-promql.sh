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
source "$here/../lib.sh"
export NODE_PATH="$node_dir/node_modules"

# The labels the ServiceMonitor's scrape gives a pod's series on Kubernetes (start_prometheus
# names the job "streamkv", as the ServiceMonitor does).
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

# Server on free ports; a detached session stays for the whole check (--resume_grace).
start_server "$build" --workers=2 --kv_budget=1GiB --session_budget=128MiB --resume_grace=10m

# Prometheus scraping the server every second with the alert rules; rates need a sample from
# before the traffic, so this waits for the first scrape.
start_prometheus "$repo/deploy/prometheus/streamkv-alerts.yaml" namespace="$namespace" pod="$pod"

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
