#!/usr/bin/env bash
# mIoU of a mask folder (--pred_dir DIR) or a threshold sweep of a CAM folder (--cam_dir DIR).
# Usage: scripts/eval.sh CONFIG.yaml --pred_dir DIR [--split val] | --cam_dir DIR
set -euo pipefail
config=${1:?usage: $0 CONFIG.yaml (--pred_dir DIR | --cam_dir DIR) [overrides...]}
shift
exec wsss eval --config "$config" "$@"
