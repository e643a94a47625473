"""Regenerate the documentation's pictures (``docs/images/*.png``) from the library itself.

Usage, from the checkout::

    .venv/bin/python scripts/docs_figures.py                  # every picture
    .venv/bin/python scripts/docs_figures.py --only flow-steps --fit-seconds 120

Pictures:

- ``getting-started-samples.png``: runs the first Python block of ``docs/index.md`` as it is and
  keeps the picture it saves, so the home page shows exactly what its example makes.
- ``flow-steps.png``: fits a DPF-Nets flow to one synthetic chair for ``--fit-seconds`` (one
  minute by default, on CPU), then carries Gaussian points through its layers and draws them
  every few layers.
- ``reconstructions.png``: one test image per category of the synthetic dataset, the cloud a
  trained FlowGAN reconstructs from it and the true cloud, both seen from the image's viewpoint
  (the grid every evaluation writes), when a checkpoint exists (``--checkpoint``, or the newest
  ``runs/*/checkpoints/last.pt``); otherwise the images with their ground-truth clouds.

Interactive views (``docs/views/*.html``, `pcflow.viz`; the pages embed them):

- ``flow-in-motion.html``: the same fitted flow as ``flow-steps.png``, every layer on a slider
  (`pcflow.viz.view_flow`), two draws of 2,000 points.
- ``flowgan-gallery.html``: one test image per category, FlowGAN's cloud coloured by its
  per-point log-density, and the truth (`pcflow.viz.view_sample_reconstructions`), from
  ``--checkpoint`` when given; otherwise from a small flow-only FlowGAN (the ``tiny`` preset
  with a 12-layer flow of width 64, no critic) trained here for ``--gallery-steps`` steps on
  the built-in synthetic data.

The pictures are kept small (a few hundred kB at most) and the views under 3 MB, so that they
can be committed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
__all__ = [
    "figure_flow_steps",
    "figure_getting_started",
    "figure_reconstructions",
    "main",
    "view_flowgan_gallery",
]


def _first_python_block(markdown: Path) -> str:
    match = re.search(r"^```python\n(.*?)^```", markdown.read_text(), re.MULTILINE | re.DOTALL)
    if match is None:
        raise SystemExit(f"{markdown} has no ```python block")
    return match.group(1)


def figure_getting_started(out: Path) -> Path:
    """Run the home page's example in a temporary folder and keep its ``samples.png``."""
    code = _first_python_block(ROOT / "docs" / "index.md")
    with tempfile.TemporaryDirectory() as folder:
        previous = Path.cwd()
        torch.manual_seed(0)
        try:
            import os

            os.chdir(folder)
            exec(compile(code, "docs/index.md", "exec"), {"__name__": "__docs__"})
        finally:
            os.chdir(previous)
        target = out / "getting-started-samples.png"
        shutil.copyfile(Path(folder) / "samples.png", target)
    return target


def _synthetic(root: Path, split: str, categories: tuple[str, ...], num_points: int) -> Any:
    from pcflow.data import SyntheticConfig, SyntheticShapes

    config = SyntheticConfig(
        categories=categories, objects_per_category=10, views_per_object=2, image_size=64
    )
    return SyntheticShapes(
        root, split, num_points=num_points, config=config, sample_seed=0, num_workers=0,
        progress=False, regenerate=True,
    )  # fmt: skip


def _fit_chair_flow(data_root: Path, fit_seconds: float, seed: int) -> tuple[Any, Any, Any]:
    """A 21-layer flow and its latent fitted to one synthetic chair for ``fit_seconds``."""
    from pcflow.flows import dpf_flow

    torch.manual_seed(seed)
    chair = _synthetic(data_root / "chair", "train", ("chair",), 2048)[0]["points"].unsqueeze(0)
    flow = dpf_flow(context_features=32, num_layers=21, hidden_features=64)
    latent = torch.nn.Parameter(torch.zeros(1, 32))
    optimizer = torch.optim.Adam([*flow.parameters(), latent], lr=2e-3)
    start, step = time.monotonic(), 0
    while time.monotonic() - start < fit_seconds:
        nll = -flow.log_prob(chair, latent).mean() / chair.shape[1]
        optimizer.zero_grad()
        nll.backward()
        optimizer.step()
        step += 1
    print(f"[flow-steps] {step} steps in {fit_seconds:.0f} s, {nll.item():.3f} nats per point")
    return flow, latent.detach(), chair


