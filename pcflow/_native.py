"""pcflow's native kernels: one shared library per instruction set, the best one for this CPU.

Every kernel is C++ behind a plain C ABI (``extern "C"`` functions taking raw pointers and
sizes), called through `ctypes`. The libraries link nothing of torch, so one binary serves
every torch version pcflow supports, and they link libstdc++ statically, so they need no
compiler or runtime on the user's machine. Each source compiles to one library per
instruction-set variant (`VARIANTS`); none is built with ``-march=native``, so a build made on
one CPU runs on any CPU that has the variant's instructions.

Where a library comes from, in order:

1. a prebuilt binary shipped in the platform wheel (``pcflow/_lib/``), named after the hash of
   its source and flags, so a stale binary is never picked up;
2. the user's cache (``$PCFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/pcflow/native``, else
   ``~/.cache/pcflow/native``), where an earlier source build left it;
3. a source build with the C++ compiler (``$CXX``, ``g++``, ``c++`` or ``clang++``; no ninja,
   no torch headers), said on stderr while it runs. Concurrent builds never wait on each other:
   each writes its own temporary file and renames it into place atomically, so a killed build
   leaves no lock behind.

``PCFLOW_ISA`` (``generic``, ``avx2``, ``avx512``) forces a variant; the tests build and run
every variant explicitly with `load`.

This module imports nothing beyond the standard library, so ``setup.py`` uses it to build the
wheel's binaries.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = [
    "SOURCES",
    "VARIANTS",
    "NativeBuildError",
    "best_variant",
    "build",
    "cpu_variants",
    "library_name",
    "load",
]

_PACKAGE = Path(__file__).resolve().parent

SOURCES: dict[str, str] = {
    "fused_affine": "flows/_fused_affine.cpp",
    "emd_auction": "ops/_emd_auction.cpp",
}
"""Native kernels: name -> source, relative to the package."""

_COMMON = [
    "-O3",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-pthread",
    "-fvisibility=hidden",
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-static-libstdc++",
    "-static-libgcc",
]
_AVX2 = ["-mavx", "-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mpopcnt", "-msse4.2"]
_AVX512 = [*_AVX2, "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512cd"]

VARIANTS: dict[str, list[str]] = {
    "avx512": [*_AVX512, "-mprefer-vector-width=512", "-mtune=skylake-avx512"],
    "avx2": [*_AVX2, "-mtune=haswell"],
    "generic": ["-mtune=generic"],
}
"""Instruction-set variants, best first: name -> compiler flags (beyond the common ones)."""

# The CPU flags (as /proc/cpuinfo names them) each variant's code may use.
_NEEDS = {
    "avx512": {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx2", "fma", "f16c"},
    "avx2": {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "popcnt", "sse4_2"},
    "generic": set(),
}

_X86 = platform.machine().lower() in {"x86_64", "amd64", "i686", "x86"}


class NativeBuildError(RuntimeError):
    """A native kernel could not be found prebuilt nor built from source."""


def _cpu_flags() -> set[str] | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_variants() -> list[str]:
    """The variants this CPU runs, best first (``["generic"]`` off x86 or where unknown)."""
    if not _X86:
        return ["generic"]
    flags = _cpu_flags()
    if flags is None:
        return ["generic"]
    return [name for name in VARIANTS if _NEEDS[name] <= flags]


def best_variant() -> str:
    """The variant to run here: ``PCFLOW_ISA`` if set, else the best one the CPU runs."""
    forced = os.environ.get("PCFLOW_ISA", "").strip()
    if forced:
        if forced not in VARIANTS:
            raise NativeBuildError(
                f"PCFLOW_ISA must be one of {', '.join(VARIANTS)}, got {forced!r}"
            )
        return forced
    return cpu_variants()[0]


def _flags(variant: str) -> list[str]:
    return [*_COMMON, *(VARIANTS[variant] if _X86 else [])]


def library_name(name: str, variant: str) -> str:
    """File name of a kernel's library: ``<name>-<hash of source and flags>.<variant>.so``."""
    source = (_PACKAGE / SOURCES[name]).read_bytes()
    digest = hashlib.sha256(source + " ".join(_flags(variant)).encode()).hexdigest()[:16]
    return f"{name}-{digest}.{variant}.so"


