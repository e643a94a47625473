"""Build hook: compile pcflow's native kernels into the wheel, one library per instruction set.

Everything else about the package is in pyproject.toml. The wheel is a platform wheel
(``py3-none-<platform>``): its libraries are plain C ABI, independent of the Python and torch
versions, so one wheel per platform serves them all. Where no compiler is at hand the build
goes on without the libraries, and pcflow compiles them on first use instead.
"""

from __future__ import annotations

import importlib.util
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
        for name in native.SOURCES:
            for variant in variants:
                try:
                    path = native.build(name, variant, target, quiet=True)
                except native.NativeBuildError as error:
                    print(f"pcflow: not prebuilding {name} ({variant}): {error}", file=sys.stderr)
                    continue
                print(f"pcflow: prebuilt {path.name}")


class PlatformWheel(bdist_wheel):
    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # the libraries are platform code: install to platlib
        return True


setup(
    cmdclass={"build_py": BuildWithKernels, "bdist_wheel": PlatformWheel},
    distclass=BinaryDistribution,
)
