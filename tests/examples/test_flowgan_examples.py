"""The FlowGAN example programs, run as a user runs them: kill-and-resume, torchrun, evaluate,
reconstruct, and their errors."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcflow.utils import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "flowgan"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"flowgan_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset's synthetic dataset, generated once for this module."""
    from pcflow.recipes.flowgan import FlowGANConfig, build_dataset

    root = tmp_path_factory.mktemp("synthetic-tiny")
    config = FlowGANConfig.preset("tiny").with_overrides(
        [f"data.root={root}", "data.options.num_workers=0"]
    )
    for split in ("train", "val", "test"):
        build_dataset(config, split, progress=False)
    return root


@pytest.fixture
def scratch() -> Path:
    # Checkpoints of the tiny model are ~360 MB: keep them in memory where possible.
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base, prefix="pcflow-examples-") as directory:
        yield Path(directory)


def _train_command(out: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(EXAMPLES / "train.py"),
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"data.root={data_root}",
        "--set",
        "train.threads=1",
        "--set",
        "train.epochs=1",
        *extra,
    ]


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(data_root: Path, scratch: Path) -> None:
    whole, killed = scratch / "whole", scratch / "killed"
    subprocess.run(_train_command(whole, data_root), check=True, env=ENV, capture_output=True)
    command = _train_command(killed, data_root, "--set", "train.checkpoint_every=2")
    process = subprocess.Popen(command, env=ENV, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to clean up, as in a crash or preemption
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    resumed = subprocess.run(
        [*command, "--resume"], check=True, env=ENV, capture_output=True, text=True
    )
    step = int(re.search(r"resumed from .* at step (\d+)", resumed.stderr).group(1))
    assert 2 <= step < 8
    expected, got = _parameters(whole / "checkpoints" / "last.pt"), _parameters(last)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    with open(killed / "log.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["total_loss"]]
    # The killed run's rows after its checkpoint were dropped, then logged again once.
    assert [int(row["step"]) for row in rows] == list(range(1, 9))


@pytest.mark.slow
def test_torchrun_two_processes_stay_in_sync(data_root: Path, scratch: Path) -> None:
    out = scratch / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *_train_command(out, data_root, "--save-rank-weights", "--max-steps", "3")[1:],
    ]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / "rank_weights" / f"rank{r}.pt") for r in (0, 1)]
    initial = load_checkpoint(out / "checkpoints" / "last.pt")
    assert initial["world_size"] == 2 and len(initial["rng"]) == 2
    assert initial["trainer"]["global_step"] == 3
    changed = 0
    for name, value in ranks[0].items():
        if "running" in name or "num_batches" in name:
            continue  # BatchNorm statistics: rank 0's are broadcast at every forward
        assert torch.equal(value, ranks[1][name]), f"ranks differ in {name}"
        changed += 1
    assert changed > 0


