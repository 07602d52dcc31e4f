#!/usr/bin/env bash
# promtool on the alert rules: `check rules` (syntax, PromQL, templates) and `test rules` (the
# unit tests in deploy/prometheus/streamkv-alerts.test.yaml: each alert fires on a bad series and
# stays silent on a healthy one).
#   check-prometheus-rules.sh REPO
set -euo pipefail
repo=$(cd "${1:?usage: check-prometheus-rules.sh REPO}" && pwd)
command -v promtool >/dev/null || { echo "check-prometheus-rules: promtool is missing (bash deploy/install-deps.sh)" >&2; exit 1; }
cd "$repo/deploy/prometheus"
promtool check rules streamkv-alerts.yaml
promtool test rules streamkv-alerts.test.yaml
