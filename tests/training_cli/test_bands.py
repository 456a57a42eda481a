"""Models of any band count: prepared, trained, exported and run through the engine on every backend;
fine-tuned from a model of another band count or legend; class weights; and a band beyond RGB that the
network must use to tell two classes apart."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from helpers import TINY_SPECS
from training_pairs import MEAN, STD, MemoryPairs

from core import synthetic
from core.backends import select as backend_select
from core.engine import OutputPaths, RunOptions, run_change_detection
from core.errors import InputError
from core.models import registry
from core.models.base import TrainingSpec
from core.models.card import LANDSAT_SCD_CLASSES, SECOND_CLASSES, ModelCard
from core.models.checkpoint import load_checkpoint, make_card, read_card, save_checkpoint
from core.models.gapl_scd.losses import training_loss
from training_cli import recipes as recipes_module
from training_cli.cli import main
from training_cli.recipes import apply_overrides, load_recipe
from training_cli.trainer import (
    LAST,
    Trainer,
    TrainingData,
    init_from_model,
    read_training_state,
    resolve_class_weights,
)

#: The tests' tiny semantic network, trained with GAPL-SCD's loss (it needs nothing but the contract's outputs).
TINY = "tiny_scd"
FAST = ["--workers", "0", "--pretrained", "none", "--no-progress", "--crop", "64", "--batch-size", "2",
        "--set", 'train.precision="fp32"', "--set", 'train.augment="none"']


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The tiny semantic network registered like a real one, with a training part and a recipe."""
    spec = dataclasses.replace(TINY_SPECS[0], training=TrainingSpec(loss=training_loss),
                               default_options={"backbone": "tiny", "num_classes": 6, "width": 8})
    module = types.ModuleType(f"core.models._test_{spec.name}")
    module.SPEC = spec  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(registry._PACKAGES, spec.name, f"_test_{spec.name}")
    recipes = tmp_path_factory.mktemp("recipes")
    (recipes / f"{TINY}.toml").write_text(f'model = "{TINY}"\n[train]\nselect = "miou"\n[data]\n'
                                          'normalisation = "dataset"\n[[stages]]\nepochs = 1\nlr = 0.01\n'
                                          'optimizer = "adam"\n', encoding="utf-8")
    monkeypatch.setattr(recipes_module, "RECIPE_FOLDER", recipes)


def _prepare(scene: synthetic.ScenePaths, out: Path, *extra: str) -> Path:
    assert main(["prepare", "--t1", str(scene.t1), "--t2", str(scene.t2), "--labels", str(scene.truth_t1),
                 "--labels-t2", str(scene.truth_t2), "--out", str(out), "--tile", "64", "--block", "1",
                 "--split", "0.5,0.5,0", *extra]) == 0
    return out


def _train(data: Path, out: Path, model: str = TINY, epochs: int = 4, lr: str = "0.01", *extra: str) -> Path:
    assert main(["train", "--model", model, "--data", str(data), "--out", str(out), "--epochs", str(epochs),
                 "--lr", lr, "--set", 'stages.1.optimizer="adam"', "--set", 'stages.1.schedule="constant"',
                 "--set", "stages.1.warmup_epochs=0", *FAST, *extra]) == 0
    return out / LAST


def _maps(scene: synthetic.ScenePaths, model: Path, folder: Path, **options: object) -> tuple[np.ndarray, ...]:
    folder.mkdir()
    outputs = OutputPaths(t1_classes=folder / "c1.tif", t2_classes=folder / "c2.tif", change_mask=folder / "m.tif")
    summary = run_change_detection(scene.t1, scene.t2, model, outputs, RunOptions(
        tile_size=64, overlap=16, batch_size=2, precision="fp32", backend_cache_dir=folder.parent / "cache",
        **options))
    maps = []
    for path in (outputs.t1_classes, outputs.t2_classes, outputs.change_mask):
        with rasterio.open(path) as src:
            maps.append(src.read(1))
    return (*maps, summary)


