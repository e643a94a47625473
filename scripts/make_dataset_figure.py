"""Draw a grid of synthetic samples (image above its point cloud) for the docs.

Usage (from the repository root)::

    .venv/bin/python scripts/make_dataset_figure.py [--root .pcflow_cache/synthetic] \
        [--out docs/images/synthetic_samples.png] [--per-category 2]

Generates (or reuses) the default synthetic dataset under ``--root`` and draws, for each
category, ``--per-category`` training objects: one rendered view above 2,500 of its points.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pcflow.data import SyntheticShapes
from pcflow.viz import plot_point_clouds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default=".pcflow_cache/synthetic", help="synthetic dataset folder"
    )
    parser.add_argument("--out", default="docs/images/synthetic_samples.png")
    parser.add_argument("--per-category", type=int, default=2, help="objects per category")
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = SyntheticShapes(
        args.root, args.split, num_points=2500, sample_seed=0, num_workers=args.workers
    )
    views = data.config.views_per_object
    clouds, images, titles = [], [], []
    for category in data.categories:
        objects = [i for i in range(data.num_objects) if data.object_category(i) == category]
        for obj in objects[: args.per_category]:
            sample = data[obj * views]
            clouds.append(sample["points"])
            images.append(sample["image"])
            titles.append(sample["model_id"])
    columns = len(data.categories) if args.per_category == 1 else len(clouds) // 2 + len(clouds) % 2
    plot_point_clouds(clouds, titles=titles, images=images, path=args.out, columns=columns)
    print(f"wrote {Path(args.out)} ({len(clouds)} objects from {args.root})")


if __name__ == "__main__":
    main()
