"""Where native libraries come from (shipped, cache, source build, PyTorch); the wheel's build."""

from __future__ import annotations

import copy
import ctypes
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from pcflow import _native
from pcflow.flows import dpf_flow, fused
from pcflow.ops.assignment import _native_library, _run_native

HAS_COMPILER = any(shutil.which(c) for c in ("g++", "c++", "clang++"))
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="builds a kernel with a C++ compiler")
NAME, VARIANT = "fused_affine", "generic"


@pytest.fixture(scope="module")
def good_library() -> Path:
    """A loadable generic fused library, from the cache or built there once."""
    if not HAS_COMPILER:
        pytest.skip("builds a kernel with a C++ compiler")
    return _native.load(NAME, VARIANT)[1]


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An empty shipped folder and an empty cache, nothing loaded yet; returns both."""
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    shipped.mkdir()
    cache.mkdir()
    monkeypatch.setattr(_native, "_SHIPPED", shipped)
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setenv("PCFLOW_CACHE_DIR", str(cache))
    monkeypatch.delenv("PCFLOW_NATIVE_BUILD", raising=False)
    return shipped, cache


def _put(library: Path, folder: Path) -> Path:
    target = folder / _native.library_name(NAME, VARIANT)
    shutil.copyfile(library, target)
    return target


def _damaged(folder: Path) -> Path:
    target = folder / _native.library_name(NAME, VARIANT)
    target.write_bytes(b"not a shared library")
    return target


def _no_build(monkeypatch) -> list[Path]:
    calls: list[Path] = []

    def build(name, variant, directory, quiet=False, portable=False):
        calls.append(Path(directory))
        raise _native.NativeBuildError("no C++ compiler found (in this test)")

    monkeypatch.setattr(_native, "build", build)
    return calls


def _copying_build(monkeypatch, library: Path) -> list[Path]:
    """A source build that hands over a known-good library (the real one is tested elsewhere)."""
    calls: list[Path] = []

    def build(name, variant, directory, quiet=False, portable=False):
        calls.append(Path(directory))
        return _put(library, Path(directory))

    monkeypatch.setattr(_native, "build", build)
    return calls


def _pass_overs(records) -> list[str]:
    return [str(r.message) for r in records if "passed over the native library" in str(r.message)]


# ----------------------------------------------------------------------------- the order
def test_the_shipped_library_comes_first(places, good_library, monkeypatch):
    shipped, cache = places
    expected = _put(good_library, shipped)
    _put(good_library, cache)
    builds = _no_build(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, path = _native.load(NAME, VARIANT)
    assert path == expected and not builds


def test_the_cache_comes_next(places, good_library, monkeypatch):
    _, cache = places
    expected = _put(good_library, cache)
    builds = _no_build(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, path = _native.load(NAME, VARIANT)
    assert path == expected and not builds


def test_a_shipped_library_that_does_not_load_gives_way_to_the_cache(
    places, good_library, monkeypatch
):
    shipped, cache = places
    damaged = _damaged(shipped)
    expected = _put(good_library, cache)
    builds = _no_build(monkeypatch)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        _, path = _native.load(NAME, VARIANT)
        assert _native.load(NAME, VARIANT)[1] == path  # once loaded, no second warning
    assert path == expected and not builds
    (message,) = _pass_overs(records)
    assert str(damaged) in message and str(expected) in message


def test_an_old_glibc_refusing_the_shipped_library_leads_to_a_source_build(
    places, good_library, monkeypatch
):
    # What an older system says about a library that needs a newer glibc, simulated.
    shipped, cache = places
    refused = _put(good_library, shipped)
    real_loader = ctypes.CDLL

    def loader(path, *args, **kwargs):
        if Path(path) == refused:
            raise OSError(f"/lib64/libc.so.6: version `GLIBC_2.34' not found (required by {path})")
        return real_loader(path, *args, **kwargs)

    monkeypatch.setattr(_native.ctypes, "CDLL", loader)
    builds = _copying_build(monkeypatch, good_library)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        library, path = _native.load(NAME, VARIANT)
    assert builds == [cache] and path.parent == cache
    assert library.pcf_couplings_forward  # the built library is the one in use
    (message,) = _pass_overs(records)
    assert "GLIBC_2.34' not found" in message


def test_a_damaged_shipped_library_and_cache_lead_to_a_source_build(
    places, good_library, monkeypatch
):
    shipped, cache = places
    _damaged(shipped)
    _damaged(cache)  # pcflow's own cache: the build replaces the file atomically
    builds = _copying_build(monkeypatch, good_library)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        _, path = _native.load(NAME, VARIANT)
    assert builds == [cache] and path == cache / _native.library_name(NAME, VARIANT)
    (message,) = _pass_overs(records)
    assert message.count("could not load") == 2


def test_without_any_library_the_error_gives_every_reason(places, monkeypatch):
    shipped, _ = places
    damaged = _damaged(shipped)
    builds = _no_build(monkeypatch)
    with pytest.raises(_native.NativeBuildError) as error:
        _native.load(NAME, VARIANT)
    assert builds and "no C++ compiler found" in str(error.value)
    assert f"could not load {damaged}" in str(error.value)
    monkeypatch.setenv("PCFLOW_NATIVE_BUILD", "0")
    with pytest.raises(_native.NativeBuildError, match="source builds are turned off") as error:
        _native.load(NAME, VARIANT)
    assert len(builds) == 1 and f"could not load {damaged}" in str(error.value)


def test_then_the_pytorch_path_with_one_warning(places, monkeypatch):
    _damaged(places[0])
    _no_build(monkeypatch)
    monkeypatch.setenv("PCFLOW_ISA", VARIANT)
    monkeypatch.setattr(fused, "_kernel", None)
    monkeypatch.setattr(fused, "_failure", None)
    layers = dpf_flow(4, 3, 8).layers
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        for _ in range(2):
            assert fused.run_fused(layers, torch.randn(2, 5, 3), torch.randn(2, 4), False) is None
    (record,) = [r for r in records if issubclass(r.category, RuntimeWarning)]
    assert "slower PyTorch path" in str(record.message)
    assert "could not load" in str(record.message)


# ------------------------------------------------------------------- the wheel's toolchain
PORTABLE = _native.portable_toolchain()
needs_portable = pytest.mark.skipif(PORTABLE is not None, reason=f"{PORTABLE}")
SYSTEM_LIBRARIES = {
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "ld-linux-x86-64.so.2",
    "libgcc_s.so.1",
}


def _needs(path: Path) -> tuple[set[str], dict[str, tuple[int, ...]]]:
    """Needed libraries and, per symbol-version family (GLIBC, GCC), the newest needed."""
    headers = subprocess.run(["objdump", "-p", str(path)], capture_output=True, text=True)
    symbols = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True)
    needed = set(re.findall(r"NEEDED\s+(\S+)", headers.stdout))
    newest: dict[str, tuple[int, ...]] = {}
    for family, version in re.findall(r"\b(GLIBC|GCC|GLIBCXX|CXXABI)_([0-9.]+)", symbols.stdout):
        key = tuple(int(part) for part in version.split("."))
        newest[family] = max(newest.get(family, key), key)
    return needed, newest


@pytest.mark.slow
@needs_portable
@pytest.mark.skipif(shutil.which("objdump") is None, reason="reads symbols with objdump")
@pytest.mark.parametrize("name", list(_native.SOURCES))
@pytest.mark.parametrize("variant", list(_native.VARIANTS))
def test_portable_libraries_need_nothing_newer_than_glibc_2_17(name, variant, tmp_path):
    path = _native.build(name, variant, tmp_path, quiet=True, portable=True)
    assert path.name == _native.library_name(name, variant)  # the name load() looks for
    needed, newest = _needs(path)
    assert needed <= SYSTEM_LIBRARIES, needed  # libstdc++ is inside, not needed
    assert newest["GLIBC"] <= (2, 17), newest
    assert newest.get("GCC", (0,)) <= (4, 8), newest  # manylinux2014's libgcc_s
    assert "GLIBCXX" not in newest and "CXXABI" not in newest
    # The plain source build, for contrast, needs this machine's glibc (2.36 here).
    plain_needs = _needs(_native.build(name, variant, tmp_path / "plain", quiet=True))[1]
    assert plain_needs["GLIBC"] >= newest["GLIBC"]


def _reference(layers, points, context, dtype):
    layers = [copy.deepcopy(layer).to(dtype) for layer in layers]
    x, total = points.to(dtype), torch.zeros(points.shape[:2], dtype=dtype)
    for layer in layers:
        x, logabsdet = layer.forward_points(x, context.to(dtype))
        total = total + logabsdet
    return x, total


@pytest.mark.slow
@needs_portable
@pytest.mark.parametrize("variant", _native.cpu_variants())
def test_portable_libraries_compute_as_the_references(variant, tmp_path, monkeypatch):
    # Every variant this CPU runs, built as the wheel builds it and loaded as the wheel's is.
    for name in _native.SOURCES:
        _native.build(name, variant, tmp_path, quiet=True, portable=True)
    monkeypatch.setattr(_native, "_SHIPPED", tmp_path)
    monkeypatch.setattr(_native, "_loaded", {})
    monkeypatch.setenv("PCFLOW_NATIVE_BUILD", "0")
    torch.manual_seed(19)
    flow = dpf_flow(8, 6, 16)
    with torch.no_grad():
        for parameter in flow.parameters():  # away from the near-identity initialisation
            parameter.copy_(torch.randn_like(parameter) * 0.3)
    points, z = torch.randn(2, 70, 3), torch.randn(2, 8)
    with fused.use_variant(variant):
        assert fused.kernel_info()["path"] == str(tmp_path / _native.library_name(NAME, variant))
        p = points.clone().requires_grad_(True)
        outputs, logabsdet = fused.run_fused(flow.layers, p, z, False)
        (outputs.sum() + logabsdet.sum()).backward()
    exact_p = points.double().requires_grad_(True)
    exact, exact_logabsdet = _reference(flow.layers, exact_p, z, torch.float64)
    (exact.sum() + exact_logabsdet.sum()).backward()
    single_p = points.clone().requires_grad_(True)
    single, single_logabsdet = _reference(flow.layers, single_p, z, torch.float32)
    (single.sum() + single_logabsdet.sum()).backward()

    def error(ours, truth):
        return ((ours.double() - truth).norm() / truth.norm()).item()

    for ours, truth, torch32 in [
        (outputs, exact, single),
        (logabsdet, exact_logabsdet, single_logabsdet),
        (p.grad, exact_p.grad, single_p.grad),
    ]:
        # As accurate as float32 PyTorch, up to another summation order (FMA, vector lanes).
        assert error(ours, truth) <= 10 * max(error(torch32, truth), 2.0**-20)

    # The auction EMD's library: an optimal assignment on a problem small enough for scipy.
    x, y = torch.rand(1, 40, 3), torch.rand(1, 40, 3)
    library = _native_library(variant)
    assert library is _native.load("emd_auction", variant)[0]
    tol = 1e-3
    permutation, _ = _run_native(library, x, y, None, tol, 5.0, 16, 10_000, 1)
    cost = cdist(x[0].double().numpy(), y[0].double().numpy())
    rows, cols = linear_sum_assignment(cost)
    ours_cost = cost[range(40), permutation[0].numpy()].sum()
    assert sorted(permutation[0].tolist()) == list(range(40))
    # Within the certified gap, plus float32 rounding of each of the 40 costs (D + 2 units).
    float_slack = 40 * 8 * (3 + 2) * 2.0**-23 * cost.max()
    assert ours_cost <= cost[rows, cols].sum() * (1 + tol) + float_slack
