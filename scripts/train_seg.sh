#!/usr/bin/env bash
# Train the segmenter on the pseudo masks and evaluate it on val.
# Usage: scripts/train_seg.sh CONFIG.yaml [--segmenter.masks pseudo|pseudo_crf|gt|FOLDER] [overrides...]
set -euo pipefail
config=${1:?usage: $0 CONFIG.yaml [overrides...]}
shift
exec wsss train-seg --config "$config" "$@"
