"""Tests for build_dataset: the built-in data, data folders and files, and the data cache."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_dpfnets import (
    AIRPLANE,
    CAR,
    CHAIR,
    _model,
    _write_core55,
    all13_parts,
    write_meshes,
    write_pair,
)

import pcflow
from pcflow.data import (
    DATA_LAYOUTS,
    LEGACY_CACHE,
    R2N2_SYNSETS,
    CategorizedShapes,
    ConcatShapes,
    DataConfig,
    DPFNetsShapeNet,
    ShapeNetR2N2,
    SyntheticConfig,
    SyntheticShapes,
    build_dataset,
    cache_dir,
    generate_synthetic_dataset,
    synthetic_root,
)

TINY = SyntheticConfig(
    categories=("mug",), objects_per_category=3, views_per_object=1, image_size=16,
    points_per_object=300, split_fractions=(0.34, 0.33, 0.33),
)  # fmt: skip


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FlowGAN's folder: per-category pairs of chairs (3 models) and airplanes (2 models)."""
    folder = tmp_path_factory.mktemp("flowgan")
    for synset, names, start in ((CHAIR, ["b", "a", "c"], 0), (AIRPLANE, ["y", "x"], 3)):
        models = [_model(synset, name, start + k) for k, name in enumerate(names)]
        write_pair(folder, f"ShapeNet_{synset}", all13_parts(models), {synset: 0})
    (folder / "notes.txt").write_text("a user's file among the pairs\n")
    return folder


def test_a_folder_of_flowgan_pairs_is_all_its_categories(pairs) -> None:
    folder = pairs
    data = DataConfig(source=str(folder), num_points=50, options={"views": [0, 5]})
    train = build_dataset(data, "train", sample_seed=0)
    assert isinstance(train, ConcatShapes) and isinstance(train, CategorizedShapes)
    # Sorted by synset: airplanes (1 train model) before chairs (2), each file labelled 0.
    assert train.categories == ["airplane", "chair"]
    assert len(train) == 3 * 2 and train.num_objects == 3
    labels = [(train[i]["category"], train[i]["category_name"]) for i in range(len(train))]
    assert labels == [(0, "airplane")] * 2 + [(1, "chair")] * 4
    assert [train.sample_category(i) for i in range(len(train))] == [n for _, n in labels]
    assert [train.object_category(i) for i in range(3)] == ["airplane", "chair", "chair"]
    # Each part is the file's own dataset, so its samples are the file's samples.
    chairs = DPFNetsShapeNet(folder / f"ShapeNet_{CHAIR}_meshes.h5", "train", num_points=50,
                             views=[0, 5], sample_seed=0)  # fmt: skip
    assert torch.equal(train[3]["points"], chairs[1]["points"])
    assert torch.equal(train[3]["image"], chairs[1]["image"])
    assert len(build_dataset(data, "test")) == 2 * 2
    assert len(build_dataset(data, "val")) == 0  # the pairs have no val part
    chosen = dataclasses.replace(data, categories=["chair"])
    assert build_dataset(chosen, "train").categories == ["chair"]
    points_only = build_dataset(data, "train", sample_seed=0, images=False)
    assert len(points_only) == 3 and "image" not in points_only[2]
    assert torch.equal(points_only[2]["points"], train[4]["points"])  # first view's points
    # Objects come part after part; each is its file's object.
    airplanes = DPFNetsShapeNet(folder / f"ShapeNet_{AIRPLANE}_meshes.h5", "train", num_points=50)
    assert np.array_equal(train.object_points(0), airplanes.object_points(0))
    assert np.array_equal(train.object_points(2), chairs.object_points(1))
    with pytest.raises(IndexError, match=r"object 3 out of range for 3 objects"):
        train.object_points(3)
    with pytest.raises(IndexError, match=r"index 6 out of range for 6 samples"):
        train[6]
    assert torch.equal(train[-1]["points"], train[5]["points"])
    with pytest.raises(ValueError, match=r"at least one dataset, got none"):
        ConcatShapes([])
    with pytest.raises(ValueError, match=r"names 'car', but .* holds the pairs of \['airplane'"):
        build_dataset(dataclasses.replace(data, categories=["car"]), "train")


def test_a_folder_of_dpfnets_files_and_unknown_folders(tmp_path: Path) -> None:
    chairs = [_model(CHAIR, name, k) for k, name in enumerate(["a", "b", "c"])]
    with h5py.File(tmp_path / "ShapeNetAll13_meshes.h5", "w") as file:  # meshes only: rendered
        label = sorted(R2N2_SYNSETS).index(CHAIR)
        for part, models in all13_parts(chairs).items():
            write_meshes(file, part, models, [label] * len(models))
    data = DataConfig(
        source=str(tmp_path), num_points=30, options={"views": [0], "render_size": 16}
    )
    all13 = build_dataset(data, "train")
    assert isinstance(all13, DPFNetsShapeNet) and all13.meshes_path.name.startswith("ShapeNetAll13")
    assert len(build_dataset(data, "val")) == 0  # All13 has no val part
    cars = {
        "train": [_model(CAR, "e", 3)],
        "val": [_model(CAR, "f", 4)],
        "test": [_model(CAR, "g", 5)],
    }
    _write_core55(tmp_path / "ShapeNetCore55v2_meshes.h5", cars)
    assert build_dataset(data, "train").categories == ["chair"]  # images: All13
    generation = build_dataset(data, "val", images=False)  # points only: Core55, generation's
    assert generation.meshes_path.name == "ShapeNetCore55v2_meshes.h5"
    assert generation.categories == ["car"] and len(generation) == 1
    # A folder of none of the layouts: named, with the layouts looked for.
    other = tmp_path / "holiday-photos"
    (other / "2024").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holiday-photos holds none of the data layouts") as error:
        build_dataset(DataConfig(source=str(other)), "train")
    for description in DATA_LAYOUTS.values():
        assert description in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"data.source must be .* got '.*missing'"):
        build_dataset(DataConfig(source=str(tmp_path / "missing")), "train")
    with pytest.raises(ValueError, match=r"split must be one of"):
        build_dataset(data, "validation")


