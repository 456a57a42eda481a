"""``evaluate`` and ``predict``: checkpoints run through the engine, predictions scored the SECOND way."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import register_tiny_models
from PIL import Image

from training_cli.cli import main
from training_cli.datasets import open_dataset
from training_cli.datasets.reading import write_label_png

KEYS = ("oa", "oa_global", "miou", "sek", "f_scd", "kappa", "precision", "recall", "f1", "iou")


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    register_tiny_models(monkeypatch)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    sets = {}
    for format in ("second", "binary"):
        assert main(["synthetic", "--out", str(root / format), "--format", format, "--pairs", "4", "--size", "64",
                     "--scene-size", "0"]) == 0
        sets[format] = root / format
    return sets


def _write_predictions(out: Path, dataset, mode: str) -> None:
    for index, sample in enumerate(dataset.samples):
        sem1, sem2, _ = dataset.read_pair(index)[2]
        if mode == "none":
            sem1, sem2 = np.zeros_like(sem1), np.zeros_like(sem2)
        write_label_png(out / "label1" / f"{sample.name}.png", sem1, dataset.palette)
        write_label_png(out / "label2" / f"{sample.name}.png", sem2, dataset.palette)


def test_evaluate_pred_perfect_and_no_change_predictions(tmp_path: Path, data, capsys) -> None:
    dataset = open_dataset(data["second"], split="train")
    _write_predictions(tmp_path / "perfect", dataset, "perfect")
    assert main(["evaluate", "--pred", str(tmp_path / "perfect"), "--data", str(data["second"]), "--split", "train",
                 "--json", str(tmp_path / "perfect.json")]) == 0
    table = capsys.readouterr().out
    assert "OA, mean per image (as the papers report it)" in table and "SeK" in table
    perfect = json.loads((tmp_path / "perfect.json").read_text())
    for key in KEYS:
        assert perfect[key] == pytest.approx(1.0), key
    assert perfect["pairs"] == 2 and perfect["split"] == "train"

    _write_predictions(tmp_path / "none", dataset, "none")
    assert main(["evaluate", "--pred", str(tmp_path / "none"), "--data", str(data["second"]), "--split", "train",
                 "--json", str(tmp_path / "none.json")]) == 0
    scores = json.loads((tmp_path / "none.json").read_text())
    unchanged = [1 - float((dataset.read_pair(i)[2][0] > 0).mean()) for i in range(2)]
    assert scores["oa"] == pytest.approx(np.mean(unchanged))          # each map: its share of unchanged pixels
    assert scores["oa_global"] == pytest.approx(np.mean(unchanged))   # same-size maps: the same here
    assert scores["iou_c"] == 0 and scores["f_scd"] == 0 and scores["sek"] == 0 and scores["recall"] == 0


def test_evaluate_pred_names_a_missing_prediction(tmp_path: Path, data, capsys) -> None:
    dataset = open_dataset(data["second"], split="train")
    _write_predictions(tmp_path / "p", dataset, "perfect")
    (tmp_path / "p" / "label2" / f"{dataset.samples[1].name}.png").unlink()
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--data", str(data["second"]), "--split", "train"]) == 2
    assert f"no prediction named {dataset.samples[1].name}.png" in capsys.readouterr().err


def test_checkpoint_scores_equal_the_scores_of_its_predicted_pngs(tmp_path: Path, data, tiny, capsys) -> None:
    checkpoint = tmp_path / "tiny.pt"
    torch.manual_seed(0)  # the untrained weights, whatever the tests before this one drew
    assert main(["init", "--model", "tiny_scd", "--preset", "second", "--out", str(checkpoint)]) == 0
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data["second"]), "--split", "val",
                 "--device", "cpu", "--json", str(tmp_path / "engine.json")]) == 0
    engine = json.loads((tmp_path / "engine.json").read_text())
    for key in KEYS:
        lowest = -1.0 if key in ("kappa", "sek") else 0.0  # kappas (and SeK, a kappa) of a random model can be < 0
        assert lowest <= engine[key] <= 1.0, key
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data["second"]), "--split", "val",
                 "--device", "cpu", "--precision", "fp32", "--out", str(tmp_path / "pred")]) == 0
    png = tmp_path / "pred" / "label1" / "00002.png"
    with Image.open(png) as image:
        assert image.mode == "P" and image.size == (64, 64)
        assert tuple(image.getpalette()[:6]) == (255, 255, 255, 0, 0, 255)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--data", str(data["second"]), "--split", "val",
                 "--json", str(tmp_path / "pngs.json")]) == 0
    assert json.loads((tmp_path / "pngs.json").read_text()) == pytest.approx(engine)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data["second"]), "--split", "val",
                 "--out", str(tmp_path / "pred")]) == 2
    assert "already holds files" in capsys.readouterr().err


def test_binary_checkpoint_and_class_mismatch(tmp_path: Path, data, tiny, capsys) -> None:
    binary = tmp_path / "bcd.pt"
    assert main(["init", "--model", "tiny_bcd", "--preset", "binary", "--out", str(binary)]) == 0
    assert main(["evaluate", "--checkpoint", str(binary), "--data", str(data["binary"]), "--split", "test",
                 "--device", "cpu", "--json", str(tmp_path / "b.json")]) == 0
    scores = json.loads((tmp_path / "b.json").read_text())
    assert {"precision", "recall", "f1", "iou", "oa", "kappa"} <= set(scores) and "sek" not in scores
    landsat = tmp_path / "landsat.pt"
    assert main(["init", "--model", "tiny_scd", "--preset", "landsat-scd", "--out", str(landsat)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(landsat), "--data", str(data["second"]), "--device", "cpu"]) == 2
    assert "the model has 4 classes" in capsys.readouterr().err


def test_semantic_model_on_binary_data_predicts_and_scores_change(tmp_path: Path, data, tiny) -> None:
    checkpoint = tmp_path / "scd.pt"
    assert main(["init", "--model", "tiny_scd", "--preset", "second", "--out", str(checkpoint)]) == 0
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(data["binary"]), "--split", "test",
                 "--device", "cpu", "--precision", "fp32", "--out", str(tmp_path / "pred")]) == 0
    assert [p.name for p in (tmp_path / "pred").iterdir()] == ["label"]
    with Image.open(tmp_path / "pred" / "label" / "00003.png") as image:
        assert image.mode == "L" and set(np.unique(np.array(image))) <= {0, 255}
    for source in (["--pred", str(tmp_path / "pred")], ["--checkpoint", str(checkpoint), "--device", "cpu"]):
        out = tmp_path / f"{source[0][2:]}.json"
        assert main(["evaluate", *source, "--data", str(data["binary"]), "--split", "test", "--json", str(out)]) == 0
    assert json.loads((tmp_path / "pred.json").read_text()) == pytest.approx(
        json.loads((tmp_path / "checkpoint.json").read_text()))


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_evaluate_runs_the_checkpoint_on_the_backend_asked_for(tmp_path: Path, data, tiny) -> None:
    # (that a runtime's products equal PyTorch's is tested on the engine, at fp32 on both sides)
    checkpoint = tmp_path / "tiny.pt"
    assert main(["init", "--model", "tiny_scd", "--preset", "second", "--out", str(checkpoint)]) == 0
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data["second"]), "--split", "val",
                 "--device", "cpu", "--backend", "onnxruntime", "--json", str(out)]) == 0
    assert 0.0 <= json.loads(out.read_text())["oa"] <= 1.0
    assert list(Path(os.environ["SCD_CACHE_DIR"]).glob("onnx/tiny_scd-*.onnx"))
    # evaluate scores at fp32 by default: a model's scores do not depend on the backend or the CPU
    on_torch = tmp_path / "torch.json"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data["second"]), "--split", "val",
                 "--device", "cpu", "--backend", "torch", "--json", str(on_torch)]) == 0
    assert json.loads(on_torch.read_text()) == pytest.approx(json.loads(out.read_text()), abs=1e-3)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data["second"]), "--backend", "tpu"]) == 2


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six SECOND pairs in one folder, without splits (as a user's own folder often is)."""
    made = tmp_path_factory.mktemp("made")
    assert main(["synthetic", "--out", str(made / "s"), "--format", "second", "--pairs", "6", "--size", "64",
                 "--scene-size", "0"]) == 0
    root = tmp_path_factory.mktemp("flat")
    for path in (made / "s").glob("*/*/*.png"):  # <split>/<folder>/<pair>.png -> <folder>/<pair>.png
        (root / path.parent.name).mkdir(exist_ok=True)
        path.rename(root / path.parent.name / path.name)
    return root