@pytest.mark.slow
def test_evaluate_and_reconstruct(data_root: Path, scratch: Path) -> None:
    out = scratch / "run"
    subprocess.run(
        _train_command(out, data_root, "--max-steps", "2"), check=True, env=ENV, capture_output=True
    )
    checkpoint = out / "checkpoints" / "last.pt"
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "evaluate.py"),
            "--checkpoint",
            str(checkpoint),
            "--baselines",
            "--no-progress",
            "--out",
            str(scratch / "eval"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for text in ("CD (x1e3)", "EMD (x1e2)", "F-score (%)", "mug", "table", "mean cloud", "FlowGAN"):
        assert text in result.stdout
    metrics = json.loads((scratch / "eval" / "metrics.json").read_text())
    assert set(metrics["FlowGAN"]["per_category"]) == {"mug", "table"}
    assert metrics["FlowGAN"]["settings"]["fscore_threshold"] == 1e-3
    assert (scratch / "eval" / "pictures.png").stat().st_size > 0
    # The diagnosis: the autoencoding bound beside the image reconstruction, per category.
    assert "autoencoding bound" in result.stdout and "latent distance" in result.stdout
    diagnosis = metrics["FlowGAN"]["diagnosis"]
    assert set(diagnosis["bound"]["per_category"]) == {"mug", "table"}
    assert set(diagnosis["latent_distance"]) == {"mug", "table", "mean"}
    assert diagnosis["temperature"] == 1.0
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "evaluate.py"), "--checkpoint", str(checkpoint),
         "--no-progress", "--no-diagnosis", "--temperature", "0.7", "--out",
         str(scratch / "cold")],
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    cold = json.loads((scratch / "cold" / "metrics.json").read_text())
    assert "diagnosis" not in cold["FlowGAN"] and cold["FlowGAN"]["settings"]["temperature"] == 0.7
    assert cold["FlowGAN"]["mean"]["CD"] != metrics["FlowGAN"]["mean"]["CD"]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "evaluate.py"), "--checkpoint", str(checkpoint),
         "--no-progress", "--trim", "0.1", "--spread", "2", "--out", str(scratch / "trimmed")],
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trimmed = json.loads((scratch / "trimmed" / "metrics.json").read_text())["FlowGAN"]
    assert trimmed["settings"]["trim"] == 0.1 and trimmed["diagnosis"]["trim"] == 0.1
    assert trimmed["diagnosis"]["bound"]["settings"]["trim"] == 0.1
    assert trimmed["settings"]["spread"] == 2 and trimmed["diagnosis"]["spread"] == 2
    assert trimmed["diagnosis"]["bound"]["settings"]["spread"] == 2
    assert "least dense draws dropped" in result.stdout
    assert "2 draws per point thinned by farthest point sampling" in result.stdout
    bad_arguments = (["--trim", "1"], ["--trim", "-0.5"], ["--temperature", "0"], ["--spread", "0"])
    for bad in bad_arguments:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "evaluate.py"), "--checkpoint", str(checkpoint),
             "--no-progress", *bad], env=ENV, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 2 and f"error: {bad[0]} must be" in result.stderr

    image = (np.random.default_rng(0).random((50, 40, 4)) * 255).astype(np.uint8)
    Image.fromarray(image, "RGBA").save(scratch / "input.png")
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "reconstruct.py"),
            "--checkpoint",
            str(checkpoint),
            "--image",
            str(scratch / "input.png"),
            "--num-points",
            "777",
            "--trim",
            "0.1",
            "--out",
            str(scratch / "cloud"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from pcflow.io import read_ply

    points = read_ply(scratch / "cloud.ply")["points"]
    assert points.shape == (777, 3) and np.isfinite(points).all()
    assert (scratch / "cloud.png").stat().st_size > 0

    # A missing or corrupt checkpoint is a clear error, not a traceback.
    (scratch / "bad.pt").write_bytes(b"not a checkpoint")
    for path, message in [(scratch / "none.pt", "does not exist"), (scratch / "bad.pt", "corrupt")]:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "evaluate.py"), "--checkpoint", str(path)],
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and message in result.stderr
        assert "Traceback" not in result.stderr


