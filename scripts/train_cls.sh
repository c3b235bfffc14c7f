#!/usr/bin/env bash
# Train the image-level classifier.  Usage: scripts/train_cls.sh CONFIG.yaml [--field.name value ...]
set -euo pipefail
config=${1:?usage: $0 CONFIG.yaml [overrides...]}
shift
exec wsss train-cls --config "$config" "$@"
