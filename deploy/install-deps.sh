#!/usr/bin/env bash
# Installs every Debian package streamkv needs to build, test and run. Idempotent and
# non-interactive; run as root (CI) or with sudo. Set STREAMKV_CORE_ONLY=1 to skip the server's
# dependencies (gRPC, Protobuf, prometheus-cpp, Prometheus) and the test tools;
# STREAMKV_NO_DEPLOY_TOOLS=1 to skip only the latter (the Docker build does).
set -euo pipefail

core=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  libturbojpeg0-dev libpng-dev
)
server=(
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev prometheus
)

# Tools of the integration and deployment tests (tests/integration, tests/interop, tests/deploy),
# as package=command: a package is skipped when its command is already installed from elsewhere
# (kubectl from Google's repository, node and npm from NodeSource's), whose packages conflict with
# Debian's.
tools=(kubernetes-client=kubectl nodejs=node npm=npm curl=curl jq=jq openssl=openssl)

packages=("${core[@]}")
if [ "${STREAMKV_CORE_ONLY:-0}" != 1 ]; then
  packages+=("${server[@]}")
  if [ "${STREAMKV_NO_DEPLOY_TOOLS:-0}" != 1 ]; then
    for entry in "${tools[@]}"; do
      command -v "${entry#*=}" >/dev/null || packages+=("${entry%%=*}")
    done
  fi
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