def test_reconstruct_image_errors(tmp_path: Path) -> None:
    reconstruct = _example("reconstruct")
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((20, 20), np.uint16)).save(tmp_path / "depth.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "tiny.png")
    cases = [
        (tmp_path / "missing.png", "does not exist"),
        (tmp_path / "notes.png", "not an image file"),
        (tmp_path / "depth.png", "16-bit"),
        (tmp_path / "tiny.png", "too small"),
    ]
    for path, message in cases:
        with pytest.raises(reconstruct.ImageError, match=message):
            reconstruct.load_image(path)


def test_reconstruct_reads_rgba_on_white_and_pads_to_square(tmp_path: Path) -> None:
    reconstruct = _example("reconstruct")
    pixels = np.zeros((10, 20, 4), np.uint8)
    pixels[..., 0] = 255  # red, alpha 0 on the left half, opaque on the right half
    pixels[:, 10:, 3] = 255
    Image.fromarray(pixels, "RGBA").save(tmp_path / "object.png")
    image = reconstruct.load_image(tmp_path / "object.png")
    assert image.shape == (3, 20, 20)
    assert torch.allclose(image[:, :5], torch.ones(3, 5, 20))  # white padding on top
    assert torch.allclose(image[:, 5:15, :10], torch.ones(3, 10, 10))  # transparent: white
    assert torch.allclose(image[:, 5:15, 10:], torch.tensor([1.0, 0, 0])[:, None, None])


def test_train_rejects_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = _example("train")
    with pytest.raises(SystemExit, match=r"unknown config key 'train\.epoch'"):
        train.main(["--out", str(tmp_path), "--set", "train.epoch=3"])
    (tmp_path / "bad.yaml").write_text("model:\n  hiden_features: 3\n")
    with pytest.raises(SystemExit, match=r"unknown config key 'model\.hiden_features'"):
        train.main(["--out", str(tmp_path), "--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(SystemExit, match="does not exist"):
        train.main(["--out", str(tmp_path), "--config", str(tmp_path / "none.yaml")])
    with pytest.raises(SystemExit, match="must be an integer"):
        train.main(["--out", str(tmp_path), "--set", "train.epochs=two"])


def test_programs_answer_bad_input_with_one_line(tmp_path: Path) -> None:
    train = _example("train")
    (tmp_path / "tag.yaml").write_text('data: !!python/object/apply:os.system ["echo owned"]\n')
    cases = [
        (["--data", "/nonexistent"], r"^error: data\.source must be .*'/nonexistent'$"),
        (["--config", str(tmp_path / "tag.yaml")], r"^error: .*tag\.yaml is not valid for pcflow"),
        (["--set", "loss.gan_kind=lsgn"], r"^error: config key 'loss\.gan_kind' must be one of"),
    ]
    for arguments, message in cases:
        out = tmp_path / "run"
        with pytest.raises(SystemExit, match=message) as info:
            train.main(["--preset", "tiny", "--out", str(out), "--no-progress", *arguments])
        assert "\n" not in str(info.value.code)
    # The output folder is checked before the data is looked at.
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match=r"^error: cannot write to the output folder .*file/run"):
        train.main(["--preset", "tiny", "--out", str(tmp_path / "file" / "run"), "--data", "/x"])
    evaluate = _example("evaluate")
    with pytest.raises(SystemExit, match=r"^error: cannot write to the output folder .*file/eval"):
        evaluate.main(
            ["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "file/eval")]
        )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "train.py"), "--preset", "tiny", "--data", "/nonexistent",
         "--out", str(tmp_path / "run"), "--no-progress"],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.source")


def test_reconstruct_refuses_a_decompression_bomb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    reconstruct = _example("reconstruct")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a real bomb needs gigabytes
    for side in (12, 30):  # Pillow warns above its limit, raises above twice the limit
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(tmp_path / "bomb.png")
        with pytest.raises(reconstruct.ImageError, match="too large to read safely"):
            reconstruct.load_image(tmp_path / "bomb.png")
    code = reconstruct.main(
        ["--checkpoint", str(tmp_path / "none.pt"), "--image", str(tmp_path / "bomb.png")]
    )
    assert code != 0
    assert capsys.readouterr().err.strip().startswith("error: image")


def test_user_errors_become_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from PIL.Image import DecompressionBombError

    from pcflow import cli as common

    cases = [
        (OSError(errno.ENOSPC, "No space left on device", "runs/x/log.csv"), "error: No space"),
        (DecompressionBombError("Image size (1 pixels) exceeds limit"), "error: Image size"),
        (KeyError("unknown config key 'a.b'"), "error: unknown config key 'a.b'"),
        (ValueError("two\n  lines"), "error: two lines"),
    ]
    for raised, message in cases:
        with pytest.raises(SystemExit) as info, common.user_errors():
            raise raised
        assert str(info.value.code).startswith(message) and "\n" not in str(info.value.code)
    with pytest.raises(ZeroDivisionError), common.user_errors():  # a bug keeps its traceback
        raise ZeroDivisionError
    monkeypatch.setenv("PCFLOW_TRACEBACK", "1")
    with pytest.raises(ValueError, match="shown"), common.user_errors():
        raise ValueError("shown with its traceback")


def test_preset_files_are_written_from_the_presets(tmp_path: Path) -> None:
    from pcflow.recipes.flowgan import PRESETS, FlowGANConfig

    write_configs = _example("write_configs")
    # The shipped files are current: edit a preset, then run write_configs.py.
    assert write_configs.main(["--check"]) == 0
    assert write_configs.main(["--check", "--folder", str(tmp_path)]) == 1  # none written yet
    assert write_configs.main(["--folder", str(tmp_path)]) == 0
    for name in PRESETS:
        text = (tmp_path / f"{name}.yaml").read_text()
        assert text == (EXAMPLES / "configs" / f"{name}.yaml").read_text()
        assert FlowGANConfig.from_yaml(tmp_path / f"{name}.yaml") == FlowGANConfig.preset(name)
    (tmp_path / "tiny.yaml").write_text(text.replace("epochs: 2", "epochs: 3"))
    assert write_configs.main(["--check", "--folder", str(tmp_path)]) == 1


def test_a_yaml_file_applies_over_the_preset(tmp_path: Path) -> None:
    from pcflow import cli as common
    from pcflow.recipes.flowgan import FlowGANConfig

    train = _example("train")
    (tmp_path / "more.yaml").write_text("data:\n  synthetic:\n    objects_per_category: 4\n")
    parser = argparse.ArgumentParser()
    common.add_config_arguments(parser, list(FlowGANConfig.PRESETS))
    args = parser.parse_args(["--preset", "tiny", "--config", str(tmp_path / "more.yaml")])
    config = common.resolve_config(args, FlowGANConfig)
    # Nested sections merge key by key: the tiny preset's other synthetic settings stay.
    assert config.data.synthetic["objects_per_category"] == 4
    assert config.data.synthetic["categories"] == ["mug", "table"]
    assert config.train.epochs == 2
    with pytest.raises(SystemExit, match=r"'loss\.gan_kind' must be one of 'lsgan'"):
        train.main(["--out", str(tmp_path), "--set", "loss.gan_kind=lsgn"])


def _metrics(path: Path, flow_cd: float, bound_cd: float, psgn_cd: float) -> Path:
    def result(cd: float, categories: dict[str, float]) -> dict:
        per = {name: {"CD": cd * s, "EMD": 0.1, "F-score": 0.4, "count": 2.0}
               for name, s in categories.items()}  # fmt: skip
        return {"per_category": per, "mean": {"CD": cd, "EMD": 0.1, "F-score": 0.4},
                "settings": {"split": "test"}}  # fmt: skip

    scale = {"mug": 0.5, "table": 1.5}
    flow = {**result(flow_cd, scale), "diagnosis": {"bound": result(bound_cd, scale)}}
    payload = {"FlowGAN": flow, "PSGN-style": result(psgn_cd, scale), "checkpoints": {}}
    path.write_text(json.dumps(payload))
    return path


def test_summarize_gives_mean_and_sample_std_over_seeds(tmp_path: Path) -> None:
    summarize = _example("summarize")
    files = [
        _metrics(tmp_path / f"s{i}.json", cd, cd - 0.001, 0.005)
        for i, cd in enumerate((0.004, 0.006, 0.008))
    ]
    text = summarize.summarize(files)
    # CD x1e3: mean 6.00, sample std 2.00; the bound 5.00 ± 2.00; one value per seed: ± 0.00.
    assert "| FlowGAN | 6.00 ± 2.00 |" in text
    assert "| FlowGAN: autoencoding bound | 5.00 ± 2.00 |" in text
    assert "| PSGN-style | 5.00 ± 0.00 |" in text
    assert "| table | 9.00 | 7.50 |" in text  # per category, means over seeds
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"FlowGAN": json.loads(files[0].read_text())["FlowGAN"]}))
    with pytest.raises(SystemExit, match="holds methods"):
        summarize.summarize([files[0], other])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"not a readable metrics\.json"):
        summarize.summarize([tmp_path / "bad.json"])