def test_a_pointflow_tree_is_read_points_only(tmp_path: Path) -> None:
    clouds = tmp_path / "ShapeNetCore.v2.PC15k"
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        (clouds / CHAIR / split).mkdir(parents=True)
        for k in range(count):
            np.save(clouds / CHAIR / split / f"m{k}.npy", rng.normal(size=(500, 3)).astype("f4"))
    data = DataConfig(source=str(tmp_path), num_points=100)
    test = build_dataset(data, "test", images=False, sample_seed=1)
    assert isinstance(test, ShapeNetR2N2) and len(test) == 2 and test[1]["model_id"] == "m1"
    assert (
        build_dataset(
            dataclasses.replace(data, source=str(clouds)), "train", images=False
        ).num_objects
        == 3
    )
    with pytest.raises(ValueError, match=r"PointFlow's point clouds but no 3D-R2N2 renderings"):
        build_dataset(data, "train")


def test_the_synthetic_cache_is_per_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PCFLOW_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "pcflow"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "pcflow"
    monkeypatch.setenv("PCFLOW_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.chdir(tmp_path / "..")  # no .pcflow_cache here
    assert synthetic_root(TINY) == tmp_path / "cache" / "synthetic" / TINY.fingerprint()
    assert synthetic_root() == tmp_path / "cache" / "synthetic" / SyntheticConfig().fingerprint()
    # build_dataset generates there, whatever the current folder, and reads it from anywhere.
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    data = DataConfig(synthetic=TINY.to_dict(), num_points=20, options={"num_workers": 0})
    train = build_dataset(data, "train", progress=False)
    assert isinstance(train, SyntheticShapes) and train.root == synthetic_root(TINY)
    assert (synthetic_root(TINY) / "manifest.json").is_file() and list(work.iterdir()) == []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert build_dataset(data, "train", progress=False).root == synthetic_root(TINY)
    # An explicit root wins; it keeps whatever dataset it holds.
    explicit = dataclasses.replace(data, root=str(tmp_path / "mine"))
    assert build_dataset(explicit, "test", progress=False).root == tmp_path / "mine"


def test_the_old_cache_folder_is_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    old = LEGACY_CACHE / "synthetic"
    generate_synthetic_dataset(old, TINY, num_workers=0, progress=False)
    assert synthetic_root(TINY) == old  # the same dataset: not generated again
    other = dataclasses.replace(TINY, seed=1)
    assert synthetic_root(other) == tmp_path / "cache" / "synthetic" / other.fingerprint()
    data = DataConfig(synthetic=TINY.to_dict(), num_points=20, options={"num_workers": 0})
    assert build_dataset(data, "val", progress=False).root == old
    assert not (tmp_path / "cache").exists()
    (LEGACY_CACHE / "broken").mkdir()
    (LEGACY_CACHE / "broken" / "manifest.json").write_text("{not json")
    assert synthetic_root(other).parent == tmp_path / "cache" / "synthetic"


def test_synthetic_points_is_points_only(tmp_path: Path) -> None:
    small = {"categories": ["vase", "mug"], "objects_per_category": 4, "points_per_object": 200}
    data = DataConfig(source="synthetic-points", root=str(tmp_path), num_points=30,
                      synthetic=small, options={"num_workers": 0})  # fmt: skip
    test = build_dataset(data, "test", images=False, progress=False)
    assert test.config.views_per_object == 0 and test.categories == ["vase", "mug"]
    assert len(test) == test.num_objects == 2
    with pytest.raises(ValueError, match=r"'synthetic-points' has no images.*images=False"):
        build_dataset(data, "test")


def test_the_recipe_builds_through_the_library(tmp_path: Path) -> None:
    from pcflow.recipes import flowgan

    assert flowgan.DataConfig is DataConfig and flowgan.config.DataConfig is DataConfig
    config = flowgan.FlowGANConfig.preset("tiny")
    config.data = dataclasses.replace(config.data, root=str(tmp_path), synthetic=TINY.to_dict(),
                                      num_points=16, options={"num_workers": 0})  # fmt: skip
    config.train.seed = 5
    evaluation = flowgan.build_dataset(config, "test", evaluation=True, progress=False)
    library = build_dataset(config.data, "test", sample_seed=5, progress=False)
    assert evaluation.root == library.root == tmp_path and len(evaluation) == len(library) == 1
    assert torch.equal(evaluation[0]["points"], library[0]["points"])
    assert not torch.equal(evaluation[0]["points"], evaluation[0]["points_target"])


def test_no_library_module_imports_a_recipe() -> None:
    package = Path(pcflow.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if "recipes" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offending = [n for n in names if n.startswith("pcflow.recipes")]
            assert not offending, f"{path.relative_to(package)} imports {offending}"
