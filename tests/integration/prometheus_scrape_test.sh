#!/usr/bin/env bash
# A real Prometheus scrapes a running streamkv-server: promtool accepts the exposition, and a
# PromQL query returns the per-layer cached tokens of the session a client left open.
#   prometheus_scrape_test.sh <build dir>
build=$1
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
start_server "$build"

# Leave a session open: 1 sink frame + 2 recent frames of 37 tokens in each of 4 layers.
"$build/client/streamkv-client" --server="127.0.0.1:$grpc_port" --frames=6 --size=56x112 \
  --synthetic_format=raw --policy=sliding_window \
  --policy_params=unit=frames,start_size=1,recent_size=2 --keep_session --out= --quiet \
  >"$work/client.log" 2>&1 || fail "the client failed"

curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt" || fail "no /metrics"
promtool check metrics <"$work/metrics.txt" >"$work/promtool.log" 2>&1 ||
  fail "promtool check metrics: $(cat "$work/promtool.log")"

start_prometheus

query='streamkv_cache_tokens{cache="backbone",policy="sliding_window"}'
# Per layer "layer=tokens", sorted; empty until Prometheus has scraped the session.
layers() {
  curl -sf --get "$prometheus_url/api/v1/query" --data-urlencode "query=$query" |
    jq -r '.data.result[] | "\(.metric.layer)=\(.value[1])"' | sort | paste -sd' '
}
expected="0=111 1=111 2=111 3=111"
layers_match() { [ "$(layers 2>/dev/null)" = "$expected" ]; }
await 60 layers_match ||
  fail "PromQL $query returned '$(layers 2>/dev/null)', expected '$expected'"
echo "PromQL $query: $(layers)"