def test_sampling_floor_is_the_distance_between_two_samples_of_one_surface(
    data_root: Path,
) -> None:
    from pcflow.recipes.flowgan import FlowGANConfig, build_dataset

    floor = _example("sampling_floor")
    config = FlowGANConfig.preset("tiny").with_overrides(
        [f"data.root={data_root}", "data.options.num_workers=0"]
    )
    table = floor.sampling_floor(config, "val", 64, None)
    assert sorted(table) == ["mug", "table"]
    # Brute force in float64 over the same samples (evaluation mode: fixed per-sample seeds).
    dataset = build_dataset(config.with_overrides(["data.num_points=64"]), "val",
                            evaluation=True, progress=False)  # fmt: skip
    by_category: dict[str, list[float]] = {}
    for index in range(len(dataset)):
        sample = dataset[index]
        a, b = sample["points"].double(), sample["points_target"].double()
        d = torch.cdist(a, b) ** 2
        chamfer = float(d.min(1).values.mean() + d.min(0).values.mean())
        by_category.setdefault(sample["category_name"], []).append(chamfer)
    for name, (chamfer, score) in table.items():
        assert chamfer == pytest.approx(np.mean(by_category[name]), rel=1e-5)
        assert 0.0 <= score <= 1.0


def test_sampling_arguments_default_to_the_checkpoints_settings() -> None:
    from pcflow import cli as common
    from pcflow.flows import SamplingOptions
    from pcflow.recipes.flowgan import EvalConfig

    parser = argparse.ArgumentParser()
    common.add_sampling_arguments(parser)
    saved = EvalConfig(temperature=0.9, trim=0.1, spread=2)
    settings = common.sampling_settings
    assert settings(parser.parse_args([]), saved) == SamplingOptions(0.9, 0.1, 2)
    given = parser.parse_args(["--trim", "0", "--temperature", "1", "--spread", "1"])
    assert settings(given, saved) == SamplingOptions()
    for bad, message in [
        (["--trim", "1"], r"--trim must be a number in \[0, 1\), got 1.0"),
        (["--trim", "nan"], r"--trim must be a number in \[0, 1\), got nan"),
        (["--temperature", "inf"], "--temperature must be a positive finite number, got inf"),
        (["--spread", "-1"], "--spread must be a positive int, got -1"),
    ]:
        with pytest.raises(ValueError, match=message):
            settings(parser.parse_args(bad), saved)