@pytest.mark.parametrize("bands", [4, 10])
def test_an_n_band_model_trains_exports_and_runs_on_every_backend(tiny: None, tmp_path: Path, bands: int) -> None:
    scene = synthetic.write_multispectral_scene(tmp_path / "scene", size=128, bands=bands, seed=bands)
    data = _prepare(scene, tmp_path / "set")
    state = read_training_state(_train(data, tmp_path / "run"))
    losses = [row["train_loss"] for row in json.loads(state["history"])]
    assert losses[-1] < losses[0], losses

    model = tmp_path / "model.pt"
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(model)]) == 0
    card = read_card(model)
    record = json.loads((data / "prepare.json").read_text())["statistics"]
    assert card.bands_t1 == card.bands_t2 == tuple(range(1, bands + 1))
    assert card.options["in_channels"] == bands and card.scaling.method == "statistics"
    assert list(card.mean_t1) == record["mean_t1"] and list(card.std_t2) == record["std_t2"]
    assert card.training["data"]["bands"] == bands
    assert [d[0] for d in card.training["data"]["band_descriptions"]["t2"][:4]] == ["Red", "Green", "Blue", "NIR"]
    assert "computed by prepare on the train split" in card.training["data"]["normalisation"]
    network, _ = load_checkpoint(model)
    assert network.encoder[0].in_channels == bands

    *reference, summary = _maps(scene, model, tmp_path / "torch", backend="torch", int8=False)
    assert summary.backend.startswith("torch")
    assert "own units" in summary.scaling_t1
    runtimes = [runtime for runtime in ("onnxruntime", "openvino") if backend_select.runtime_available(runtime)]
    for runtime in runtimes:
        *maps, summary = _maps(scene, model, tmp_path / runtime, backend=runtime, int8=False)
        assert summary.backend.startswith(f"{runtime} fp32"), summary.backend
        for got, expected in zip(maps, reference, strict=True):
            assert float((got == expected).mean()) > 0.999, runtime
    if runtimes:
        # int8 through the engine: calibrated on this scene's N-band tiles, then checked against fp32 on others
        *maps, summary = _maps(scene, model, tmp_path / "int8", backend=runtimes[0], int8=True)
        assert summary.int8_check.startswith("int8 kept "), summary.int8_check
        used = summary.backend.startswith(f"{runtimes[0]} int8")
        assert used or summary.int8_check.endswith("ran without int8")
        for runtime in runtimes:  # and each runtime's int8 graph takes the N bands
            calibration = [tuple(rng.standard_normal((bands, 64, 64)).astype(np.float32) for _ in range(2))
                           for rng in (np.random.default_rng(s) for s in range(4))]
            backend = backend_select.select_backend(
                network, read_card(model), requested=runtime, int8=True, calibration=lambda c=calibration: c,
                model_size=64, batch_size=1, cache_dir=tmp_path / "int8-cache")
            assert backend.int8
            x1, x2 = (torch.from_numpy(a[None]) for a in calibration[0])
            with torch.inference_mode():
                expected = network(x1, x2)["change_prob"]
            got = backend(x1, x2)["change_prob"]
            assert got.shape == (1, 1, 64, 64) and float((got - expected).abs().max()) < 0.1


def test_a_model_of_another_band_count_is_refused_naming_both_counts(tiny: None, tmp_path: Path) -> None:
    scene = synthetic.write_multispectral_scene(tmp_path / "scene", size=64, bands=4)
    three = make_card(TINY, "second", tile_size=64)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "rgb.pt", registry.build_model(TINY, **three.options), three)
    with pytest.raises(InputError, match=r"the model takes 3 bands per date but 4 were chosen for T1 \(.*t1\.tif\)"):
        _maps(scene, tmp_path / "rgb.pt", tmp_path / "out", bands_t1=(1, 2, 3, 4), bands_t2=(1, 2, 3, 4))
    assert not list((tmp_path / "out").iterdir())


# --- Fine-tuning ---------------------------------------------------------------------------------


