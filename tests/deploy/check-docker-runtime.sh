#!/usr/bin/env bash
# Does what the Dockerfile's build stage and default command do, on this machine's (CPU) build:
# stages the binaries and libraries with deploy/docker/stage-runtime.sh, writes the tiny model
# where the image keeps it, checks that the staged tree is self-contained (every library but the
# C runtime resolves inside it), then runs the image's ENTRYPOINT + CMD of the cpu variant (with
# /opt/streamkv mapped to the staged tree) in an empty environment: it must serve the tiny model
# to the staged client and exit 0 on SIGTERM.
#   check-docker-runtime.sh REPO BUILD_DIR NODE_DIR
set -euo pipefail
repo=$(cd "${1:?usage: check-docker-runtime.sh REPO BUILD_DIR NODE_DIR}" && pwd)
build=$(cd "${2:?}" && pwd)
node_dir=$(cd "${3:?}" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"

image_root=/opt/streamkv
stage="$work/opt/streamkv"
bash "$repo/deploy/docker/stage-runtime.sh" "$build" "$stage"
"$build/models/streamkv-make-tiny-model" --out_dir="$stage/models/stream3r-tiny" >/dev/null

# Self-contained: with only LD_LIBRARY_PATH=$stage/lib (as the image sets it), every library
# resolves inside the tree except the C runtime, which the base image provides (the same set
# stage-runtime.sh leaves out).
runtime_libs='^(ld-linux.*|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s)\.so'
outside=()
while read -r name arrow path _; do
  [ "$arrow" = "=>" ] || continue
  [[ $name =~ $runtime_libs ]] && continue
  [[ $path == "$stage/lib/"* ]] || outside+=("$name=>$path")
done < <(env -i LD_LIBRARY_PATH="$stage/lib" ldd "$stage"/bin/* | grep '=>')
((${#outside[@]} == 0)) || fail "libraries resolved outside the staged tree: ${outside[*]}"

# The cpu image's command, /opt/streamkv mapped to the staged tree, on free local ports.
mapfile -t command < <(NODE_PATH="$node_dir/node_modules" node "$here/check-dockerfile.js" "$repo" --command=cpu)
((${#command[@]} > 0)) || fail "no ENTRYPOINT/CMD for the cpu variant"
command=("${command[@]//$image_root/$stage}")
env -i LD_LIBRARY_PATH="$stage/lib" "${command[@]}" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
    --port_file="$work/ports" 2>"$work/server.log" &
server_pid=$!
pids+=("$server_pid")
started() { [ -f "$work/ports" ] || ! kill -0 "$server_pid" 2>/dev/null; }
await 30 started
[ -f "$work/ports" ] || fail "the image's command did not start the server: ${command[*]}"
grpc_port=$(sed -n 's/^grpc_port=//p' "$work/ports")
env -i LD_LIBRARY_PATH="$stage/lib" "$stage/bin/streamkv-client" --server="127.0.0.1:$grpc_port" \
    --describe >"$work/describe" || fail "the staged client cannot reach the server"
grep -q "^model stream3r-tiny (default)" "$work/describe" || fail "the image does not serve stream3r-tiny: $(cat "$work/describe")"
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
pids=()  # reaped: never signal its (reusable) id again
[ "$rc" = 0 ] || fail "the server exited $rc on SIGTERM"
echo "check-docker-runtime: staged tree is self-contained; '${command[*]//$stage/$image_root}' serves stream3r-tiny and exits 0 on SIGTERM"