def test_sampling_grid_rejects_bad_settings(capsys: pytest.CaptureFixture) -> None:
    grid = _example("sampling_grid")
    cases = {
        ("--trim", "0", "1"): "error: --trim must be a number in [0, 1), got 1.0",
        ("--spread", "1", "0"): "error: --spread must be a positive int, got 0",
        (
            "--temperature",
            "1",
            "0",
        ): "error: --temperature must be a positive finite number, got 0.0",
    }
    for bad, message in cases.items():
        assert grid.main(["--checkpoint", "missing.pt", "--out", "x.json", *bad]) == 2
        assert capsys.readouterr().err.strip() == message


def test_sampling_grid_scores_what_reconstruct_samples(data_root: Path) -> None:
    from pcflow.flows import SamplingOptions
    from pcflow.metrics import evaluate_reconstruction as evaluate
    from pcflow.recipes.flowgan import FlowGAN, FlowGANConfig, build_dataset

    grid = _example("sampling_grid")
    config = FlowGANConfig.preset("tiny").with_overrides(
        [f"data.root={data_root}", "data.options.num_workers=0"]
    )
    torch.manual_seed(0)
    model = FlowGAN(config).eval()
    dataset = build_dataset(config, "val", evaluation=True, progress=False)
    single = {}
    for temperature in (1.0, 0.7):
        got = single[temperature] = grid.sampling_grid(
            model, dataset, [temperature], [0.0], [1], seed=3
        )
        assert list(got) == [f"T{temperature}-q0-s1"]
        torch.manual_seed(3)
        expected = evaluate(
            lambda batch, n, t=temperature: model.reconstruct(
                batch["image"], n, SamplingOptions(temperature=t)
            ),
            dataset, **config.eval.protocol(), split="val",
        )  # fmt: skip
        assert got[f"T{temperature}-q0-s1"]["mean"] == expected.to_dict()["mean"]
    # Two temperatures in one grid: the first one's draws are those a grid of it alone makes,
    # and the second draws its own.
    both = grid.sampling_grid(model, dataset, [1.0, 0.5], [0.0], [1], seed=3)
    assert list(both) == ["T1.0-q0-s1", "T0.5-q0-s1"]
    assert both["T1.0-q0-s1"]["mean"] == single[1.0]["T1.0-q0-s1"]["mean"]
    assert both["T0.5-q0-s1"]["mean"] != both["T1.0-q0-s1"]["mean"]