def _rgb_second_model(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 3-band model of SECOND's six classes, with weights to recognise."""
    card = make_card(TINY, "second", tile_size=64, dataset="SECOND (test)")
    torch.manual_seed(7)
    model = registry.build_model(TINY, **card.options)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    save_checkpoint(path, model, card)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_fine_tuning_a_model_of_three_bands_on_a_four_band_set(tiny: None, tmp_path: Path, capsys) -> None:
    source, weights = _rgb_second_model(tmp_path / "second-rgb.pt")
    scene = synthetic.write_multispectral_scene(tmp_path / "scene", size=128, bands=4)
    data = _prepare(scene, tmp_path / "set")
    state = read_training_state(_train(data, tmp_path / "run", TINY, 1, "0.01", "--init-from", str(source)))
    card = ModelCard.from_dict(json.loads(state["card"]))
    record = card.training["init_from"]
    assert record["file"] == "second-rgb.pt" and record["bands"] == 3 and record["dataset"] == "SECOND (test)"
    assert record["adapted"] == ["encoder.0.weight"] and record["new"] == [] and len(record["sha256"]) == 64
    assert card.training["recipe"]["train"]["init_from"] == str(source)
    assert card.training["backbone_start"].startswith("fine-tuned from second-rgb.pt (SECOND (test); ")
    assert "first convolution adapted from 3 to 4 bands" in capsys.readouterr().err

    # the network it started from: every tensor that fits copied, the first convolution adapted to four bands
    started = registry.build_model(TINY, **card.options)
    init_from_model(started, card, source)
    state_dict = started.state_dict()
    assert torch.equal(state_dict["sem_head.weight"], weights["sem_head.weight"])  # same legend: the head fits
    assert torch.equal(state_dict["encoder.1.running_mean"], weights["encoder.1.running_mean"])
    stem = weights["encoder.0.weight"]
    torch.testing.assert_close(state_dict["encoder.0.weight"][:, :3], stem * 3 / 4)  # as ImageNet's RGB is
    torch.testing.assert_close(state_dict["encoder.0.weight"][:, 3], stem[:, 0] * 3 / 4)


def test_fine_tuning_a_model_of_another_legend_starts_a_new_head(tiny: None, tmp_path: Path) -> None:
    source, weights = _rgb_second_model(tmp_path / "second-rgb.pt")
    card = make_card(TINY, make_preset_of(LANDSAT_SCD_CLASSES), tile_size=64)
    started = registry.build_model(TINY, **card.options)
    fresh_head = started.sem_head.weight.detach().clone()
    record = init_from_model(started, card, source)
    assert started.sem_head.weight.shape[0] == 5  # four Landsat-SCD classes and "no change"
    assert torch.equal(started.sem_head.weight, fresh_head)  # not a slice of SECOND's head
    assert torch.equal(started.encoder[0].weight, weights["encoder.0.weight"])
    assert set(record["new"]) == {"sem_head.weight", "sem_head.bias"} and "6 -> 4 classes" in record["description"]

    data = TrainingData(MemoryPairs(2, classes=4), MemoryPairs(2, seed=1, classes=4), card)
    recipe = apply_overrides(load_recipe(TINY, None), {"epochs": 1, "batch_size": 2, "crop": 64, "workers": 0,
                                                       "init_from": str(source)}, ['train.precision="fp32"'])
    Trainer(recipe, data, tmp_path / "run", device="cpu", progress=False).run()
    saved = ModelCard.from_dict(json.loads(read_training_state(tmp_path / "run" / LAST)["card"]))
    assert saved.class_names == tuple(c.name for c in LANDSAT_SCD_CLASSES)
    assert saved.training["init_from"]["classes"] == [c.name for c in SECOND_CLASSES]
    assert saved.training["init_from"]["new"] == ["sem_head.weight", "sem_head.bias"]


def make_preset_of(classes: tuple) -> object:
    from core.models.card import PRESETS

    return dataclasses.replace(PRESETS["second"], name="test", classes=classes, mean_t1=(MEAN,) * 3,
                               std_t1=(STD,) * 3, mean_t2=(MEAN,) * 3, std_t2=(STD,) * 3)


def test_fine_tuning_is_refused_from_another_network_or_other_options(tiny: None, tmp_path: Path) -> None:
    source, _ = _rgb_second_model(tmp_path / "second-rgb.pt")
    card = make_card(TINY, make_preset_of(SECOND_CLASSES), tile_size=64, options={"width": 16})
    data = TrainingData(MemoryPairs(2), MemoryPairs(2, seed=1), card)
    recipe = apply_overrides(load_recipe(TINY, None), {"epochs": 0, "batch_size": 2, "crop": 64, "workers": 0,
                                                       "init_from": str(source)}, [])
    with pytest.raises(InputError, match=r"built with other options \(width: file 8, this run 16\)"):
        Trainer(recipe, data, tmp_path / "wide", device="cpu", progress=False).run()
    other = dataclasses.replace(card, model="gapl_scd")
    with pytest.raises(InputError, match="holds a tiny_scd network, but this run trains gapl_scd"):
        init_from_model(registry.build_model(TINY, width=16), other, source)
    with pytest.raises(InputError, match="--init-from: model file not found"):
        Trainer({**recipe, "train": {**recipe["train"], "init_from": str(tmp_path / "none.pt")}}, data,
                tmp_path / "missing", device="cpu", progress=False).run()


# --- Class weights -------------------------------------------------------------------------------


def test_balanced_class_weights_follow_median_frequency_and_reach_the_loss(tiny: None, tmp_path: Path) -> None:
    card = make_card(TINY, make_preset_of(SECOND_CLASSES), tile_size=64)
    data = TrainingData(MemoryPairs(2, changes=6), MemoryPairs(2, seed=1), card)
    counts = np.zeros(7)
    for item in data.train:
        for key in ("sem_t1", "sem_t2"):
            counts += np.bincount(item[key].reshape(-1).numpy(), minlength=7)
    frequency = counts[1:] / counts[1:].sum()
    expected = np.minimum(np.median(frequency[frequency > 0]) / np.where(frequency > 0, frequency, 1), 10)
    expected = np.where(frequency > 0, expected, 1.0)
    weights = resolve_class_weights("balanced", data)
    assert weights is not None and weights[0] == 1.0
    np.testing.assert_allclose(weights[1:].numpy(), expected, rtol=1e-5)

    seen: list[torch.Tensor] = []
    spec = registry.get_spec(TINY)
    recorded = dataclasses.replace(spec.training, loss=lambda o, t, s: (seen.append(t["class_weights"]),
                                                                        training_loss(o, t, s))[1])
    sys.modules[f"core.models._test_{TINY}"].SPEC = dataclasses.replace(spec, training=recorded)  # type: ignore
    recipe = apply_overrides(load_recipe(TINY, None), {"epochs": 1, "batch_size": 2, "crop": 64, "workers": 0,
                                                       "class_weights": [1, 2, 3, 4, 5, 6], "pretrained": "none"},
                             ['train.precision="fp32"'])
    Trainer(recipe, data, tmp_path / "run", device="cpu", progress=False).run()
    assert seen and torch.equal(seen[0], torch.tensor([1.0, 1, 2, 3, 4, 5, 6]))
    saved = ModelCard.from_dict(json.loads(read_training_state(tmp_path / "run" / LAST)["card"]))
    assert saved.training["class_weights"] == [1, 2, 3, 4, 5, 6]


def test_class_weights_of_the_wrong_length_or_for_a_binary_network_are_refused() -> None:
    card = make_card("gapl_scd", "second", tile_size=64)
    data = TrainingData(MemoryPairs(1), MemoryPairs(1), card)
    with pytest.raises(InputError, match=r"has 3 values but the legend has 6 classes \(Water, Ground"):
        resolve_class_weights([1.0, 2.0, 3.0], data)
    binary = TrainingData(MemoryPairs(1, semantic=False), MemoryPairs(1, semantic=False),
                          make_card("sscfnet", "binary"))
    with pytest.raises(InputError, match="sscfnet is a binary network"):
        resolve_class_weights("balanced", binary)
    with pytest.raises(InputError, match="class_weights must be positive numbers"):
        apply_overrides(load_recipe("gapl_scd", None), {}, ["train.class_weights=[1, -2]"])
    with pytest.raises(InputError, match="class_weights = 'inverse' is not one of none, balanced"):
        apply_overrides(load_recipe("gapl_scd", None), {}, ['train.class_weights="inverse"'])


@pytest.mark.parametrize("loss_module", ["gapl_scd", "lsafnet"])
def test_class_weights_weight_each_pixel_of_the_semantic_cross_entropy(loss_module: str) -> None:
    """The weighted mean PyTorch defines: a class of weight 0 contributes nothing, the rest average by weight."""
    import importlib

    losses = importlib.import_module(f"core.models.{loss_module}.losses")
    ce = losses._semantic_ce if loss_module == "gapl_scd" else losses._masked_cross_entropy
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 8, 8)
    labels = torch.randint(0, 4, (1, 8, 8))
    weights = torch.tensor([1.0, 0.0, 2.0, 0.5])
    labelled = labels != 0
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    pixel_weight = weights[labels] * labelled
    expected = (per_pixel * pixel_weight).sum() / pixel_weight.sum()
    torch.testing.assert_close(ce(logits, labels, weights), expected)
    plain = per_pixel[labelled].mean()
    torch.testing.assert_close(ce(logits, labels), plain)


