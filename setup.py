"""Build hook: compile pcflow's native kernels into the wheel, one library per instruction set.

Everything else about the package is in pyproject.toml. The wheel is a platform wheel
(``py3-none-<platform>``): its libraries are plain C ABI, independent of the Python and torch
versions, so one wheel per platform serves them all.

On Linux x86-64 with GCC and the ``ziglang`` package, the libraries are linked against glibc
2.17 (``pcflow._native.build(portable=True)``) and the wheel is tagged ``manylinux2014``
(`PORTABLE_TAG`), which PyPI takes and every Linux since RHEL 7 installs. Without ziglang they
are linked against this machine's glibc and the tag stays the plain platform one; where no
compiler is at hand the build goes on without the libraries, and pcflow compiles them on
first use instead. ``PCFLOW_PORTABLE=0`` asks for the plain build even where zig is there.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _native():
    # pcflow/_native.py imports only the standard library; load it without importing pcflow.
    spec = importlib.util.spec_from_file_location("_pcflow_native", HERE / "pcflow" / "_native.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithKernels(build_py):
    def run(self) -> None:
        super().run()
        native = _native()
        target = Path(self.build_lib) / "pcflow" / "_lib"
        variants = list(native.VARIANTS) if native._X86 else ["generic"]
        reason = native.portable_toolchain()
        if os.environ.get("PCFLOW_PORTABLE", "1") == "0":
            reason = "PCFLOW_PORTABLE=0"
        if reason is not None:
            print(f"pcflow: linking against this machine's glibc: {reason}", file=sys.stderr)
        built, portable = 0, reason is None
        for name in native.SOURCES:
            for variant in variants:
                try:
                    path = native.build(name, variant, target, quiet=True, portable=portable)
                except native.NativeBuildError as error:
                    print(f"pcflow: not prebuilding {name} ({variant}): {error}", file=sys.stderr)
                    continue
                built += 1
                print(f"pcflow: prebuilt {path.name}" + (" (glibc 2.17)" if portable else ""))
        # The wheel's tag may promise manylinux only if every library in it was linked portably.
        self.distribution.pcflow_manylinux = portable and built == len(native.SOURCES) * len(
            variants
        )


class PlatformWheel(bdist_wheel):
    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        if getattr(self.distribution, "pcflow_manylinux", False):
            platform = _native().PORTABLE_TAG
        return "py3", "none", platform


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # the libraries are platform code: install to platlib
        return True


setup(
    cmdclass={"build_py": BuildWithKernels, "bdist_wheel": PlatformWheel},
    distclass=BinaryDistribution,
)
