#!/usr/bin/env bash
# Renders every kustomization under deploy/ with kubectl's built-in kustomize, validates the
# output (validate-manifests.js: schemas, unknown fields, consistency), then runs the real server
# with each variant's rendered flags and arguments:
#   cpu variants: serve the tiny model written to disk (as the image holds it), answer a client,
#     and on SIGTERM in mid-stream exit 0 within terminationGracePeriodSeconds - preStop;
#   gpu: the flags parse and the server gets as far as loading the checkpoint on CUDA.
#   check-k8s.sh REPO BUILD_DIR NODE_DIR
set -euo pipefail
repo=$(cd "${1:?usage: check-k8s.sh REPO BUILD_DIR NODE_DIR}" && pwd)
build=$(cd "${2:?}" && pwd)
node_dir=$(cd "${3:?}" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
export NODE_PATH="$node_dir/node_modules"

for tool in kubectl node; do
  command -v "$tool" >/dev/null || { echo "check-k8s: $tool is missing (bash deploy/install-deps.sh)" >&2; exit 1; }
done
server="$build/server/streamkv-server"
client="$build/client/streamkv-client"
make_model="$build/models/streamkv-make-tiny-model"
for binary in "$server" "$client" "$make_model"; do
  [ -x "$binary" ] || { echo "check-k8s: $binary is missing; build it first" >&2; exit 1; }
done

# 1. Render.
mkdir -p "$work/rendered"
declare -A kustomizations=(
  [base]=deploy/k8s/base [cpu]=deploy/k8s/cpu [gpu]=deploy/k8s/gpu
  [prometheus-adapter]=deploy/k8s/prometheus-adapter [grafana]=deploy/grafana
)
for name in "${!kustomizations[@]}"; do
  if ! kubectl kustomize "$repo/${kustomizations[$name]}" >"$work/rendered/$name.yaml" 2>"$work/kustomize.err"; then
    echo "check-k8s: kubectl kustomize ${kustomizations[$name]} failed:" >&2
    cat "$work/kustomize.err" >&2
    exit 1
  fi
done
echo "check-k8s: rendered ${#kustomizations[@]} kustomizations with $(kubectl version --client --short 2>/dev/null || kubectl version --client | head -1)"

# The PrometheusRule is generated from the rule file; it must be up to date.
if ! diff -u "$repo/deploy/k8s/base/prometheusrule.yaml" <(bash "$repo/deploy/prometheus/make-prometheusrule.sh") >"$work/rule.diff"; then
  cat "$work/rule.diff" >&2
  echo "check-k8s: deploy/k8s/base/prometheusrule.yaml is stale; run" \
       "bash deploy/prometheus/make-prometheusrule.sh > deploy/k8s/base/prometheusrule.yaml" >&2
  exit 1
fi

# 2. Validate.
node "$here/validate-manifests.js" "$repo" "$work/rendered" "$work/variants"

# 3. Run the server as each variant's pod would.
"$make_model" --out_dir="$work/image-model" >/dev/null

# started PID FILE: the server wrote its port file, or it exited (then FILE is missing).
started() { [ -f "$2" ] || ! kill -0 "$1" 2>/dev/null; }
# expected DIR KEY: what validate-manifests.js read from the variant's flags and pod spec.
expected() { sed -n "s/^$2=//p" "$1/expect"; }
# processing URL: the server has processed more than 2 frames.
processing() {
  (($(curl -sf "$1" | awk '/^streamkv_frames_processed_total/ {n += $2} END {print n + 0}') > 2))
}

for variant in base cpu gpu; do
  dir="$work/variants/$variant"
  mapfile -t args <"$dir/args"
  device=$(expected "$dir" device)
  model_dir=$(expected "$dir" model_dir)
  model_name=$(expected "$dir" model_name)
  shutdown_budget_s=$(expected "$dir" shutdown_budget_s)
  # The image's model folder is where this machine's copy is; ports are free ones.
  overrides=(--listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --port_file="$dir/ports")
  case "$model_dir" in
    /opt/streamkv/models/*) overrides+=(--model_dir="$work/image-model") ;;
  esac

  if [ "$device" != cpu ]; then
    # No GPU here: the server must accept every flag and fail only at loading the checkpoint.
    if "$server" "${args[@]}" "${overrides[@]}" >"$dir/log" 2>&1; then
      echo "check-k8s: $variant: the server started without a GPU and checkpoint" >&2
      exit 1
    fi
    if grep -q "ERROR: " "$dir/log" || ! grep -q "loading $model_dir.* as '$model_name' on $device" "$dir/log"; then
      cat "$dir/log" >&2
      echo "check-k8s: $variant: the server did not get to loading $model_dir on $device" >&2
      exit 1
    fi
    echo "check-k8s: $variant: flags accepted; loads $model_dir as '$model_name' on $device"
    continue
  fi

  "$server" "${args[@]}" "${overrides[@]}" 2>"$dir/log" &
  pid=$!
  pids+=("$pid")
  if ! await 30 started "$pid" "$dir/ports" || [ ! -f "$dir/ports" ]; then
    cat "$dir/log" >&2
    echo "check-k8s: $variant: the server did not start" >&2
    exit 1
  fi
  grpc_port=$(sed -n 's/^grpc_port=//p' "$dir/ports")
  "$client" --server="127.0.0.1:$grpc_port" --describe >"$dir/describe"
  if ! grep -q "^model $model_name (default)" "$dir/describe"; then
    cat "$dir/describe" >&2
    echo "check-k8s: $variant: the server does not serve '$model_name'" >&2
    exit 1
  fi

  # SIGTERM while a client streams: the server must drain and exit 0 within the pod's budget.
  "$client" --server="127.0.0.1:$grpc_port" --frames=400 --out= --quiet --resume_attempts=0 \
      >"$dir/client.log" 2>&1 &
  client_pid=$!
  pids+=("$client_pid")
  metrics_port=$(sed -n 's/^metrics_port=//p' "$dir/ports")
  if ! await 30 processing "127.0.0.1:$metrics_port/metrics"; then
    cat "$dir/client.log" "$dir/log" >&2
    echo "check-k8s: $variant: the client's frames are not processed" >&2
    exit 1
  fi
  start=$(date +%s%N)
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  elapsed_ms=$((($(date +%s%N) - start) / 1000000))
  wait "$client_pid" 2>/dev/null || true
  pids=()  # both reaped: never signal their (reusable) ids again
  if [ "$rc" != 0 ] || ((elapsed_ms > shutdown_budget_s * 1000)); then
    cat "$dir/log" >&2
    echo "check-k8s: $variant: after SIGTERM the server exited $rc in $elapsed_ms ms" \
         "(needs 0 within ${shutdown_budget_s} s)" >&2
    exit 1
  fi
  echo "check-k8s: $variant: serves '$model_name' on $device; SIGTERM mid-stream: exit 0 in $elapsed_ms ms (budget ${shutdown_budget_s} s)"
done
echo "check-k8s: OK"
