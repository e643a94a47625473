"""pcflow's native kernels: one shared library per instruction set, the best one for this CPU.

Every kernel is C++ behind a plain C ABI (``extern "C"`` functions taking raw pointers and
sizes), called through `ctypes`. The libraries link nothing of torch, so one binary serves
every torch version pcflow supports, and they link libstdc++ statically, so they need no
compiler or runtime on the user's machine. Each source compiles to one library per
instruction-set variant (`VARIANTS`); none is built with ``-march=native``, so a build made on
one CPU runs on any CPU that has the variant's instructions.

Where a library comes from, in order (a library that is found but fails to load, e.g. a
damaged file, is passed over with one warning that says why, and the next step is tried):

1. a prebuilt binary shipped in the platform wheel (``pcflow/_lib/``), named after the hash of
   its source and flags, so a stale binary is never picked up;
2. the user's cache (``$PCFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/pcflow/native``, else
   ``~/.cache/pcflow/native``), where an earlier source build left it;
3. a source build with the C++ compiler (``$CXX``, ``g++``, ``c++`` or ``clang++``; no ninja,
   no torch headers), said on stderr while it runs. Concurrent builds never wait on each other:
   each writes its own temporary file and renames it into place atomically, so a killed build
   leaves no lock behind.

Where none of these gives a library, `load` raises `NativeBuildError` with every reason, and
the kernel's caller warns once and takes the PyTorch path.

The wheel's binaries are built with ``portable=True`` (see `build`): compiled by GCC with the
same flags, so the machine code is the same, then linked by ``zig cc`` (the ``ziglang``
package) against glibc 2.17's symbol versions, so they load on any Linux with glibc 2.17 or
newer (`PORTABLE_TAG`: manylinux2014, i.e. RHEL 7 and everything since). A source build links
against the machine's own glibc instead.

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
import warnings
from pathlib import Path

__all__ = [
    "PORTABLE_TAG",
    "SOURCES",
    "VARIANTS",
    "NativeBuildError",
    "best_variant",
    "build",
    "cpu_variants",
    "library_name",
    "load",
    "portable_toolchain",
]

_PACKAGE = Path(__file__).resolve().parent
_SHIPPED = _PACKAGE / "_lib"  # where the platform wheel puts its prebuilt libraries

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

# Flags that only the link step takes (a portable build links with zig, not the compiler).
_LINK_ONLY = {"-shared", "-static-libstdc++", "-static-libgcc"}
_PORTABLE_TARGET = "x86_64-linux-gnu.2.17"
PORTABLE_TAG = "manylinux_2_17_x86_64.manylinux2014_x86_64"
"""The wheel platform tag that libraries built with ``portable=True`` satisfy."""

# GCC's static libstdc++ was compiled against the build machine's glibc and refers to three
# symbols that glibc 2.17 lacks; the portable link defines them, hidden, in the library:
# - __libc_single_threaded (glibc 2.32): "this process has one thread, skip the atomics";
#   false is always a correct answer, so libstdc++ always takes its atomic path.
# - getentropy (2.25), arc4random (2.36): std::random_device's sources, linked in with
#   libstdc++'s string code but never called by pcflow; getentropy says "not available" as
#   older glibc would, and arc4random aborts rather than return a number that is not random.
_GLIBC_COMPAT = """\
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#define HIDDEN __attribute__((visibility("hidden")))
HIDDEN char __libc_single_threaded = 0;
HIDDEN int getentropy(void* buffer, size_t length) {
  (void)buffer;
  (void)length;
  errno = ENOSYS;
  return -1;
}
HIDDEN uint32_t arc4random(void) { abort(); }
"""


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


def portable_toolchain() -> str | None:
    """Why a ``portable=True`` build cannot run here, or ``None`` where it can.

    It needs Linux x86-64, GCC (``$CXX`` or ``g++``, with its static libstdc++) and the
    ``ziglang`` package (``pip install ziglang``), whose ``zig cc`` links against glibc 2.17.
    """
    if sys.platform != "linux" or platform.machine().lower() not in {"x86_64", "amd64"}:
        return f"portable builds are made on Linux x86-64, not {sys.platform} {platform.machine()}"
    try:
        import ziglang  # noqa: F401
    except ImportError:
        return "the ziglang package is not installed (pip install ziglang)"
    try:
        _gcc_runtime(_compiler())
    except NativeBuildError as error:
        return str(error)
    return None


def _gcc_runtime(compiler: str) -> tuple[str, str]:
    """GCC's static libstdc++ and shared libgcc_s, which a portable library links."""
    found = []
    for file in ("libstdc++.a", "libgcc_s.so.1"):
        try:
            result = subprocess.run(
                [compiler, f"-print-file-name={file}"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise NativeBuildError(f"{compiler} -print-file-name={file} failed: {error}") from error
        path = Path(result.stdout.strip())
        if result.returncode != 0 or not path.is_absolute() or not path.is_file():
            raise NativeBuildError(
                f"a portable build needs GCC's {file}; {compiler} does not have it"
            )
        found.append(str(path.resolve()))
    return found[0], found[1]


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NativeBuildError(f"{what} failed: {error}") from error
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise NativeBuildError(
            f"{what} failed (exit {result.returncode}):\n  {' '.join(command)}\n{tail}"
        )


def _portable_commands(
    compiler: str, variant: str, source: Path, output: str, scratch: Path
) -> list[list[str]]:
    # Compile with GCC exactly as a source build does, then link with zig against glibc 2.17.
    libstdcxx, libgcc_s = _gcc_runtime(compiler)
    compat = scratch / "glibc_compat.c"
    compat.write_text(_GLIBC_COMPAT)
    objects = scratch / "kernel.o"
    compile_flags = [flag for flag in _flags(variant) if flag not in _LINK_ONLY]
    zig = [sys.executable, "-m", "ziglang", "cc", "-target", _PORTABLE_TARGET]
    return [
        [compiler, *compile_flags, "-c", str(source), "-o", str(objects)],
        [
            *zig,
            "-shared",
            "-O2",
            "-s",
            # Every symbol must resolve against glibc 2.17, or the link fails here.
            "-Wl,-z,defs",
            "-Wl,--gc-sections",
            str(objects),
            str(compat),
            libstdcxx,
            libgcc_s,  # the unwinder, as a shared library: the static one needs glibc 2.35
            "-o",
            output,
        ],
    ]


def build(
    name: str, variant: str, directory: Path | str, quiet: bool = False, portable: bool = False
) -> Path:
    """Compile kernel ``name`` for ``variant`` into ``directory``; returns the library's path.

    The library is written to a temporary file and renamed into place, so a build that is
    killed leaves nothing half-written and concurrent builds of the same library never block.

    Arguments:
        name: A kernel, one of `SOURCES`.
        variant: An instruction-set variant, one of `VARIANTS`.
        directory: Where the library goes (created if need be).
        quiet: Say nothing on stderr.
        portable: Link against glibc 2.17 with ``zig cc`` instead of the machine's glibc, so
            the library loads on every Linux that `PORTABLE_TAG` names (the wheel's build;
            needs `portable_toolchain`). The compiler and its flags, hence the machine code,
            are the same either way.

    Raises:
        NativeBuildError: no compiler (or no portable toolchain), or a step failed (its last
            lines are quoted).
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
    if portable:
        reason = portable_toolchain()
        if reason is not None:
            raise NativeBuildError(f"cannot build {name} portably: {reason}")
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(handle)
    if not quiet:
        print(
            f"pcflow: compiling the native kernel {name!r} for {variant} with {compiler} "
            f"(once, a few seconds; cached in {directory})...",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="pcflow-build-") as scratch:
            if portable:
                commands = _portable_commands(compiler, variant, source, temporary, Path(scratch))
            else:
                commands = [[compiler, *_flags(variant), str(source), "-o", temporary]]
            for command in commands:
                _run(command, f"building {source.name} for {variant}")
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
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

    Tries the wheel's prebuilt binary, then the cache, then builds from source (unless
    ``allow_build`` is false or ``PCFLOW_NATIVE_BUILD=0``). A library that is there but does
    not load (a damaged file; a binary for a newer system) is passed over with one warning
    naming it and the loader's reason.

    Raises:
        NativeBuildError: the variant does not run on this CPU, or no library could be had
            (the message gives the reason of every step).
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
    failures: list[str] = []
    for path in (_SHIPPED / file, _cache_dir() / file):
        if not path.is_file():
            continue
        try:
            library = ctypes.CDLL(str(path))
        except OSError as error:
            failures.append(f"could not load {path}: {error}")
            continue
        break
    else:
        library, path = _build_and_load(name, variant, file, failures, allow_build)
    if failures:
        warnings.warn(
            f"pcflow: passed over the native library {file} ({'; '.join(failures)}); "
            f"using {path} instead",
            RuntimeWarning,
            stacklevel=2,
        )
    _loaded[key] = (library, path)
    return library, path


def _build_and_load(
    name: str, variant: str, file: str, failures: list[str], allow_build: bool
) -> tuple[ctypes.CDLL, Path]:
    earlier = "".join(f"; {failure}" for failure in failures)
    if not allow_build or os.environ.get("PCFLOW_NATIVE_BUILD", "1") == "0":
        raise NativeBuildError(
            f"no loadable prebuilt {file} in {_SHIPPED} or {_cache_dir()}, and source builds "
            f"are turned off{earlier}"
        )
    try:
        path = build(name, variant, _cache_dir())
    except NativeBuildError as error:
        raise NativeBuildError(f"{error}{earlier}") from error
    try:
        return ctypes.CDLL(str(path)), path
    except OSError as error:
        raise NativeBuildError(f"could not load {path}: {error}{earlier}") from error