def test_chamfer_directions_against_brute_force(data_root: Path) -> None:
    from pcflow.recipes.flowgan import FlowGANConfig, build_dataset

    directions = _example("chamfer_directions")
    config = FlowGANConfig.preset("tiny").with_overrides(
        [f"data.root={data_root}", "data.options.num_workers=0", "data.num_points=64"]
    )
    dataset = build_dataset(config, "val", evaluation=True, progress=False)

    def predict(batch: dict, n: int) -> torch.Tensor:
        # Shrunk toward the centre, and a quarter of the points pushed off: the two directions
        # differ, and neither is zero.
        cloud = 0.8 * batch["points"][:, :n].clone()
        cloud[:, : n // 4] += 0.3
        return cloud

    table = directions.chamfer_directions(predict, dataset, 64, batch_size=3)
    assert sorted(table) == ["mean", "mug", "table"]
    by_category: dict[str, list[tuple[float, float]]] = {}
    for index in range(len(dataset)):
        sample = dataset[index]
        truth = sample["points"].double()
        pred = predict({"points": sample["points"][None]}, 64)[0].double()
        d = torch.cdist(pred, truth) ** 2
        pair = (float(d.min(1).values.mean()), float(d.min(0).values.mean()))
        by_category.setdefault(sample["category_name"], []).append(pair)
    for name, pairs in by_category.items():
        expected = np.mean(pairs, axis=0)
        assert table[name]["accuracy"] == pytest.approx(expected[0], rel=1e-5)
        assert table[name]["completeness"] == pytest.approx(expected[1], rel=1e-5)
        assert table[name]["accuracy"] > 1.2 * table[name]["completeness"]
    mean = np.mean([table[name]["accuracy"] for name in by_category])
    assert table["mean"]["accuracy"] == pytest.approx(mean)
    with pytest.raises(ValueError, match=r"predict returned shape \(3, 32, 3\), expected"):
        directions.chamfer_directions(lambda batch, n: batch["points"][:, :32], dataset, 64, 3)
    with pytest.raises(ValueError, match="holding NaN or infinite points"):
        nan = float("nan")
        directions.chamfer_directions(lambda b, n: b["points"].clone().fill_(nan), dataset, 64, 3)
    with pytest.raises(ValueError, match="the evaluation dataset is empty"):
        directions.chamfer_directions(predict, torch.utils.data.Subset(dataset, []), 64)
