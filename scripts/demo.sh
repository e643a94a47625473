#!/usr/bin/env bash
# The main job: set up, train FlowGAN's quick preset on the built-in synthetic data (generated
# on first use), evaluate it on the held-out test split next to the mean-training-cloud baseline,
# and draw pictures. Outputs land in runs/quick/ (override with OUT=...); extra arguments go to
# train.py (e.g. --set train.epochs=2). Running it again continues an interrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/quick}
start=$(date +%s)
.venv/bin/python examples/flowgan/train.py --preset quick --out "$OUT" --resume "$@"
.venv/bin/python examples/flowgan/evaluate.py --checkpoint "$OUT/checkpoints/last.pt" \
    --baselines --out "$OUT/eval"
echo "[demo] done in $(( $(date +%s) - start )) s: metrics in $OUT/eval/metrics.json," \
    "pictures in $OUT/pictures/ and $OUT/eval/pictures.png, a view to turn in $OUT/eval/gallery.html"
