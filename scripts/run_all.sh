#!/usr/bin/env bash
# Every stage in order (each skipped when its outputs are complete): classifier, CAMs, pseudo masks,
# segmenter on pseudo masks and on ground truth, evaluation, OUT/summary.json and OUT/report/.
# Usage: scripts/run_all.sh CONFIG.yaml [overrides...]
set -euo pipefail
config=${1:?usage: $0 CONFIG.yaml [overrides...]}
shift
exec wsss pipeline --config "$config" "$@"
