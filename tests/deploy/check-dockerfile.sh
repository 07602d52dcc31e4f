#!/usr/bin/env bash
# Lints the Dockerfile and .dockerignore (check-dockerfile.js). No Docker engine is needed, and
# none builds the image here: check-docker-runtime.sh exercises what the image's build stage and
# default command do.
#   check-dockerfile.sh REPO NODE_DIR
set -euo pipefail
repo=$(cd "${1:?usage: check-dockerfile.sh REPO NODE_DIR}" && pwd)
node_dir=$(cd "${2:?}" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v node >/dev/null || { echo "check-dockerfile: node is missing (bash deploy/install-deps.sh)" >&2; exit 1; }
NODE_PATH="$node_dir/node_modules" node "$here/check-dockerfile.js" "$repo"
