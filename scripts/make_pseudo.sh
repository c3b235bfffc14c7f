#!/usr/bin/env bash
# Export CAMs, then make pseudo masks (with and without dense CRF) and report their mIoU.
# Usage: scripts/make_pseudo.sh CONFIG.yaml [--field.name value ...]
set -euo pipefail
config=${1:?usage: $0 CONFIG.yaml [overrides...]}
shift
wsss cams --config "$config" "$@"
wsss pseudo --config "$config" "$@"
