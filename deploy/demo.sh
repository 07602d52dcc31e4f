#!/usr/bin/env bash
# The main job, end to end: starts streamkv-server on the built-in tiny model, streams a demo
# sequence through it with streamkv-client, shows a metrics sample, and stops the server with
# SIGTERM (graceful drain). Outputs go to out/demo/.
#   deploy/demo.sh [build dir] [extra streamkv-client flags...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
shift || true
out=out/demo
mkdir -p "$out"
rm -f "$out/ports"

"$build/server/streamkv-server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --port_file="$out/ports" 2>"$out/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  [ -s "$out/ports" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$out/server.log"; exit 1; }
  sleep 0.1
done
grpc_port=$(sed -n 's/^grpc_port=//p' "$out/ports")
metrics_port=$(sed -n 's/^metrics_port=//p' "$out/ports")
cat "$out/server.log"

echo "== streamkv-client: 48 synthetic JPEG frames, layerwise eviction to 8 frames of cache"
"$build/client/streamkv-client" --server="127.0.0.1:$grpc_port" --input=synthetic --frames=48 \
  --size=168x224 --policy=layerwise --policy_params=budget_frames=8 --out="$out" "$@"

echo "== a few of the server's metrics (http://127.0.0.1:$metrics_port/metrics)"
curl -s "http://127.0.0.1:$metrics_port/metrics" |
  grep -E '^streamkv_(frames_processed_total|sessions_closed_total|kv_cache_used_bytes|frame_latency_seconds_sum)' |
  grep -v ' 0$' || true

kill -TERM "$server"
wait "$server"
trap - EXIT
echo "== server stopped (exit 0); its log: $out/server.log; client outputs: $out/"
