"""FlowGAN's training loop: exact resume, the NaN guard, the adversarial term, mixed precision,
logs, and the resumable sampler."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from pcflow.recipes.flowgan import FlowGANConfig, Trainer
from pcflow.training import (
    NonFiniteLossError,
    ResumableSampler,
    SeededSamples,
    capture_rng_state,
    restore_rng_state,
)
from pcflow.utils import CheckpointError, load_checkpoint, save_checkpoint


class ToyShapes(Dataset):
    """Balls and rods with fixed pictures; every access draws fresh point noise (global RNG)."""

    categories = ("ball", "rod")

    def __init__(self, count: int = 16, num_points: int = 32, image_size: int = 32) -> None:
        generator = torch.Generator().manual_seed(count)
        self.images = torch.rand(count, 3, image_size, image_size, generator=generator)
        self.num_points = num_points

    def __len__(self) -> int:
        return self.images.shape[0]

    def _cloud(self, index: int) -> torch.Tensor:
        points = torch.randn(self.num_points, 3)
        if index % 2 == 0:
            return points / points.norm(dim=1, keepdim=True) * 0.5
        return points * torch.tensor([0.05, 0.8, 0.05])

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.images[index],
            "points": self._cloud(index),
            "points_target": self._cloud(index),
            "category": index % 2,
            "category_name": self.categories[index % 2],
            "model_id": f"{index // 2:04d}",
        }


def _config(*overrides: str) -> FlowGANConfig:
    base = ["data.num_points=32", "train.epochs=2", "train.checkpoint_every=1000"]
    return FlowGANConfig.preset("tiny").with_overrides([*base, *overrides])


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    # Checkpoints of the tiny model (two ResNet18s and their optimiser states) are large:
    # write them to memory where the machine has a tmpfs.
    shm = Path("/dev/shm")
    if shm.is_dir():
        import tempfile

        directory = Path(tempfile.mkdtemp(dir=shm, prefix="pcflow-test-"))
        yield directory
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("average", [False, True], ids=["plain", "weight-average"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(out: Path, average: bool) -> None:
    config = _config(*(["optim.ema_decay=0.9"] if average else []))
    data = ToyShapes()
    whole = Trainer(config, out / "whole", data, progress=False)
    whole.fit()
    first = Trainer(config, out / "resumed", data, progress=False)
    first.fit(max_steps=5)  # stops mid-epoch 2, as if killed right after its checkpoint
    assert first.state.global_step == 5 and first.state.step_in_epoch == 1
    torch.manual_seed(1234)  # whatever ran in between must not matter
    np.random.seed(99)  # noqa: NPY002
    random.seed(7)
    second = Trainer(config, out / "resumed", data, resume=True, progress=False)
    assert second.resumed_at == 5
    second.fit()
    assert second.state.global_step == whole.state.global_step == 8
    expected, got = _weights(whole), _weights(second)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    a = whole.updaters["generator"].optimizer.state_dict()["state"]
    b = second.updaters["generator"].optimizer.state_dict()["state"]
    for key in a:
        for field in a[key]:
            assert torch.equal(torch.as_tensor(a[key][field]), torch.as_tensor(b[key][field]))
    state = load_checkpoint(out / "resumed" / "checkpoints" / "last.pt")
    assert state["trainer"]["finished"] and state["trainer"]["global_step"] == 8
    if average:  # the average, kept through the interruption, is the uninterrupted run's
        reference = load_checkpoint(out / "whole" / "checkpoints" / "last.pt")["average"]
        assert reference.keys() == state["average"].keys()
        for name in reference:
            assert torch.equal(reference[name], state["average"][name]), name
    else:
        assert state["average"] is None


def test_resume_refuses_another_model(out: Path) -> None:
    data = ToyShapes(count=8)
    Trainer(_config("train.epochs=1"), out, data, progress=False).fit()
    other = _config("train.epochs=1", "model.hidden_features=12")
    with pytest.raises(CheckpointError, match="hidden_features: 8 in the checkpoint, 12 now"):
        Trainer(other, out, data, resume=True, progress=False)


def test_nan_guard_skips_steps_then_stops(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config("train.max_consecutive_nonfinite=3", "model.adversarial=false")
    trainer = Trainer(config, out, ToyShapes(), progress=False)
    forward = trainer.method.generator_loss.forward

    def poisoned(*args, **kwargs):
        terms = forward(*args, **kwargs)
        terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(trainer.method.generator_loss, "forward", poisoned)
    batch = next(iter(trainer.loader))
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    for expected in (1, 2):
        values = trainer.train_step(batch)
        assert values["skipped"] == 1.0 and math.isnan(values["total_loss"])
        assert trainer.state.consecutive_nonfinite == expected
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        trainer.train_step(batch)
    monkeypatch.setattr(trainer.method.generator_loss, "forward", forward)
    assert trainer.train_step(batch)["skipped"] == 0.0
    assert trainer.state.consecutive_nonfinite == 0 and trainer.state.skipped_steps == 3


@pytest.mark.parametrize("adversarial", [True, False])
def test_adversarial_term_alone_moves_the_flow_only_with_a_critic(
    out: Path, adversarial: bool
) -> None:
    # Likelihood weights 0: the generator's only training signal is the critic's.
    config = _config(
        f"model.adversarial={str(adversarial).lower()}",
        "loss.points_weight=0",
        "loss.prior_weight=0",
        "loss.entropy_weight=0",
        "optim.weight_decay=0",
    )
    trainer = Trainer(config, out, ToyShapes(), progress=False)
    batch = next(iter(trainer.loader))
    flow = {k: v.clone() for k, v in trainer.model.generator.flow.state_dict().items()}
    values = trainer.train_step(batch)
    moved = [
        not torch.equal(flow[k], v) for k, v in trainer.model.generator.flow.state_dict().items()
    ]
    if adversarial:
        assert "critic_loss" in values and "adversarial_loss" in values
        weight = config.loss.adversarial_weight
        assert values["total_loss"] == pytest.approx(weight * values["adversarial_loss"], rel=1e-5)
        assert all(moved), "the critic's gradient did not reach every flow layer"
    else:
        assert trainer.model.critic is None and "critic_loss" not in values
        assert not any(moved)


def test_critic_waits_for_its_warm_up(out: Path) -> None:
    trainer = Trainer(_config("train.critic_warmup_epochs=1"), out, ToyShapes(), progress=False)
    batch = next(iter(trainer.loader))
    assert not trainer.method.critic_active(
        trainer.state.epoch
    ) and "critic_loss" not in trainer.train_step(batch)
    trainer.state.epoch = 1
    assert trainer.method.critic_active(
        trainer.state.epoch
    ) and "critic_loss" in trainer.train_step(batch)


def test_chamfer_term_waits_for_its_warm_up(out: Path) -> None:
    overrides = ("loss.chamfer_weight=10", "train.chamfer_warmup_epochs=1")
    trainer = Trainer(
        _config("model.adversarial=false", *overrides), out, ToyShapes(), progress=False
    )
    batch = next(iter(trainer.loader))
    assert not trainer.method.chamfer_active(
        trainer.state.epoch
    ) and "chamfer" not in trainer.train_step(batch)
    trainer.state.epoch = 1
    assert trainer.method.chamfer_active(trainer.state.epoch)
    values = trainer.train_step(batch)
    assert values["chamfer"] > 0
    # The logged loss is the likelihood's plus the weighted term, over 32 target points.
    likelihood = values["nll_points"] + 0.1 * values["nll_latent"] - 0.1 * values["entropy"]
    expected = likelihood + 10 * 32 * values["chamfer"]
    assert values["total_loss"] == pytest.approx(expected, rel=1e-4)
    unweighted = Trainer(
        _config("loss.chamfer_weight=0"), out / "zero", ToyShapes(), progress=False
    )
    assert not unweighted.method.chamfer_active(0)


def test_bfloat16_mixed_precision_step(out: Path) -> None:
    trainer = Trainer(_config("train.mixed_precision=true"), out, ToyShapes(), progress=False)
    values = trainer.train_step(next(iter(trainer.loader)))
    assert values["skipped"] == 0.0
    assert all(math.isfinite(v) for v in values.values())


def test_outputs_logs_pictures_and_best_checkpoint(out: Path) -> None:
    config = _config("train.epochs=1", "train.log_every=1")
    trainer = Trainer(config, out, ToyShapes(count=8), ToyShapes(count=4), progress=False)
    trainer.fit()
    assert FlowGANConfig.from_yaml(out / "config.yaml") == config
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch") and len(rows) == 1 + 2 + 1  # 2 steps + validation
    assert "val_chamfer" in rows[0]
    assert any((out / "tensorboard").iterdir())
    assert (out / "pictures" / "epoch_001.png").stat().st_size > 0
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert "generator_optimizer" not in best and best["trainer"]["best_epoch"] == 1


def test_batch_larger_than_the_data(out: Path) -> None:
    with pytest.raises(ValueError, match="smaller than one batch"):
        Trainer(_config("train.batch_size=64"), out, ToyShapes(count=8), progress=False)


def test_sampler_resumes_the_same_order() -> None:
    data = ToyShapes(count=10)
    sampler = ResumableSampler(data, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert sorted(i for i, _ in full) == list(range(10))
    sampler.set_start(4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_start(0)
    sampler.set_epoch(3)
    assert [i for i, _ in sampler] != [i for i, _ in full]
    shares = [list(ResumableSampler(data, 2, rank, seed=3)) for rank in (0, 1)]
    assert sorted(i for share in shares for i, _ in share) == list(range(10))


def test_seeded_samples_ignore_and_keep_the_global_rng() -> None:
    data = SeededSamples(ToyShapes())
    torch.manual_seed(0)
    state = capture_rng_state()
    first = data[(3, 42)]["points"]
    after = capture_rng_state()
    assert torch.equal(state["torch"], after["torch"])
    assert torch.equal(state["numpy"]["keys"], after["numpy"]["keys"])
    torch.manual_seed(1)
    assert torch.equal(data[(3, 42)]["points"], first)
    assert not torch.equal(data[(3, 43)]["points"], first)


def test_rng_state_round_trip() -> None:
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(3)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    random.seed(9)
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # noqa: NPY002


def test_memory_efficient_and_fused_flows_train_the_same(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recomputing the flow's activations in backward (the PyTorch path's memory-efficient
    # mode, and the fused kernel, which always recomputes) changes memory and speed, not the
    # training step. Each float32 path is held to the same step in float64; the bound is
    # derived from float32 itself: the plain float32 path's own error, with a margin.
    from pcflow.flows import fused as fused_module

    kernel_calls = []
    original = fused_module._forward

    def counting(*args):
        kernel_calls.append(True)
        return original(*args)

    monkeypatch.setattr(fused_module, "_forward", counting)
    # The same noise in every run: drawn in float32, then cast (float64 draws other numbers).
    randn, randn_like = torch.randn, torch.randn_like

    def float32_randn(*size, dtype=None, **kwargs):
        return randn(*size, dtype=torch.float32, **kwargs).to(dtype or torch.float32)

    def float32_randn_like(tensor, dtype=None, **kwargs):
        return randn_like(tensor, dtype=torch.float32, **kwargs).to(dtype or tensor.dtype)

    monkeypatch.setattr(torch, "randn", float32_randn)
    monkeypatch.setattr(torch, "randn_like", float32_randn_like)
    runs = {}
    for name, memory_efficient, fused, dtype in (
        ("float64", False, False, torch.float64),
        ("plain", False, False, torch.float32),
        ("memory_efficient", True, False, torch.float32),
        ("fused", False, True, torch.float32),
    ):
        config = _config(f"model.memory_efficient={str(memory_efficient).lower()}")
        trainer = Trainer(config, out / name, ToyShapes(), progress=False)
        trainer.model.to(dtype)
        flow = trainer.model.generator.flow
        assert flow.memory_efficient is memory_efficient
        flow.fused = fused
        kernel_calls.clear()
        grads = {}
        step = trainer.updaters["generator"].optimizer.step

        def recording_step(*args, step=step, flow=flow, grads=grads, **kwargs):
            # Adam's first step maps every gradient to about +-lr, so compare the gradients.
            grads.update({n: p.grad.clone().double() for n, p in flow.named_parameters()})
            return step(*args, **kwargs)

        trainer.updaters["generator"].optimizer.step = recording_step
        batch = {
            key: value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value
            for key, value in next(iter(trainer.loader)).items()
        }
        values = trainer.train_step(batch)
        assert bool(kernel_calls) is fused
        runs[name] = (values, grads)
    exact_values, exact = runs.pop("float64")
    assert exact

    def errors(grads):
        # Per tensor, relative to its norm: float32 sums in another order differ elementwise.
        return {n: float((grads[n] - exact[n]).norm() / exact[n].norm()) for n in exact}

    plain = errors(runs["plain"][1])
    typical = float(np.median(list(plain.values())))
    exact_loss = exact_values["total_loss"]
    plain_loss_error = abs(runs["plain"][0]["total_loss"] - exact_loss)
    for name, (values, grads) in runs.items():
        loss_error = abs(values["total_loss"] - exact_loss)
        assert loss_error <= 10 * max(plain_loss_error, 1e-6 * abs(exact_loss)), name
        assert grads.keys() == exact.keys()
        for tensor, error in errors(grads).items():
            assert error <= 10 * max(plain[tensor], typical), (name, tensor, error, plain[tensor])


def test_nan_generated_cloud_skips_the_step(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(_config(), out, ToyShapes(), progress=False)
    forward = trainer.method.generator_loss.forward

    def exploding(*args, **kwargs):
        terms = forward(*args, **kwargs)
        terms["fake"] = terms["fake"] * float("inf")
        return terms

    monkeypatch.setattr(trainer.method.generator_loss, "forward", exploding)
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    values = trainer.train_step(next(iter(trainer.loader)))
    assert values["skipped"] == 1.0 and trainer.state.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.named_parameters())


@pytest.mark.filterwarnings("ignore:.*validation clouds held NaN")
@pytest.mark.parametrize("poisoned", ["first", "all"])
def test_diverged_predictions_do_not_stop_training_at_the_pictures(
    out: Path, monkeypatch: pytest.MonkeyPatch, poisoned: str
) -> None:
    config = _config("train.epochs=1", "train.num_pictures=2")
    trainer = Trainer(config, out, ToyShapes(count=8), ToyShapes(count=4), progress=False)
    reconstruct = trainer.model.reconstruct

    def diverged(*args, **kwargs):
        clouds = reconstruct(*args, **kwargs).clone()
        clouds[0 if poisoned == "first" else slice(None), 0, 0] = float("inf")
        return clouds

    monkeypatch.setattr(trainer.model, "reconstruct", diverged)
    with pytest.warns(UserWarning, match=r"predicted clouds for epoch_001.png hold NaN"):
        state = trainer.fit()
    assert state.finished
    assert load_checkpoint(out / "checkpoints" / "last.pt")["trainer"]["finished"]
    picture = out / "pictures" / "epoch_001.png"
    assert picture.exists() == (poisoned == "first")


def test_start_removes_partial_checkpoints_of_a_killed_run(out: Path) -> None:
    partial = out / "checkpoints" / ".last.pt.k1ll3d.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 1024)
    other = out / "checkpoints" / "mine.tmp"
    other.write_bytes(b"user file")
    Trainer(_config(), out, ToyShapes(), progress=False).fit(max_steps=0)
    assert not partial.exists() and other.exists()


def test_weights_that_do_not_fit_their_config_are_a_checkpoint_error(tmp_path: Path) -> None:
    from pcflow.recipes.flowgan import build_model, load_model
    from pcflow.utils import save_checkpoint

    config = _config()
    other = build_model(_config("model.hidden_features=12"))
    path = save_checkpoint(
        tmp_path / "mixed.pt", {"config": config.to_dict(), "model": other.state_dict()}
    )
    with pytest.raises(CheckpointError, match=r"mixed\.pt' does not fit the model.*size mismatch"):
        load_model(path)


def test_trainer_validates_a_config_edited_in_code(out: Path) -> None:
    config = _config()
    config.train.checkpoint_every = 0
    with pytest.raises(ValueError, match=r"'train\.checkpoint_every' must be positive, got 0"):
        Trainer(config, out, ToyShapes(), progress=False)


@pytest.mark.slow
def test_the_generator_step_compiles_without_graph_breaks(out: Path) -> None:
    # The flow's kernel is a registered operator and the input checks step aside while
    # compiling, so the whole objective (likelihood, sampling, critic) is one graph.
    from pcflow.critics import generator_loss

    trainer = Trainer(_config(), out, ToyShapes(), progress=False)
    batch = next(iter(trainer.loader))
    images = trainer.model.prepare_images(batch["image"])

    def objective(images, points, target):
        terms = trainer.method.generator_loss(images, points, target, target.shape[1])
        logits = trainer.model.critic(terms["fake"], images)
        return terms["loss"].mean() + generator_loss(logits, kind="lsgan")

    explanation = torch._dynamo.explain(objective)(images, batch["points"], batch["points_target"])
    assert explanation.graph_break_count == 0, explanation.break_reasons


class OrderedToyShapes(ToyShapes):
    """ToyShapes ordered by category, as the synthetic and ShapeNet splits are."""

    def __getitem__(self, index: int) -> dict:
        sample = super().__getitem__(index)
        sample["category_name"] = self.categories[int(index >= len(self) // 2)]
        return sample


def test_validation_samples_are_spread_over_the_categories(out: Path) -> None:
    from pcflow.data import sample_categories
    from pcflow.recipes.flowgan.validation import validation_subset

    config = _config("train.batch_size=2", "train.val_batches=2")
    val = OrderedToyShapes(count=16)
    trainer = Trainer(config, out, ToyShapes(count=8), val, progress=False)
    subset = validation_subset(val, config)
    # Two batches of two: two samples of each category, not the first four (all "ball").
    assert sorted(sample_categories(subset)) == ["ball", "ball", "rod", "rod"]
    assert trainer.method.validate(val, trainer.context())["val_chamfer"] > 0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("loss.points_weight=0", "loss.prior_weight=0", "loss.entropy_weight=0"), 1.0),
        (("loss.adversarial_weight=0",), 0.0),
    ],
)
def test_logged_steps_report_the_adversarial_share_of_the_flow_gradient(
    out: Path, overrides: tuple[str, ...], expected: float
) -> None:
    config = _config("train.critic_warmup_epochs=0", "train.log_every=1", *overrides)
    trainer = Trainer(config, out, ToyShapes(), progress=False)
    values = trainer.train_step(next(iter(trainer.loader)))
    assert values["adversarial_grad_share"] == pytest.approx(expected, abs=1e-6)
    assert values["flow_grad_norm_likelihood"] + values["flow_grad_norm_adversarial"] > 0
    # Steps that are not logged skip the two extra gradient passes.
    config = _config("train.critic_warmup_epochs=0", "train.log_every=5", *overrides)
    trainer = Trainer(config, out, ToyShapes(), progress=False)
    assert "adversarial_grad_share" not in trainer.train_step(next(iter(trainer.loader)))


def test_training_flushes_subnormals_and_restores_the_setting(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pcflow.training.trainer import flush_denormal_is_on

    config = _config("model.adversarial=false", "train.epochs=1")
    trainer = Trainer(config, out, ToyShapes(), progress=False)
    step, seen = trainer.train_step, []

    def recording(batch):
        seen.append(flush_denormal_is_on())
        return step(batch)

    monkeypatch.setattr(trainer, "train_step", recording)
    assert not flush_denormal_is_on()  # the default: subnormals are kept
    assert float(torch.full((1,), 1e-39) * 2) > 0
    trainer.fit()
    assert seen and all(seen)
    assert not flush_denormal_is_on()  # as it was found
    torch.set_flush_denormal(True)
    try:
        Trainer(config, out / "again", ToyShapes(), progress=False).fit()
        assert flush_denormal_is_on()  # a caller who flushes keeps flushing
    finally:
        torch.set_flush_denormal(False)


def test_adam_runs_fused_on_the_cpu(out: Path) -> None:
    trainer = Trainer(_config(), out, ToyShapes(), progress=False)
    for optimizer in (
        trainer.updaters["generator"].optimizer,
        trainer.updaters["critic"].optimizer,
    ):
        assert optimizer is not None and optimizer.param_groups[0]["fused"] is True
    # The same update as torch's loop over the tensors, up to float32 rounding.
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(50)) for _ in range(3)]
    twins = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    settings = {"lr": 1e-2, "betas": (0.9, 0.995), "amsgrad": True, "weight_decay": 1e-6}
    fused = torch.optim.Adam(weights, fused=True, **settings)
    loop = torch.optim.Adam(twins, foreach=False, **settings)
    for _ in range(5):
        for w, t in zip(weights, twins):
            w.grad = torch.randn_like(w)
            t.grad = w.grad.clone()
        fused.step()
        loop.step()
    for w, t in zip(weights, twins):
        torch.testing.assert_close(w, t, rtol=1e-5, atol=1e-6)


def test_late_num_points_densify_the_training_clouds_from_their_epoch(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config("data.late_num_points=48", "data.late_from_epoch=1")
    seen: list[int] = []
    original = Trainer.train_step

    def counting(self: Trainer, batch: dict) -> dict[str, float]:
        seen.append(batch["points_target"].shape[1])
        assert batch["points"].shape[1] == seen[-1]
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", counting)
    data = ToyShapes()  # 16 shapes, batch 4: 4 steps per epoch
    Trainer(config, out / "whole", data, progress=False).fit()
    assert seen == [32] * 4 + [48] * 4
    # Killed in the dense epoch and resumed: the resumed steps are dense too.
    seen.clear()
    data = ToyShapes()
    Trainer(config, out / "resumed", data, progress=False).fit(max_steps=5)
    data.num_points = 32  # a fresh process's dataset, as built from data.num_points
    Trainer(config, out / "resumed", data, resume=True, progress=False).fit()
    assert seen == [32] * 4 + [48] * 4


def test_late_num_points_keep_the_loss_balance_per_point(out: Path) -> None:
    # 48-point clouds where data.num_points is 32: the two sums over points weigh 32/48 each.
    overrides = ("data.late_num_points=48", "loss.chamfer_weight=10")
    trainer = Trainer(
        _config("model.adversarial=false", *overrides), out, ToyShapes(), progress=False
    )
    assert trainer.method.points_scale(32) == 1.0 and trainer.method.points_scale(
        48
    ) == pytest.approx(2 / 3)
    trainer.train_set.num_points = 48
    batch = next(iter(trainer.loader))
    assert batch["points_target"].shape[1] == 48
    values = trainer.train_step(batch)
    points = values["nll_points"] + 10 * 48 * values["chamfer"]
    latent = 0.1 * values["nll_latent"] - 0.1 * values["entropy"]
    assert values["total_loss"] == pytest.approx(points * 32 / 48 + latent, rel=1e-4)
    # Without late_num_points a 48-point batch is weighed as it comes.
    plain = Trainer(_config("model.adversarial=false"), out / "plain", ToyShapes(), progress=False)
    assert plain.method.points_scale(48) == 1.0


def test_late_num_points_are_checked(out: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.late_num_points"):
        _config("data.late_num_points=0")
    with pytest.raises(ValueError, match=r"data\.late_from_epoch"):
        _config("data.late_num_points=48", "data.late_from_epoch=-1")

    class NoCount(ToyShapes):
        def __getattribute__(self, name: str) -> object:
            if name == "num_points":
                raise AttributeError(name)
            return super().__getattribute__(name)

    with pytest.raises(ValueError, match=r"num_points attribute.*NoCount"):
        Trainer(_config("data.late_num_points=48"), out, NoCount(), progress=False)


def _record_weights(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """Make ``trainer`` record its weights after every step (the epoch with them)."""
    seen: list[dict[str, torch.Tensor]] = []
    step = trainer.train_step

    def recording(batch: dict) -> dict[str, float]:
        values = step(batch)
        seen.append({"epoch": trainer.state.epoch, **_weights(trainer)})
        return values

    trainer.train_step = recording  # type: ignore[method-assign]
    return seen


def test_weight_average_follows_a_float64_reference(out: Path) -> None:
    decay = 0.7
    config = _config(f"optim.ema_decay={decay}", "optim.ema_from_epoch=1")
    trainer = Trainer(config, out, ToyShapes(), ToyShapes(8), progress=False)
    seen = _record_weights(trainer)
    trainer.fit()
    averaged = [w for w in seen if w["epoch"] >= 1]
    assert 2 <= len(averaged) < len(seen)  # it starts with epoch 1, not before
    parameters = {name for name, _ in trainer.model.named_parameters()}
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    steps = len(averaged)
    for name, value in saved["average"].items():
        if name not in parameters or not value.is_floating_point():
            assert torch.equal(value, averaged[-1][name]), name  # buffers: the last ones
            continue
        reference = averaged[0][name].double()
        for weights in averaged[1:]:
            reference = decay * reference + (1 - decay) * weights[name].double()
        # float32 rounding: at most one ulp-sized error per step and per operation.
        scale = max(w[name].abs().max().item() for w in averaged)
        bound = 4 * steps * torch.finfo(torch.float32).eps * scale
        assert (value.double() - reference).abs().max().item() <= bound, name
    # Training goes on from the model's own weights, which validation gave back unchanged.
    for name, value in saved["model"].items():
        assert torch.equal(value, trainer.model.state_dict()[name]), name
        assert torch.equal(value, seen[-1][name]), name
    moved = [n for n in parameters if not torch.equal(saved["model"][n], saved["average"][n])]
    assert moved  # the average is not the last weights


def test_load_model_takes_the_average_unless_told_not_to(out: Path) -> None:
    from pcflow.recipes.flowgan import load_model

    config = _config("optim.ema_decay=0.5")
    Trainer(config, out, ToyShapes(), ToyShapes(8), progress=False).fit()
    for file in ("last.pt", "best.pt"):
        saved = load_checkpoint(out / "checkpoints" / file)
        averaged = load_model(out / "checkpoints" / file).state_dict()
        own = load_model(out / "checkpoints" / file, average=False).state_dict()
        for name in saved["model"]:
            assert torch.equal(averaged[name], saved["average"][name]), (file, name)
            assert torch.equal(own[name], saved["model"][name]), (file, name)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 2.0])
def test_weight_average_decay_is_checked(decay: float) -> None:
    with pytest.raises(ValueError, match=r"optim\.ema_decay"):
        _config(f"optim.ema_decay={decay}")


def test_resuming_without_the_average_warns_that_it_is_dropped(out: Path) -> None:
    data = ToyShapes()
    Trainer(_config("optim.ema_decay=0.9"), out, data, progress=False).fit(max_steps=3)
    with pytest.warns(UserWarning, match=r"averaged weights but this run keeps no average"):
        Trainer(_config(), out, data, resume=True, progress=False)


def test_an_average_that_does_not_fit_is_a_checkpoint_error(out: Path) -> None:
    data = ToyShapes()
    config = _config("optim.ema_decay=0.9")
    Trainer(config, out, data, progress=False).fit(max_steps=3)
    path = out / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state["average"] = {k: v for k, v in list(state["average"].items())[1:]}
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match="averaged weights do not fit"):
        Trainer(config, out, data, resume=True, progress=False)