def figure_flow_steps(
    out: Path, data_root: Path, fit_seconds: float, seed: int = 0, views: Path | None = None
) -> list[Path]:
    """Fit a flow to one synthetic chair, then draw Gaussian points carried through its layers
    (and, with ``views``, write them as an interactive view there too)."""
    from pcflow.viz import plot_point_clouds, view_flow

    flow, latent, chair = _fit_chair_flow(data_root, fit_seconds, seed)
    made = []
    if views is not None:
        made.append(views / "flow-in-motion.html")
        view_flow(
            flow, latent.expand(2, -1), made[-1], num_points=2000, seed=seed,
            titles=["the chair's latent, draw 1", "the chair's latent, draw 2"],
            title="A flow fitted to one chair, layer by layer", layers_per_second=4.0,
            point_size=2.0, panel_size=300,
        )  # fmt: skip
    layers = flow.layers  # data -> noise; sampling runs them backwards with layer.inverse
    shown = {round(len(layers) * k / 6) for k in range(7)}  # 7 stages, then the data
    clouds, titles = [], []
    with torch.no_grad():
        points = torch.randn(1, 4000, 3)
        for done in range(len(layers) + 1):
            if done in shown:
                # Each panel scaled to fit: the noise spans far more than the unit-sphere chair.
                clouds.append(points[0] / points[0].abs().max())
                titles.append("Gaussian noise" if done == 0 else f"after {done} layers")
            if done < len(layers):
                points, _ = layers[len(layers) - 1 - done].inverse(points, latent)
    clouds.append(chair[0] / chair[0].abs().max())
    titles.append("the chair (data)")
    target = out / "flow-steps.png"
    plot_point_clouds(
        clouds, titles=titles, path=target, columns=4, point_size=1.0, panel_size=2.2, dpi=80
    )
    return [target, *made]


