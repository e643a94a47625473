"""Importing pcflow's library subpackages loads neither matplotlib, scipy, TensorBoard nor
torch's compiler (torch._dynamo, seconds to import).

Each check runs in a fresh interpreter, since this one has imported them already (and so
takes the few seconds of a torch import: marked slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "scipy", "tensorboard", "torch._dynamo")


def run_python(code: str) -> str:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", PCFLOW_FUSED="0")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


LIGHT = ["flows", "transforms", "ops", "losses", "metrics", "encoders", "models", "utils"]


def test_imports_load_no_heavy_package() -> None:
    # One interpreter imports them all: if none is loaded after all, none is after any one.
    modules = ", ".join(f"pcflow.{name}" for name in LIGHT)
    loaded = run_python(
        f"import json, sys, {modules}\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert json.loads(loaded) == [], f"import {modules} loaded {loaded}"


def test_import_pcflow_alone_loads_not_even_torch() -> None:
    assert run_python("import sys, pcflow; print('torch' in sys.modules)") == "False"


def test_nflows_pyplot_is_still_there_when_used() -> None:
    # The stand-in for nflows' unused `plt` imports the real pyplot on first use.
    out = run_python(
        "import sys, pcflow.flows, nflows.nn.nde.made as made\n"
        "before = 'matplotlib' in sys.modules\n"
        "figure = made.plt.figure\n"
        "import matplotlib.pyplot as plt\n"
        "print(before, figure is plt.figure, sys.modules['matplotlib.pyplot'] is plt)"
    )
    assert out == "False True True"


def test_matplotlib_loaded_first_is_left_alone() -> None:
    out = run_python(
        "import matplotlib.pyplot as plt, pcflow.flows, nflows.nn.nde.made as made\n"
        "print(made.plt is plt)"
    )
    assert out == "True"


def test_nflows_triangular_solve_warning_is_filtered_there_only():
    out = run_python(
        "import warnings, torch, pcflow.flows\n"
        "from nflows.transforms import LULinear\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    LULinear(3, identity_init=False).inverse(torch.randn(4, 3))\n"
        "from_nflows = [str(w.message)[:40] for w in caught]\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    warnings.warn('torch.triangular_solve is deprecated (elsewhere)', UserWarning)\n"
        "print(from_nflows, len(caught))"
    )
    assert out == "[] 1"