def test_evaluate_pred_scores_the_pairs_the_folder_holds_and_says_how_many(tmp_path: Path, flat, capsys) -> None:
    """Without --split, a folder without splits had its hash-chosen "val" sixth scored: 1 of 6 pairs."""
    dataset = open_dataset(flat, split="all")
    assert len(dataset.samples) == 6
    _write_predictions(tmp_path / "all", dataset, "perfect")
    assert main(["evaluate", "--pred", str(tmp_path / "all"), "--data", str(flat),
                 "--json", str(tmp_path / "all.json")]) == 0
    assert "6 of 6 pairs scored" in capsys.readouterr().out
    scores = json.loads((tmp_path / "all.json").read_text())
    assert (scores["pairs"], scores["pairs_present"], scores["split"]) == (6, 6, "predicted")

    two = open_dataset(flat, split="all", names=[dataset.samples[1].name, dataset.samples[4].name])
    _write_predictions(tmp_path / "two", two, "none")
    assert main(["evaluate", "--pred", str(tmp_path / "two"), "--data", str(flat),
                 "--json", str(tmp_path / "two.json")]) == 0
    out = capsys.readouterr().out
    assert f"the pairs {tmp_path / 'two'} holds: 2 of 6 pairs scored" in out
    assert json.loads((tmp_path / "two.json").read_text())["pairs"] == 2

    # An explicit split is scored whole, as before, and says how many pairs the folder holds.
    assert main(["evaluate", "--pred", str(tmp_path / "all"), "--data", str(flat), "--split", "val"]) == 0
    assert "split val: 1 of 6 pairs scored" in capsys.readouterr().out


def test_evaluate_pred_finds_the_split_folder_of_its_pairs_and_names_strays(tmp_path: Path, data, capsys) -> None:
    val = open_dataset(data["second"], split="val")
    _write_predictions(tmp_path / "val", val, "perfect")
    assert main(["evaluate", "--pred", str(tmp_path / "val"), "--data", str(data["second"])]) == 0
    assert "1 of 4 pairs scored" in capsys.readouterr().out

    _write_predictions(tmp_path / "mixed", open_dataset(data["second"], split="train"), "perfect")
    _write_predictions(tmp_path / "mixed", val, "perfect")
    assert main(["evaluate", "--pred", str(tmp_path / "mixed"), "--data", str(data["second"])]) == 2
    error = capsys.readouterr().err
    assert "pairs in train/ and val/" in error and "give --split" in error

    stray = tmp_path / "val" / "label1" / "elsewhere.png"
    (tmp_path / "val" / "label1" / f"{val.samples[0].name}.png").rename(stray)
    assert main(["evaluate", "--pred", str(tmp_path / "val"), "--data", str(data["second"])]) == 2
    assert f"{stray}: a prediction for the pair elsewhere" in capsys.readouterr().err
