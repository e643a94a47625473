"""The DPF-Nets recipe on the tiny preset: a training step, an exact resume, the programs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from pcflow.data import build_dataset
from pcflow.io import read_ply
from pcflow.models import FlowPrior, StandardNormalPrior
from pcflow.recipes.dpfnets import DPFNetsConfig, ELBOLoss, Trainer, build_model, load_model
from pcflow.utils import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _program(name: str):
    path = ROOT / "examples" / "dpfnets" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"dpfnets_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset's points-only data, generated once for this module."""
    root = tmp_path_factory.mktemp("dpfnets-tiny")
    config = DPFNetsConfig.preset("tiny").with_overrides([f"data.root={root}"])
    for split in ("train", "val", "test"):
        build_dataset(config.data, split, images=False, progress=False)
    return root


def _config(data_root: Path, *overrides: str) -> DPFNetsConfig:
    return DPFNetsConfig.preset("tiny").with_overrides([f"data.root={data_root}", *overrides])


def _sets(config: DPFNetsConfig):
    train = build_dataset(config.data, "train", images=False, progress=False)
    val = build_dataset(config.data, "val", sample_seed=0, images=False, progress=False)
    return train, val


def test_presets_and_the_ablations_prior() -> None:
    paper = DPFNetsConfig.preset("paper")
    assert (paper.model.latent_features, paper.model.num_layers) == (128, 63)
    assert (paper.model.prior_layers, paper.model.prior_hidden_features) == (7, 128)
    assert (paper.train.batch_size, paper.optim.lr, paper.data.num_points) == (64, 2.56e-4, 2048)
    assert isinstance(build_model(DPFNetsConfig.preset("tiny")).prior, FlowPrior)
    normal = DPFNetsConfig.preset("tiny").with_overrides(["model.prior=normal"])
    assert isinstance(build_model(normal).prior, StandardNormalPrior)
    with pytest.raises(ValueError, match=r"model\.prior"):
        DPFNetsConfig.preset("tiny").with_overrides(["model.prior=gaussian"])


def test_the_loss_is_the_weighted_negative_elbo() -> None:
    config = DPFNetsConfig.preset("tiny").with_overrides(
        ["loss.prior_weight=0.5", "loss.entropy_weight=2"]
    )
    model = build_model(config)
    points, target = torch.rand(3, 30, 3), torch.rand(3, 40, 3)
    torch.manual_seed(5)
    loss, terms = ELBOLoss(model, config)(points, target)
    torch.manual_seed(5)  # the same posterior draw
    posterior = model.posterior(points)
    z = posterior.rsample()
    nll_points = -model.flow.log_prob(model.normalize(target), context=z)
    expected = nll_points - 0.5 * model.prior.log_prob(z) - 2 * posterior.entropy()
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-4)
    assert torch.allclose(terms["nll_points"], nll_points)


def test_one_training_step_updates_every_network(data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root)
    train, val = _sets(config)
    trainer = Trainer(config, tmp_path / "run", train, val, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    state = trainer.fit(max_steps=1)
    assert state.global_step == 1 and state.skipped_steps == 0
    after = trainer.model.state_dict()
    for prefix in ("point_encoder.", "posterior_head.", "prior.", "flow."):
        changed = [
            k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])
        ]
        assert changed, f"no weight of {prefix} changed in a step"


