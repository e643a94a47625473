"""Sobol base draws: each draw distributed as the base, repeatable, more even than i.i.d."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pcflow.flows import SamplingOptions, dpf_flow, sobol_normal


def test_marginals_are_standard_normal():
    torch.manual_seed(0)
    draws = sobol_normal(4, 4096, 3, dtype=torch.float64)
    assert draws.shape == (4, 4096, 3)
    assert torch.isfinite(draws).all()
    for shape in range(4):
        for axis in range(3):
            sample = draws[shape, :, axis].numpy()
            # A scrambled Sobol marginal is far closer to N(0, 1) than an i.i.d. sample of the
            # same size, whose KS statistic is about 1.36 / sqrt(n) = 0.021 at the 5% level.
            assert stats.kstest(sample, "norm").statistic < 1.36 / math.sqrt(sample.size)
    pooled = draws.reshape(-1, 3)
    assert abs(float(pooled.mean())) < 0.01
    assert abs(float(pooled.std()) - 1) < 0.01


def test_points_are_uniform_on_the_cube_through_the_cdf():
    torch.manual_seed(1)
    uniform = torch.special.ndtr(sobol_normal(1, 2**12, 3, dtype=torch.float64))[0]
    # Each of the 8**3 cells of the unit cube holds 2**12 / 512 = 8 points: scrambled Sobol
    # points form a net in base 2 (the half-cell shift keeps them 2**-31 off every cell
    # boundary); i.i.d. points scatter about 8 with a standard deviation near 2.8.
    cells = (uniform * 8).floor().long().clamp(0, 7)
    counts = torch.bincount(cells[:, 0] * 64 + cells[:, 1] * 8 + cells[:, 2], minlength=512)
    assert (counts == 8).all()
    iid = (torch.rand(2**12, 3, dtype=torch.float64) * 8).floor().long()
    iid_counts = torch.bincount(iid[:, 0] * 64 + iid[:, 1] * 8 + iid[:, 2], minlength=512)
    assert counts.double().std() < iid_counts.double().std() / 2


def test_seeded_by_torch_and_different_per_shape():
    torch.manual_seed(3)
    first = sobol_normal(2, 256, 3)
    torch.manual_seed(3)
    second = sobol_normal(2, 256, 3)
    assert torch.equal(first, second)
    assert not torch.allclose(first[0], first[1])
    assert not torch.equal(sobol_normal(2, 256, 3), first)


@pytest.mark.parametrize("name", ["batch", "num_points", "features"])
def test_bad_sizes_are_named(name):
    sizes = {"batch": 2, "num_points": 8, "features": 3}
    sizes[name] = 0
    with pytest.raises(ValueError, match=name):
        sobol_normal(sizes["batch"], sizes["num_points"], sizes["features"])


@pytest.mark.parametrize("base", ["normal", "freevar"])
def test_flow_samples_with_sobol_draws_invert_to_the_base_draws(base):
    torch.manual_seed(0)
    flow = dpf_flow(context_features=4, num_layers=3, hidden_features=8, base=base).double()
    with torch.no_grad():  # a non-trivial freevar scale
        for parameter in flow.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    context = torch.randn(2, 4, dtype=torch.float64)
    torch.manual_seed(5)
    points = flow.sample(300, context, draws="sobol", chunk_size=64)
    torch.manual_seed(5)
    expected = sobol_normal(2, 300, 3, dtype=torch.float64)
    if base == "freevar":
        expected = expected * flow._distribution.scale(context)[:, None, :]
    noise = flow.transform_to_noise(points, context)
    np.testing.assert_allclose(
        noise.detach().numpy(), expected.detach().numpy(), rtol=1e-9, atol=1e-9
    )


def test_sobol_draws_with_trim_and_spread_and_log_prob():
    torch.manual_seed(0)
    flow = dpf_flow(context_features=4, num_layers=2, hidden_features=8)
    context = torch.randn(3, 4)
    options = SamplingOptions(trim=0.1, spread=2, draws="sobol")
    torch.manual_seed(1)
    points, log_prob = flow.sample_and_log_prob(50, context, **options.keywords())
    assert points.shape == (3, 50, 3)
    torch.testing.assert_close(log_prob, flow.log_prob(points, context), rtol=1e-4, atol=1e-3)
    torch.manual_seed(1)
    assert torch.equal(flow.sample(50, context, **options.keywords()), points)


def test_random_draws_are_unchanged_by_the_option():
    flow = dpf_flow(context_features=4, num_layers=2, hidden_features=8)
    context = torch.randn(2, 4)
    torch.manual_seed(2)
    plain = flow.sample(40, context)
    torch.manual_seed(2)
    assert torch.equal(flow.sample(40, context, draws="random"), plain)


def test_options_check_draws():
    assert SamplingOptions(draws="sobol").describe() == "T=1, trim 0, spread 1, sobol"
    assert not SamplingOptions(draws="sobol").is_model
    assert SamplingOptions.from_dict({"draws": "sobol"}).draws == "sobol"
    with pytest.raises(ValueError, match="draws must be one of"):
        SamplingOptions(draws="halton")
    flow = dpf_flow(context_features=4, num_layers=2, hidden_features=8)
    with pytest.raises(ValueError, match="draws must be one of"):
        flow.sample(4, torch.randn(1, 4), draws="qmc")