def _cache_dir() -> Path:
    if os.environ.get("PCFLOW_CACHE_DIR"):
        return Path(os.environ["PCFLOW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pcflow" / "native"


def _compiler() -> str:
    for candidate in [os.environ.get("CXX"), "g++", "c++", "clang++"]:
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)  # type: ignore[return-value]
    raise NativeBuildError(
        "no C++ compiler found (looked for $CXX, g++, c++, clang++ on PATH). Install one, e.g. "
        "`sudo apt install g++` (Debian/Ubuntu) or `conda install -c conda-forge gxx`, or "
        "install pcflow's prebuilt Linux x86-64 wheel, which needs none."
    )


def build(name: str, variant: str, directory: Path | str, quiet: bool = False) -> Path:
    """Compile kernel ``name`` for ``variant`` into ``directory``; returns the library's path.

    The library is written to a temporary file and renamed into place, so a build that is
    killed leaves nothing half-written and concurrent builds of the same library never block.

    Raises:
        NativeBuildError: no compiler, or the compiler failed (its last lines are quoted).
    """
    if name not in SOURCES:
        raise NativeBuildError(f"unknown native kernel {name!r}; known: {', '.join(SOURCES)}")
    if variant not in VARIANTS:
        raise NativeBuildError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / library_name(name, variant)
    compiler = _compiler()
    source = _PACKAGE / SOURCES[name]
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(handle)
    command = [compiler, *_flags(variant), str(source), "-o", temporary]
    if not quiet:
        print(
            f"pcflow: compiling the native kernel {name!r} for {variant} with {compiler} "
            f"(once, a few seconds; cached in {directory})...",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        Path(temporary).unlink(missing_ok=True)
        raise NativeBuildError(f"compiling {source.name} failed: {error}") from error
    if result.returncode != 0:
        Path(temporary).unlink(missing_ok=True)
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise NativeBuildError(
            f"compiling {source.name} for {variant} failed (exit {result.returncode}):\n"
            f"  {' '.join(command)}\n{tail}"
        )
    os.chmod(temporary, 0o755)
    os.replace(temporary, target)
    if not quiet:
        print(
            f"pcflow: built {target.name} in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return target


_loaded: dict[tuple[str, str], tuple[ctypes.CDLL, Path]] = {}


def load(
    name: str, variant: str | None = None, allow_build: bool = True
) -> tuple[ctypes.CDLL, Path]:
    """The library of kernel ``name`` for ``variant`` (default `best_variant`), and its path.

    Looks for the wheel's prebuilt binary, then the cache, then builds from source (unless
    ``allow_build`` is false or ``PCFLOW_NATIVE_BUILD=0``).

    Raises:
        NativeBuildError: the variant does not run on this CPU, or no library could be had.
    """
    variant = variant or best_variant()
    key = (name, variant)
    if key in _loaded:
        return _loaded[key]
    if variant not in cpu_variants():
        raise NativeBuildError(
            f"this CPU cannot run the {variant} variant (it runs: {', '.join(cpu_variants())})"
        )
    file = library_name(name, variant)
    for directory in [_PACKAGE / "_lib", _cache_dir()]:
        if (directory / file).is_file():
            path = directory / file
            break
    else:
        if not allow_build or os.environ.get("PCFLOW_NATIVE_BUILD", "1") == "0":
            raise NativeBuildError(
                f"no prebuilt {file} in {_PACKAGE / '_lib'} or {_cache_dir()}, and source "
                "builds are turned off"
            )
        path = build(name, variant, _cache_dir())
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:
        raise NativeBuildError(f"could not load {path}: {error}") from error
    _loaded[key] = (library, path)
    return library, path