def test_a_resumed_run_ends_with_the_same_weights(data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root, "train.epochs=2")
    train, val = _sets(config)
    Trainer(config, tmp_path / "straight", train, val, progress=False).fit()
    Trainer(config, tmp_path / "resumed", train, val, progress=False).fit(max_steps=3)
    Trainer(config, tmp_path / "resumed", train, val, resume=True, progress=False).fit()
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_train_then_sample_end_to_end(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--preset", "tiny", "--set", f"data.root={data_root}", "--no-progress"]
    assert _program("train").main([*common, "--out", str(run)]) == 0
    _, config = load_model(run / "checkpoints" / "last.pt")
    assert config.data.root == str(data_root)
    sample = _program("sample").main
    out = tmp_path / "samples"
    arguments = ["--checkpoint", str(run / "checkpoints" / "last.pt"), "--num-shapes", "3",
                 "--num-points", "100", "--out", str(out), "--nearest"]  # fmt: skip
    assert sample(arguments) == 0
    clouds = [read_ply(out / f"shape_{i:03d}.ply") for i in range(3)]
    assert all(c["points"].shape == (100, 3) for c in clouds)
    assert not (clouds[0]["points"] == clouds[1]["points"]).all()
    assert (out / "nearest.png").stat().st_size > 0
    with pytest.raises(SystemExit, match=r"already holds shape_000\.ply"):
        sample(arguments)  # a user's files are not overwritten silently
    assert sample([*arguments, "--overwrite"]) == 0
    with pytest.raises(SystemExit, match="--num-shapes must be at least 1"):
        sample([*arguments[:2], "--num-shapes", "0", "--out", str(tmp_path / "none")])


def test_screen_sampling_scores_each_setting_and_the_oracle(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    common = ["--preset", "tiny", "--set", f"data.root={data_root}", "--no-progress"]
    assert _program("train").main([*common, "--out", str(run), "--max-steps", "1"]) == 0
    screen = _program("screen_sampling").main
    checkpoint = ["--checkpoint", str(run / "checkpoints" / "last.pt"), "--points", "64"]
    settings = ["--setting", "1,0,1,random", "--setting", "1,0.1,1,sobol"]
    assert screen([*checkpoint, *settings]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["oracle", "generate", "generate"]
    assert "sobol" in lines[2] and "1-NNA-CD" in lines[1]
    assert screen([*checkpoint, *settings[:2], "--autoencode"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("autoencode T=1")
    with pytest.raises(SystemExit):
        screen([*checkpoint, "--setting", "1,0,1,halton"])
    picture = _program("nearest_picture").main
    out = tmp_path / "nearest.png"
    arguments = [str(run / "checkpoints" / "last.pt"), "--out", str(out), "--points", "64",
                 "--per-category", "2", "--draws", "sobol"]  # fmt: skip
    assert picture(arguments) == 0
    assert out.stat().st_size > 0
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        picture(arguments)  # a user's picture is not replaced silently


def test_noise_conditioned_training_step(data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root, "model.noise_scale=0.05", "train.epochs=1")
    model = build_model(config)
    assert model.noise_scale == 0.05
    assert model.flow_context(torch.zeros(2, config.model.latent_features)).shape[1] == (
        config.model.latent_features + 1
    )
    Trainer(config, tmp_path / "run", *_sets(config), progress=False).fit(max_steps=1)
    loaded, _ = load_model(tmp_path / "run" / "checkpoints" / "last.pt")
    assert loaded.noise_scale == 0.05
    assert loaded.sample(2, 30).shape == (2, 30, 3)


def test_train_refuses_a_folder_holding_a_run(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--preset", "tiny", "--set", f"data.root={data_root}", "--no-progress"]
    train = _program("train").main
    assert train([*common, "--out", str(run), "--max-steps", "1"]) == 0
    with pytest.raises(SystemExit, match="already holds a run"):
        train([*common, "--out", str(run)])
    assert train([*common, "--out", str(run), "--resume", "--max-steps", "2"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["trainer"]["global_step"] == 2


def test_summarize_gives_mean_and_std_over_seeds_and_checks_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    values = {0: (0.60, 0.90, 0.50), 1: (0.70, 0.80, 0.52), 2: (0.65, 0.85, 0.48)}
    folders = []
    for seed, (model, ablation, oracle) in values.items():
        folder = tmp_path / f"car-s{seed}"
        folder.mkdir()
        scores = {row: {"car": {"1-NNA-CD": v, "COV-CD": 0.5, "MMD-CD": 0.01}}
                  for row, v in (("DPF-Nets", model), ("ablation: N(0, I) prior", ablation),
                                 ("oracle", oracle))}  # fmt: skip
        settings = {"seed": seed, "points": 2048, "sampling": "T=1"}
        (folder / "generation-test-pointflow.json").write_text(
            json.dumps({"scores": scores, "settings": settings}))  # fmt: skip
        (folder / "autoencoding-test.json").write_text(
            json.dumps(
                {"per_category": {"car": {"CD": 0.001 * (seed + 1), "EMD": 0.1, "F-score": 0.5}}}
            )
        )
        folders.append(str(folder))
    assert _program("summarize").main([*folders, "--json", str(tmp_path / "all.json")]) == 0
    out = capsys.readouterr().out
    # 1-NNA-CD: mean 65.00, sample std 5.00 (hand-computed); ablation 85.00 ± 5.00.
    assert "| car | DPF-Nets | 65.00 ± 5.00 |" in out
    assert "| car | ablation: N(0, I) prior | 85.00 ± 5.00 |" in out
    assert "| car | 2.00 ± 1.00 | 10.00 ± 0.00 | 50.00 ± 0.00 |" in out  # CD x1e3: 1, 2, 3
    assert "lower by 20.00, seed spread 5.00: met" in out
    assert "1-NNA-CD 65.00 against the oracle's 50.00: +15.00 points (bound 15): met" in out
    assert "COV-CD 50.00 against the oracle's 50.00: +0.00 points (bound 10): met" in out
    # A row scored for fewer seeds says so.
    scores = json.loads((tmp_path / "car-s2" / "generation-test-pointflow.json").read_text())
    del scores["scores"]["ablation: N(0, I) prior"]
    (tmp_path / "car-s2" / "generation-test-pointflow.json").write_text(json.dumps(scores))
    assert _program("summarize").main(folders) == 0
    assert "| car | ablation: N(0, I) prior | 85.00 ± 7.07 (2 seeds) |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "all.json").read_text())
    assert saved["generation"]["DPF-Nets"]["car"]["1-NNA-CD"] == {"0": 0.6, "1": 0.7, "2": 0.65}
    with pytest.raises(SystemExit):
        _program("summarize").main([str(tmp_path)])  # no generation results there