# --- Learning from a band beyond RGB ---------------------------------------------------------------


def test_a_four_band_network_separates_classes_alike_in_rgb_that_an_rgb_network_cannot(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Grass and artificial turf share their colour and differ in the near infrared (band 4); every change in
    the scene is one into the other. GAPL-SCD (ResNet-18, the lightest real network) trained the same way on
    bands 1-3 and on bands 1-4 of the same prepared scene: only the four-band one finds the changes and their
    classes, and the engine, scaling the uint16 scene by the card's statistics, scores what training scored.

    The smallest setting that showed it: a 192 px scene cut into nine 64 px tiles (six to train on, three to
    validate on), three epochs of two steps at 2e-3, no augmentation, the session's one torch thread (about
    22 s of CPU time). The four-band network reaches a change mIoU near 0.8 by its second epoch; the RGB one
    stays at "nothing changed" (about 0.3).
    """
    scene = synthetic.write_multispectral_scene(tmp_path / "scene", size=192, bands=4, seed=1, changes=10)
    scores = {}
    for bands in ("1,2,3", "1,2,3,4"):
        data = tmp_path / f"set-{len(bands.split(','))}"
        assert main(["prepare", "--t1", str(scene.t1), "--t2", str(scene.t2), "--labels", str(scene.truth_t1),
                     "--labels-t2", str(scene.truth_t2), "--out", str(data), "--tile", "64", "--block", "1",
                     "--split", "0.67,0.33,0", "--bands-t1", bands]) == 0
        run = tmp_path / f"run-{len(bands.split(','))}"
        state = read_training_state(_train(
            data, run, "gapl_scd", 3, "0.002", "--batch-size", "3", "--set", 'options.backbone="resnet18"',
            "--set", "options.sqmlfi_channels=32"))
        scores[bands] = json.loads(state["progress"]["best_metrics"])
    rgb, four = scores["1,2,3"], scores["1,2,3,4"]
    assert four["miou"] > rgb["miou"] + 0.25, (rgb["miou"], four["miou"])
    assert four["iou_c"] > 0.5 > 0.1 > rgb["iou_c"]
    assert four["f_scd"] > rgb["f_scd"] + 0.2  # the changed pixels' classes: grass or turf, told apart
    report = tmp_path / "engine.json"
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run-4" / "best.pt"), "--data", str(tmp_path / "set-4"),
                 "--split", "val", "--json", str(report), "--backend", "torch"]) == 0
    engine = json.loads(report.read_text())
    assert engine["miou"] == pytest.approx(four["miou"], abs=0.03)
