#!/usr/bin/env bash
# The whole pipeline on the built-in synthetic data.  Usage: scripts/demo.sh [--fast] [--out DIR] [--seed N]
set -euo pipefail
exec wsss demo "$@"
