#!/usr/bin/env bash
# The main job: set up, train FlowGAN's quick preset on the built-in synthetic data, evaluate it
# on the held-out split and draw pictures. Outputs land in runs/quick/ (override with OUT=...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/quick}
.venv/bin/python examples/flowgan/train.py --preset quick --out "$OUT" "$@"
.venv/bin/python examples/flowgan/evaluate.py --checkpoint "$OUT/checkpoints/last.pt" --out "$OUT/eval"
