# Shared by the shell tests (tests/integration, tests/interop, tests/deploy) and
# bench/load_test.sh: a work folder removed on exit, background processes (in `pids`) killed on
# exit, failing with the logs, polling, free ports, and starting streamkv-server.
set -euo pipefail
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Prints the message (after the script's name) and the tail of every log in $work; exits 1.
fail() {
  echo "$(basename "$0" .sh): FAIL: $*" >&2
  for log in "$work"/*.log; do
    [ -e "$log" ] || continue
    echo "--- $(basename "$log")" >&2
    tail -20 "$log" >&2
  done
  exit 1
}

# await SECONDS COMMAND...: retries COMMAND every 0.2 s until it succeeds or SECONDS pass.
await() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# A TCP port on 127.0.0.1 nobody listens on.
free_port() {
  local port
  while true; do
    port=$((20000 + RANDOM % 40000))
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# start_server BUILD_DIR [FLAG...]: starts streamkv-server on free loopback ports and sets
# grpc_port and metrics_port once it serves.
start_server() {
  local build=$1
  shift
  "$build/server/streamkv-server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
    --port_file="$work/ports" "$@" 2>"$work/server.log" &
  pids+=($!)
  await 60 test -s "$work/ports" || fail "the server did not start"
  grpc_port=$(sed -n 's/^grpc_port=//p' "$work/ports")
  metrics_port=$(sed -n 's/^metrics_port=//p' "$work/ports")
}

# start_prometheus [RULE_FILE [LABEL=VALUE...]]: starts a real Prometheus on a free port scraping
# the server's metrics_port every second (job "streamkv", with the given target labels and rule
# file), sets prometheus_url, and waits for its first successful scrape.
start_prometheus() {
  local rules=${1:-}
  shift || true
  local port
  port=$(free_port)
  {
    echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
    [ -z "$rules" ] || echo "rule_files: [\"$rules\"]"
    echo "scrape_configs:"
    echo "  - job_name: streamkv"
    echo "    static_configs:"
    echo "      - targets: [\"127.0.0.1:$metrics_port\"]"
    echo "        labels: {$(printf '%s, ' "${@/=/: }" | sed 's/, $//')}"
  } >"$work/prometheus.yml"
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
  pids+=($!)
  prometheus_url="http://127.0.0.1:$port"
  scraped() {
    curl -sf "$prometheus_url/api/v1/query" --data-urlencode 'query=up{job="streamkv"} == 1' |
      grep -q '"value"'
  }
  await 60 scraped || fail "Prometheus did not scrape the server"
}
