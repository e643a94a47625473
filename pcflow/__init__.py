"""pcflow: normalizing-flow building blocks for 3D point clouds, and the FlowGAN recipe.

Subpackages are imported on use (``from pcflow.transforms import PointAffineCoupling``), so
``import pcflow`` stays light, and none of them loads matplotlib, scipy or TensorBoard until a
function needs it (``pcflow._nflows`` keeps nflows' unused ``pyplot`` import from loading
matplotlib).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pcflow import _nflows

_nflows.install()

try:
    __version__ = version("pcflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
