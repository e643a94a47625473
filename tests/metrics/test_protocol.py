"""PointFlow's generation protocol: the normalisations against hand-computed values, the oracle
row against a brute-force float64 computation, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pcflow.metrics import (
    NORMALIZATIONS,
    PointFlowStatistics,
    box_normalize,
    generation_protocol,
    normalize_clouds,
    oracle_clouds,
    protocol_scores,
)


def test_pointflow_statistics_are_the_mean_point_and_one_std_of_all_coordinates() -> None:
    clouds = torch.tensor([[[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]], [[4.0, 5.0, 0.0], [6.0, 7.0, 2.0]]])
    stats = PointFlowStatistics.of(clouds)
    # By hand: mean point (3, 4, 2); all 12 coordinates' mean 3, squared deviations sum to 56.
    assert stats.mean.tolist() == [3.0, 4.0, 2.0]
    assert stats.std == pytest.approx(np.sqrt(56 / 12), rel=1e-12)
    normalized = normalize_clouds(clouds, "pointflow", statistics=stats)
    assert torch.allclose(normalized[0, 0], torch.tensor([-3.0, -3.0, 0.0]) / np.sqrt(56 / 12))


def test_per_shape_box_normalisation_by_hand() -> None:
    clouds = torch.tensor([[[1.0, 0.0, 0.0], [3.0, 1.0, 0.0]], [[0.0, 0.0, -4.0], [0.0, 0.0, 4.0]]])
    # Cloud 0: box [1,3]x[0,1]x[0,0], centre (2, .5, 0), half longest side 1.
    # Cloud 1: box centre 0, half longest side 4.
    expected = torch.tensor([[[-1.0, -0.5, 0.0], [1.0, 0.5, 0.0]], [[0, 0, -1.0], [0, 0, 1.0]]])
    assert torch.equal(normalize_clouds(clouds, "lion-per-shape"), expected)


def test_global_box_normalisation_uses_the_reference_sets_box() -> None:
    reference = torch.tensor([[[0.0, 0.0, 0.0], [4.0, 2.0, 0.0]], [[2.0, -2.0, 1.0], [1, 1, 1]]])
    generated = torch.tensor([[[2.0, 0.0, 0.0], [6.0, 0.0, 0.0]]])
    # Reference box: [0,4]x[-2,2]x[0,1], centre (2, 0, .5), half longest side 2.
    out = normalize_clouds(generated, "lion-global", reference=reference)
    assert torch.equal(out, torch.tensor([[[0.0, 0.0, -0.25], [2.0, 0.0, -0.25]]]))
    assert torch.equal(box_normalize(generated, reference), out)


def _brute_force_scores(generated: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """MMD, COV, 1-NNA with Chamfer, in float64 with loops: PointFlow's definitions."""

    def chamfer(a: torch.Tensor, b: torch.Tensor) -> float:
        squared = torch.cdist(a.double(), b.double()) ** 2
        return float(squared.min(1).values.mean() + squared.min(0).values.mean())

    clouds = list(generated) + list(reference)
    n = len(generated)
    d = np.array([[chamfer(a, b) for b in clouds] for a in clouds])
    cross = d[:n, n:]
    mmd = cross.min(0).mean()
    cov = len(set(cross.argmin(1).tolist())) / reference.shape[0]
    np.fill_diagonal(d, np.inf)
    labels = np.array([0] * n + [1] * len(reference))
    accuracy = np.mean([labels[d[i].argmin()] == labels[i] for i in range(len(clouds))])
    return {"MMD-CD": mmd, "COV-CD": cov, "1-NNA-CD": accuracy}


def test_oracle_row_is_a_training_subset_scored_as_if_generated() -> None:
    torch.manual_seed(0)
    train = torch.rand(9, 40, 3) * torch.linspace(0.5, 1.5, 9)[:, None, None]
    test = torch.rand(4, 40, 3) * torch.linspace(0.6, 1.4, 4)[:, None, None]
    chosen = oracle_clouds(train, 4, seed=3)
    matches = [int((train == c).all(-1).all(-1).nonzero()) for c in chosen]
    assert len(set(matches)) == 4  # distinct training clouds, without replacement
    assert torch.equal(oracle_clouds(train, 4, seed=3), chosen)  # seeded
    table = generation_protocol(
        {}, {"mug": test}, {"mug": train}, normalization="none", seed=3, metrics=("cd",)
    )
    expected = _brute_force_scores(chosen, test)
    row = table.scores["oracle"]["mug"]
    for key, value in expected.items():
        # float32 clouds against float64: relative error ~1e-6 on CD; COV, 1-NNA exact.
        assert row[key] == pytest.approx(value, rel=1e-5)


def test_common_shift_and_scale_keep_cov_and_1nna_and_scale_mmd() -> None:
    torch.manual_seed(1)
    generated, reference = torch.rand(5, 32, 3), torch.rand(5, 32, 3) * 1.2
    stats = PointFlowStatistics(torch.tensor([0.3, -0.2, 0.1]), 0.25)
    plain = protocol_scores(generated, reference, normalization="none", num_points=32,
                            metrics=("cd",))  # fmt: skip
    scaled = protocol_scores(generated, reference, normalization="pointflow", statistics=stats,
                             num_points=32, metrics=("cd",))  # fmt: skip
    assert scaled["COV-CD"] == plain["COV-CD"]
    assert scaled["1-NNA-CD"] == plain["1-NNA-CD"]
    assert scaled["MMD-CD"] == pytest.approx(plain["MMD-CD"] / 0.25**2, rel=1e-5)


def test_jsd_scales_both_sets_so_the_reference_fits_the_grid() -> None:
    torch.manual_seed(2)
    reference = torch.randn(3, 200, 3) * 4
    scores = protocol_scores(reference, reference, normalization="none", num_points=200,
                             metrics=("jsd",))  # fmt: skip
    assert scores == {"JSD": 0.0}
    other = protocol_scores(reference * 0.5, reference, normalization="none", num_points=200,
                            metrics=("jsd",))  # fmt: skip
    assert other["JSD"] > 0.05


def test_bad_input_names_the_argument() -> None:
    clouds = torch.rand(2, 8, 3)
    with pytest.raises(ValueError, match="normalization must be one of"):
        normalize_clouds(clouds, "unit-sphere")
    with pytest.raises(ValueError, match="needs the training set's statistics"):
        normalize_clouds(clouds, "pointflow")
    with pytest.raises(ValueError, match="needs the reference clouds"):
        normalize_clouds(clouds, "lion-global")
    with pytest.raises(ValueError, match="as many generated as reference clouds"):
        protocol_scores(clouds, torch.rand(3, 8, 3), normalization="none", num_points=8)
    with pytest.raises(ValueError, match="2048 points"):
        protocol_scores(clouds, clouds, normalization="none")
    with pytest.raises(ValueError, match="num_clouds between 1 and the 2 training clouds"):
        oracle_clouds(clouds, 3)
    assert set(NORMALIZATIONS) == {"none", "pointflow", "lion-global", "lion-per-shape"}
