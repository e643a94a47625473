"""The helpers of `benchmarks/flow_table.py --variants`: the ISA-capped matmul and its table.

No timing is asserted here (speed lives in the benchmark's output); these tests check that the
cap reaches the helper process and that MKL obeys it, and that the table reports each variant
against both references.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from pcflow import _native

ROOT = Path(__file__).resolve().parents[2]


def _flow_table():
    spec = importlib.util.spec_from_file_location("flow_table", ROOT / "benchmarks/flow_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["flow_table"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


flow_table = _flow_table()
VARIANTS = _native.cpu_variants()


def test_capped_environment_caps_the_variants_isa_and_keeps_the_rest(monkeypatch):
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    monkeypatch.setenv("PCFLOW_TEST_PROBE", "kept")
    env = flow_table.capped_environment("avx2")
    assert env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["PCFLOW_TEST_PROBE"] == "kept"
    assert "MKL_ENABLE_INSTRUCTIONS" not in os.environ  # this process is left uncapped
    assert flow_table.capped_environment("generic")["MKL_ENABLE_INSTRUCTIONS"] == "SSE4_2"


def test_capped_environment_names_a_wrong_variant():
    with pytest.raises(ValueError, match="variant must be one of avx512, avx2, generic, got 'sse'"):
        flow_table.capped_environment("sse")


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cap_reaches_the_matmul_process_and_mkl_obeys_it(monkeypatch, variant):
    # A cap already in the parent's environment must not leak through in place of the variant's.
    other = "SSE4_2" if variant != "generic" else "AVX2"
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", other)
    cap = flow_table.ISA_CAPS[variant]["MKL_ENABLE_INSTRUCTIONS"]
    with flow_table.CappedMatmul(variant, size=64, threads=1) as matmul:
        matmul.started()
        assert matmul.cap == cap
        assert matmul.mkl == torch.backends.mkl.is_available()
        if matmul.mkl:
            # MKL's own banner: the instruction set it dispatched to in the helper process.
            _assert_mkl_obeys(matmul.mkl_isa, cap)
        assert 0 < matmul.time() < 60
        assert 0 < matmul.time() < 60  # the process serves call after call


def _assert_mkl_obeys(reported: str, cap: str) -> None:
    # On Intel CPUs MKL's banner names the instruction set it chose, and it is exactly the cap.
    # On other vendors' CPUs the banner names none ("Intel(R) Architecture processors", seen on
    # an AMD EPYC with AVX-512); one it does name must still not exceed the cap.
    if _cpu_vendor() == "GenuineIntel":
        assert reported == flow_table.MKL_ISA_NAMES[cap], reported
    elif reported:
        order = list(flow_table.MKL_ISA_NAMES.values())  # widest first
        assert reported in order, reported
        assert order.index(reported) >= order.index(flow_table.MKL_ISA_NAMES[cap]), reported


def _cpu_vendor() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return ""


def _row(points_per_s: float, of_mm: float, of_isa_mm: float, isa_gflops: float):
    row = {"isa_mm_gflops": isa_gflops}
    for op in ("forward", "inverse", "train"):
        row[f"{op}_points_per_s"] = points_per_s
        row[f"{op}_fraction_of_mm"] = of_mm
        row[f"{op}_fraction_of_isa_mm"] = of_isa_mm
    return row


def test_the_table_has_both_references_per_pass_and_names_each_cap(capsys):
    table = flow_table.VariantTable(
        mm_gflops=160.0,
        rows={
            "avx2": _row(100_000, 0.5, 1.25, 64.0),
            "generic": _row(40_000, 0.2, math.nan, math.nan),
            "avx512": _row(120_000, 0.6, 0.6, 160.0),
        },
        mkl_isa={"avx2": "AVX-512", "generic": "", "avx512": ""},
        load=(2.5, 2.75),
    )
    flow_table.print_variants(table)
    lines = capsys.readouterr().out.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == [
        "variant",
        *[
            name
            for label in ("log_prob", "sample", "train")
            for name in (f"{label} points/s", "of mm", "of own-ISA mm")
        ],
    ]
    avx2 = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert avx2 == ["avx2", *["100,000", "50%", "125%"] * 3]
    generic = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert generic == ["generic", *["40,000", "20%", "n/a"] * 3]
    text = "\n".join(lines)
    assert "160.0 GFLOP/s uncapped" in text
    # A cap MKL did not obey is flagged, not reported as if it held.
    assert "avx2: 64.0 GFLOP/s with MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL reports AVX-512" in text
    assert "(NOT AVX2!)" in text
    assert "generic: n/a (this torch does not use MKL" in text
    # A banner that names no instruction set (other vendors' CPUs) is said to verify nothing.
    assert "avx512: 160.0 GFLOP/s with MKL_ENABLE_INSTRUCTIONS=AVX512 (MKL's banner" in text
    assert "names no instruction set, so the cap is unverified)" in text
    assert "2.50 / 2.75" in text


@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="builds every variant of the kernel with a C++ compiler",
)
def test_measure_variants_divides_by_each_variants_own_reference():
    table = flow_table.measure_variants(
        batch=1, num_points=64, context=8, layers=3, hidden=8, rounds=1, threads=1, mm_size=64
    )
    assert list(table.rows) == VARIANTS
    for variant, row in table.rows.items():
        if torch.backends.mkl.is_available():
            cap = flow_table.ISA_CAPS[variant]["MKL_ENABLE_INSTRUCTIONS"]
            _assert_mkl_obeys(table.mkl_isa[variant], cap)
        for op in ("forward", "inverse", "train"):
            assert row[f"{op}_points_per_s"] > 0
            # Same work over two references: the fractions differ by the references' ratio.
            assert row[f"{op}_fraction_of_isa_mm"] / row[f"{op}_fraction_of_mm"] == pytest.approx(
                table.mm_gflops / row["isa_mm_gflops"], rel=1e-9
            )
