#!/usr/bin/env bash
# Issue 5's serving table: N = 1, 4, 16 concurrent sessions × M frames of the built-in tiny model
# over loopback, then N = 16 again twice on the same server to show whether its RSS grows.
#   bench/load_test.sh [build dir] [frames per session]
build=${1:-build}
frames=${2:-100}
source "$(dirname "${BASH_SOURCE[0]}")/../tests/lib.sh"
start_server "$build" --session_budget=64MiB
server_pid=${pids[0]}
driver=("$build/bench/streamkv-bench-load" --server="127.0.0.1:$grpc_port" --server_pid="$server_pid"
        --frames="$frames")
echo "streamkv-server (built-in tiny model, CPU, $(nproc) cores), sliding_window 1+8 frames, 56x112 raw frames, window 2 per session"
"${driver[@]}" --sessions=1 --header || fail "N=1"
"${driver[@]}" --sessions=4 || fail "N=4"
for run in 1 2 3; do
  "${driver[@]}" --sessions=16 || fail "N=16 run $run"
done
