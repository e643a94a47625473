"""Reconstruct a point cloud of any size from one image file with a trained FlowGAN.

Example:

    pcflow-flowgan reconstruct --checkpoint runs/quick/checkpoints/last.pt \\
        --image chair.png --num-points 10000 --out chair
    # writes chair.ply, chair.png and chair.html (turn it in a browser)

The image may be any format Pillow reads (PNG, JPEG, ...), RGB, RGBA (composited on white, as
the training renderings), greyscale or palette; non-square images are padded with white to a
square, then resized to the model's input size.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pcflow.cli import (
    add_sampling_arguments,
    check_sampling_arguments,
    command_line_program,
    sampling_settings,
)
from pcflow.io import write_ply
from pcflow.recipes.flowgan import load_model
from pcflow.utils import CheckpointError
from pcflow.viz import plot_point_clouds, view_point_clouds


class ImageError(ValueError):
    """The image file cannot be used."""


def load_image(path: Path) -> torch.Tensor:
    """Read an image file as RGB ``(3, S, S)`` in ``[0, 1]``, square, on white."""
    if not path.is_file():
        raise ImageError(f"image file {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1 and 2 times its pixel limit; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            f"image {str(path)!r} is too large to read safely (a decompression bomb?): {error}"
        ) from None
    except UnidentifiedImageError as error:
        raise ImageError(
            f"{str(path)!r} is not an image file Pillow can read (PNG, JPEG, ...): {error}"
        ) from error
    except OSError as error:
        raise ImageError(
            f"cannot read image {str(path)!r} (truncated or corrupt?): {error}"
        ) from error
    if image.mode in ("I", "I;16", "F"):
        raise ImageError(
            f"image {str(path)!r} has mode {image.mode!r} (16-bit or float values, e.g. a depth "
            "map); give an 8-bit RGB, RGBA or greyscale picture"
        )
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "CMYK", "1"):
        raise ImageError(f"image {str(path)!r} has unsupported mode {image.mode!r}")
    image = image.convert("RGBA")
    width, height = image.size
    if min(width, height) < 8:
        raise ImageError(f"image {str(path)!r} is too small ({width}x{height} pixels)")
    side = max(width, height)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(image, ((side - width) // 2, (side - height) // 2))
    white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, canvas).convert("RGB")
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@command_line_program
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pcflow-flowgan reconstruct", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True, help="the input picture")
    parser.add_argument("--num-points", type=int, default=2500, help="points to sample (any)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output prefix: OUT.ply and OUT.png (default: next to the image)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled points")
    parser.add_argument(
        "--sample-latent", action="store_true", help="draw the latent instead of its mean"
    )
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_sampling_arguments(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.num_points < 1:
        print(f"error: --num-points must be positive, got {args.num_points}", file=sys.stderr)
        return 2
    try:
        image = load_image(args.image)
        model = load_model(args.checkpoint)
    except (ImageError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    sampling = sampling_settings(args, model.config.eval)
    prefix = args.out if args.out is not None else args.image.with_suffix("")
    if not prefix.parent.is_dir():
        print(
            f"error: --out {str(prefix)!r}: the folder {str(prefix.parent)!r} does not exist "
            "(create it first)",
            file=sys.stderr,
        )
        return 2
    cloud = model.reconstruct(
        image[None], args.num_points, sampling, sample_latent=args.sample_latent
    )[0]
    ply = prefix.with_name(prefix.name + ".ply")
    png = prefix.with_name(prefix.name + ".png")
    if png.resolve() == args.image.resolve():
        png = prefix.with_name(prefix.name + "_cloud.png")
    write_ply(ply, cloud.numpy())
    html = prefix.with_name(prefix.name + ".html")
    # The interactive view, coloured by each point's log-density under the model (by height
    # for the PSGN-style baseline, or a drawn latent, which the page could not reproduce).
    density = None
    if hasattr(model, "log_density") and not args.sample_latent:
        density = [model.log_density(image[None], cloud[None])[0]]
    view_point_clouds(
        [cloud], html, titles=[f"{args.num_points} points"], images=[image], values=density,
        value_name="log-density", title=f"{args.image.name}: {args.num_points} points",
    )  # fmt: skip
    try:
        plot_point_clouds([cloud], titles=[f"{args.num_points} points"], images=[image], path=png)
    except ImportError as error:
        print(f"no picture: {error}", file=sys.stderr)
        png = None
    print(f"wrote {ply}, {html}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
