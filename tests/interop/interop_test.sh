#!/usr/bin/env bash
# Runs the Node.js client of interop.test.mjs against a fresh streamkv-server.
#   interop_test.sh <build dir>
build=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
# The test and its dependencies (from the committed lockfile) in a scratch folder.
cp "$here/package.json" "$here/package-lock.json" "$here/interop.test.mjs" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund) >"$work/npm.log" 2>&1 ||
  fail "npm ci failed"
start_server "$build"
STREAMKV_ADDRESS="127.0.0.1:$grpc_port" STREAMKV_PROTO="$here/../../proto/streamkv/v1/streamkv.proto" \
  node --test "$work/interop.test.mjs" >"$work/node.log" 2>&1 ||
  fail "the Node.js client failed: $(cat "$work/node.log")"
grep -E '^# (pass|fail)' "$work/node.log"
