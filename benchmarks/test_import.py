"""Import time: ``import pcflow.<subpackage>`` on top of ``import torch``, in fresh interpreters.

Each round starts a new Python that times ``import torch`` and then the pcflow import
(``time.perf_counter`` around each), so both come from the same process and the same load on
the machine. ``extra_info`` gets the medians over the rounds: ``torch_seconds``,
``pcflow_seconds`` (what pcflow adds) and ``ratio`` = pcflow / torch. The target is at most
0.5 s on top of torch (about 1.2 s on a quiet machine). A benchmark never asserts on time.

Run: ``.venv/bin/python -m pytest benchmarks/test_import.py -p no:cacheprovider
--benchmark-columns=min,mean,rounds -s``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5

TIMED = """
import json, time
start = time.perf_counter()
import torch
middle = time.perf_counter()
import {module}
end = time.perf_counter()
print(json.dumps([middle - start, end - middle]))
"""


def timed_import(module: str) -> tuple[float, float]:
    """``(torch seconds, module seconds)`` from one fresh interpreter."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", TIMED.format(module=module)],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    torch_seconds, module_seconds = json.loads(result.stdout.strip().splitlines()[-1])
    return torch_seconds, module_seconds


@pytest.mark.parametrize("module", ["pcflow", "pcflow.flows", "pcflow.losses", "pcflow.metrics"])
def test_import_time(benchmark, module: str) -> None:
    timed_import(module)  # warm the file system cache and the .pyc files
    runs: list[tuple[float, float]] = []
    benchmark.pedantic(lambda: runs.append(timed_import(module)), rounds=ROUNDS, iterations=1)
    torch_seconds = statistics.median(run[0] for run in runs)
    pcflow_seconds = statistics.median(run[1] for run in runs)
    ratio = pcflow_seconds / torch_seconds
    benchmark.extra_info.update(
        torch_seconds=torch_seconds, pcflow_seconds=pcflow_seconds, ratio=ratio
    )
    print(
        f"\nimport {module}: torch {torch_seconds:.2f} s, then pcflow {pcflow_seconds:.2f} s "
        f"(ratio {ratio:.2f})"
    )
