#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install pcflow into it.
#
# torch is installed first, pinned, so that pip never resolves an unpinned `torch` to a multi-GB
# CUDA build. Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.5.1" or a CPU index URL
# through PIP_INDEX_URL) on machines that need another build. Re-running is cheap: nothing is
# reinstalled unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev,docs,train}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.pcflow-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing $TORCH_SPEC (CPU build where one is on disk)"
    "$PY" -m pip install --quiet "$TORCH_SPEC"
fi
echo "[setup] installing pcflow[$EXTRAS] in editable mode"
"$PY" -m pip install --quiet -e ".[$EXTRAS]" 2>&1 | grep -v "is ignored: it is neither" || true
"$PY" -c "import pcflow, torch, nflows; print('[setup] pcflow', pcflow.__version__, 'torch', torch.__version__)"
echo "$want" > "$stamp"