def _find_checkpoint() -> Path | None:
    found = sorted((ROOT / "runs").glob("*/checkpoints/last.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def figure_reconstructions(
    out: Path, data_root: Path, checkpoint: Path | None, sampling: dict[str, float]
) -> Path:
    """Test images of the synthetic split | FlowGAN's reconstructions | the truth, seen from the
    images' viewpoints: the picture every evaluation writes (`pcflow.viz.plot_reconstructions`).
    ``sampling`` overrides the checkpoint's ``eval`` sampling settings (temperature, trim,
    spread)."""
    from pcflow.viz import plot_reconstructions

    checkpoint = checkpoint or _find_checkpoint()
    target = out / "reconstructions.png"
    if checkpoint is None:
        data = _synthetic(data_root / "all", "test", ("airplane", "car", "chair", "lamp"), 2500)
        picks = [data[i * len(data) // 4] for i in range(4)]
        plot_reconstructions(
            [s["image"] for s in picks], {"truth (no checkpoint)": [s["points"] for s in picks]},
            [s["points"] for s in picks], target, cameras=[s["camera"] for s in picks],
            labels=[s["category_name"] for s in picks], dpi=80,
        )  # fmt: skip
        print("[reconstructions] no checkpoint: drew the ground-truth clouds")
        return target
    from pcflow.data import select_per_category
    from pcflow.flows import SamplingOptions
    from pcflow.recipes import flowgan
    from pcflow.viz import draw_reconstructions

    model = flowgan.load_model(checkpoint)
    # Ground truth as dense as the prediction (training may use fewer points per cloud).
    config = model.config.with_overrides(["data.num_points=2500"])
    data = flowgan.build_dataset(config, "test", evaluation=True, progress=False)
    picks = [data[i] for i in select_per_category(data, 1)]
    settings = {**model.config.eval.sampling.keywords(), **sampling}
    # The picture every evaluation writes, with FlowGAN alone: two examples a row.
    draw_reconstructions(
        {"FlowGAN": model}, picks, target, num_points=2500, seed=0,
        sampling=SamplingOptions(**settings), examples_per_row=2, point_size=0.8, dpi=80,
    )  # fmt: skip
    print(f"[reconstructions] from {checkpoint}")
    return target


def _small_flowgan(data_root: Path, steps: int) -> Any:
    """The ``tiny`` preset with a 12-layer flow of width 64, flow-only (no critic: half the time
    per step), trained ``steps`` steps here (no validation)."""
    from pcflow.recipes import flowgan

    config = flowgan.FlowGANConfig.preset("tiny").with_overrides([
        f"data.root={data_root / 'flowgan-tiny'}", "data.num_points=512",
        "data.synthetic.categories=[airplane, chair, lamp, mug]",
        "data.synthetic.points_per_object=2500", "model.num_layers=12",
        "model.hidden_features=64", "model.latent_features=16", "model.adversarial=false",
        "optim.lr=0.002", "train.epochs=1000", "train.batch_size=8",
    ])  # fmt: skip
    train_set = flowgan.build_dataset(config, "train", progress=False)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as run:
        trainer = flowgan.Trainer(config, run, train_set, None, progress=False)
        trainer.fit(max_steps=steps)
        model = trainer.model
    print(f"[gallery] trained {steps} steps in {time.monotonic() - start:.0f} s")
    return model, config


def view_flowgan_gallery(views: Path, data_root: Path, checkpoint: Path | None, steps: int) -> Path:
    """One test image per category | FlowGAN's cloud coloured by its per-point log-density |
    the truth, as an interactive view: the gallery `evaluate.py` writes."""
    from pcflow.data import select_per_category
    from pcflow.recipes import flowgan
    from pcflow.viz import point_log_density, view_sample_reconstructions

    if checkpoint is not None:
        model = flowgan.load_model(checkpoint)
        config = model.config
        source = str(checkpoint)
    else:
        model, config = _small_flowgan(data_root, steps)
        source = f"a small flow-only FlowGAN trained {steps} steps by scripts/docs_figures.py"
    config = config.with_overrides(["data.num_points=2000"])
    data = flowgan.build_dataset(config, "test", evaluation=True, progress=False)
    picks = [data[i] for i in select_per_category(data, 1)]
    images = torch.stack([sample["image"] for sample in picks])
    torch.manual_seed(0)
    clouds = model.reconstruct(images, 2000)
    # The lead's wiring in evaluate.py is these two calls.
    log_density = point_log_density(
        model.generator.flow, clouds, model.image_latent(images),
        scale=model.config.model.cloud_scale,
    )  # fmt: skip
    target = views / "flowgan-gallery.html"
    view_sample_reconstructions(
        picks, {"FlowGAN": list(clouds)}, target, log_densities={"FlowGAN": list(log_density)},
        title=f"FlowGAN reconstructions ({source})", panel_size=240, point_size=2.0,
    )  # fmt: skip
    return target


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--data", type=Path, default=ROOT / "data_cache" / "docs-figures")
    parser.add_argument("--views", type=Path, default=ROOT / "docs" / "views")
    parser.add_argument("--fit-seconds", type=float, default=60.0)
    parser.add_argument("--gallery-steps", type=int, default=800)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--trim", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--spread", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=["getting-started", "flow-steps", "reconstructions", "gallery"]
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.views.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only or ["getting-started", "flow-steps", "reconstructions", "gallery"])
    made = []
    if "getting-started" in wanted:
        made.append(figure_getting_started(args.out))
    if "flow-steps" in wanted:
        made.extend(figure_flow_steps(args.out, args.data, args.fit_seconds, views=args.views))
    if "reconstructions" in wanted:
        given = {"trim": args.trim, "spread": args.spread}
        sampling = {key: value for key, value in given.items() if value is not None}
        made.append(figure_reconstructions(args.out, args.data, args.checkpoint, sampling))
    if "gallery" in wanted:
        made.append(
            view_flowgan_gallery(args.views, args.data, args.checkpoint, args.gallery_steps)
        )
    for path in made:
        print(f"wrote {path.relative_to(ROOT) if ROOT in path.parents else path} "
              f"({path.stat().st_size // 1024} kB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
